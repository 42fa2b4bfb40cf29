"""The protein structures of chapter 14 are the unmodified PDB entries, and read as the chapter says.

``book/data/1crn.pdb`` (crambin, Teeter 1984) and ``book/data/1ubq.pdb`` (ubiquitin,
Vijay-Kumar, Bugg & Cook 1987) are copies of the Protein Data Bank files, public-domain data.
These tests pin their content (SHA-256), check the backbone with a parser that follows the
chapter's rules (fixed PDB columns, first model, altLoc blank or ``A``) against ASE's independent
PDB reader, and check the chemistry that the chapter's frames rely on (3.8 A CA-CA distances,
N-CA-C angles far from collinear).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1] / "book" / "data"
ENTRIES = {  # file: (SHA-256 of the PDB file as distributed, residues, entry id)
    "1crn.pdb": ("58bd4a593b592c51d3b7a5fc1249521467a1f3458ead2645ccb2fffe53a60a25", 46, "1CRN"),
    "1ubq.pdb": ("37838fda4455b7997e8b8dc7367b20ca535b037d89a272a3073f7e78d4a28de0", 76, "1UBQ"),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def backbone(text: str) -> np.ndarray:
    """N, CA, C of the first model, [L, 3, 3], the chapter's rules (fixed columns)."""
    residues = {}
    for line in text.splitlines():
        if line.startswith("ENDMDL"):
            break
        if line.startswith("ATOM") and line[16] in " A" and line[12:16].strip() in ("N", "CA", "C"):
            res = residues.setdefault((line[21], int(line[22:26]), line[26]), {})
            res[line[12:16].strip()] = [float(line[30:38]), float(line[38:46]), float(line[46:54])]
    return np.array([[r[a] for a in ("N", "CA", "C")] for r in residues.values() if len(r) == 3])


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_files_are_the_unmodified_entries(name):
    path = DATA / name
    digest, _, entry = ENTRIES[name]
    assert sha256(path) == digest, f"{path} differs from the PDB entry {entry} (copy it again, unmodified)"
    assert path.read_text().splitlines()[0].rstrip().endswith(entry)  # the HEADER names the entry


def test_a_modified_copy_is_detected(tmp_path):
    text = (DATA / "1crn.pdb").read_text()
    i = text.index("\nATOM") + 33  # a digit of the first x coordinate
    changed = text[:i] + ("1" if text[i] != "1" else "2") + text[i + 1:]
    (tmp_path / "1crn.pdb").write_text(changed)
    assert sha256(tmp_path / "1crn.pdb") != ENTRIES["1crn.pdb"][0]


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_backbone_matches_ase_and_chemistry(name):
    ase_io = pytest.importorskip("ase.io")
    xyz = backbone((DATA / name).read_text())
    assert xyz.shape == (ENTRIES[name][1], 3, 3)
    atoms = ase_io.read(DATA / name)  # ASE's own PDB reader (first model)
    types = atoms.arrays["atomtypes"]
    for k, atom in enumerate(("N", "CA", "C")):
        np.testing.assert_allclose(atoms.positions[types == atom], xyz[:, k], atol=1e-12)
    ca = xyz[:, 1]
    ca_ca = np.linalg.norm(ca[1:] - ca[:-1], axis=1)
    assert 3.7 < ca_ca.min() and ca_ca.max() < 3.9  # trans peptides, no chain break
    v1, v2 = xyz[:, 0] - xyz[:, 1], xyz[:, 2] - xyz[:, 1]
    angle = np.degrees(np.arccos((v1 * v2).sum(1) / np.linalg.norm(v1, axis=1) / np.linalg.norm(v2, axis=1)))
    assert 100 < angle.min() and angle.max() < 125  # N-CA-C: far from collinear, frames well defined


def test_parser_rules_negative_controls():
    """A residue missing its C is dropped; atoms after ENDMDL (a second model) and altLoc B are ignored."""
    text = (DATA / "1crn.pdb").read_text()
    lines = text.splitlines()
    first_c = next(i for i, l in enumerate(lines) if l.startswith("ATOM") and l[12:16].strip() == "C")
    assert backbone("\n".join(lines[:first_c] + lines[first_c + 1:])).shape[0] == 45
    atom = lines[first_c]
    alt_b = atom[:16] + "B" + atom[17:30] + "%8.3f" % 99.0 + atom[38:]
    second_model = "ENDMDL\n" + atom[:30] + "%8.3f" % 99.0 + atom[38:]
    np.testing.assert_array_equal(backbone(text + "\n" + second_model), backbone(text))
    np.testing.assert_array_equal(backbone(text.replace(atom, atom + "\n" + alt_b)), backbone(text))
    assert backbone(text.replace(atom, alt_b)).shape[0] == 45  # only altLoc B: that C is not read

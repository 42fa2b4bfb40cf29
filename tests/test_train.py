"""Tests of minequi.train: two gloo processes on the CPU compute what one process computes.

Every multi-process run is launched from the test, as a user would: ``torchrun --standalone``
for the reference run, and for the others two ``python -m minequi.train`` processes with the
environment that torchrun would set (``RANK``, ``WORLD_SIZE``, ``MASTER_PORT`` on a free port),
which saves torchrun's own start-up.  The runs are float64 and tiny (EMT copper-gold clusters of
2 to 6 atoms, a small InteratomicPotential); a stand-in pair potential with the same forward
signature, defined below, provides the model with an unused parameter.

The 2-rank reference run is shared by several tests and, under pytest-xdist, by the workers
(computed once, under a file lock, in the session's shared temporary folder).

Measured (float64, small InteratomicPotential, 2 ranks vs 1 process, this machine): first-step
gradients differ by at most 8e-17 (max abs; largest gradient entry 0.36), weights after 9 steps
by 2e-16, validation MAEs equal (difference 0.0 in the chapter's run); the resumed run equals the uninterrupted one bit for bit.
Emulated in one process on a 4-atom / 18-atom split: the global-mean loss gives the full-batch
gradient to 5e-17, a per-rank-mean loss misses it by 0.16.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from minequi import train as T

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
EXACT = 1e-12   # ~100x (and more) above the measured 2-rank vs 1-process differences
TIMEOUT = 120   # seconds for one multi-process run (a failure shows up well before)


# ----------------------------------------------------------------------------
# A stand-in model with the potential's forward signature (kept here, not in the library)
# ----------------------------------------------------------------------------
class PairPotential(nn.Module):
    """E = sum_i readout(silu(embed(Z_i) * sum_j radial(r_ij) * embed(Z_j))), all pairs of a structure.

    Forces are computed inside forward, with create_graph while training (as the potential does).
    """

    def __init__(self, species, cutoff=4.0, hidden=8, num_basis=6, unused=False):
        super().__init__()
        self.species = list(species)
        self.register_buffer("z_to_index", torch.zeros(119, dtype=torch.long).index_put_(
            (torch.tensor(self.species),), torch.arange(len(self.species))), persistent=False)
        self.cutoff, self.num_basis = cutoff, num_basis
        self.embed = nn.Embedding(len(self.species), hidden)
        self.radial = nn.Sequential(nn.Linear(num_basis, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.readout = nn.Linear(hidden, 1)
        if unused:
            self.unused_head = nn.Linear(hidden, 1)  # never called in forward

    def energy_fn(self, numbers, batch, G):
        z = self.z_to_index[numbers]  # [N]
        same = (batch[:, None] == batch[None, :]) & ~torch.eye(len(batch), dtype=torch.bool)  # [N, N]
        i, j = same.nonzero().T  # [P], [P]
        mu = torch.linspace(0.5, self.cutoff, self.num_basis, dtype=self.readout.weight.dtype)  # [B]

        def energy(pos):
            r = (pos[j] - pos[i]).norm(dim=1)  # [P]
            basis = torch.exp(-4.0 * (r[:, None] - mu) ** 2)  # [P, B]
            env = torch.where(r < self.cutoff, torch.cos(0.5 * torch.pi * r / self.cutoff) ** 2, 0 * r)  # [P]
            msg = self.radial(basis) * env[:, None] * self.embed(z[j])  # [P, H]
            h = torch.zeros(len(z), msg.shape[1], dtype=msg.dtype).index_add(0, i, msg)  # [N, H]
            e = self.readout(torch.nn.functional.silu(self.embed(z) * h))[:, 0]  # [N]
            return torch.zeros(G, dtype=e.dtype).index_add(0, batch, e)  # [G]

        return energy

    def forward(self, numbers, pos, cell=None, pbc=None, batch=None, compute_forces=True,
                compute_stress=False, create_graph=None):
        batch = torch.zeros(len(pos), dtype=torch.long) if batch is None else batch
        G = int(batch.max()) + 1
        create_graph = self.training if create_graph is None else create_graph
        pos = pos.detach().requires_grad_(True)
        with torch.enable_grad():
            energy = self.energy_fn(numbers, batch, G)(pos)  # [G]
            forces = -torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)[0]  # [N, 3]
        if not create_graph:
            energy, forces = energy.detach(), forces.detach()
        return {"energy": energy, "forces": forces}


def pair_potential(species, args):
    return PairPotential(species, cutoff=args.cutoff)


def pair_potential_unused(species, args):
    return PairPotential(species, cutoff=args.cutoff, unused=True)


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------
def make_data(folder: Path):
    from minequi.physics_data import emt_clusters, write_extxyz

    train = emt_clusters(9, symbols=("Cu", "Au"), natoms=(2, 6), seed=1)  # 9: not divisible by 2
    val = emt_clusters(5, symbols=("Cu", "Au"), natoms=(2, 6), seed=2)    # 5: padding on rank 1
    write_extxyz(folder / "train.extxyz", train)
    write_extxyz(folder / "val.extxyz", val)
    return folder / "train.extxyz", folder / "val.extxyz"


# a small InteratomicPotential (the default --model)
POTENTIAL = ["--irreps-hidden", "4x0e+2x1o", "--lmax", "1", "--num-layers", "2", "--num-basis", "4",
             "--radial-hidden", "8", "--cutoff", "4.0"]


def common_args(data, val, out, batch_size, model="potential", epochs=3):
    return ["--data", str(data), "--val", str(val), "--out", str(out), "--batch-size", str(batch_size),
            "--max-epochs", str(epochs), "--dtype", "float64", "--lr", "0.02", "--seed", "3",
            "--threads", "1", "--model", model, "--quiet", *POTENTIAL]


def potential(args=None):
    args = args or T.parse_args(common_args("x", "y", "z", 1))
    return T.build_potential([29, 79], args).double()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(ROOT)]), OMP_NUM_THREADS="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def launch(args: list[str], nproc: int = 2) -> list[subprocess.CompletedProcess]:
    """``nproc`` ranks of ``python -m minequi.train`` with the environment torchrun would set."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "minequi.train", *args], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=child_env(RANK=r, LOCAL_RANK=r, WORLD_SIZE=nproc, LOCAL_WORLD_SIZE=nproc,
                                            MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
             for r in range(nproc)]
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "minequi.train", *args]
    return subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, env=child_env(), timeout=TIMEOUT)


def state(path) -> dict:
    return torch.load(path, weights_only=True)


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# ----------------------------------------------------------------------------
# The shared runs
# ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """The data, one uninterrupted 2-rank run under torchrun (per-rank batch 2, 3 epochs = 9 steps)
    and the same training on one process, computed once per session even under pytest-xdist."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the workers' folders share this session's parent
        base = base.parent
    shared = base / "minequi_train_reference"
    with FileLock(str(shared) + ".lock"):
        done = shared / "done.json"
        if not done.exists():
            shared.mkdir(exist_ok=True)
            data, val = make_data(shared)
            res = torchrun(common_args(data, val, shared / "ddp", 2) + ["--save-first-grads"])
            assert res.returncode == 0, res.stdout + res.stderr
            # the same training on one process (in this process) with the global batch 2 x 2 = 4
            args = T.parse_args(common_args(data, val, shared / "single", 4) + ["--save-first-grads"])
            T.train(args, T.Context())
            done.write_text(json.dumps({"data": str(data), "val": str(val), "out": str(shared / "ddp"),
                                        "single": str(shared / "single")}))
        return {k: Path(v) for k, v in json.loads(done.read_text()).items()}


@pytest.fixture(scope="session")
def single_run(reference_run):
    """The output folder of the single-process run (computed with the reference run)."""
    return reference_run["single"]


# ----------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------
def test_shard_marks_the_padding_repeats():
    n, W = 5, 2
    seen = []
    for r in range(W):
        sampler = torch.utils.data.distributed.DistributedSampler(range(n), num_replicas=W, rank=r, shuffle=True, seed=7)
        sampler.set_epoch(3)
        idx, real = T.shard(sampler, n)
        assert len(idx) == 3
        seen += [i for i, ok in zip(idx, real) if ok]
    assert sorted(seen) == list(range(n))  # every structure exactly once
    # negative control: without the mask a structure is counted twice
    all_idx = [i for r in range(W) for i in T.shard(
        torch.utils.data.distributed.DistributedSampler(range(n), num_replicas=W, rank=r, shuffle=False), n)[0]]
    assert len(all_idx) == 6 and len(set(all_idx)) == 5


def test_first_step_gradients_equal_full_batch(reference_run, single_run):
    g2 = state(reference_run["out"] / "grads_step1.pt")
    g1 = state(single_run / "grads_step1.pt")
    diff = max_diff(g2, g1)
    scale = max(float(g.abs().max()) for g in g1.values())
    print(f"first-step gradients, 2 ranks vs 1 process: max |diff| = {diff:.2e} (largest entry {scale:.2e})")
    assert scale > 1e-3  # the gradients are not trivially zero
    assert diff < EXACT


def test_weights_equal_after_several_steps(reference_run, single_run):
    w2 = state(reference_run["out"] / "model.pt")
    w1 = state(single_run / "model.pt")
    h2 = json.loads((reference_run["out"] / "history.json").read_text())
    h1 = json.loads((single_run / "history.json").read_text())
    assert h2[-1]["step"] == h1[-1]["step"] == 9
    diff = max_diff(w2, w1)
    print(f"weights after {h1[-1]['step']} steps, 2 ranks vs 1 process: max |diff| = {diff:.2e}")
    assert diff < EXACT
    # negative control: the weights moved (so equal weights are not equal initial weights)
    torch.manual_seed(3)
    w0 = potential().state_dict()
    assert max(float((w1[k] - w0[k]).abs().max()) for k in ("readout.weight", "embedding.weight")) > 1e-3
    for a, b in zip(h2, h1):
        assert abs(a["loss"] - b["loss"]) < EXACT * max(1.0, b["loss"])


def test_validation_metrics_equal_single_process(reference_run, single_run):
    """5 validation structures on 2 ranks: rank 1 gets a padding repeat, which must not count."""
    m2 = json.loads((reference_run["out"] / "history.json").read_text())[-1]
    m1 = json.loads((single_run / "history.json").read_text())[-1]
    assert m2["val_structures"] == m1["val_structures"] == 5
    for k in ("val_energy_mae", "val_forces_mae"):
        assert m1[k] > 0 and abs(m2[k] - m1[k]) < EXACT * m1[k], (k, m2[k], m1[k])
    # negative control: the same model evaluated with the padding repeat counted differs
    from minequi.physics_data import read_extxyz
    model = potential()
    model.load_state_dict(state(single_run / "model.pt"))
    val = read_extxyz(reference_run["val"])
    exact = T.evaluate(model, val, T.Context(), 4, F64)
    assert abs(exact["energy_mae"] - m1["val_energy_mae"]) < EXACT * m1["val_energy_mae"]
    padded = val + val[:1]  # what rank 1's padding would add if it were not masked
    wrong = T.evaluate(model, padded, T.Context(), 4, F64)
    assert abs(wrong["energy_mae"] - exact["energy_mae"]) > 1e-6 * exact["energy_mae"]


def test_per_rank_mean_loss_is_not_the_full_batch_loss(reference_run):
    """The loss algebra of train.global_loss, emulated in one process on a fixed split (no DDP):
    the global-count loss averages to the full-batch gradient; the per-rank mean does not."""
    from minequi.physics_data import read_extxyz

    structures = read_extxyz(reference_run["data"])
    torch.manual_seed(0)
    model = potential().train()
    params = list(model.parameters())
    shards = [[2, 6], [1, 3, 5]]  # 4 and 18 atoms
    assert sum(len(structures[i]) for i in shards[0]) != sum(len(structures[i]) for i in shards[1])

    def sums(idx):
        b = T.make_batch(structures, idx, F64, "cpu")
        return T.loss_sums(model(*T._model_inputs(b)), b, torch.ones(len(idx), dtype=torch.bool))

    full = sums(shards[0] + shards[1])
    g_full = torch.autograd.grad(T.global_loss(full, full.detach(), 1, 1.0, 1.0), params)
    per_rank = [sums(s) for s in shards]
    total = (per_rank[0] + per_rank[1]).detach()  # the all-reduced counts
    g_global = [sum(g) / 2 for g in zip(*[torch.autograd.grad(T.global_loss(s, total, 2, 1.0, 1.0), params, retain_graph=True)
                                          for s in per_rank])]
    g_local = [sum(g) / 2 for g in zip(*[torch.autograd.grad(T.global_loss(s, s.detach(), 1, 1.0, 1.0), params)
                                         for s in per_rank])]
    err_global = max(float((a - b).abs().max()) for a, b in zip(g_global, g_full))
    err_local = max(float((a - b).abs().max()) for a, b in zip(g_local, g_full))
    assert err_global < EXACT
    print(f"per-rank mean vs full batch: max |grad diff| {err_local:.1e}; global mean: {err_global:.1e}")
    assert err_local > 1e-4, err_local  # negative control


def test_kill_and_resume_reproduces_the_uninterrupted_run(reference_run, tmp_path):
    args = common_args(reference_run["data"], reference_run["val"], tmp_path / "run", 2)
    # 3 steps per epoch; a mid-epoch checkpoint after step 7 (epoch 3, step 1), killed after step 8
    crashed = launch(args + ["--stop-after-step", "8", "--checkpoint-every", "7"])
    assert all(r.returncode == 75 for r in crashed), [r.stderr for r in crashed]
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]) == (2, 1, 7)
    assert not (tmp_path / "run" / "model.pt").exists()
    resumed = launch(args + ["--resume"])
    assert all(r.returncode == 0 for r in resumed), [r.stderr for r in resumed]
    w_ref = state(reference_run["out"] / "model.pt")
    w_res = state(tmp_path / "run" / "model.pt")
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)  # bit-identical
    h_ref = json.loads((reference_run["out"] / "history.json").read_text())
    h_res = json.loads((tmp_path / "run" / "history.json").read_text())
    strip = lambda h: [{k: v for k, v in r.items() if k != "structures_per_s"} for r in h]
    assert strip(h_ref) == strip(h_res)
    # negative control: the checkpoint's weights are not the final ones (the resume trained)
    assert not all(torch.equal(w_ref[k], ckpt["model"][k]) for k in w_ref)


def test_unused_parameter_fails_with_its_name(reference_run, tmp_path):
    res = launch(common_args(reference_run["data"], reference_run["val"], tmp_path / "run", 2,
                             model="test_train:pair_potential_unused", epochs=1))
    for r in res:
        assert r.returncode != 0
        assert "receive no gradient" in r.stderr and "unused_head.weight" in r.stderr, r.stderr[-2000:]
        assert "unused_head.bias" in r.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_check_parameters_used_passes_a_complete_model():
    """The check itself: silent on a model whose parameters all get a gradient (zero is fine)."""
    model = PairPotential([29]).double()
    numbers, pos = torch.tensor([29, 29]), torch.tensor([[0.0, 0, 0], [2.5, 0, 0]], dtype=F64)
    out = model(numbers, pos, create_graph=True)
    T.check_parameters_used(model, out["forces"].square().sum() + 0 * out["energy"].sum(), T.Context())
    model = PairPotential([29], unused=True).double()
    out = model(numbers, pos, create_graph=True)
    with pytest.raises(RuntimeError, match=r"unused_head\.weight"):
        T.check_parameters_used(model, out["forces"].square().sum(), T.Context())


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    T.save_checkpoint(path, {"step": 1})
    real_save = torch.save

    def crash(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        T.save_checkpoint(path, {"step": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path, weights_only=True) == {"step": 1}  # the old checkpoint is intact


def test_bad_arguments():
    with pytest.raises(SystemExit):
        T.parse_args(["--data", "x", "--out", "y", "--batch-size", "0"])
    with pytest.raises(ValueError, match="device"):
        T.setup_distributed("tpu")
    with pytest.raises(ValueError, match="--model"):
        T._factory("not_a_spec")


def test_a_data_file_without_labels_is_refused(tmp_path):
    # (found by the bad-input audit: it "trained" with loss 0 and exited 0)
    import ase.io
    from ase.build import bulk

    path = tmp_path / "unlabelled.extxyz"
    ase.io.write(path, [bulk("Cu", "fcc", a=3.6, cubic=True)])
    with pytest.raises(ValueError, match="no structure has an energy or force label"):
        T.load_structures(path)

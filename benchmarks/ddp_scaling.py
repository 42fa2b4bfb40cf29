"""Training throughput of ``minequi.train`` on 1 and 2 CPU processes (DDP, gloo), and the parallel efficiency.

    python benchmarks/ddp_scaling.py [--structures 48] [--epochs 3] [--batch-size 4] [--out benchmarks/ddp_scaling.json]

Generates EMT copper clusters (8 to 16 atoms) in a temporary folder, then trains the
InteratomicPotential (float32, 2 layers, ``16x0e+8x1o+4x2e``) with

* 1 process, 1 thread (``python -m minequi.train``);
* 1 process, 2 threads (what one process makes of the same two cores);
* 2 processes, 1 thread each (``torchrun --standalone --nproc_per_node=2``).

The per-rank batch is fixed (``--batch-size``), so the 2-process run takes global batches twice
as large (weak scaling, the usual DDP setting).  Throughput = training structures per second,
the median over the epochs after the first (``history.json`` of each run; validation excluded).
Parallel efficiency = throughput(2 processes) / (2 x throughput(1 process, 1 thread)).
Appends the run to a JSON file (``{"runs": [...]}``, each run with its date, load average and
settings) that chapter 19 shows as tables, and prints the table.  On a shared machine the
numbers move with the load: keep several runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)


def throughput(out: Path) -> float:
    history = json.loads((out / "history.json").read_text())
    return statistics.median(r["structures_per_s"] for r in history[1:])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--structures", type=int, default=48)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "ddp_scaling.json"))
    p.add_argument("--fresh", action="store_true", help="replace the stored runs instead of appending this one")
    a = p.parse_args()

    from minequi.physics_data import emt_clusters, write_extxyz

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "train.extxyz"
        write_extxyz(data, emt_clusters(a.structures, natoms=(8, 16), seed=0))
        common = ["--data", str(data), "--batch-size", str(a.batch_size), "--max-epochs", str(a.epochs),
                  "--dtype", "float32", "--num-layers", "2", "--lr", "5e-3", "--quiet"]
        py = [sys.executable, "-m", "minequi.train"]
        tr = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        configs = [
            ("1 process, 1 thread", 1, py + common + ["--threads", "1", "--out", str(tmp / "p1t1")], 1, tmp / "p1t1"),
            ("1 process, 2 threads", 1, py + common + ["--threads", "2", "--out", str(tmp / "p1t2")], 2, tmp / "p1t2"),
            ("2 processes, 1 thread each", 2, tr + ["--nproc_per_node=2", "-m", "minequi.train"] + common
             + ["--threads", "1", "--out", str(tmp / "p2t1")], 1, tmp / "p2t1"),
        ]
        rows = []
        load = os.getloadavg()[0]
        for name, procs, cmd, threads, out in configs:
            t0 = time.perf_counter()
            run(cmd, threads)
            rows.append({"config": name, "processes": procs, "threads_per_process": threads,
                         "global_batch": procs * a.batch_size, "structures_per_s": throughput(out),
                         "wall_s": time.perf_counter() - t0})
    base = rows[0]["structures_per_s"]
    for r in rows:
        r["speedup"] = r["structures_per_s"] / base
        r["efficiency"] = r["structures_per_s"] / (r["processes"] * r["threads_per_process"] * base)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
              "cpus": os.cpu_count(), "machine": platform.machine(), "load_average_at_start": load,
              "structures": a.structures, "epochs": a.epochs, "per_rank_batch": a.batch_size, "rows": rows}
    out = Path(a.out)
    runs = json.loads(out.read_text())["runs"] if out.exists() and not a.fresh else []
    out.write_text(json.dumps({"runs": runs + [result]}, indent=1) + "\n")
    print(f"{'config':28s} {'structures/s':>12s} {'speed-up':>9s} {'efficiency':>10s}")
    for r in rows:
        print(f"{r['config']:28s} {r['structures_per_s']:12.1f} {r['speedup']:9.2f} {r['efficiency']:10.2f}")
    print(f"(load average at start {load:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()

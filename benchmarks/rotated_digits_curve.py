"""Rotated digits, paper-scale: test accuracy against training-set size for a CNN with augmentation,
p4 and p4m group CNNs, and p4m with augmentation (chapter 6 of the book).

This is the long version of the experiment that ``book/06_rotated_digits.ipynb`` runs on a short
budget. The setting is that of rotated MNIST (Larochelle et al. 2007; Cohen & Welling 2016): every
training and every test digit is rotated by its own random angle, so the orientation of a digit
carries no information. Data: scikit-learn's ``load_digits`` (1,797 digits of 8 x 8 pixels, shipped
with scikit-learn, nothing downloaded), zero-padded to 12 x 12 so that a rotation never cuts a
digit's corners. 1,400 digits form the training pool (each rotated once, by a fixed random angle),
the other 397 the test set (each at 4 fixed random angles, 1,588 test images).

For each model and each (training-set size n, seed) one copy of the network is trained on the first n
digits of a seeded permutation of the pool (nested subsets), with Adam, a cosine-decayed learning
rate and a fixed number of steps of fixed batch size; "+ aug" models see every batch rotated by fresh
uniform random angles. All copies of one model are trained together as one ``torch.func.vmap``
ensemble (each copy has its own weights, optimiser state, data and loss: the result is the same as
training them one by one).

The main rows (CNN with and without augmentation, p4, p4m, each G-CNN with and without
augmentation) have about 5,000 parameters each (printed). Extra rows probe why a model wins or
loses: ``wide`` (twice the width, about 18,000 parameters: capacity), ``no norm`` (without
GroupNorm: optimisation), ``mean pool`` (mean instead of max over the group and over space:
pooling). Printed: test accuracy (mean +- std over seeds) for every size, the training accuracy
(fit of each copy's own digits), and at the largest size the errors between 6 and 9 (a half turn
apart) and between 2 and 5 (a mirror image apart).

Usage:
    python benchmarks/rotated_digits_curve.py                       # all rows, CUDA if present
    python benchmarks/rotated_digits_curve.py --steps 300 --batch 24 --rows cnn+aug,p4 --jobs 1
    python benchmarks/rotated_digits_curve.py --jobs 16 --json benchmarks/rotated_digits_curve.json

The default (16 rows, 6 sizes x 5 seeds x 2,000 steps of 64) took 96 s with ``--jobs 16`` on one
NVIDIA H200 (torch 2.11); one CPU core needs hours. ``benchmarks/rotated_digits_curve.json`` holds
the numbers of that run; chapter 6 loads and plots them.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.func import functional_call, stack_module_state, vmap

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from minequi import GroupConv2d, LiftingConv2d, group_pool, spatial_pool  # noqa: E402


# ----------------------------------------------------------------------------------------- data
def rotate(x, degrees):
    """Rotate images [B, 1, H, W] counter-clockwise about their centre (bilinear, zeros outside)."""
    th = torch.as_tensor(degrees, dtype=x.dtype, device=x.device).reshape(-1) * math.pi / 180
    th = th.expand(x.shape[0])                                                   # [B]
    A = torch.zeros(x.shape[0], 2, 3, dtype=x.dtype, device=x.device)           # [B, 2, 3]
    A[:, 0, 0], A[:, 0, 1], A[:, 1, 0], A[:, 1, 1] = th.cos(), -th.sin(), th.sin(), th.cos()
    grid = F.affine_grid(A, list(x.shape), align_corners=True)                 # [B, H, W, 2]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def rotated_digits():
    """Training pool (1,400 digits, each at a fixed random angle), its upright originals, and the
    rotated test set (397 digits x 4 angles)."""
    digits = load_digits()
    X = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0      # [1797, 1, 8, 8]
    X = F.pad(X, (2, 2, 2, 2))                                                  # [1797, 1, 12, 12]
    y = torch.tensor(digits.target)                                             # [1797]
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    X_up, y_train, X_test_up, y_test = X[perm[:1400]], y[perm[:1400]], X[perm[1400:]], y[perm[1400:]]
    gen = torch.Generator().manual_seed(1)
    X_train = rotate(X_up, 360 * torch.rand(len(X_up), generator=gen))         # [1400, 1, 12, 12]
    X_test = torch.cat([rotate(X_test_up, 360 * torch.rand(len(X_test_up), generator=gen))
                        for _ in range(4)])                                     # [1588, 1, 12, 12]
    return X_train, y_train, X_test, y_test.repeat(4), X_up


# --------------------------------------------------------------------------------------- models
def norm(kind, channels):
    return nn.GroupNorm(1, channels) if kind == "group" else nn.Identity()


class PlainCNN(nn.Module):
    """conv 3x3 -> max pool 2 -> norm, ReLU -> (conv 3x3 -> norm, ReLU) x 2 -> pool over space -> linear."""

    def __init__(self, c, normalization="group", pool="max"):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(1, c, 3), nn.Conv2d(c, c, 3), nn.Conv2d(c, c, 3)
        self.n1, self.n2, self.n3 = (norm(normalization, c) for _ in range(3))
        self.fc = nn.Linear(c, 10)
        self.pool = pool

    def forward(self, x):                                          # [B, 1, 12, 12]
        x = F.relu(self.n1(spatial_pool(self.c1(x), 2)))           # [B, c, 5, 5]
        x = F.relu(self.n3(self.c3(F.relu(self.n2(self.c2(x))))))  # [B, c, 1, 1]
        x = x.amax(dim=(-2, -1)) if self.pool == "max" else x.mean(dim=(-2, -1))
        return self.fc(x)                                          # [B, 10]


class GroupCNN(nn.Module):
    """The same with a lifting and two group convolutions; pooled over the group and space."""

    def __init__(self, f, group, normalization="group", pool="max"):
        super().__init__()
        self.c1 = LiftingConv2d(1, f, 3, group)
        self.c2, self.c3 = GroupConv2d(f, f, 3, group), GroupConv2d(f, f, 3, group)
        # GroupNorm(1, f) on [B, f, |G|, H, W]: one mean and variance per sample over fields, group
        # and space (invariant under the group), one scale and shift per field (shared by |G|).
        self.n1, self.n2, self.n3 = (norm(normalization, f) for _ in range(3))
        self.fc = nn.Linear(f, 10)
        self.pool = pool

    def forward(self, x):                                          # [B, 1, 12, 12]
        x = F.relu(self.n1(spatial_pool(self.c1(x), 2)))           # [B, f, |G|, 5, 5]
        x = F.relu(self.n3(self.c3(F.relu(self.n2(self.c2(x))))))  # [B, f, |G|, 1, 1]
        if self.pool == "max":
            return self.fc(group_pool(x).amax(dim=(-2, -1)))       # [B, 10]
        return self.fc(group_pool(x, "mean").mean(dim=(-2, -1)))


ROWS = {  # name: (constructor, augment)
    "cnn": (lambda: PlainCNN(16), False),
    "cnn+aug": (lambda: PlainCNN(16), True),
    "p4": (lambda: GroupCNN(8, "p4"), False),
    "p4m": (lambda: GroupCNN(6, "p4m"), False),
    "p4m+aug": (lambda: GroupCNN(6, "p4m"), True),
    "p4+aug": (lambda: GroupCNN(8, "p4"), True),
    "cnn+aug wide": (lambda: PlainCNN(32), True),
    "p4 wide": (lambda: GroupCNN(16, "p4"), False),
    "p4m wide": (lambda: GroupCNN(11, "p4m"), False),
    "p4m+aug wide": (lambda: GroupCNN(11, "p4m"), True),
    "p4+aug wide": (lambda: GroupCNN(16, "p4"), True),
    "p4 no norm": (lambda: GroupCNN(8, "p4", normalization=None), False),
    "p4m no norm": (lambda: GroupCNN(6, "p4m", normalization=None), False),
    "cnn+aug no norm": (lambda: PlainCNN(16, normalization=None), True),
    "p4 mean pool": (lambda: GroupCNN(8, "p4", pool="mean"), False),
    "p4m mean pool": (lambda: GroupCNN(6, "p4m", pool="mean"), False),
}


# ------------------------------------------------------------------------------------- training
class Ensemble:
    """Independent copies of one network (one per seed), evaluated together with torch.func.vmap."""

    def __init__(self, make, seeds, device="cpu"):
        models = []
        for s in seeds:
            torch.manual_seed(s)
            models.append(make().to(device))
        self.params, self.buffers = stack_module_state(models)                 # {name: [M, ...]}
        self.base = copy.deepcopy(models[0]).to("meta")
        self.size = len(models)

    def _one(self, params, buffers, x):
        return functional_call(self.base, (params, buffers), (x,))

    def __call__(self, x):  # x [M, B, 1, H, W] (one batch per copy) or [B, 1, H, W] (shared)
        shared = None if x.ndim == 4 else 0
        return vmap(self._one, in_dims=(0, 0, shared))(self.params, self.buffers, x)  # [M, B, 10]


def batches(subsets, steps, batch, gen):
    """[steps, M, batch] indices: copy m runs through reshuffled passes over its own subset."""
    out = []
    for subset in subsets:
        need = steps * batch
        passes = [subset[torch.randperm(len(subset), generator=gen)] for _ in range(need // len(subset) + 1)]
        out.append(torch.cat(passes)[:need].reshape(steps, batch))
    return torch.stack(out, 1)


def train(ens, X, y, subsets, steps, batch, lr, augment, seed, mean, std, on_step=None):
    """Adam with a cosine-decayed learning rate; returns the training loss of every copy [steps, M]."""
    gen = torch.Generator().manual_seed(seed)
    index = batches(subsets, steps, batch, gen).to(X.device)                    # [T, M, B]
    opt = torch.optim.Adam(ens.params.values(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)))
    losses = []
    for t in range(steps):
        xb, yb = X[index[t]], y[index[t]]                                      # [M, B, 1, H, W], [M, B]
        if augment:
            angles = (360 * torch.rand(xb.shape[0] * xb.shape[1], generator=gen)).to(X.device)
            xb = rotate(xb.flatten(0, 1), angles).reshape(xb.shape)
        logits = ens((xb - mean) / std)                                        # [M, B, 10]
        loss = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").reshape(ens.size, -1).mean(1)
        opt.zero_grad()
        loss.sum().backward()                                                  # copies do not interact
        opt.step()
        sched.step()
        losses.append(loss.detach())
        if on_step is not None:
            on_step(t + 1)
    return torch.stack(losses)                                                 # [T, M]


@torch.no_grad()
def predict(ens, X, mean, std, chunk=1024):
    return torch.cat([ens((X[i:i + chunk] - mean) / std).argmax(-1) for i in range(0, len(X), chunk)], 1)  # [M, N]


def run_row(name, sizes, seeds, steps, batch, lr, device, checkpoints=()):
    torch.manual_seed(0)
    X_train, y_train, X_test, y_test, X_up = rotated_digits()
    mean, std = X_up.mean(), X_up.std()
    X_train, y_train, X_test, y_test = (t.to(device) for t in (X_train, y_train, X_test, y_test))
    make, augment = ROWS[name]
    members = [(n, s) for n in sizes for s in seeds]
    subsets = [torch.randperm(1400, generator=torch.Generator().manual_seed(100 + s))[:n] for n, s in members]
    ens = Ensemble(make, [s for _, s in members], device)
    curve = []

    def on_step(t):
        if t in checkpoints:
            curve.append([t] + (100 * (predict(ens, X_test, mean, std) == y_test).float().mean(1)).tolist())

    t0 = time.perf_counter()
    loss = train(ens, X_train, y_train, subsets, steps, batch, lr, augment, 0, mean, std, on_step)
    secs = time.perf_counter() - t0
    pred = predict(ens, X_test, mean, std)                                     # [M, 1588]
    test = 100 * (pred == y_test).float().mean(1)
    # Errors that confuse a digit with its half turn (6, 9) or with its mirror image (2, 5), per copy.
    pairs = {}
    for a, b in ((6, 9), (2, 5)):
        pairs[f"{a}<->{b}"] = (((y_test == a) & (pred == b)) | ((y_test == b) & (pred == a))).sum(1).tolist()
    pairs["all errors"] = (pred != y_test).sum(1).tolist()
    pred_train = predict(ens, X_train, mean, std)
    fit = [100 * float((pred_train[m, sub.to(device)] == y_train[sub.to(device)]).float().mean()) for m, sub in enumerate(subsets)]
    return dict(name=name, params=sum(p.numel() for p in make().parameters()), sizes=list(sizes), seeds=list(seeds),
                steps=steps, batch=batch, lr=lr, device=str(device), seconds=round(secs, 1),
                test=[round(v, 2) for v in test.tolist()], train=[round(v, 2) for v in fit],
                final_loss=[round(v, 4) for v in loss[-20:].mean(0).tolist()], confusions=pairs,
                curve=[[round(v, 2) for v in row] for row in curve])


def table(results):
    sizes = results[0]["sizes"]
    head = f"{'model':16s} {'params':>6s} " + " ".join(f"{'n=' + str(n):>11s}" for n in sizes)
    lines = [head]
    for r in results:
        a = np.array(r["test"]).reshape(len(sizes), len(r["seeds"]))
        lines.append(f"{r['name']:16s} {r['params']:6d} " + " ".join(f"{m:5.1f} +-{s:4.1f}" for m, s in zip(a.mean(1), a.std(1))))
    lines.append("test accuracy in % on rotated test digits, mean +- std over seeds; training accuracy (fit):")
    for r in results:
        a = np.array(r["train"]).reshape(len(sizes), len(r["seeds"]))
        lines.append(f"{r['name']:16s} {'':6s} " + " ".join(f"{m:5.1f}      " for m in a.mean(1)))
    k = len(results[0]["seeds"])
    lines.append(f"test errors at n={sizes[-1]} (sum over seeds): 6<->9, 2<->5 (mirror pair), all")
    for r in results:
        c = {key: sum(v[-k:]) for key, v in r["confusions"].items()}
        lines.append(f"{r['name']:16s} {c['6<->9']:5d} {c['2<->5']:5d} {c['all errors']:5d}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows of: " + ", ".join(ROWS))
    p.add_argument("--sizes", default="100,200,400,700,1000,1400")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--checkpoints", default="25,50,100,150,200,300,500,750,1000,1500,2000")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--jobs", type=int, default=1, help="rows run in parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--json", default=None, help="write all numbers to this file")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    sizes = [int(v) for v in a.sizes.split(",")]
    seeds = [int(v) for v in a.seeds.split(",")]
    ckpt = tuple(int(v) for v in a.checkpoints.split(",") if v)
    if a.one is not None:  # child process: one row, JSON on stdout
        print(json.dumps(run_row(a.one, sizes, seeds, a.steps, a.batch, a.lr, torch.device(a.device), ckpt)))
        return
    rows = a.rows.split(",")
    for r in rows:
        if r not in ROWS:
            raise ValueError(f"unknown row {r!r}; choose from {', '.join(ROWS)}")
    print(f"{len(sizes)} sizes x {len(seeds)} seeds, {a.steps} steps of {a.batch}, Adam lr {a.lr} (cosine), "
          f"device {a.device}, torch {torch.__version__}", flush=True)
    results, running, todo = {}, [], list(rows)
    t0 = time.perf_counter()
    args = ["--sizes", a.sizes, "--seeds", a.seeds, "--steps", str(a.steps), "--batch", str(a.batch), "--lr", str(a.lr),
            "--checkpoints", a.checkpoints, "--device", a.device, "--threads", str(a.threads)]
    while todo or running:
        while todo and len(running) < a.jobs:
            r = todo.pop(0)
            proc = subprocess.Popen([sys.executable, __file__, "--one", r] + args, stdout=subprocess.PIPE, text=True)
            running.append((r, proc))
        time.sleep(0.2)
        for r, proc in list(running):
            if proc.poll() is None:
                continue
            running.remove((r, proc))
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"row {r} failed")
            results[r] = json.loads(out.strip().splitlines()[-1])
            print(f"{time.perf_counter() - t0:7.1f} s  {r} done ({results[r]['seconds']:.1f} s)", flush=True)
    results = [results[r] for r in rows]
    print(table(results))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()

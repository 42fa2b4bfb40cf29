r"""Training the interatomic potential on one process or many: ``python -m minequi.train``.

One script, two launches, the same numbers::

    python -m minequi.train --data train.extxyz --val val.extxyz --out run/
    torchrun --nproc_per_node=4 -m minequi.train --data train.extxyz --val val.extxyz --out run/

Under ``torchrun`` every process (a *rank*) reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``
from the environment and joins one process group: NCCL when the rank drives a GPU (one GPU
per process, ``torch.cuda.set_device(LOCAL_RANK)``), gloo on CPU.  Without those variables
the script runs as a single process, without a process group and without
``DistributedDataParallel`` (DDP).

Data parallelism
----------------
Every rank holds a full copy of the model.  A :class:`~torch.utils.data.distributed.DistributedSampler`
(seeded; ``set_epoch`` each epoch, so each epoch has its own permutation, the same on every rank)
deals the structures out: rank ``r`` of ``W`` takes positions ``r, r + W, r + 2W, ...`` of the
epoch's permutation, padded at the end with repeats of its first entries so that every rank gets
``ceil(n / W)`` of them.  ``--batch-size`` is **per rank**: one optimizer step consumes
``W x batch_size`` structures (the *global* batch), and step ``s`` of a ``W``-rank run sees exactly the
structures that step ``s`` of a single-process run with ``--batch-size W x batch_size`` sees.  The
padding repeats are masked out of the loss and the metrics (:func:`shard`), so no structure
counts twice.  DDP all-reduces the gradients during the backward pass and divides them by ``W``.

The loss is a global mean
-------------------------
With per-structure energy errors :math:`e_g = (\hat E_g - E_g)/n_g` (per atom) and force errors
:math:`\Delta F_{ia}`, the loss of one global batch is

.. math::
   L = w_E \frac{1}{G} \sum_g e_g^2 + w_F \frac{1}{3N} \sum_{i,a} \Delta F_{ia}^2,

where :math:`G` and :math:`N` count the structures and atoms of *all* ranks.  Rank ``r`` holds the
partial sums :math:`S^E_r = \sum_{g \in r} e_g^2` and :math:`S^F_r = \sum_{i \in r, a} \Delta F_{ia}^2`
and its own counts :math:`G_r, N_r`; one all-reduce of the two counts gives :math:`G = \sum_r G_r`
and :math:`N = \sum_r N_r` (numbers without gradient, so no gradient must flow through a
collective).  Each rank then back-propagates

.. math::
   L_r = W \Big( w_E \frac{S^E_r}{G} + w_F \frac{S^F_r}{3N} \Big),

and DDP averages: :math:`\frac1W \sum_r \nabla L_r = \nabla \big( w_E \frac{\sum_r S^E_r}{G}
+ w_F \frac{\sum_r S^F_r}{3N} \big) = \nabla L`, the full-batch gradient, whatever the split.  The
factor :math:`W` undoes DDP's division by :math:`W`.  The tempting per-rank mean,
:math:`\frac1W \sum_r S^F_r / (3 N_r)`, weights the atoms of a rank with few atoms more than those
of a rank with many: it equals :math:`L` only when every rank holds the same number of atoms,
which structures of different sizes almost never do.

Forces inside ``forward``
-------------------------
The force loss needs :math:`\partial L / \partial \theta` of :math:`F = -\partial E/\partial r`:
a double backward.  The model computes the forces *inside its forward* with
``torch.autograd.grad(..., create_graph=True)`` (the potential does so while ``training``), with
respect to the positions only, so that no parameter gradient is accumulated there.  The graph
of the forces is part of the forward's output, and the single ``loss.backward()`` that follows is
the only pass that fills ``param.grad``: exactly what DDP's hooks expect (one gradient per
parameter per step, all-reduced as it arrives).

Parameters without a gradient
-----------------------------
DDP runs with ``find_unused_parameters=False`` (no graph traversal per step).  A parameter that
takes no part in the loss then never becomes "ready", its gradient bucket is never reduced, and
DDP's complaint comes one step later and does not name the parameter unless
``TORCH_DISTRIBUTED_DEBUG=DETAIL`` is set.  Before training, every rank therefore computes the
gradient of its first batch's loss with respect to every trainable parameter
(``allow_unused=True``) and the ranks exchange the names of those that got none; if there are any,
every rank raises a ``RuntimeError`` that names them (:func:`check_parameters_used`).

Checkpoints and resuming
------------------------
Rank 0 alone writes ``OUT/checkpoint.pt`` at the end of every epoch (and every
``--checkpoint-every`` steps): model, optimizer, epoch, the position inside the epoch, the
sampler epoch, the history, and the RNG states of every rank.  It writes ``checkpoint.pt.tmp``
and renames it with ``os.replace`` (atomic on POSIX), so a crash while writing leaves the
previous checkpoint intact.  ``--resume`` restores all of it on every rank and continues at the
next step: the resumed run is bit-identical to one that was never interrupted (same world size).

Validation
----------
The validation set is sharded the same way (no shuffle); the padding repeats are masked, the
sums of absolute errors and the counts are all-reduced, and rank 0 logs the energy MAE per atom
and the force MAE per component -- the numbers a single process gets on the same set.

>>> import torch
>>> sampler = torch.utils.data.distributed.DistributedSampler(range(5), num_replicas=2, rank=1, shuffle=False)
>>> shard(sampler, 5)      # rank 1 of 2 gets positions 1 and 3, then a repeat of position 0 (masked)
([1, 3, 0], [True, True, False])
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

__all__ = [
    "Context",
    "setup_distributed",
    "shard",
    "loss_sums",
    "check_parameters_used",
    "evaluate",
    "train",
    "main",
]


# ----------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------
@dataclass
class Context:
    """Where this process stands: ``rank`` of ``world_size``, its ``device``, and whether a
    process group is up (``distributed``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    distributed: bool = False

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over the ranks, in place (no-op on one process)."""
        if self.distributed:
            dist.all_reduce(t)
        return t

    def all_gather_object(self, obj) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` on one process)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def setup_distributed(device: str = "auto") -> Context:
    """Join the process group that ``torchrun`` describes in the environment, or run alone.

    ``WORLD_SIZE > 1`` in the environment (``torchrun`` sets it, with ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR`` and ``MASTER_PORT``) starts ``torch.distributed`` with the ``env://`` method.
    ``device="auto"`` picks GPU ``LOCAL_RANK`` when CUDA is available (backend NCCL), else the CPU
    (backend gloo); ``"cpu"`` forces gloo on the CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)  # one GPU per process
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    distributed = world_size > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://",
                                rank=rank, world_size=world_size)
    return Context(rank, world_size, local_rank, dev, distributed)


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------
def load_structures(path) -> list:
    """The labelled structures of an extended-XYZ file (``ase`` is imported here, and only here)."""
    from .physics_data import read_extxyz

    structures = read_extxyz(path)
    if len(structures) == 0:
        raise ValueError(f"{path}: no structures")
    labelled = [a for a in structures
                if a.calc is not None and ("energy" in a.calc.results or "forces" in a.calc.results)]
    if not labelled:
        raise ValueError(f"{path}: no structure has an energy or force label (nothing to train on); write the "
                         f"data with minequi.physics_data.write_extxyz after a calculation")
    return structures


def make_batch(structures: list, indices, dtype: torch.dtype, device) -> dict:
    """:func:`minequi.physics_data.collate` of ``structures[indices]``, moved to ``device``."""
    from .physics_data import collate

    b = collate([structures[i] for i in indices], dtype=dtype)
    return {k: v.to(device) for k, v in b.items()}


def shard(sampler: DistributedSampler, n: int) -> tuple[list[int], list[bool]]:
    """This rank's indices for the sampler's current epoch, and which of them are real.

    ``DistributedSampler`` pads the epoch's list of ``n`` indices to a multiple of the number of
    ranks ``W`` by repeating its first entries, then gives rank ``r`` the positions
    ``r, r + W, ...``.  The ``k``-th index of rank ``r`` sits at position ``r + k W``; it is a
    padding repeat exactly when that position is ``>= n``.
    """
    indices = list(iter(sampler))
    W, r = sampler.num_replicas, sampler.rank
    real = [r + k * W < n for k in range(len(indices))]
    return indices, real


def _model_inputs(b: dict) -> tuple:
    """``(numbers, pos, cell, pbc, batch)``: the cell only when some structure is periodic."""
    periodic = bool(b["pbc"].any())
    return (b["numbers"], b["pos"], b["cell"] if periodic else None, b["pbc"] if periodic else None, b["batch"])


# ----------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------
def loss_sums(out: dict, b: dict, real: torch.Tensor, power: int = 2) -> torch.Tensor:
    r"""Per-rank sums and counts of the errors of one batch: ``[S_E, G, S_F, C_F]``.

    ``S_E`` = :math:`\sum_g |e_g|^p` over the real structures with an energy label
    (:math:`e_g = (\hat E_g - E_g)/n_g`, the error per atom), ``G`` their number;
    ``S_F`` = :math:`\sum |\Delta F_{ia}|^p` over the force components of the real atoms with a
    force label, ``C_F`` their number.  ``power=2`` gives the loss, ``power=1`` the MAE sums.
    Padding repeats (``real[g] = False``) and missing labels (NaN) count zero, but stay in the
    graph, so every parameter still gets a (zero) gradient from them.

    >>> out = {"energy": torch.tensor([1.0, 2.0]), "forces": torch.zeros(3, 3)}
    >>> b = {"energy": torch.tensor([0.0, 0.0]), "natoms": torch.tensor([1, 2]),
    ...      "forces": torch.ones(3, 3), "batch": torch.tensor([0, 1, 1])}
    >>> loss_sums(out, b, torch.tensor([True, False]))   # structure 1 is a padding repeat
    tensor([1., 1., 3., 3.])
    """
    e_ok = real & torch.isfinite(b["energy"])  # [G]
    de = (out["energy"] - torch.nan_to_num(b["energy"])) / b["natoms"].to(out["energy"].dtype)  # [G]
    de = torch.where(e_ok, de, torch.zeros_like(de))  # [G]
    f_ok = real[b["batch"]][:, None] & torch.isfinite(b["forces"])  # [N, 3]
    df = out["forces"] - torch.nan_to_num(b["forces"])  # [N, 3]
    df = torch.where(f_ok, df, torch.zeros_like(df))  # [N, 3]
    s_e = de.abs().pow(power).sum()
    s_f = df.abs().pow(power).sum()
    g = e_ok.sum().to(s_e.dtype)
    c = f_ok.sum().to(s_e.dtype)
    return torch.stack([s_e, g, s_f, c])  # [4]


def global_loss(sums: torch.Tensor, counts: torch.Tensor, world_size: int,
                energy_weight: float, forces_weight: float) -> torch.Tensor:
    r"""This rank's share :math:`L_r = W (w_E S^E_r / G + w_F S^F_r / C)` of the global-mean loss.

    ``sums = [S_E, ., S_F, .]`` from :func:`loss_sums`, ``counts = [., G, ., C]`` the same after
    an all-reduce (detached).  DDP's average :math:`\frac1W \sum_r \nabla L_r` is then the gradient of
    the global mean (see the module docstring).  A count of zero (no label of that kind) drops
    its term.
    """
    G = counts[1].detach().clamp(min=1)
    C = counts[3].detach().clamp(min=1)
    return world_size * (energy_weight * sums[0] / G + forces_weight * sums[2] / C)


# ----------------------------------------------------------------------------
# The unused-parameter check
# ----------------------------------------------------------------------------
def check_parameters_used(module: torch.nn.Module, loss: torch.Tensor, ctx: Context) -> None:
    """Raise ``RuntimeError`` on every rank if some trainable parameter gets no gradient from ``loss``.

    Computes ``torch.autograd.grad(loss, params, allow_unused=True)`` (``param.grad`` is left
    untouched) on the plain module, before DDP wraps it, and gathers the names that came back
    ``None`` from all ranks.  Zero gradients are fine: only a parameter absent from the graph is
    reported.
    """
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True, retain_graph=False)
    unused = [n for (n, _), g in zip(named, grads) if g is None]
    per_rank = ctx.all_gather_object(unused)
    names = sorted({n for u in per_rank for n in u})
    if names:
        where = "; ".join(f"rank {r}: {u}" for r, u in enumerate(per_rank) if u)
        raise RuntimeError(
            f"minequi.train: {len(names)} parameter(s) receive no gradient from the loss: {names} ({where}). "
            "DistributedDataParallel (find_unused_parameters=False) all-reduces gradients in buckets as "
            "parameters become ready; a parameter that never gets a gradient leaves its bucket unreduced, so "
            "the first step silently uses that bucket's un-averaged gradients and the next step fails. "
            "Remove the parameter, freeze it (requires_grad_(False)), or make it contribute to the loss."
        )


# ----------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------
def build_potential(species: list[int], args: argparse.Namespace) -> torch.nn.Module:
    """The default model: :class:`minequi.potential.InteratomicPotential` from the command-line options."""
    from .potential import InteratomicPotential

    return InteratomicPotential(species, cutoff=args.cutoff, irreps_hidden=args.irreps_hidden,
                                num_layers=args.num_layers, lmax=args.lmax, num_basis=args.num_basis,
                                radial_hidden=args.radial_hidden, avg_num_neighbors=args.avg_num_neighbors)


def _factory(spec: str):
    """``"package.module:function"`` -> the function (called as ``function(species, args)``)."""
    if spec == "potential":
        return build_potential
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"--model must be 'potential' or 'package.module:function', got {spec!r}")
    return getattr(importlib.import_module(module), name)


# ----------------------------------------------------------------------------
# Checkpoints and RNG
# ----------------------------------------------------------------------------
def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str, state: dict) -> None:
    """``torch.save`` to ``path + ".tmp"``, then ``os.replace``: the file at ``path`` is always whole."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ----------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------
def evaluate(module: torch.nn.Module, structures: list, ctx: Context, batch_size: int,
             dtype: torch.dtype) -> dict:
    """Energy MAE per atom and force MAE per component over ``structures``, reduced across ranks.

    Every rank evaluates its shard (a ``DistributedSampler`` without shuffle); the padding repeats
    are masked, and the absolute-error sums and counts are all-reduced in float64, so the result
    equals a single process's on the whole set.  Returns ``energy_mae`` (per atom), ``forces_mae``,
    and ``structures``/``components``, the counts that entered (each structure once).
    """
    n = len(structures)
    sampler = DistributedSampler(range(n), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=False)
    indices, real = shard(sampler, n)
    was_training = module.training
    module.eval()
    total = torch.zeros(4, dtype=torch.float64, device=ctx.device)  # [S_E, G, S_F, C]
    for s in range(0, len(indices), batch_size):
        b = make_batch(structures, indices[s:s + batch_size], dtype, ctx.device)
        out = module(*_model_inputs(b), compute_forces=True, create_graph=False)
        mask = torch.tensor(real[s:s + batch_size], device=ctx.device)  # [G]
        total += loss_sums({k: v.detach() for k, v in out.items()}, b, mask, power=1).to(torch.float64)
    module.train(was_training)
    ctx.all_reduce(total)
    return {"energy_mae": float(total[0] / total[1].clamp(min=1)),
            "forces_mae": float(total[2] / total[3].clamp(min=1)),
            "structures": int(total[1]), "components": int(total[3])}


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------
def train(args: argparse.Namespace, ctx: Context | None = None) -> dict:
    """Train as described in the module docstring; returns the final state (rank 0's history,
    the model on this rank).  ``args`` are :func:`parse_args`'s."""
    ctx = ctx or setup_distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    os.makedirs(args.out, exist_ok=True)
    log = print if ctx.rank == 0 and not args.quiet else (lambda *a, **k: None)

    structures = load_structures(args.data)
    val = load_structures(args.val) if args.val else []
    n = len(structures)
    species = sorted({int(z) for a in structures + val for z in a.numbers})  # the model's species

    # the same model on every rank: seeded construction (DDP also broadcasts rank 0's weights)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    model = _factory(args.model)(species, args).to(device=ctx.device, dtype=dtype)
    if hasattr(model, "fit_scale_shift") and args.fit_scale_shift:
        full = make_batch(structures, range(n), dtype, ctx.device)
        model.fit_scale_shift(full["numbers"], full["batch"], full["energy"], full["forces"])
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    sampler = DistributedSampler(range(n), num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=args.seed, drop_last=False)
    steps_per_epoch = math.ceil(sampler.num_samples / args.batch_size)
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    start_epoch, start_step, global_step, history, partial_loss = 0, 0, 0, [], 0.0
    if args.resume and os.path.exists(ckpt_path):
        ckpt = torch.load(ckpt_path, map_location=ctx.device, weights_only=False)
        if ckpt["world_size"] != ctx.world_size:
            log(f"resuming a {ckpt['world_size']}-rank checkpoint on {ctx.world_size} ranks: same "
                "global batches, but the summation order differs (not bit-identical)")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, start_step = ckpt["epoch"], ckpt["step_in_epoch"]
        global_step, history = ckpt["global_step"], ckpt["history"]
        if ckpt["world_size"] == ctx.world_size:
            _set_rng_state(ckpt["rng"][ctx.rank])
            partial_loss = ckpt["partial_loss"][ctx.rank]
        log(f"resumed from {ckpt_path}: epoch {start_epoch}, step {start_step} of {steps_per_epoch}")

    def checkpoint(epoch, step_in_epoch, loss_so_far):
        # every rank's RNG state and its share of the epoch's loss so far, to rank 0's file
        rng = ctx.all_gather_object(_rng_state())
        partial = ctx.all_gather_object(loss_so_far)
        if ctx.rank == 0:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": epoch, "step_in_epoch": step_in_epoch, "sampler_epoch": epoch,
                "global_step": global_step, "history": history, "rng": rng, "partial_loss": partial,
                "world_size": ctx.world_size, "args": vars(args)})

    def step_loss(net, indices, real):
        b = make_batch(structures, indices, dtype, ctx.device)
        out = net(*_model_inputs(b), compute_forces=True, create_graph=True)
        sums = loss_sums(out, b, torch.tensor(real, device=ctx.device))  # [4]
        counts = ctx.all_reduce(sums.detach().clone())  # global G and C (the sums ride along, unused)
        return global_loss(sums, counts, ctx.world_size, args.energy_weight, args.forces_weight), counts

    # the unused-parameter check, on the plain module and each rank's first batch
    if start_epoch < args.max_epochs:
        sampler.set_epoch(start_epoch)
        indices, real = shard(sampler, n)
        loss, _ = step_loss(model, indices[:args.batch_size], real[:args.batch_size])
        check_parameters_used(model, loss, ctx)

    net = model
    if ctx.distributed:
        net = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                                      find_unused_parameters=False,
                                      broadcast_buffers=False)  # the buffers are constants, equal on every rank

    for epoch in range(start_epoch, args.max_epochs):
        sampler.set_epoch(epoch)  # a new permutation each epoch, the same on every rank
        indices, real = shard(sampler, n)
        first = start_step if epoch == start_epoch else 0
        # this rank's sum of its L_r over the epoch's steps (float64, exact in a checkpoint)
        loss_sum = partial_loss if epoch == start_epoch else 0.0
        t0, seen = time.perf_counter(), 0
        for s in range(first, steps_per_epoch):
            chunk = slice(s * args.batch_size, (s + 1) * args.batch_size)
            loss, counts = step_loss(net, indices[chunk], real[chunk])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP all-reduces and averages the gradients here
            if args.save_first_grads and global_step == 0 and ctx.rank == 0:
                torch.save({k: p.grad.detach().cpu() for k, p in model.named_parameters()},
                           os.path.join(args.out, "grads_step1.pt"))
            optimizer.step()
            global_step += 1
            seen += int(counts[1])
            loss_sum += float(loss.detach())
            if args.checkpoint_every and global_step % args.checkpoint_every == 0 and s + 1 < steps_per_epoch:
                checkpoint(epoch, s + 1, loss_sum)
            if args.stop_after_step and global_step == args.stop_after_step:
                log(f"simulated crash after step {global_step}", flush=True)
                sys.stdout.flush()
                os._exit(75)  # no clean-up, as a killed process
        elapsed = time.perf_counter() - t0
        # sum_r L_r = W L for every step: one all-reduce per epoch gives the mean global loss
        epoch_loss = ctx.all_reduce(torch.tensor(loss_sum, dtype=torch.float64))
        record = {"epoch": epoch + 1, "step": global_step,
                  "loss": float(epoch_loss) / ctx.world_size / steps_per_epoch,
                  "structures_per_s": seen / elapsed if elapsed > 0 else float("nan")}
        if val:
            record.update({"val_" + k: v for k, v in evaluate(model, val, ctx, args.batch_size, dtype).items()})
        history.append(record)
        msg = f"epoch {epoch + 1:4d}/{args.max_epochs}  step {global_step:6d}  loss {record['loss']:.4e}"
        if val:
            msg += (f"  val E MAE {1000 * record['val_energy_mae']:.2f} meV/atom"
                    f"  F MAE {1000 * record['val_forces_mae']:.2f} meV/A")
        log(msg + f"  ({record['structures_per_s']:.1f} structures/s)", flush=True)
        checkpoint(epoch + 1, 0, 0.0)

    if ctx.rank == 0:
        with open(os.path.join(args.out, "history.json"), "w") as f:
            json.dump(history, f, indent=1)
        torch.save(model.state_dict(), os.path.join(args.out, "model.pt"))
    return {"model": model, "history": history, "context": ctx}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m minequi.train", description=(
        "Train an interatomic potential on energies and forces, on one process or, under torchrun, "
        "many (DistributedDataParallel; gloo on CPU, NCCL on GPU)."))
    p.add_argument("--data", required=True, help="training structures (extended XYZ with energy and forces)")
    p.add_argument("--val", default=None, help="validation structures (extended XYZ); metrics each epoch")
    p.add_argument("--out", required=True, help="output folder: checkpoint.pt, history.json, model.pt")
    p.add_argument("--batch-size", type=int, default=4,
                   help="structures per rank per step; the global batch is batch-size x world size")
    p.add_argument("--max-epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: leave as is)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--energy-weight", type=float, default=1.0)
    p.add_argument("--forces-weight", type=float, default=1.0)
    p.add_argument("--model", default="potential",
                   help="'potential' (InteratomicPotential) or 'package.module:function' called as function(species, args)")
    p.add_argument("--cutoff", type=float, default=4.0)
    p.add_argument("--irreps-hidden", default="16x0e+8x1o+4x2e")
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--lmax", type=int, default=2)
    p.add_argument("--num-basis", type=int, default=8)
    p.add_argument("--radial-hidden", type=int, default=16)
    p.add_argument("--avg-num-neighbors", type=float, default=10.0)
    p.add_argument("--no-fit-scale-shift", dest="fit_scale_shift", action="store_false",
                   help="keep the model's energy shift and scale instead of fitting them to the training data")
    p.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every this many steps (0: epochs only)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    p.add_argument("--stop-after-step", type=int, default=0, help="testing: exit abruptly after this global step")
    p.add_argument("--save-first-grads", action="store_true",
                   help="testing: rank 0 saves the averaged gradients of the first step to OUT/grads_step1.pt")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.max_epochs < 0:
        p.error("--batch-size must be >= 1 and --max-epochs >= 0")
    return args


def main(argv=None) -> None:
    """Train from the command line: ``python -m minequi.train --data FILE ...`` (one process) or
    ``torchrun --nproc_per_node=N -m minequi.train --data FILE ...`` (N processes); ``argv``
    defaults to ``sys.argv[1:]``.  See the module docstring and ``--help`` for the options."""
    args = parse_args(argv)
    ctx = setup_distributed(args.device)
    try:
        train(args, ctx)
    finally:
        if ctx.distributed:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""Data parallelism under ``torchrun`` (gloo on CPU, NCCL on GPU), shared by the training and the search."""
from __future__ import annotations

import os
from typing import Iterable

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), size) if size > 1 else (0, 1)


def average_gradients(params: Iterable[torch.nn.Parameter], size: int) -> None:
    """Each gradient replaced by its mean over the ranks, in one all-reduce of the flattened gradients
    (a parameter without a gradient has none on every rank: the ranks run the same cells)."""
    grads = [p.grad for p in params if p.grad is not None]
    if size < 2 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(size)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def sum_over_ranks(values: dict[str, float], size: int) -> dict[str, float]:
    """Per-rank sums (losses, counts) summed over the ranks."""
    if size < 2:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) for k, v in zip(keys, t.tolist())}

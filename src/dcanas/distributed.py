"""Data parallelism under ``torchrun`` (gloo on CPU, NCCL on GPU), shared by the training and the search."""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Iterable

import torch
import torch.distributed as dist

from .errors import UserError

TIMEOUT_ENV = "DCANAS_DIST_TIMEOUT_S"  # set by --dist-timeout
DEFAULT_TIMEOUT_S = 300.0  # how long a rank waits for a peer in one collective (gloo's own default: 30 min)


def timeout_s() -> float:
    """The wait for a peer, from --dist-timeout (through the environment, which torchrun's ranks share)."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        value = -1.0
    if not 0 < value < 1e7:
        raise UserError(f"{TIMEOUT_ENV}={text!r}: give the seconds a rank waits for a peer (e.g. 300)")
    return value


def world() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=timedelta(seconds=timeout_s()))
    return (dist.get_rank(), size) if size > 1 else (0, 1)


def _all_reduce(t: torch.Tensor) -> None:
    """``dist.all_reduce``, and a peer that stopped answering (frozen, killed, out of memory) as one line."""
    try:
        dist.all_reduce(t)
    except (RuntimeError, dist.DistError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"rank {dist.get_rank()}: a peer process stopped answering for {timeout_s():.0f} s ({first}); this rank "
                        f"stops too: look at the other ranks' output; --dist-timeout sets the wait") from None


def average_gradients(params: Iterable[torch.nn.Parameter], size: int) -> None:
    """Each gradient replaced by its mean over the ranks, in one all-reduce of the flattened gradients
    (a parameter without a gradient has none on every rank: the ranks run the same cells)."""
    grads = [p.grad for p in params if p.grad is not None]
    if size < 2 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    _all_reduce(flat)
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
    _all_reduce(t)
    return {k: float(v) for k, v in zip(keys, t.tolist())}

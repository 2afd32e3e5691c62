"""What the latency model measures on a device: each candidate op at every distinct position of the
evaluation network, the fixed parts (stem, cell preprocessing, head), and whole random networks for
calibration; each exported alone in the device's format."""
from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from typing import Callable

import torch
import torch.nn as nn

from ..nets.build import build_network
from ..nets.config import NetConfig
from ..nets.genotype import Genotype, random_genotype
from ..nets.ops import build_op
from ..nets.spaces import SPACES
from ..costs.latency import Instance

Part = tuple[str, Callable[[], nn.Module], tuple[int, ...]]  # (key, module factory, input shape)


def op_positions(space: str, cfg: NetConfig, op_names: tuple[str, ...]) -> list[Instance]:
    """Every distinct (op, C_in, C_out, stride, size) a derived network of the space can contain."""
    usable = [op_names[k] for k in SPACES[space].derivable(op_names) if op_names[k] != "none"]
    shapes = [shape for cells in SPACES[space].edge_shapes(cfg, 4).values() for cell in cells for shape in cell]
    return sorted({(op, *shape) for shape in shapes for op in usable})


def instance_module(inst: Instance) -> nn.Module:
    op, C_in, C_out, stride, _ = inst
    return build_op(op, C_in, C_out, stride).eval()


def instance_shape(inst: Instance) -> tuple[int, ...]:
    """The input an op instance receives: batch 1, C_in channels, its position's size."""
    return (1, inst[1], inst[4], inst[4])


def fixed_parts(space: str, cfg: NetConfig) -> list[Part]:
    """The parts of the evaluation network no genotype changes, as they are built, with the input shape
    each receives (taken from a forward pass with hooks); one entry per occurrence."""
    net = build_network(random_genotype(space, random.Random(0)), replace(cfg, auxiliary=False)).eval()
    watched = net.fixed_parts()
    shapes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp: shapes.append(tuple(inp[0].shape))) for _, m, _ in watched]
    try:
        with torch.no_grad():
            net(torch.zeros(1, cfg.in_channels, cfg.input_size, cfg.input_size))
    finally:
        for h in hooks:
            h.remove()
    parts: list[Part] = []
    for (kind, _, module), shape in zip(watched, shapes):
        desc = "-".join(type(m).__name__ for m in module.modules() if not list(m.children()))
        digest = hashlib.sha256((desc + repr(module)).encode()).hexdigest()[:8]  # stable across processes: resume
        key = f"{kind}:{'x'.join(str(d) for d in shape)}:{digest}"
        parts.append((key, lambda module=module: module, shape))
    return parts


class Probe(nn.Module):
    """The cheapest model of a given input shape (one add): what the runtime costs per call, whatever the
    model. Subtracted from each op measured alone, since in a network that cost is paid once."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1.0


def probe_key(shape: tuple[int, ...]) -> str:
    return "probe:" + "x".join(str(d) for d in shape)


def reference_genotype(space: str) -> Genotype:
    """The network every measurement chunk times beside its models (``build.REFERENCE``): one fixed random
    genotype of the space, the same in every build and every release."""
    return calibration_genotypes(space, 1, seed=20261130)[0]


def calibration_genotypes(space: str, n: int, seed: int) -> list[Genotype]:
    """``n`` distinct random genotypes (NB201: none excluded, as the derivation never needs a dead branch)."""
    rng, out, seen = random.Random(seed), [], set()
    while len(out) < n:
        g = random_genotype(space, rng)
        text = repr(g.to_json())
        if text in seen or "none" in text:  # DARTS genotypes never hold none
            continue
        seen.add(text)
        out.append(g)
    return out

"""What a search learned, read from its architecture weights: each edge's op distribution (over the ops
the derivation can pick, the distribution k_s and the derivations use), its entropy relative to uniform,
the margin between the chosen op and the runner-up, and whether the weights separated at all.

A search whose weights end near uniform chose its network by the budget and the fill rule, not by the
data; the summary line says so (``separation_note``)."""
from __future__ import annotations

import math
from statistics import median
from typing import Mapping, Optional, Sequence

import torch

from .derive import derivable

# An edge has separated when its distribution's entropy is below this share of uniform's. Uniform over 7 ops
# is 1.0; one op at 0.30 and the rest equal is 0.95; at 0.5, 0.83. The search has separated when at least
# half its edges have (the median edge).
SEPARATED_ENTROPY = 0.95


def edge_probs(space: str, alpha: torch.Tensor, op_names: Sequence[str]) -> torch.Tensor:
    """Per edge, softmax of alpha over the derivable ops (DARTS: every op but ``none``): edges x usable ops."""
    return torch.softmax(alpha.detach().double().cpu()[:, derivable(space, op_names)], dim=-1)


def edge_entropy(p: torch.Tensor) -> list[float]:
    """Each edge's entropy as a share of the uniform distribution's (1: uniform, 0: one op)."""
    h = -(p * p.clamp_min(1e-300).log()).sum(-1)
    return [round(float(v), 4) for v in h / math.log(p.shape[-1])]


def edge_margin(p: torch.Tensor) -> list[float]:
    """Each edge's probability of its most probable op minus its runner-up's."""
    top = p.topk(2, dim=-1).values
    return [round(float(v), 4) for v in top[:, 0] - top[:, 1]]


def alpha_record(space: str, alphas: Mapping[str, torch.Tensor], op_names: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """Per cell type, the entropy share and margin of every edge (what the report plots over the epochs)."""
    out = {}
    for kind, a in alphas.items():
        p = edge_probs(space, a, op_names)
        out[kind] = {"entropy": edge_entropy(p), "margin": edge_margin(p)}
    return out


def separated(record: Mapping[str, Mapping[str, list[float]]]) -> bool:
    """Whether the median edge (over every cell type) ended below ``SEPARATED_ENTROPY`` of uniform."""
    return median([h for r in record.values() for h in r["entropy"]]) < SEPARATED_ENTROPY


def separation_note(record: Mapping[str, Mapping[str, list[float]]], chooser: Optional[str] = None) -> str:
    """One line for the summary: how far the weights moved from uniform, and the warning when they did not; where the
    derivation reads no weights, ``chooser`` says what picked the network instead."""
    h = median([v for r in record.values() for v in r["entropy"]])
    m = median([v for r in record.values() for v in r["margin"]])
    text = f"median edge entropy {h:.3f} of uniform, median margin chosen - runner-up {m:.3f}"
    if chooser:
        return f"{text}; not read by the derivation: {chooser}"
    if separated(record):
        return text
    return f"the architecture weights did not separate ({text}): the network was chosen by the budget, not learned from the data"


def gradient_shares(norms: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Over a list of steps' gradient norms (``loss`` and one per budget term), each part's share of their sum,
    averaged over the steps: how much of the push on alpha came from the data and how much from each budget."""
    shares: dict[str, float] = {}
    for n in norms:
        total = sum(n.values())
        for k, v in n.items():
            shares[k] = shares.get(k, 0.0) + (v / total if total > 0 else 0.0) / len(norms)
    return {k: round(v, 4) for k, v in shares.items()}

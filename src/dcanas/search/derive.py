"""Derivation: a pure function alphas -> Genotype (paper Algorithm 1, last line; DARTS' rule)."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ..nets.genotype import DARTS_INPUTS, EDGES_PER_NODE, DartsGenotype, Genotype, NB201Genotype, cell_edges


def derive(space: str, alphas: Mapping[str, torch.Tensor], op_names: Sequence[str], nodes: int) -> Genotype:
    """DARTS: per intermediate node keep the two incoming edges with the largest non-``none``
    softmax weight, each with its arg-max non-``none`` op.  NB201: arg-max per edge."""
    if space == "nb201":
        w = torch.softmax(alphas["normal"].float(), dim=-1)
        edges = cell_edges(1, nodes)
        best = w.argmax(dim=-1).tolist()
        return NB201Genotype(tuple(tuple((op_names[best[edges.index((i, j))]], i) for i in range(j))
                                   for j in range(1, nodes + 1)))
    none = op_names.index("none") if "none" in op_names else None
    cells = {}
    for kind in ("normal", "reduce"):
        w = torch.softmax(alphas[kind].float(), dim=-1).clone()
        if none is not None:
            w[:, none] = -1.0
        edges = cell_edges(DARTS_INPUTS, nodes)
        chosen = []
        for j in range(DARTS_INPUTS, nodes + DARTS_INPUTS):
            rows = [(edges.index((i, j)), i) for i in range(j)]
            ranked = sorted(rows, key=lambda r: (-float(w[r[0]].max()), r[1]))[:EDGES_PER_NODE]
            for row, i in sorted(ranked, key=lambda r: r[1]):
                chosen.append((op_names[int(w[row].argmax())], i))
        cells[kind] = tuple(chosen)
    concat = tuple(range(DARTS_INPUTS, nodes + DARTS_INPUTS))
    return DartsGenotype(cells["normal"], concat, cells["reduce"], concat)

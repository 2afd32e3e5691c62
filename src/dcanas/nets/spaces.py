"""One record per search space: its ops, what the derivation can pick, how a cell's edges are kept, the
shapes of its op instances in an evaluation network, the fixed part of that network, and how a genotype is
made from chosen edges. The search, the derivations, the cost sources and the latency model read a space
from here instead of testing its name.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import UserError
from .config import NetConfig
from .cost import Cost, darts_edge_shape, darts_fixed_cost, nb201_fixed_cost
from .darts import darts_layout, genotype_layout
from .genotype import DARTS_INPUTS, DartsGenotype, Genotype, NB201Genotype, cell_edges, random_genotype
from .nb201 import nb201_layout
from .ops import DARTS_OPS, NB201_OPS

Shape = tuple[int, int, int, int]  # (C_in, C_out, stride, input size) of one op instance
Pick = tuple[str, int, int]        # (op, source node, target node) of a kept edge


@dataclass(frozen=True)
class Space:
    name: str
    ops: tuple[str, ...]               # the search ops, in alpha order
    never_derived: tuple[str, ...]     # ops with an alpha that a derived cell never keeps (DARTS: none)
    inputs: int                        # a cell's input nodes (DARTS: c_{k-2} and c_{k-1}; NB201: one)
    cell_kinds: tuple[str, ...]        # cell types with their own alphas
    every_edge: bool                   # True: every edge is kept (NB201); False: 2 incoming edges per node (DARTS)
    fixed_nodes: int | None            # a cell's intermediate nodes when the space fixes them (NB201: 3)
    auxiliary: bool                    # the evaluation network can carry DARTS' auxiliary head
    _shapes: Callable[[NetConfig, int], dict[str, list[list[Shape]]]]
    _fixed: Callable[[NetConfig, int], Cost]
    _genotype: Callable[[dict[str, list[Pick]], int], Genotype]
    _cell_kind: Callable[[Genotype, int, NetConfig], str]

    def nodes(self, requested: int) -> int:
        """A cell's intermediate nodes for a requested count."""
        return self.fixed_nodes or requested

    def edges(self, nodes: int) -> list[tuple[int, int]]:
        return cell_edges(self.inputs, nodes)

    def derivable(self, op_names: Sequence[str]) -> list[int]:
        """Indices of the ops the derivation can pick."""
        return [k for k, n in enumerate(op_names) if n not in self.never_derived]

    def edge_shapes(self, cfg: NetConfig, nodes: int) -> dict[str, list[list[Shape]]]:
        """Per cell kind, per cell of that kind in the evaluation network, per edge (``edges`` order): the op's shape."""
        return self._shapes(cfg, nodes)

    def fixed_cost(self, cfg: NetConfig, nodes: int) -> Cost:
        """Stem, preprocessing and head of the evaluation network (everything outside the searched edges)."""
        return self._fixed(cfg, nodes)

    def genotype(self, picks: dict[str, list[Pick]], nodes: int) -> Genotype:
        """The genotype of the kept edges, per cell kind."""
        return self._genotype(picks, nodes)

    def cell_kind(self, genotype: Genotype, cell: int, cfg: NetConfig) -> str:
        """The kind of cell ``cell`` of ``genotype``'s evaluation network, as the per-op profile names it."""
        return self._cell_kind(genotype, cell, cfg)

    def random(self, rng: random.Random, nodes: int = 4) -> Genotype:
        return random_genotype(self.name, rng, nodes)


def _darts_shapes(cfg: NetConfig, nodes: int) -> dict[str, list[list[Shape]]]:
    edges = cell_edges(DARTS_INPUTS, nodes)
    slots = darts_layout(cfg, nodes)
    return {kind: [[darts_edge_shape(s, i) for i, _ in edges] for s in slots if s.reduction == red]
            for kind, red in (("normal", False), ("reduce", True))}


def _nb201_shapes(cfg: NetConfig, nodes: int) -> dict[str, list[list[Shape]]]:
    n = len(cell_edges(1, nodes))
    return {"normal": [[(s.C_out, s.C_out, 1, s.size)] * n for s in nb201_layout(cfg) if not s.reduction]}


def _darts_genotype(picks: dict[str, list[Pick]], nodes: int) -> Genotype:
    cells = {kind: tuple((op, i) for op, i, _ in sorted(picks[kind], key=lambda p: (p[2], p[1]))) for kind in ("normal", "reduce")}
    concat = tuple(range(DARTS_INPUTS, nodes + DARTS_INPUTS))
    return DartsGenotype(cells["normal"], concat, cells["reduce"], concat)


def _nb201_genotype(picks: dict[str, list[Pick]], nodes: int) -> Genotype:
    chosen = {(i, j): op for op, i, j in picks["normal"]}
    return NB201Genotype(tuple(tuple((chosen[(i, j)], i) for i in range(j)) for j in range(1, nodes + 1)))


SPACES: dict[str, Space] = {
    "darts": Space("darts", DARTS_OPS, ("none",), DARTS_INPUTS, ("normal", "reduce"), every_edge=False, fixed_nodes=None,
                   auxiliary=True, _shapes=_darts_shapes, _fixed=lambda cfg, nodes: darts_fixed_cost(cfg, darts_layout(cfg, nodes), nodes),
                   _genotype=_darts_genotype,
                   _cell_kind=lambda g, cell, cfg: "reduce" if genotype_layout(g, cfg)[cell].reduction else "normal"),
    "nb201": Space("nb201", NB201_OPS, (), 1, ("normal",), every_edge=True, fixed_nodes=3, auxiliary=False,
                   _shapes=_nb201_shapes, _fixed=lambda cfg, nodes: nb201_fixed_cost(cfg), _genotype=_nb201_genotype,
                   _cell_kind=lambda g, cell, cfg: "cell"),
}


def space(name: str) -> Space:
    if name not in SPACES:
        raise UserError(f"unknown search space {name!r}; valid: {', '.join(SPACES)}")
    return SPACES[name]

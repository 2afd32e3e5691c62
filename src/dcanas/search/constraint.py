"""The resource constraint of DCA-NAS: expected cost k_s(alpha) (eq. 3), the Lagrangian term
(eq. 4) and the projected gradient-ascent update of lambda (Algorithm 1).

DARTS reading (DESIGN.md): the derived cell keeps two of the j edges entering node j, so each
edge's b(o) is weighted by 2/j; at uniform alpha k_s is then the mean cost of a derived network.
(Summing all 14 edges literally counts 1.75x the 8 edges a cell keeps; with K' = K_d the search
then collapsed to the cheapest cell the space has.)  NB201 keeps every edge: no weighting.

k_s is in the units of the EVALUATION network: b(o) is the analytic cost of op o at each cell
position of the evaluation network (its channels and resolution), and the fixed cost of stem,
preprocessing and classifier is added, so k_s compares directly with the device budget.
Derived cells count through the alpha of the cell type they copy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from ..nets.config import NetConfig
from ..nets.cost import darts_edge_cost, darts_fixed_cost, network_cost, nb201_fixed_cost, op_cost
from ..nets.darts import darts_layout
from ..nets.genotype import DARTS_INPUTS, EDGES_PER_NODE, Genotype, cell_edges
from ..nets.nb201 import nb201_layout
from .derive import derivable


class CostModel:
    """b(o) tables of one (space, evaluation network, metric); cheap to evaluate and differentiable."""

    def __init__(self, space: str, eval_cfg: NetConfig, op_names: Sequence[str], nodes: int, metric: str) -> None:
        self.space, self.eval_cfg, self.op_names, self.nodes, self.metric = space, eval_cfg, tuple(op_names), nodes, metric
        inputs = DARTS_INPUTS if space == "darts" else 1
        self.edges = cell_edges(inputs, nodes)
        self.usable = derivable(space, op_names)
        K = len(op_names)
        self.U: dict[str, torch.Tensor] = {}  # exact cost of op k on edge e, summed over the cells of a type
        if space == "darts":
            slots = darts_layout(eval_cfg, nodes)
            self.fixed = darts_fixed_cost(eval_cfg, slots, nodes).get(metric)
            for kind, red in (("normal", False), ("reduce", True)):
                U = torch.zeros(len(self.edges), K, dtype=torch.float64)
                for s in (s for s in slots if s.reduction == red):
                    for e, (i, _) in enumerate(self.edges):
                        for k, op in enumerate(op_names):
                            U[e, k] += darts_edge_cost(s, op, i).get(metric)
                self.U[kind] = U
            # b(o) of eq. 3: the derived cell keeps 2 of node j's j incoming edges, so each edge counts 2/j
            keep = torch.tensor([EDGES_PER_NODE / j for _, j in self.edges], dtype=torch.float64).unsqueeze(1)
            self.B = {kind: U * keep for kind, U in self.U.items()}
        else:
            self.fixed = nb201_fixed_cost(eval_cfg).get(metric)
            U = torch.zeros(len(self.edges), K, dtype=torch.float64)
            for s in (s for s in nb201_layout(eval_cfg) if not s.reduction):
                for k, op in enumerate(op_names):
                    U[:, k] += op_cost(op, s.C_out, s.C_out, 1, s.size).get(metric)
            self.U = {"normal": U}
            self.B = dict(self.U)  # NB201 keeps every edge

    def expected(self, alphas: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 3: k_s(alpha) = fixed + sum over cells, edges, ops of softmax(alpha)_o * b(o), the softmax
        taken over the ops the derivation can pick (DARTS: not ``none``, which costs 0 but is never
        derived), so that k_s is the expected cost of a derived network."""
        total = torch.tensor(float(self.fixed), dtype=torch.float64)
        for kind, B in self.B.items():
            a = alphas[kind].double()[:, self.usable]
            total = total + (torch.softmax(a, dim=-1) * B[:, self.usable].to(a.device)).sum()
        return total

    def edge_costs(self) -> dict[str, torch.Tensor]:
        """Per cell type, the exact cost of op k on edge e summed over every cell of that type (no 2/j
        weighting): a derived network costs ``fixed`` plus these over its chosen (edge, op) pairs."""
        return self.U

    def derived(self, genotype: Genotype) -> int:
        """The real cost of the derived evaluation network (the analytic counter)."""
        return network_cost(genotype, self.eval_cfg).get(self.metric)

    def feasible_range(self) -> tuple[int, int]:
        """Cost of the cheapest and of the most expensive network the space can derive."""
        lo = hi = float(self.fixed)
        for U in self.edge_costs().values():
            Bu = U[:, self.usable]
            if self.space == "nb201":
                lo += float(Bu.min(dim=1).values.sum())
                hi += float(Bu.max(dim=1).values.sum())
                continue
            for j in range(DARTS_INPUTS, DARTS_INPUTS + self.nodes):
                rows = [e for e, (_, t) in enumerate(self.edges) if t == j]
                mins = sorted(float(Bu[r].min()) for r in rows)
                maxs = sorted((float(Bu[r].max()) for r in rows), reverse=True)
                lo += sum(mins[:EDGES_PER_NODE])
                hi += sum(maxs[:EDGES_PER_NODE])
        return int(round(lo)), int(round(hi))


@dataclass(frozen=True)
class ConstraintDetails:
    k_s: float
    target: float
    ratio: float
    lam: float


def constraint_term(k_s: torch.Tensor, target: float, lam: float) -> tuple[torch.Tensor, ConstraintDetails]:
    """Eq. 4 with the budget normalised: lambda * (k_s / K' - 1).  Returns (loss term, details)."""
    violation = k_s / target - 1.0
    value = float(k_s.detach())
    return (lam * violation).float(), ConstraintDetails(value, float(target), value / target, lam)


def update_lambda(lam: float, k_s: float, target: float, lr: float) -> float:
    """Projected gradient ascent on lambda (Algorithm 1, "Update lambda"): lambda >= 0."""
    return max(0.0, lam + lr * (k_s / target - 1.0))

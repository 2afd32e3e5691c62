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

Metrics: params, flops, model_size_kb (the exported file of ``size_format`` predicted by
``costs/size.py``: linear in params and the graph counts, so additive over edges too), and
latency_ms (a latency model's per-instance times, ``costs/latency.py``: additive by construction; with a structure
model, its node counts linearised into the (edge, op) costs and the rest of their expectation added to k_s by the
source's ``extra``: ``costs/sources.PredictedLatency``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

import torch

from ..errors import UserError
from ..nets.config import NetConfig
from ..nets.spaces import SPACES
from ..costs.metrics import round_inward, searchable
from ..costs.sources import SourceInputs, make_source
from ..nets.genotype import DARTS_INPUTS, EDGES_PER_NODE, Genotype

if TYPE_CHECKING:
    from ..costs.latency import LatencyModel


EDGE_WEIGHTS = ("2/j", "literal")  # SearchOptions.edge_weight


class CostModel:
    """b(o) tables of one (space, evaluation network, metric); cheap to evaluate and differentiable. The
    metric's cost source (``costs/sources.py``) gives each op instance's cost and the fixed part."""

    def __init__(self, space: str, eval_cfg: NetConfig, op_names: Sequence[str], nodes: int, metric: str,
                 size_format: str = "tflite", latency: Optional["LatencyModel"] = None, edge_weight: str = "2/j") -> None:
        if metric not in searchable():
            raise UserError(f"unknown cost metric {metric!r}; valid: {', '.join(searchable())}")
        self.space, self.eval_cfg, self.op_names, self.nodes, self.metric = space, eval_cfg, tuple(op_names), nodes, metric
        self.size_format, self.latency = size_format, latency
        if edge_weight not in EDGE_WEIGHTS:
            raise UserError(f"unknown edge weight {edge_weight!r} for eq. 3; valid: {', '.join(EDGE_WEIGHTS)}")
        self.edge_weight = edge_weight
        self.source = make_source(metric, space, eval_cfg, nodes, SourceInputs(size_format, latency))
        self.fixed = self.source.fixed()

        sp = SPACES[space]
        self.edges = sp.edges(nodes)
        self.usable = sp.derivable(op_names)
        self.U: dict[str, torch.Tensor] = {}  # exact cost of op k on edge e, summed over the cells of a type
        for kind, cells in sp.edge_shapes(eval_cfg, nodes).items():
            U = torch.zeros(len(self.edges), len(op_names), dtype=torch.float64)
            for shapes in cells:
                for e, shape in enumerate(shapes):
                    for k, op in enumerate(op_names):
                        U[e, k] += self.source.instance(op, *shape)
            self.U[kind] = U
        terms = getattr(self.source, "edge_terms", None)
        counted = terms(self.op_names) if terms is not None else None  # a latency structure model's counted part, linearised
        for kind, T in (counted or {}).items():
            self.U[kind] = self.U[kind] + T
        # b(o) of eq. 3: a derived DARTS cell keeps 2 of node j's j incoming edges, so each edge counts 2/j; "literal"
        # sums every edge of the supernet at weight 1, as eq. 3 is written (the ablation's other arm); NB201 keeps every edge
        keep = torch.tensor([1.0 if sp.every_edge or edge_weight == "literal" else EDGES_PER_NODE / j for _, j in self.edges],
                            dtype=torch.float64).unsqueeze(1)
        self.B = {kind: U * keep for kind, U in self.U.items()}

    def expected(self, alphas: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 3: k_s(alpha) = fixed + sum over cells, edges, ops of softmax(alpha)_o * b(o), the softmax
        taken over the ops the derivation can pick (DARTS: not ``none``, which costs 0 but is never
        derived), so that k_s is the expected cost of a derived network."""
        total = torch.tensor(float(self.fixed), dtype=torch.float64)
        probs = {}
        for kind, B in self.B.items():
            a = alphas[kind].double()[:, self.usable]
            p = torch.softmax(a, dim=-1)
            total = total + (p * B[:, self.usable].to(a.device)).sum()
            probs[kind] = torch.zeros(p.shape[0], len(self.op_names), dtype=p.dtype, device=p.device).index_copy(
                1, torch.tensor(self.usable, device=p.device), p)
        extra = getattr(self.source, "extra", None)
        counted = extra(probs, self.op_names) if extra is not None else None  # a latency model's non-additive part
        return total if counted is None else total + counted.to(total.device)

    def edge_costs(self) -> dict[str, torch.Tensor]:
        """Per cell type, the exact cost of op k on edge e summed over every cell of that type (no 2/j
        weighting): a derived network costs ``fixed`` plus these over its chosen (edge, op) pairs."""
        return self.U

    def derived(self, genotype: Genotype) -> float:
        """The cost of the derived evaluation network (counted, or predicted by the metric's model)."""
        return self.source.network(genotype)

    def feasible_range(self) -> tuple[float, float]:
        """Cost of the cheapest and of the most expensive network the space can derive."""
        lo = hi = float(self.fixed)
        for U in self.edge_costs().values():
            Bu = U[:, self.usable]
            if SPACES[self.space].every_edge:
                lo += float(Bu.min(dim=1).values.sum())
                hi += float(Bu.max(dim=1).values.sum())
                continue
            for j in range(DARTS_INPUTS, DARTS_INPUTS + self.nodes):
                rows = [e for e, (_, t) in enumerate(self.edges) if t == j]
                mins = sorted(float(Bu[r].min()) for r in rows)
                maxs = sorted((float(Bu[r].max()) for r in rows), reverse=True)
                lo += sum(mins[:EDGES_PER_NODE])
                hi += sum(maxs[:EDGES_PER_NODE])
        return round_inward(self.metric, lo, hi)  # a reported cheapest cost is one a genotype meets


@dataclass(frozen=True)
class Constraints:
    """Every budget one search obeys, built once (``search.config.constraints``) and passed down: per metric its
    cost model (eq. 3), its device budget K_d and its target in eq. 4 (the primary metric's search budget K' from the
    LUG; K_d for the others). The derivations take the cost tables, the fixed parts and K_d from here."""

    primary: str
    models: dict[str, CostModel]
    K_d: dict[str, float]
    K_prime: dict[str, float]

    def edge_costs(self) -> dict[str, dict[str, torch.Tensor]]:
        return {m: c.edge_costs() for m, c in self.models.items()}

    def fixed(self) -> dict[str, float]:
        return {m: c.fixed for m, c in self.models.items()}

    def derived(self, genotype: Genotype) -> dict[str, float]:
        return {m: c.derived(genotype) for m, c in self.models.items()}

    def within(self, genotype: Genotype) -> bool:
        """The derived network meets every device budget."""
        return all(c.derived(genotype) <= self.K_d[m] for m, c in self.models.items())


def violation(k_s, target: float):
    """Eq. 4's constraint, normalised by the budget: k_s / K' - 1 (> 0 over the budget). The
    Lagrangian adds lambda times this to the validation loss; lambda ascends along it."""
    return k_s / target - 1.0


def add_constraint_gradients(alphas: Sequence[torch.Tensor], violations: Mapping[str, torch.Tensor],
                             lams: Mapping[str, float], adaptive: bool) -> tuple[dict[str, float], dict[str, float]]:
    """Eq. 4's term lambda * (k_s / K' - 1), summed over the budgets, added to the alpha gradients that
    the validation loss's backward left in ``.grad`` (the k_s graph is tiny, so this costs no second
    pass through the supernet). ``adaptive``: each term's gradient is first rescaled to the norm of the
    validation-loss gradient, so lambda = 1 weighs the budget as much as the loss whatever the units
    and magnitudes of k_s, and lambda's step is a fraction of that balance per unit of violation.
    Returns each term's scale (1 when not adaptive) and the norms of what each part added to the alpha
    gradient (``loss``, then one per budget: lambda x scale x |grad|), from which the report takes the
    budget's share of the push on alpha."""
    def norm(grads) -> float:
        return sum(float((g.double() ** 2).sum()) for g in grads if g is not None) ** 0.5

    g_loss = norm(a.grad for a in alphas)
    scales, norms = {}, {"loss": g_loss}
    for m, v in violations.items():
        grads = torch.autograd.grad(v, list(alphas), allow_unused=True)
        g_norm = norm(grads)
        scales[m] = g_loss / g_norm if adaptive and g_norm > 0 else 1.0
        norms[m] = lams[m] * scales[m] * g_norm
        for a, g in zip(alphas, grads):
            if g is None:
                continue
            step = (lams[m] * scales[m] * g).to(a.dtype)
            a.grad = step if a.grad is None else a.grad + step
    return scales, norms


def update_lambda(lam: float, k_s: float, target: float, lr: float) -> float:
    """Projected gradient ascent on lambda (Algorithm 1, "Update lambda"): lambda >= 0."""
    return max(0.0, lam + lr * violation(k_s, target))

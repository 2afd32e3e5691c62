"""Derivations, both pure functions of alphas: the paper's arg-max rule (Algorithm 1, last line;
DARTS' rule) and the budget-aware rule (the most probable genotype within every budget, exact)."""
from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from ..costs.metrics import metric_round
from ..nets.spaces import SPACES
from ..nets.genotype import DARTS_INPUTS, EDGES_PER_NODE, DartsGenotype, Genotype, NB201Genotype, cell_edges, darts_edge_node


def derive(space: str, alphas: Mapping[str, torch.Tensor], op_names: Sequence[str], nodes: int) -> Genotype:
    """DARTS: per intermediate node keep the two incoming edges with the largest non-``none``
    softmax weight, each with its arg-max non-``none`` op.  NB201: arg-max per edge, and where that cell is not
    live (``NB201Genotype.live``: it outputs zeros, or an op's output never reaches the cell's output) the most
    probable live cell instead; the paper's rule does not say, DARTS' cells are live by construction."""
    if SPACES[space].every_edge:
        lp = torch.log_softmax(alphas["normal"].double(), dim=-1)
        edges = cell_edges(1, nodes)
        best = lp.argmax(dim=-1).tolist()
        if "none" in op_names:  # the most probable live cell: the arg-max where it is one
            none = op_names.index("none")
            alt = [max((k for k in range(lp.shape[1]) if k != none), key=lambda k: float(lp[e, k])) for e in range(len(edges))]

            def pick(support: frozenset[int]) -> list[int]:
                return [alt[e] if e in support else none for e in range(len(edges))]

            best = max((pick(S) for S in _live_supports(nodes)), key=lambda ks: sum(float(lp[e, k]) for e, k in enumerate(ks)))
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


def _live_supports(nodes: int) -> list[frozenset[int]]:
    """The edge rows (``cell_edges`` order) that hold an op other than ``none`` in a live NB201 cell: every non-empty
    union of input-output paths (an edge is on such a path exactly when its op is neither cut off from the input nor
    from the output). 15 supports for three nodes."""
    edges = cell_edges(1, nodes)
    paths = []
    for k in range(nodes):
        for mids in itertools.combinations(range(1, nodes), k):
            seq = (0, *mids, nodes)
            paths.append(frozenset(edges.index(e) for e in zip(seq, seq[1:])))
    unions = {frozenset().union(*c) for r in range(1, len(paths) + 1) for c in itertools.combinations(paths, r)}
    return sorted(unions, key=lambda S: (len(S), sorted(S)))


def _best_live(space: str, op_names: Sequence[str], nodes: int,
               solve: Callable[[Optional[frozenset[int]]], Optional["Derivation"]]) -> Optional["Derivation"]:
    """``solve(support)``, the best derivation whose ops other than ``none`` sit exactly on the ``support``'s edge rows,
    over the live supports: the best live genotype (NB201). A space that never derives ``none`` (DARTS: every kept edge
    has an op, every node reaches the output) is solved once, with ``support`` None. Ties in log-probability go to the
    cheaper genotype."""
    if not SPACES[space].every_edge or "none" not in [op_names[k] for k in derivable(space, op_names)]:
        return solve(None)
    found = [d for d in (solve(S) for S in _live_supports(nodes)) if d is not None]
    return max(found, key=lambda d: (d.log_prob, tuple(-v for v in d.cost.values()))) if found else None


# ---- the budget-aware derivation ---------------------------------------------------------------

@dataclass(frozen=True)
class Derivation:
    """A derived genotype with its exact analytic cost per metric and its log-probability under alpha."""

    genotype: Genotype
    cost: dict[str, int]
    log_prob: float
    rule: str
    info: dict = field(default_factory=dict)  # what a rule records beside its pick (naswot: the pool and its scores)

    def to_json(self) -> dict:
        return {"rule": self.rule, "genotype": self.genotype.to_json(), "cost": self.cost, "log_prob": self.log_prob,
                **({"info": self.info} if self.info else {})}


def log_probs(space: str, alpha: torch.Tensor, op_names: Sequence[str]) -> torch.Tensor:
    """log softmax of alpha over the ops the derivation can pick (DARTS: every op but ``none``);
    the excluded ops get -inf. The same distribution weights b(o) in k_s (eq. 3)."""
    lp = torch.full(alpha.shape, float("-inf"), dtype=torch.float64)
    usable = derivable(space, op_names)
    lp[:, usable] = torch.log_softmax(alpha.double()[:, usable], dim=-1)
    return lp


def genotype_picks(genotype: Genotype, op_names: Sequence[str], nodes: int) -> list[tuple[str, int, int]]:
    """A genotype's chosen (cell kind, edge row, op index) pairs, the rows in ``cell_edges`` order."""
    index = {n: k for k, n in enumerate(op_names)}
    if isinstance(genotype, NB201Genotype):
        edges = cell_edges(1, nodes)
        return [("normal", edges.index((i, j)), index[op]) for j, node in enumerate(genotype.nodes, start=1) for op, i in node]
    edges = cell_edges(DARTS_INPUTS, nodes)
    return [(kind, edges.index((i, darts_edge_node(k))), index[op])
            for kind, cell in (("normal", genotype.normal), ("reduce", genotype.reduce)) for k, (op, i) in enumerate(cell)]


def genotype_log_prob(genotype: Genotype, lp: Mapping[str, torch.Tensor], op_names: Sequence[str], nodes: int) -> float:
    """Sum of the log-probabilities (:func:`log_probs`) of a genotype's chosen (edge, op) pairs."""
    return sum(float(lp[kind][e, k]) for kind, e, k in genotype_picks(genotype, op_names, nodes))


def derivable(space: str, op_names: Sequence[str]) -> list[int]:
    return SPACES[space].derivable(op_names)


def _groups(space: str, alphas: Mapping[str, torch.Tensor], op_names: Sequence[str], nodes: int,
            edge_costs: Mapping[str, Mapping[str, torch.Tensor]], metrics: Sequence[str], support: Optional[frozenset[int]] = None):
    """Per choice group (DARTS: a node of a cell type; NB201: an edge), its options as arrays:
    costs (O x M), log-probabilities (O,) and what each option picks [(kind, edge row, op index), ...].
    NB201 with a ``support``: its edge rows offer every op but ``none``, the others ``none`` alone."""
    usable = derivable(space, op_names)
    groups = []
    for kind, alpha in alphas.items():
        lp = log_probs(space, alpha, op_names).numpy()
        U = np.stack([edge_costs[m][kind].numpy() for m in metrics], axis=-1)  # E x K x M
        inputs = SPACES[space].inputs
        edges = cell_edges(inputs, nodes)
        if SPACES[space].every_edge:
            for e in range(len(edges)):
                ks = [k for k in usable if support is None or (e in support) == (op_names[k] != "none")]
                groups.append((np.array([U[e, k] for k in ks]), np.array([lp[e, k] for k in ks]), [[(kind, e, k)] for k in ks]))
            continue
        for j in range(inputs, inputs + nodes):
            rows = [edges.index((i, j)) for i in range(j)]
            costs, lps, picks = [], [], []
            for a, b in itertools.combinations(rows, EDGES_PER_NODE):
                for ka in usable:
                    for kb in usable:
                        costs.append(U[a, ka] + U[b, kb])
                        lps.append(lp[a, ka] + lp[b, kb])
                        picks.append([(kind, a, ka), (kind, b, kb)])
            groups.append((np.array(costs), np.array(lps), picks))
    return groups


def _pareto(costs: np.ndarray, lps: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats: lower-or-equal cost in every metric and a higher
    log-probability. Exact; ties in log-probability keep the cheaper point."""
    order = np.lexsort((*[costs[:, m] for m in range(costs.shape[1] - 1, -1, -1)], -lps))  # logp desc, then cost asc
    if costs.shape[1] == 1:
        keep, best = [], np.inf
        for i in order:  # by logp desc: keep a point only if it is cheaper than every kept point
            if costs[i, 0] < best:
                keep.append(i)
                best = costs[i, 0]
        return np.array(keep, dtype=np.int64)
    if costs.shape[1] == 2:
        xs: list[float] = []   # staircase: c0 ascending, c1 strictly descending
        ys: list[float] = []
        keep = []
        for i in order:
            c0, c1 = costs[i]
            p = bisect.bisect_right(xs, c0) - 1
            if p >= 0 and ys[p] <= c1:
                continue  # a kept point with higher-or-equal logp is at most as costly in both
            keep.append(i)
            q = p + 1
            while q < len(xs) and ys[q] >= c1:
                del xs[q], ys[q]
            xs.insert(q, c0)
            ys.insert(q, c1)
        return np.array(keep, dtype=np.int64)
    keep = []
    for i in order:
        if not any(np.all(costs[k] <= costs[i]) for k in keep):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


# float rounding a derivation forgives, as a share of each budget (an absolute 1e-6 let a derivation pass a 0.24 ms
# latency budget by 6.6e-7 ms; the sums are float64, so their own error is ~1e-16 of the budget)
ROUNDING = 1e-12


def _limits(budgets: Mapping[str, float], fixed: Mapping[str, float], metrics: Sequence[str]) -> np.ndarray:
    """What the cells may cost per metric: each budget less the network's fixed part, plus the rounding slack."""
    return np.array([budgets[m] - fixed[m] + ROUNDING * abs(budgets[m]) for m in metrics], dtype=np.float64)


def derive_within(space: str, alphas: Mapping[str, torch.Tensor], op_names: Sequence[str], nodes: int,
                  edge_costs: Mapping[str, Mapping[str, torch.Tensor]], fixed: Mapping[str, float],
                  budgets: Mapping[str, float]) -> Optional[Derivation]:
    """The budget-aware derivation: the most probable genotype (largest sum of log softmax weights of
    its chosen (edge, op) pairs, under the space's rule) whose exact analytic cost is within every
    budget; None when no genotype of the space is. Exact: the cost is additive over edges for a
    fixed evaluation network, so this is a multiple-choice knapsack over the choice groups, solved
    by merging Pareto fronts of (cost, log-probability) group by group and pruning partial choices
    that cannot meet a budget even with the cheapest rest. Ties in log-probability go to the
    cheaper genotype, then to the earlier op in the ops table (the enumeration order). NB201: the most probable
    live cell (``NB201Genotype.live``) within the budgets."""
    return _best_live(space, op_names, nodes, lambda support: _derive_within(
        space, alphas, op_names, nodes, edge_costs, fixed, budgets, support))


def _derive_within(space: str, alphas: Mapping[str, torch.Tensor], op_names: Sequence[str], nodes: int,
                   edge_costs: Mapping[str, Mapping[str, torch.Tensor]], fixed: Mapping[str, float],
                   budgets: Mapping[str, float], support: Optional[frozenset[int]]) -> Optional[Derivation]:
    metrics = list(budgets)
    limit = _limits(budgets, fixed, metrics)
    groups = []
    for costs, lps, picks in _groups(space, alphas, op_names, nodes, edge_costs, metrics, support):
        keep = _pareto(costs, lps)
        groups.append((costs[keep], lps[keep], [picks[i] for i in keep]))
    min_rest = np.zeros((len(groups) + 1, len(metrics)))
    for g in range(len(groups) - 1, -1, -1):
        min_rest[g] = min_rest[g + 1] + groups[g][0].min(axis=0)
    if np.any(min_rest[0] > limit):
        return None
    S_cost, S_lp = np.zeros((1, len(metrics))), np.zeros(1)
    back: list[tuple[np.ndarray, np.ndarray]] = []
    for g, (costs, lps, _) in enumerate(groups):
        tot = (S_cost[:, None, :] + costs[None, :, :]).reshape(-1, len(metrics))
        tlp = (S_lp[:, None] + lps[None, :]).reshape(-1)
        ok = np.all(tot + min_rest[g + 1] <= limit, axis=1)
        idx = np.nonzero(ok)[0]
        if not len(idx):  # each budget alone can be met (min_rest), but not every one at once
            return None
        keep = idx[_pareto(tot[idx], tlp[idx])]
        back.append((keep // len(lps), keep % len(lps)))
        S_cost, S_lp = tot[keep], tlp[keep]
    best = int(np.argmax(S_lp))  # _pareto keeps the cheapest among equal log-probabilities first
    return _derivation(space, _backtrack(groups, back, best), alphas, op_names, nodes, edge_costs, fixed, "budget")


def _backtrack(groups: list, back: list[tuple[np.ndarray, np.ndarray]], best: int) -> list[tuple[str, int, int]]:
    """The (cell type, edge row, op index) picks of final state ``best``, following the back-pointers."""
    chosen = []
    for g in range(len(groups) - 1, -1, -1):
        prev, opt = back[g]
        chosen.append(groups[g][2][opt[best]])
        best = int(prev[best])
    return [p for group in reversed(chosen) for p in group]


def _derivation(space: str, picks: list[tuple[str, int, int]], alphas: Mapping[str, torch.Tensor], op_names: Sequence[str],
                nodes: int, edge_costs: Mapping[str, Mapping[str, torch.Tensor]], fixed: Mapping[str, float], rule: str) -> Derivation:
    cost = {m: metric_round(m, v) for m, v in picks_cost(picks, edge_costs, fixed).items()}
    lps = {kind: log_probs(space, alphas[kind], op_names) for kind in {kd for kd, _, _ in picks}}
    lp = sum(float(lps[kind][e, k]) for kind, e, k in picks)
    return Derivation(genotype_from_picks(space, picks, op_names, nodes), cost, lp, rule)


def derive_filling(space: str, alphas: Mapping[str, torch.Tensor], op_names: Sequence[str], nodes: int,
                   edge_costs: Mapping[str, Mapping[str, torch.Tensor]], fixed: Mapping[str, float],
                   budgets: Mapping[str, float], primary: str, fill: float, buckets: int = 2000) -> Optional[Derivation]:
    """The most probable genotype whose ``primary`` cost lies in [fill x budget, budget] (and within every
    other budget); None when the search finds none. A dynamic programme over the primary cost in
    ``buckets`` steps of budget/buckets, keeping the most probable partial choice per step: costs are
    exact and never over a budget, the optimum is exact up to that resolution (a step of 0.05% of the
    budget at the default). NB201: the most probable live cell in that window."""
    return _best_live(space, op_names, nodes, lambda support: _derive_filling(
        space, alphas, op_names, nodes, edge_costs, fixed, budgets, primary, fill, buckets, support))


def _derive_filling(space: str, alphas: Mapping[str, torch.Tensor], op_names: Sequence[str], nodes: int,
                    edge_costs: Mapping[str, Mapping[str, torch.Tensor]], fixed: Mapping[str, float],
                    budgets: Mapping[str, float], primary: str, fill: float, buckets: int,
                    support: Optional[frozenset[int]]) -> Optional[Derivation]:
    metrics = list(budgets)
    p = metrics.index(primary)
    limit = _limits(budgets, fixed, metrics)
    floor = fill * budgets[primary] - fixed[primary] - ROUNDING * abs(budgets[primary])
    width = max(budgets[primary] / buckets, 1e-9)
    groups = _groups(space, alphas, op_names, nodes, edge_costs, metrics, support)
    min_rest = np.zeros((len(groups) + 1, len(metrics)))
    max_rest = np.zeros(len(groups) + 1)
    for g in range(len(groups) - 1, -1, -1):
        min_rest[g] = min_rest[g + 1] + groups[g][0].min(axis=0)
        max_rest[g] = max_rest[g + 1] + groups[g][0][:, p].max()
    S_cost, S_lp = np.zeros((1, len(metrics))), np.zeros(1)
    back: list[tuple[np.ndarray, np.ndarray]] = []
    for g, (costs, lps, _) in enumerate(groups):
        tot = (S_cost[:, None, :] + costs[None, :, :]).reshape(-1, len(metrics))
        tlp = (S_lp[:, None] + lps[None, :]).reshape(-1)
        ok = np.all(tot + min_rest[g + 1] <= limit, axis=1) & (tot[:, p] + max_rest[g + 1] >= floor)
        idx = np.nonzero(ok)[0]
        if not len(idx):
            return None
        bucket = np.floor(tot[idx, p] / width).astype(np.int64)
        order = np.lexsort((-tlp[idx], bucket))  # per bucket, the most probable first
        first = np.ones(len(order), dtype=bool)
        first[1:] = bucket[order][1:] != bucket[order][:-1]
        keep = idx[order[first]]
        back.append((keep // len(lps), keep % len(lps)))
        S_cost, S_lp = tot[keep], tlp[keep]
    final = np.nonzero(S_cost[:, p] >= floor)[0]
    if not len(final):
        return None
    best = int(final[np.argmax(S_lp[final])])
    return _derivation(space, _backtrack(groups, back, best), alphas, op_names, nodes, edge_costs, fixed, "fill")


def picks_cost(picks: Sequence[tuple[str, int, int]], edge_costs: Mapping[str, Mapping[str, torch.Tensor]],
               fixed: Mapping[str, float]) -> dict[str, float]:
    """Every metric's additive cost of a choice of (cell kind, edge row, op index) picks: the fixed part plus each
    pick's edge cost (unrounded)."""
    return {m: fixed[m] + sum(float(edge_costs[m][kind][e, k]) for kind, e, k in picks) for m in edge_costs}


def genotype_from_picks(space: str, picks: Sequence[tuple[str, int, int]], op_names: Sequence[str], nodes: int) -> Genotype:
    """The genotype of a choice of (cell kind, edge row, op index) picks."""
    sp = SPACES[space]
    edges = sp.edges(nodes)
    return sp.genotype({kind: [(op_names[k], *edges[e]) for kd, e, k in picks if kd == kind] for kind in sp.cell_kinds}, nodes)

"""The ``naswot`` derivation: the fill derivation's network and ``pool`` - 1 networks drawn from the final alphas' op
distribution (each edge's op from its softmax over the derivable ops; a DARTS node's two inputs uniformly), every one
inside the fill window [fill_fraction x K_d, K_d] and within every budget, ranked by the NASWOT score of its evaluation
network at initialisation (Mellor et al. 2021; ``baselines.naswot_score``) on one batch of the search's training images;
the highest score is chosen.

Why (issue 34, docs/search-quality.md): at every CPU scale measured here the alphas' own order of the window's networks
carried no information about their trained accuracy (Spearman -0.03 over 126 trained cells), while NASWOT at
initialisation ranked the same recipe's networks at Spearman +0.72 and its top 8 of 50 scored +0.45 points above random
networks of the budget. Where the alphas separate, the pool concentrates where they point; where they stay at uniform,
the pool is the window's random networks and the proxy alone chooses. Not the paper's rule: ``fill`` (the default) and
``argmax`` (the paper's) stay. Measured on the 8 long NB201 searches it did not beat random networks either (-0.58
points [-1.57, +0.40]; design note 33): the alphas' pools reach NASWOT scores above the range its ranking was measured
in, where its top picks (plain chains of convolutions) train no better. An option, not the default.

``proxy_draw="uniform"`` draws the pool from the window's random networks instead (the alphas ignored, no fill pick:
every derivable op alike, as ``random_genotype`` draws them), and ``proxy_rank`` R takes the pool's R-th highest score.
NASWOT's order turns over at its top (Spearman -0.55 over 14 pools' top scores), and the rule "uniform, rank 5 of 100",
one network per pool over 16 pools, scored +0.80 points [+0.31, +1.29] against random networks of the budget, fixed in
advance (docs/search-quality.md). Through this module (16 one-epoch searches, the search's own 64 images and seeds) the
same rule scored +0.54 [-0.04, +1.12]: not above zero. The rule does not use the search: it is the proxy's pick
within the budget.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from ..costs.metrics import metric_round
from ..nets.build import build_network
from ..nets.config import NetConfig
from ..nets.genotype import DARTS_INPUTS, EDGES_PER_NODE, Genotype, NB201Genotype
from ..nets.spaces import SPACES
from .baselines import naswot_score
from .constraint import Constraints
from .derive import Derivation, genotype_from_picks, genotype_log_prob, log_probs, picks_cost

PROXY_BATCH = 64  # images NASWOT scores on (its paper's batch is 128; 64 is what the benchmark measured at)
DRAW_ROUNDS = 20  # rounds of vectorised draws before a thin window gives up with what it has


def sample_picks(space: str, alphas: Mapping[str, torch.Tensor], op_names: Sequence[str], nodes: int, n: int,
                 rng: np.random.Generator) -> list[list[tuple[str, int, int]]]:
    """``n`` draws from the alphas' distribution, each as its (cell kind, edge row, op index) picks: every kept edge's op
    from the softmax of its alphas over the derivable ops (``log_probs``); NB201 keeps every edge, a DARTS node two of its
    incoming edges, drawn uniformly (as ``random_genotype`` does)."""
    sp = SPACES[space]
    edges = sp.edges(nodes)
    per_kind = {}
    for kind in sp.cell_kinds:
        p = torch.exp(log_probs(space, alphas[kind].detach().cpu(), op_names)).numpy()
        cum = np.cumsum(p, axis=1)
        u = rng.random((n, len(edges), 1))
        ops = np.minimum((u > cum[None]).sum(axis=2), len(op_names) - 1)  # n x edges: an op index per edge
        if sp.every_edge:
            keep = np.ones((n, len(edges)), dtype=bool)
        else:
            keep = np.zeros((n, len(edges)), dtype=bool)
            for t in range(DARTS_INPUTS, DARTS_INPUTS + nodes):
                rows = np.array([e for e, (_, j) in enumerate(edges) if j == t])
                chosen = np.argsort(rng.random((n, len(rows))), axis=1)[:, :EDGES_PER_NODE]
                keep[np.arange(n)[:, None], rows[chosen]] = True
        per_kind[kind] = (ops, keep)
    return [[(kind, e, int(ops[i, e])) for kind, (ops, keep) in per_kind.items() for e in np.nonzero(keep[i])[0]]
            for i in range(n)]


def window_pool(space: str, alphas: Mapping[str, torch.Tensor], op_names: Sequence[str], nodes: int, con: Constraints,
                fill: float, first: Optional[Genotype], pool: int, seed: int) -> list[Genotype]:
    """``first`` (if given) and distinct further genotypes drawn from the alphas (``sample_picks``), ``pool`` in all, whose
    primary cost lies in [fill x K_d, K_d] and which meet every budget (NB201: live cells only). A window too thin to
    fill in ``DRAW_ROUNDS`` rounds returns what it found."""
    rng = np.random.default_rng(seed)
    U, fixed = con.edge_costs(), con.fixed()
    primary, K = con.primary, con.K_d
    found: dict[str, Genotype] = {} if first is None else {str(first.to_json()): first}
    for _ in range(DRAW_ROUNDS):
        for picks in sample_picks(space, alphas, op_names, nodes, 4 * pool, rng):
            cost = picks_cost(picks, U, fixed)
            if not (fill * K[primary] <= cost[primary] <= K[primary] and all(cost[m] <= K[m] for m in K)):
                continue
            g = genotype_from_picks(space, picks, op_names, nodes)
            if isinstance(g, NB201Genotype) and not g.live():
                continue
            d = con.derived(g)  # a cost model that is not additive over edges decides by its own figure
            if fill * K[primary] <= d[primary] and con.within(g):
                found.setdefault(str(g.to_json()), g)
                if len(found) >= pool:
                    return list(found.values())
    return list(found.values())


def ranked(scores: Sequence[float], rank: int) -> int:
    """The index of the ``rank``-th highest of ``scores`` (1: the highest; the first of equal scores first; past the end:
    the lowest)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return order[min(rank, len(order)) - 1]


def derive_by_proxy(space: str, alphas: Mapping[str, torch.Tensor], op_names: Sequence[str], nodes: int, con: Constraints,
                    eval_cfg: NetConfig, fill: float, first: Derivation, x: torch.Tensor, pool: int, seed: int,
                    rank: int = 1, uniform: bool = False) -> Derivation:
    """The ``naswot`` derivation (module docstring): the pool's ``rank``-th highest NASWOT score at initialisation on the
    batch ``x`` (the lowest where the window held fewer networks); ``uniform``: the pool drawn from the window's random
    networks, not from ``alphas``. Each network is built under its own seed (``seed`` x 100,003 + its index) inside a
    forked RNG, so the caller's random state is untouched. The derivation records the pool's size, every score, the
    rank taken and, for a pool from the alphas, the fill derivation's rank."""
    drawn = {t: torch.zeros_like(a) for t, a in alphas.items()} if uniform else alphas
    cands = window_pool(space, drawn, op_names, nodes, con, fill, None if uniform else first.genotype, pool, seed)
    scores = []
    with torch.random.fork_rng(devices=[]):
        for i, g in enumerate(cands):
            torch.manual_seed(seed * 100_003 + i)
            scores.append(naswot_score(build_network(g, eval_cfg).to(x.device), x))
    chosen = ranked(scores, rank)
    g = cands[chosen]
    lp = {t: log_probs(space, a.detach().cpu(), op_names) for t, a in alphas.items()}
    cost = {m: metric_round(m, v) for m, v in con.derived(g).items()}
    info = dict(pool=len(cands), draw="uniform" if uniform else "alphas", rank=min(rank, len(scores)), score=scores[chosen],
                scores=[round(s, 3) for s in scores])
    if not uniform:
        info.update(fill_score=scores[0], fill_rank=1 + sum(s > scores[0] for s in scores))
    return Derivation(g, cost, genotype_log_prob(g, lp, op_names, nodes), "naswot", info)

"""What a search is measured against: random genotypes of the same budget, and the NASWOT zero-cost
proxy (Mellor et al. 2021, "Neural Architecture Search without Training") that ranks networks at
initialisation, without training. ``benchmarks/search_vs_random.py`` trains both beside the search."""
from __future__ import annotations

import random
from typing import Callable

import torch
import torch.nn as nn

from ..errors import UserError
from ..nets.genotype import Genotype, random_genotype
from ..nets.ops import OP_SPECS

PARAMETER_FREE_FORMS = frozenset({"max_pool", "avg_pool", "skip"})  # ops that carry no weights, besides none


def convs_and_none(g: Genotype) -> bool:
    """Whether every edge of every cell is a convolution or ``none``: no pool and no skip. The family the shipped
    NB201 search derives at cpu-demo's budget (its weights end at uniform; the budget's push and the fill rule choose)."""
    return all(OP_SPECS[op].form not in PARAMETER_FREE_FORMS for _, _, edges, _ in g.cells() for op, _ in edges)


def random_within(space: str, cost: Callable[[Genotype], float], lo: float, hi: float, rng: random.Random, n: int,
                  nodes: int = 4, max_draws: int = 200_000, keep: Callable[[Genotype], bool] | None = None) -> list[Genotype]:
    """``n`` distinct genotypes drawn from the space's random distribution (``random_genotype``: every node's
    inputs and every op uniform) conditioned on ``lo <= cost(g) <= hi`` (rejection sampling): random networks
    of the same budget as a search's window, and of the family ``keep`` accepts if given (e.g. ``convs_and_none``).
    A window too narrow to fill in ``max_draws`` draws is a UserError."""
    found: dict[str, Genotype] = {}
    if n <= 0:
        return []
    for _ in range(max_draws):
        g = random_genotype(space, rng, nodes)
        if lo <= cost(g) <= hi and (keep is None or keep(g)):
            found.setdefault(str(g.to_json()), g)
            if len(found) == n:
                return list(found.values())
    raise UserError(f"only {len(found)} of {n} random {space} genotypes fell in the cost window {lo:,.0f} .. {hi:,.0f} "
                    f"in {max_draws:,} draws; widen the window{'' if keep is None else ' or ask for fewer'}")


@torch.no_grad()
def naswot_score(model: nn.Module, x: torch.Tensor) -> float:
    """NASWOT at initialisation: log |K_H|, where K_H[a, b] counts the ReLUs (units of every ``nn.ReLU``) at which
    images a and b of the batch ``x`` fall on the same side of zero. Networks whose ReLUs separate the images
    more (a larger determinant) tend to train to a higher accuracy. Higher is better."""
    n = x.shape[0]
    K = torch.zeros(n, n, dtype=torch.float64, device=x.device)

    def hook(_module, inputs, _output) -> None:
        c = (inputs[0].detach().reshape(n, -1) > 0).double()
        K.add_(c @ c.T + (1 - c) @ (1 - c).T)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        model.train()  # batch statistics, as the original (the scored model is a fresh build, discarded after)
        model(x)
    finally:
        for h in handles:
            h.remove()
    return float(torch.linalg.slogdet(K.cpu())[1])

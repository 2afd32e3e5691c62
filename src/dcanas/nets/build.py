"""``build_network(genotype, cfg)``: the evaluation network of either space."""
from __future__ import annotations

import torch.nn as nn

from .config import NetConfig
from .darts import DartsNetwork
from .genotype import DartsGenotype, Genotype
from .nb201 import NB201Network


def build_network(genotype: Genotype, cfg: NetConfig) -> nn.Module:
    if isinstance(genotype, DartsGenotype):
        return DartsNetwork(genotype, cfg)
    return NB201Network(genotype, cfg)

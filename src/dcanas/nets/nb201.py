"""NAS-Bench-201 evaluation network (TinyNetwork): 3 stages of N cells joined by ResNet blocks."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .config import NetConfig
from .darts import conv_out
from .genotype import NB201Genotype
from .ops import ReLUConvBN, build_op


@dataclass(frozen=True)
class NB201Slot:
    index: int
    C_in: int
    C_out: int
    reduction: bool  # a ResNet basic block with stride 2 instead of a searched cell
    size: int        # input spatial side


def nb201_layout(cfg: NetConfig) -> list[NB201Slot]:
    C, N = cfg.C, cfg.layers
    channels = [C] * N + [2 * C] + [2 * C] * N + [4 * C] + [4 * C] * N
    reductions = [False] * N + [True] + [False] * N + [True] + [False] * N
    slots, C_prev, size = [], C, cfg.input_size
    for i, (C_curr, red) in enumerate(zip(channels, reductions)):
        slots.append(NB201Slot(i, C_prev, C_curr, red, size))
        if red:
            size = conv_out(size, 3, 2, 1)
        C_prev = C_curr
    return slots


class ResNetBasicBlock(nn.Module):
    def __init__(self, C_in: int, C_out: int, stride: int = 2) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride, 1)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Cell(nn.Module):
    def __init__(self, genotype: NB201Genotype, C: int) -> None:
        super().__init__()
        self.edges = [[src for _, src in node] for node in genotype.nodes]
        self.ops = nn.ModuleList(nn.ModuleList(build_op(op, C, C, 1) for op, _ in node) for node in genotype.nodes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for srcs, ops in zip(self.edges, self.ops):
            nodes.append(sum(op(nodes[s]) for s, op in zip(srcs, ops)))
        return nodes[-1]


class NB201Network(nn.Module):
    def __init__(self, genotype: NB201Genotype, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg, self.genotype = cfg, genotype
        self.drop_path_prob = 0.0  # unused; kept so trainers treat both spaces alike
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, cfg.C, 3, padding=1, bias=False), nn.BatchNorm2d(cfg.C))
        self.cells = nn.ModuleList(
            ResNetBasicBlock(s.C_in, s.C_out) if s.reduction else NB201Cell(genotype, s.C_out) for s in nb201_layout(cfg))
        C_last = 4 * cfg.C
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_last), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_last, cfg.num_classes)

    def fixed_parts(self) -> list[tuple[str, nn.Module, nn.Module]]:
        """The parts no genotype changes, in forward order (see ``DartsNetwork.fixed_parts``): the stem, the
        residual blocks between stages, and the head (last activation, pooling, the classifier)."""
        parts = [("stem", self.stem, self.stem)] + [("resblock", c, c) for c in self.cells if isinstance(c, ResNetBasicBlock)]
        return parts + [("head", self.lastact, nn.Sequential(self.lastact, self.global_pooling, nn.Flatten(), self.classifier))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.classifier(self.global_pooling(self.lastact(x)).flatten(1))

"""DARTS evaluation networks (CIFAR and ImageNet forms) built from a genotype with the ONE ops table."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .config import NetConfig
from .genotype import EDGES_PER_NODE, DartsGenotype
from .ops import FactorizedReduce, Identity, ReLUConvBN, build_op, drop_path


def conv_out(size: int, kernel: int = 1, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output side of a convolution or pooling window."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True)
class CellSlot:
    """Where a cell sits: its input channels and sizes, its width, and whether it reduces."""

    index: int
    C_prev_prev: int
    C_prev: int
    C: int
    reduction: bool
    reduction_prev: bool
    size_prev_prev: int  # spatial side of s0
    size: int            # spatial side of s1 (the cell's working size before any reduction)


def stem_channels(cfg: NetConfig) -> tuple[int, int, int]:
    """(C_prev_prev, C_prev, spatial side) after the stem."""
    if cfg.stem == "imagenet":
        return cfg.C, cfg.C, conv_out(conv_out(conv_out(cfg.input_size, 3, 2, 1), 3, 2, 1), 3, 2, 1)
    return 3 * cfg.C, 3 * cfg.C, cfg.input_size


def darts_layout(cfg: NetConfig, multiplier: int = 4, reduce_multiplier: int | None = None) -> list[CellSlot]:
    """Cell positions of the network: reductions at 1/3 and 2/3 of the depth, as DARTS. A cell outputs
    ``multiplier`` (normal) or ``reduce_multiplier`` (reduction; default the same) concatenated nodes of C
    channels each, as DARTS' ``cell.multiplier``: NASNet-A concatenates 5 nodes in its normal cell, 3 in its
    reduction cell."""
    C_pp, C_p, size = stem_channels(cfg)
    size_pp = size_p = size
    C_curr = cfg.C
    reduction_prev = cfg.stem == "imagenet"
    if cfg.stem == "imagenet":
        size_pp = conv_out(conv_out(cfg.input_size, 3, 2, 1), 3, 2, 1)  # s0 = stem0 output (one reduction above)
    slots = []
    for i in range(cfg.layers):
        reduction = i in (cfg.layers // 3, 2 * cfg.layers // 3)
        if reduction:
            C_curr *= 2
        slots.append(CellSlot(i, C_pp, C_p, C_curr, reduction, reduction_prev, size_pp, size_p))
        out_size = conv_out(size_p, 3, 2, 1) if reduction else size_p
        C_pp, C_p = C_p, ((reduce_multiplier or multiplier) if reduction else multiplier) * C_curr
        size_pp, size_p = size_p, out_size
        reduction_prev = reduction
    return slots


def genotype_layout(genotype: DartsGenotype, cfg: NetConfig) -> list[CellSlot]:
    """The cell positions of the network of ``genotype`` (its two cells' concatenation widths)."""
    return darts_layout(cfg, len(genotype.normal_concat), len(genotype.reduce_concat))


def preprocess(slot: CellSlot, affine: bool = True) -> tuple[nn.Module, nn.Module]:
    """The two input adapters of a cell (factorized reduce after a reduction, else 1x1 ReLU-Conv-BN)."""
    pre0 = (FactorizedReduce(slot.C_prev_prev, slot.C, affine) if slot.reduction_prev
            else ReLUConvBN(slot.C_prev_prev, slot.C, 1, 1, 0, affine=affine))
    return pre0, ReLUConvBN(slot.C_prev, slot.C, 1, 1, 0, affine=affine)


class Cell(nn.Module):
    def __init__(self, genotype: DartsGenotype, slot: CellSlot) -> None:
        super().__init__()
        self.preprocess0, self.preprocess1 = preprocess(slot)
        edges, concat = (genotype.reduce, genotype.reduce_concat) if slot.reduction else (genotype.normal, genotype.normal_concat)
        self.indices = [src for _, src in edges]
        self.concat = list(concat)
        self.ops = nn.ModuleList(
            build_op(op, slot.C, slot.C, 2 if slot.reduction and src < 2 else 1) for op, src in edges)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        h: list[torch.Tensor] = []
        for e, op in enumerate(self.ops):  # edges come in node order (genotype.darts_edge_node)
            out = op(states[self.indices[e]])
            if self.training and drop_prob > 0 and not isinstance(op, Identity):
                out = drop_path(out, drop_prob)
            h.append(out)
            if len(h) == EDGES_PER_NODE:
                states.append(sum(h[1:], h[0]))
                h = []
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS' auxiliary classifier at 2/3 depth (training only; not counted in params)."""

    def __init__(self, C: int, num_classes: int, size: int) -> None:
        super().__init__()
        pool = 5 if size >= 5 else size
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(pool, stride=3 if size >= 8 else 1, padding=0),
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 1, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=False),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def make_stem(cfg: NetConfig) -> nn.Module:
    if cfg.stem == "imagenet":
        return nn.Sequential(
            nn.Conv2d(cfg.in_channels, cfg.C // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(cfg.C // 2), nn.ReLU(inplace=False),
            nn.Conv2d(cfg.C // 2, cfg.C, 3, 2, 1, bias=False), nn.BatchNorm2d(cfg.C),
        )
    return nn.Sequential(nn.Conv2d(cfg.in_channels, 3 * cfg.C, 3, padding=1, bias=False), nn.BatchNorm2d(3 * cfg.C))


def make_stem1(cfg: NetConfig) -> nn.Module | None:
    """The ImageNet stem's third stride-2 convolution (its output feeds the first cell as s1; None for CIFAR)."""
    if cfg.stem != "imagenet":
        return None
    return nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(cfg.C, cfg.C, 3, 2, 1, bias=False), nn.BatchNorm2d(cfg.C))


class DartsNetwork(nn.Module):
    """DARTS' NetworkCIFAR / NetworkImageNet. In training with the auxiliary head, returns (logits, aux)."""

    def __init__(self, genotype: DartsGenotype, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg, self.genotype = cfg, genotype
        self.drop_path_prob = 0.0
        self.stem = make_stem(cfg)
        self.stem1 = make_stem1(cfg)
        slots = genotype_layout(genotype, cfg)
        self.cells = nn.ModuleList(Cell(genotype, s) for s in slots)
        self.aux_index = 2 * cfg.layers // 3
        last = slots[-1]
        C_out = len(genotype.normal_concat if not last.reduction else genotype.reduce_concat) * last.C
        if cfg.auxiliary:
            at = slots[self.aux_index]
            size_aux = conv_out(at.size, 3, 2, 1) if at.reduction else at.size
            self.auxiliary_head = AuxiliaryHead(len(genotype.reduce_concat) * at.C, cfg.num_classes, size_aux)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_out, cfg.num_classes)

    def fixed_parts(self) -> list[tuple[str, nn.Module, nn.Module]]:
        """The parts no genotype changes, in forward order: (kind, the module whose input shape is the part's,
        the module that computes the part). The head is pooling, flattening and the classifier."""
        parts = [("stem", self.stem, self.stem)] + ([("stem1", self.stem1, self.stem1)] if getattr(self, "stem1", None) is not None else [])
        for cell in self.cells:
            parts += [("pre0", cell.preprocess0, cell.preprocess0), ("pre1", cell.preprocess1, cell.preprocess1)]
        return parts + [("head", self.global_pooling, nn.Sequential(self.global_pooling, nn.Flatten(), self.classifier))]

    def forward(self, x: torch.Tensor):
        logits_aux = None
        if self.stem1 is not None:
            s0 = self.stem(x)
            s1 = self.stem1(s0)
        else:
            s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_index and self.cfg.auxiliary and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return (logits, logits_aux) if logits_aux is not None else logits

"""The ONE table of candidate operations, shared by the search supernet and the
evaluation networks (DARTS and NAS-Bench-201 definitions).

``OPS[name](C_in, C_out, stride, affine) -> nn.Module``.  ``DARTS_OPS`` and
``NB201_OPS`` name the subsets that make each search space.  The analytic cost of
every entry is in :mod:`dcanas.nets.cost` (``OP_COSTS``, same keys).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

OpFactory = Callable[[int, int, int, bool], nn.Module]


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv (no bias) -> BN: DARTS' preprocessing and NB201's ``nor_conv``."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int,
                 dilation: int = 1, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel, stride, padding, dilation, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BN (DARTS ``dil_conv``)."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int,
                 dilation: int, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel, stride, padding, dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked ReLU-depthwise-pointwise-BN blocks (DARTS ``sep_conv``); stride on the first."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int,
                 affine: bool = True) -> None:
        super().__init__(
            DilConv(C_in, C_in, kernel, stride, padding, 1, affine),
            DilConv(C_in, C_out, kernel, 1, padding, 1, affine),
        )


class Conv7x1_1x7(nn.Sequential):
    """ReLU -> 1x7 conv -> 7x1 conv -> BN (DARTS' ``conv_7x1_1x7``, an AmoebaNet-A op); the stride is split
    between the two convolutions, one axis each."""

    def __init__(self, C_in: int, C_out: int, stride: int, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
            nn.Conv2d(C_in, C_out, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape (kept so mixed ops stay differentiable)."""

    def __init__(self, C_in: int, C_out: int, stride: int) -> None:
        super().__init__()
        self.C_out, self.stride = C_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if x.shape[1] == self.C_out:
            return x.mul(0.0)
        return x.new_zeros(x.shape[0], self.C_out, x.shape[2], x.shape[3])


class FactorizedReduce(nn.Module):
    """Stride-2 skip: two offset 1x1 stride-2 convs concatenated, then BN.

    Pads one row/column at the end (NB201's form) so odd sizes work; on even sizes it
    equals DARTS' ``x[:, :, 1:, 1:]`` form exactly.
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out - C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        y = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(y)], dim=1))


class AvgPool3x3(nn.Module):
    """3x3 average pooling, padding 1, padding NOT counted in the divisor.

    Written as ``avg_pool2d(pad(x, 1), 3, stride) / count_map`` rather than
    ``AvgPool2d(count_include_pad=False)``: the latter becomes STABLEHLO_REDUCE_WINDOW + DIV
    in litert-torch at stride 2, which tflite-runtime cannot load and int8 cannot quantize;
    this form converts to a builtin AVERAGE_POOL_2D and is numerically the same.
    """

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(F.pad(x, (1, 1, 1, 1)), 3, self.stride)
        ones = x.new_ones(1, 1, x.shape[2], x.shape[3])
        count_map = F.avg_pool2d(F.pad(ones, (1, 1, 1, 1)), 3, self.stride)  # = counted cells / 9
        return pooled / count_map


def _pool(kind: str) -> OpFactory:
    def make(C_in: int, C_out: int, stride: int, affine: bool) -> nn.Module:
        pool = AvgPool3x3(stride) if kind == "avg" else nn.MaxPool2d(3, stride, padding=1)
        if C_in == C_out:
            return pool
        # NB201's POOLING: a 1x1 ReLU-Conv-BN adapts channels first.
        return nn.Sequential(ReLUConvBN(C_in, C_out, 1, 1, 0, affine=affine), pool)
    return make


def _skip(C_in: int, C_out: int, stride: int, affine: bool) -> nn.Module:
    if stride == 1 and C_in == C_out:
        return Identity()
    if stride == 1:
        return ReLUConvBN(C_in, C_out, 1, 1, 0, affine=affine)
    return FactorizedReduce(C_in, C_out, affine)


@dataclass(frozen=True)
class OpSpec:
    """One op of the ops table: its form, and the kernel, padding and dilation the form is built with. The
    modules (``OPS``, here) and their costs (``nets/cost.OP_COSTS``) are both made from this one table."""

    form: str          # none, max_pool, avg_pool, skip, sep_conv, dil_conv, relu_conv_bn, conv_7x1_1x7
    kernel: int = 0
    padding: int = 0
    dilation: int = 1


OP_SPECS: dict[str, OpSpec] = {
    "none": OpSpec("none"),
    "max_pool_3x3": OpSpec("max_pool", 3, 1),
    "avg_pool_3x3": OpSpec("avg_pool", 3, 1),
    "skip_connect": OpSpec("skip"),
    "sep_conv_3x3": OpSpec("sep_conv", 3, 1),
    "sep_conv_5x5": OpSpec("sep_conv", 5, 2),
    "dil_conv_3x3": OpSpec("dil_conv", 3, 2, 2),
    "dil_conv_5x5": OpSpec("dil_conv", 5, 4, 2),
    "nor_conv_1x1": OpSpec("relu_conv_bn", 1, 0),
    "nor_conv_3x3": OpSpec("relu_conv_bn", 3, 1),
    # evaluation-network ops of NASNet-A and AmoebaNet-A (DARTS' ops table), outside every search space
    "sep_conv_7x7": OpSpec("sep_conv", 7, 3),
    "conv_7x1_1x7": OpSpec("conv_7x1_1x7", 7, 3),
}

# form -> the module of an op of that form: (spec, C_in, C_out, stride, affine) -> nn.Module
MODULE_FORMS: dict[str, Callable[..., nn.Module]] = {
    "none": lambda s, C_in, C_out, stride, affine: Zero(C_in, C_out, stride),
    "max_pool": lambda s, C_in, C_out, stride, affine: _pool("max")(C_in, C_out, stride, affine),
    "avg_pool": lambda s, C_in, C_out, stride, affine: _pool("avg")(C_in, C_out, stride, affine),
    "skip": lambda s, C_in, C_out, stride, affine: _skip(C_in, C_out, stride, affine),
    "sep_conv": lambda s, C_in, C_out, stride, affine: SepConv(C_in, C_out, s.kernel, stride, s.padding, affine),
    "dil_conv": lambda s, C_in, C_out, stride, affine: DilConv(C_in, C_out, s.kernel, stride, s.padding, s.dilation, affine),
    "relu_conv_bn": lambda s, C_in, C_out, stride, affine: ReLUConvBN(C_in, C_out, s.kernel, stride, s.padding, affine=affine),
    "conv_7x1_1x7": lambda s, C_in, C_out, stride, affine: Conv7x1_1x7(C_in, C_out, stride, affine),
}

OPS: dict[str, OpFactory] = {name: functools.partial(MODULE_FORMS[s.form], s) for name, s in OP_SPECS.items()}

DARTS_OPS: tuple[str, ...] = (
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
)
NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
SPACE_OPS: dict[str, tuple[str, ...]] = {"darts": DARTS_OPS, "nb201": NB201_OPS}
# what a DARTS-form genotype may name: the search space's ops and the baselines' own (NASNet-A, AmoebaNet-A)
DARTS_EVAL_OPS: tuple[str, ...] = DARTS_OPS + ("sep_conv_7x7", "conv_7x1_1x7")


def build_op(name: str, C_in: int, C_out: int, stride: int, affine: bool = True) -> nn.Module:
    """Build op ``name``; an unknown name raises ``KeyError`` listing the valid ones."""
    if name not in OPS:
        raise KeyError(f"unknown op {name!r}; valid ops: {', '.join(sorted(OPS))}")
    return OPS[name](C_in, C_out, stride, affine)


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of a branch with probability ``drop_prob`` (DARTS' drop path)."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask

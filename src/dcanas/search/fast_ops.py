"""Search-time forms of three ops of the one ops table (nets/ops.py): the same function on the same parameters
and buffers, in fewer or cheaper kernels. The supernet swaps them in at construction (``accelerate``) and
``Supernet.set_fused`` switches them with the fused mixed cells (off: the table's own forwards, the eager step).

At the supernet's sizes a convolution call costs ~33 us forward and ~100 us backward before any arithmetic
(oneDNN's primitive lookup, its blocked-layout reorders, which pad 2-8 channels to 16), which a step pays
~500 times (``benchmarks/search_profile.py``). Measured in one process against the table's forwards:

* ``MatmulPointwise``: a 1x1 stride-1 convolution with at most ``POINTWISE_MAX`` channels on either side as one
  matrix product over the channels, [C_out, C_in] @ [C_in, N*H*W] (squeeze, expand, the preprocessing and the
  separable convolutions' pointwise kernels); above that oneDNN's kernel is as fast or faster;
* ``FastFactorizedReduce``: the two offset stride-2 1x1 convolutions on the two subsampled grids, taken once
  (the table's form pads the whole input and convolves a strided view, which oneDNN copies in its backward);
* ``FastAvgPool3x3``: one ``avg_pool2d`` that divides by the cells counted, instead of pad, pool and a count
  map made on every call (the table keeps its form for the TFLite converter).

Tested equal to the table's forwards in float64 (tests/test_search_speed.py), which also covers the step.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nets.ops import AvgPool3x3, FactorizedReduce

POINTWISE_MAX = 8  # channels (the smaller side) up to which the matrix product beats oneDNN here


def _channels_matmul(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution's [C_out, C_in] weight applied to NCHW ``x``, as [C_out, C_in] @ [C_in, N*H*W];
    returns [C_out, N*H*W]."""
    n, c, h, w = x.shape
    return weight.reshape(weight.shape[0], c) @ x.transpose(0, 1).reshape(c, n * h * w)


def _to_nchw(y: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    return y.view(-1, n, h, w).transpose(0, 1).contiguous()


class MatmulPointwise(nn.Conv2d):
    """A 1x1, stride-1, ungrouped, bias-free convolution; ``fast``: as one matrix product."""

    fast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            return super().forward(x)
        n, _, h, w = x.shape
        return _to_nchw(_channels_matmul(self.weight, x), n, h, w)


class FastFactorizedReduce(FactorizedReduce):
    """``FactorizedReduce``; ``fast``: conv_1 on x[::2, ::2] and conv_2 on x[1::2, 1::2] (of the input padded
    by one row and column where a size is odd, as the table's form pads), both as matrix products."""

    fast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            return super().forward(x)
        x = self.relu(x)
        H, W = x.shape[2:]
        a = x[:, :, ::2, ::2]
        b = (F.pad(x, (0, W % 2, 0, H % 2)) if H % 2 or W % 2 else x)[:, :, 1::2, 1::2]
        y = torch.cat([_channels_matmul(self.conv_1.weight, a), _channels_matmul(self.conv_2.weight, b)])
        return self.bn(_to_nchw(y, x.shape[0], a.shape[2], a.shape[3]))


class FastAvgPool3x3(AvgPool3x3):
    """``AvgPool3x3``; ``fast``: ``avg_pool2d`` with the padding not counted, one kernel."""

    fast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            return super().forward(x)
        return F.avg_pool2d(x, 3, self.stride, 1, count_include_pad=False)


FAST = (MatmulPointwise, FastFactorizedReduce, FastAvgPool3x3)


def _fast_class(module: nn.Module) -> type | None:
    if type(module) is FactorizedReduce:
        return FastFactorizedReduce
    if type(module) is AvgPool3x3:
        return FastAvgPool3x3
    if (type(module) is nn.Conv2d and module.kernel_size == (1, 1) and module.stride == (1, 1) and module.groups == 1
            and module.bias is None and min(module.in_channels, module.out_channels) <= POINTWISE_MAX):
        return MatmulPointwise
    return None


def accelerate(model: nn.Module) -> nn.Module:
    """Give every op of ``model`` that has a search-time form that form. The subclasses add no parameter or
    buffer, so the module keeps its parameters, state_dict keys and optimizer identity: only its class changes."""
    for module in model.modules():
        cls = _fast_class(module)
        if cls is not None:
            module.__class__ = cls
    return model


def set_fast(model: nn.Module, on: bool) -> None:
    """Switch every search-time form in ``model`` on (its fast forward) or off (the table's forward)."""
    for module in model.modules():
        if isinstance(module, FAST):
            module.fast = on

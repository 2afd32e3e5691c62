"""Search-time forms of four ops of the one ops table (nets/ops.py): the same function on the same parameters
and buffers, in fewer or cheaper kernels. The supernet swaps them in at construction (``accelerate``) and
``Supernet.set_fused`` switches them with the fused mixed cells (off: the table's own forwards, the eager step).

At the supernet's sizes a convolution call's fixed cost (oneDNN's primitive lookup, its blocked-layout
reorders, which pad 2-8 channels to 16) outweighs its arithmetic, and the NCHW pooling kernels are scalar;
the measurements behind each form are in design note 25 and ``benchmarks/search_profile.py``:

* ``MatmulPointwise``: a 1x1 stride-1 convolution with at most ``POINTWISE_MAX`` channels on either side as one
  batched matrix product, [C_out, C_in] @ [C_in, H*W] per image, which reads and writes NCHW as it lies
  (squeeze, expand, the preprocessing and the separable convolutions' pointwise kernels);
* ``FastFactorizedReduce``: the two offset stride-2 1x1 convolutions on the two subsampled grids, taken once,
  as batched matrix products (the table's form pads the whole input and convolves a strided view, which
  oneDNN copies in its backward);
* ``FastAvgPool3x3`` and ``FastMaxPool3x3``: 3x3 pooling on the N*C planes laid out as the channels of one
  channels_last image, where the kernels are vectorised over the planes. The max pool's backward is the NCHW kernel's on the same first-max
  indices; the stride-1 avg pool's is the window sums of grad / count. The table keeps its forms for the
  TFLite converter.

Tested equal to the table's forwards in float64, ties in the pooling windows included
(tests/test_search_speed.py), which also covers the step.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nets.ops import AvgPool3x3, FactorizedReduce

POINTWISE_MAX = 16  # channels (the smaller side) up to which the batched matrix product beats oneDNN here


def _pointwise(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution's [C_out, C_in] weight applied to NCHW ``x`` as one batched matrix product,
    [C_out, C_in] @ [C_in, H*W] per image: reads and writes NCHW as it lies (no transposed copies)."""
    n, c, h, w = x.shape
    y = torch.bmm(weight.view(weight.shape[0], c).expand(n, -1, -1), x.reshape(n, c, h * w))
    return y.view(n, -1, h, w)


class MatmulPointwise(nn.Conv2d):
    """A 1x1, stride-1, ungrouped, bias-free convolution; ``fast``: as one matrix product."""

    fast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            return super().forward(x)
        return _pointwise(self.weight, x)


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
        return self.bn(torch.cat([_pointwise(self.conv_1.weight, a), _pointwise(self.conv_2.weight, b)], 1))


def _planes(x: torch.Tensor) -> torch.Tensor:
    """NCHW ``x``'s N*C planes as the channels of one channels_last image, where the pooling kernels are
    vectorised over the channels (in NCHW they are scalar)."""
    n, c, h, w = x.shape
    return x.reshape(1, n * c, h, w).contiguous(memory_format=torch.channels_last)


def _from_planes(y: torch.Tensor, n: int, c: int) -> torch.Tensor:
    return y.contiguous().view(n, c, y.shape[2], y.shape[3])


def _box_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum over each 3x3 window (zero padding 1, stride 1) of NCHW ``x``."""
    return _from_planes(F.avg_pool2d(_planes(x), 3, 1, 1, divisor_override=1), x.shape[0], x.shape[1])


@functools.lru_cache(maxsize=64)
def _window_count(h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """How many cells of the unpadded input each 3x3 window (padding 1, stride 1) covers, as [h, w]."""
    rows, cols = torch.full((h,), 3.0, dtype=dtype), torch.full((w,), 3.0, dtype=dtype)
    for edges in (rows, cols):
        edges[0] -= 1
        edges[-1] -= 1
    return (rows[:, None] * cols[None, :]).to(device)


class _AvgPool3x3Stride1(torch.autograd.Function):
    """3x3 average pooling, stride 1, padding 1 not counted: the window sums divided by the window counts; the
    backward is the window sums of grad / count (each input cell feeds the windows that cover it)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        count = _window_count(x.shape[2], x.shape[3], x.dtype, x.device)
        ctx.save_for_backward(count)
        return _box_sum(x) / count

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        count, = ctx.saved_tensors
        return _box_sum(grad / count)


class FastAvgPool3x3(AvgPool3x3):
    """``AvgPool3x3``; ``fast``: at stride 1 ``_AvgPool3x3Stride1`` on the planes, at stride 2 one ``avg_pool2d``
    with the padding not counted."""

    fast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            return super().forward(x)
        if self.stride == 1:
            return _AvgPool3x3Stride1.apply(x)
        return F.avg_pool2d(x, 3, self.stride, 1, count_include_pad=False)


class _MaxPool3x3(torch.autograd.Function):
    """3x3 max pooling, padding 1, whose forward runs on the planes and whose backward is the NCHW kernel's,
    fed the same first-maximum indices (the planes are NCHW's planes, so the flat indices are the same)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, stride: int) -> torch.Tensor:
        y, index = F.max_pool2d(_planes(x), 3, stride, 1, return_indices=True)
        index = _from_planes(index, *x.shape[:2])
        ctx.save_for_backward(x, index)
        ctx.stride = stride
        return _from_planes(y, *x.shape[:2])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, index = ctx.saved_tensors
        s = ctx.stride
        return torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, [3, 3], [s, s], [1, 1], [1, 1],
                                                               False, index), None


class FastMaxPool3x3(nn.MaxPool2d):
    """The table's ``MaxPool2d(3, stride, padding=1)``; ``fast``: ``_MaxPool3x3`` (the same values, and the
    gradient to the same first maximum of each window)."""

    fast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            return super().forward(x)
        return _MaxPool3x3.apply(x, self.stride)


FAST = (MatmulPointwise, FastFactorizedReduce, FastAvgPool3x3, FastMaxPool3x3)


def _fast_class(module: nn.Module) -> type | None:
    if type(module) is FactorizedReduce:
        return FastFactorizedReduce
    if type(module) is AvgPool3x3:
        return FastAvgPool3x3
    if (type(module) is nn.MaxPool2d and module.kernel_size in (3, (3, 3)) and module.padding in (1, (1, 1))
            and module.dilation in (1, (1, 1)) and not module.ceil_mode and not module.return_indices
            and isinstance(module.stride, int)):
        return FastMaxPool3x3
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

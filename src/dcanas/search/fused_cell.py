"""The fused forward of a mixed DARTS search cell: the same function as ``SearchCell``'s eager mixed path
(where eq. 5 and the channel bottleneck are written), on the same parameters and buffers, in fewer and
larger kernels. ``Supernet.set_fused(False)`` runs the eager path.

At the supernet's sizes (2-8 channels per op after the bottleneck) a step's time goes to many tiny
kernels, not to arithmetic (``benchmarks/search_profile.py``). Per source node z_i of a mixed cell:

* the first stage of sep_conv_3x3, sep_conv_5x5, dil_conv_3x3 and dil_conv_5x5 is ReLU -> depthwise ->
  pointwise -> BN. After the one shared ReLU it is linear, so each op's pointwise-after-depthwise is one dense
  kernel ``pw[o, c] * dw[c]``; the 3x3 kernels are zero-padded to 5x5 (dil_conv_3x3 on dil_conv_5x5's
  dilation-2 grid), and the four ops run as two convolutions and one batch norm, which also normalises
  the two pools' outputs;
* the two sep_convs' second stage runs as one grouped convolution and one batch norm;
* the op outputs are one concatenation [N, K, C*H*W] of four tensors whose channel blocks are already in the
  op order (pools, skip, sep_convs, dil_convs), so that the mixtures sum_o w_o o(z_i) of every edge out of z_i
  are one batched matrix product (the outputs are read once);
* the channel blocks of a batch norm's output are taken with one split, not slices.

Each batch norm over several modules' channels updates every module's running statistics as the module
would. Stride-1 convolutions run in channels_last (oneDNN's NCHW kernels are slower at these channel
counts). Equal to the eager path within float rounding: tests/test_search_speed.py checks it in float64
(to 1e-10) and in float32, where the difference is of the size of the eager step's own reordering noise.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nets.ops import DARTS_OPS

CONV_OPS = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")  # the first-stage order in the fused tensor
SEP_OPS = CONV_OPS[:2]
POOL_OPS = ("max_pool_3x3", "avg_pool_3x3")
OUTPUT_ORDER = POOL_OPS + ("skip_connect",) + CONV_OPS  # DARTS_OPS without none: the channel blocks' order
KERNEL = 5  # every fused kernel is 5x5 (dilation 1 for sep_conv, 2 for dil_conv)


def supports(cell: nn.Module) -> bool:
    """Weight sharing, no partial channels, the DARTS op set in the order the outputs are concatenated
    (``OUTPUT_ORDER``): what the fused path computes. ``cell`` is a ``supernet.SearchCell``, passed in (this
    module does not import the supernet)."""
    return (cell.ws and cell.pc == 1 and set(cell.op_names) == set(DARTS_OPS)
            and tuple(n for n in cell.op_names if n != "none") == OUTPUT_ORDER)


def _source_ops(cell: nn.Module, i: int) -> dict[str, nn.Module]:
    """Source ``i``'s op modules by name (weight sharing: one module per source and op, eq. 5)."""
    return {name: cell.ops[str(i)][k] for k, name in enumerate(cell.op_names)}


def _batch_norm(x: torch.Tensor, bns: Sequence[nn.BatchNorm2d]) -> torch.Tensor:
    """One batch norm (affine=False) over the channel blocks of several BN modules, each module's running
    statistics and batch count updated as its own forward would."""
    training = bns[0].training
    mean = torch.cat([b.running_mean for b in bns])
    var = torch.cat([b.running_var for b in bns])
    y = F.batch_norm(x, mean, var, None, None, training, bns[0].momentum, bns[0].eps)
    if training:  # three calls for all the modules (a copy and an add per module cost ~20 ops a call)
        sizes = [b.num_features for b in bns]
        torch._foreach_copy_([b.running_mean for b in bns], list(mean.split(sizes)))
        torch._foreach_copy_([b.running_var for b in bns], list(var.split(sizes)))
        torch._foreach_add_([b.num_batches_tracked for b in bns], 1)
    return y


def _cell_kernels(cell: nn.Module) -> tuple[torch.Tensor, ...]:
    """Every source's composed 5x5 kernels, made for all sources at once (a handful of kernels, not ~35 per
    source): per source [3, 2C, C, 5, 5], the first stages of (sep_conv_3x3, sep_conv_5x5), of (dil_conv_3x3,
    dil_conv_5x5) and the second stages of (sep_conv_3x3, sep_conv_5x5). A ReLU-depthwise-pointwise-BN stage's
    pointwise-after-depthwise is the dense kernel ``pw[o, c] * dw[c]``; a 3x3 kernel is zero-padded to 5x5."""
    sources = len(cell.ops)
    stages: dict[int, list[nn.Module]] = {3: [], 5: []}  # kernel size -> [first sep, dil, second sep] per source
    for i in range(sources):
        ops = _source_ops(cell, i)
        for k in stages:
            sep = ops[f"sep_conv_{k}x{k}"]
            stages[k] += [sep[0], ops[f"dil_conv_{k}x{k}"], sep[1]]
    C = stages[3][0][1].in_channels  # every op's channels (after the bottleneck)
    dense = []
    for k, mods in stages.items():
        dw = torch.cat([m[1].weight for m in mods]).view(sources, 3, 1, C, k, k)
        pw = torch.cat([m[2].weight for m in mods]).view(sources, 3, C, C, 1, 1)
        d = pw * dw  # [sources, 3, C_out, C_in, k, k]
        dense.append(d if k == KERNEL else F.pad(d, ((KERNEL - k) // 2,) * 4))
    return torch.stack(dense, 2).view(sources, 3, 2 * C, C, KERNEL, KERNEL).unbind(0)


def _layout(x: torch.Tensor, stride: int) -> torch.Tensor:
    """A convolution's input in the layout it runs fastest in: channels_last pays at stride 1 (measured)."""
    return x.contiguous(memory_format=torch.channels_last) if stride == 1 else x


def _conv(x: torch.Tensor, weight: torch.Tensor, stride: int, dilation: int, groups: int = 1) -> torch.Tensor:
    """A 5x5 convolution of ``x`` (in ``_layout``); the result is in the input's layout."""
    return F.conv2d(x, weight, None, stride, dilation * (KERNEL - 1) // 2, dilation, groups)


def source_outputs(cell: nn.Module, i: int, z: torch.Tensor, kernels: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    """Every non-``none`` op of source ``i`` on its (squeezed) input ``z``, as [N, K, C*H*W] in the cell's op order
    (max pool, avg pool, skip, sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5): one concatenation of
    four tensors whose channel blocks are already in that order; and the shape of one op's output. ``kernels``:
    the source's composed kernels (``_cell_kernels``)."""
    ops = _source_ops(cell, i)
    first = {name: ops[name][0] if name in SEP_OPS else ops[name] for name in CONV_OPS}
    stride = first["sep_conv_3x3"][1].stride[0]
    C = z.shape[1]
    r = _layout(F.relu(z), stride)  # one layout change for both convolutions
    a = _conv(r, kernels[0], stride, 1)
    b = _conv(r, kernels[1], stride, 2)
    # one batch norm for the four first stages and the two pools; the channel blocks taken with split, whose
    # backward is one cat (a slice's backward is a zero tensor of the whole input per slice, then a sum)
    pooled = [ops[n][0](z) for n in POOL_OPS]
    bns = [first[n][3] for n in CONV_OPS] + [ops[n][1] for n in POOL_OPS]
    sep, dil, pools = _batch_norm(torch.cat([a, b, *pooled], 1).contiguous(), bns).split(2 * C, 1)
    seps = _batch_norm(_conv(_layout(F.relu(sep), 1), kernels[2], 1, 1, groups=2).contiguous(), [ops[n][1][3] for n in SEP_OPS])
    skip = ops["skip_connect"](z)
    return torch.cat([pools, skip, seps, dil], 1).view(skip.shape[0], len(OUTPUT_ORDER), -1), skip.shape


def mixed_forward(cell: nn.Module, states: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """The mixed cell: node j = sum over i < j of sum_o softmax(alpha)_(i,j),o * o(z_i), then the expansion.
    Each source's terms for every later node are one batched matrix product [edges out of i, K] @ [K, C*H*W] per
    image, made as soon as z_i exists: the source's op outputs are read once, not once per edge."""
    states = list(states)
    keep = [k for k, n in enumerate(cell.op_names) if n != "none"]
    first, end = cell.inputs, cell.inputs + cell.nodes
    terms: dict[int, list[torch.Tensor]] = {j: [] for j in range(first, end)}
    kernels = _cell_kernels(cell)

    def add_source(i: int) -> torch.Size:
        """Source i's terms of every later node; returns the shape of one op output (the same for every source)."""
        z = cell.squeeze[i](states[i]) if cell.squeeze is not None else states[i]
        outputs, shape = source_outputs(cell, i, z, kernels[i])
        targets = range(max(first, i + 1), end)
        rows = weights[[cell.edge_index[(i, j)] for j in targets]][:, keep]
        mixed = torch.bmm(rows.expand(outputs.shape[0], -1, -1), outputs)  # [N, edges, C*H*W]
        for j, term in zip(targets, mixed.unbind(1)):
            terms[j].append(term)
        return shape

    shape = [add_source(i) for i in range(first)][-1]
    for j in range(first, end):
        node = sum(terms[j][1:], terms[j][0]).view(shape)
        states.append(cell.expand[j - first](node) if cell.expand is not None else node)
        if j + 1 < end:
            add_source(j)
    return torch.cat(states[first:], dim=1)

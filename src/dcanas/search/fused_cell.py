"""The fused forward of a mixed DARTS search cell: the same function as ``SearchCell``'s eager mixed path
(where eq. 5 and the channel bottleneck are written), on the same parameters and buffers, in fewer and
larger kernels. ``Supernet.set_fused(False)`` runs the eager path.

At the supernet's sizes (2-8 channels per op after the bottleneck) a step's time goes to many tiny
kernels, not to arithmetic (``benchmarks/search_profile.py``). Per source node z_i of a mixed cell:

* the first stage of sep_conv_3x3, sep_conv_5x5, dil_conv_3x3 and dil_conv_5x5 is ReLU -> depthwise ->
  pointwise -> BN. After the one shared ReLU it is linear, so each op's pointwise-after-depthwise is one dense
  kernel ``pw[o, c] * dw[c]``; the 3x3 kernels are zero-padded to 5x5 (dil_conv_3x3 on dil_conv_5x5's
  dilation-2 grid), and the four ops run as two convolutions and one batch norm;
* the two sep_convs' second stage runs as one grouped convolution and one batch norm; the two pools'
  batch norms as one;
* the op outputs are stacked as a [K, M] matrix, so that an edge's mixture sum_o w_o o(z_i) is one
  matrix product.

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
KERNEL = 5  # every fused kernel is 5x5 (dilation 1 for sep_conv, 2 for dil_conv)


def supports(cell: nn.Module) -> bool:
    """Weight sharing, no partial channels, the DARTS op set: what the fused path computes. ``cell`` is a
    ``supernet.SearchCell``, passed in (this module does not import the supernet)."""
    return cell.ws and cell.pc == 1 and set(cell.op_names) == set(DARTS_OPS)


def _batch_norm(x: torch.Tensor, bns: Sequence[nn.BatchNorm2d]) -> torch.Tensor:
    """One batch norm (affine=False) over the channel blocks of several BN modules, each module's running
    statistics and batch count updated as its own forward would."""
    training = bns[0].training
    mean = torch.cat([b.running_mean for b in bns])
    var = torch.cat([b.running_var for b in bns])
    y = F.batch_norm(x, mean, var, None, None, training, bns[0].momentum, bns[0].eps)
    if training:
        offset = 0
        for b in bns:
            n = b.num_features
            b.running_mean.copy_(mean[offset:offset + n])
            b.running_var.copy_(var[offset:offset + n])
            b.num_batches_tracked.add_(1)
            offset += n
    return y


def _dense_kernel(stage: nn.Sequential) -> torch.Tensor:
    """A ReLU-depthwise-pointwise-BN stage's pointwise-after-depthwise as one dense 5x5 kernel [C_out, C_in, 5, 5]."""
    dw, pw = stage[1], stage[2]
    k = dw.weight.shape[-1]
    dense = pw.weight.view(pw.out_channels, pw.in_channels, 1, 1) * dw.weight.view(1, dw.out_channels, k, k)
    return dense if k == KERNEL else F.pad(dense, ((KERNEL - k) // 2,) * 4)


def _conv(x: torch.Tensor, weight: torch.Tensor, stride: int, dilation: int, groups: int = 1) -> torch.Tensor:
    padding = dilation * (KERNEL - 1) // 2
    if stride == 1:  # channels_last pays at stride 1 (measured); the result goes back to NCHW for the rest
        return F.conv2d(x.contiguous(memory_format=torch.channels_last), weight, None, 1, padding, dilation, groups).contiguous()
    return F.conv2d(x, weight, None, stride, padding, dilation, groups)


def source_outputs(cell: nn.Module, i: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    """Every non-``none`` op of source ``i`` on its (squeezed) input ``z``, stacked as [K, M] in the cell's op order,
    and the shape of one op's output."""
    ops = {name: cell.ops[str(i)][k] for k, name in enumerate(cell.op_names)}
    first = {name: ops[name][0] if name in SEP_OPS else ops[name] for name in CONV_OPS}
    stride = first["sep_conv_3x3"][1].stride[0]
    C = z.shape[1]
    r = F.relu(z)
    a = _conv(r, torch.cat([_dense_kernel(first[n]) for n in SEP_OPS]), stride, 1)
    b = _conv(r, torch.cat([_dense_kernel(first[n]) for n in CONV_OPS[2:]]), stride, 2)
    y = _batch_norm(torch.cat([a, b], 1), [first[n][3] for n in CONV_OPS])
    second = [ops[n][1] for n in SEP_OPS]
    y2 = _batch_norm(_conv(F.relu(y[:, :2 * C]), torch.cat([_dense_kernel(s) for s in second]), 1, 1, groups=2),
                     [s[3] for s in second])
    pools = _batch_norm(torch.cat([ops[n][0](z) for n in POOL_OPS], 1), [ops[n][1] for n in POOL_OPS])
    out = {"sep_conv_3x3": y2[:, :C], "sep_conv_5x5": y2[:, C:], "dil_conv_3x3": y[:, 2 * C:3 * C],
           "dil_conv_5x5": y[:, 3 * C:], "max_pool_3x3": pools[:, :C], "avg_pool_3x3": pools[:, C:],
           "skip_connect": ops["skip_connect"](z)}
    return torch.stack([out[n] for n in cell.op_names if n != "none"]).view(len(out), -1), out["skip_connect"].shape


def mixed_forward(cell: nn.Module, states: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """The mixed cell: node j = sum over i < j of sum_o softmax(alpha)_(i,j),o * o(z_i), then the expansion."""
    states = list(states)
    keep = torch.tensor([k for k, n in enumerate(cell.op_names) if n != "none"], device=weights.device)
    w = weights.index_select(1, keep)
    stacked: dict[int, tuple[torch.Tensor, torch.Size]] = {}
    for j in range(cell.inputs, cell.inputs + cell.nodes):
        node = None
        for i in range(j):
            if i not in stacked:
                z = cell.squeeze[i](states[i]) if cell.squeeze is not None else states[i]
                stacked[i] = source_outputs(cell, i, z)
            outputs, shape = stacked[i]
            term = w[cell.edge_index[(i, j)]].unsqueeze(0) @ outputs
            node = term if node is None else node + term
        node = node.view(shape)
        states.append(cell.expand[j - cell.inputs](node) if cell.expand is not None else node)
    return torch.cat(states[cell.inputs:], dim=1)


"""The ONE cost counter: analytic parameters and FLOPs (multiply-accumulates, fvcore's
convention) in closed form from shapes, no forward pass.

Conventions (those of fvcore on a module in eval mode): conv = C_out * C_in/groups * k*k
per output pixel, no bias; linear = in * out; batch norm = 2 per element (affine);
adaptive average pooling = 1 per input element; add, ReLU, max/avg pooling, pad and
division = 0.  Params follow DARTS: the auxiliary head is not counted.

``op_cost(name, C_in, C_out, stride, size)`` is b(o) of the paper's eq. 3; the search uses it
at every cell position of the evaluation network.  ``network_cost`` walks the same layout
functions the networks are built from.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from typing import Callable

from .config import NetConfig
from .darts import CellSlot, conv_out, genotype_layout
from .genotype import DartsGenotype, Genotype, NB201Genotype
from .nb201 import nb201_layout
from .ops import OP_SPECS


@dataclass(frozen=True)
class Cost:
    """params and FLOPs (the budgets), and the graph counts the model-size model reads
    (``costs/size.py``): weight layers once batch norm is folded (conv, linear), their output
    channels (each gets a bias and, in int8, a scale), and padding-excluding average pools (each
    adds a constant divisor map to an exported graph)."""

    params: int = 0
    flops: int = 0
    layers: int = 0
    channels: int = 0
    avgpools: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __mul__(self, k: int) -> "Cost":
        return Cost(*(getattr(self, f.name) * k for f in fields(self)))

    def get(self, metric: str) -> int:
        if metric not in COUNTED:
            raise ValueError(f"unknown cost metric {metric!r}; valid: {', '.join(COUNTED)}")
        return getattr(self, metric)


COUNTED = tuple(f.name for f in fields(Cost))  # what Cost.get reads: the budgets and the graph counts
ZERO = Cost()


def conv(C_in: int, C_out: int, k: int, size: int, stride: int = 1, padding: int = 0,
         dilation: int = 1, groups: int = 1, bias: bool = False) -> tuple[Cost, int]:
    """Cost and output side of a Conv2d on a ``size`` x ``size`` input."""
    out = conv_out(size, k, stride, padding, dilation)
    weights = C_out * (C_in // groups) * k * k
    return Cost(weights + (C_out if bias else 0), weights * out * out, layers=1, channels=C_out), out


def bn(C: int, size: int) -> Cost:
    return Cost(2 * C, 2 * C * size * size)


def relu_conv_bn(C_in: int, C_out: int, k: int, size: int, stride: int = 1, padding: int = 0) -> tuple[Cost, int]:
    c, out = conv(C_in, C_out, k, size, stride, padding)
    return c + bn(C_out, out), out


def dil_conv(C_in: int, C_out: int, k: int, size: int, stride: int, padding: int, dilation: int) -> tuple[Cost, int]:
    dw, out = conv(C_in, C_in, k, size, stride, padding, dilation, groups=C_in)
    pw, _ = conv(C_in, C_out, 1, out)
    return dw + pw + bn(C_out, out), out


def sep_conv(C_in: int, C_out: int, k: int, size: int, stride: int, padding: int) -> tuple[Cost, int]:
    a, out = dil_conv(C_in, C_in, k, size, stride, padding, 1)
    b, out = dil_conv(C_in, C_out, k, out, 1, padding, 1)
    return a + b, out


def conv_7x1_1x7(C_in: int, C_out: int, size: int, stride: int) -> tuple[Cost, int]:
    """1x7 then 7x1 convolution, each striding its own axis, then BN (ops.Conv7x1_1x7)."""
    out = conv_out(size, 7, stride, 3)
    a = C_in * C_in * 7
    b = C_out * C_in * 7
    return Cost(a + b, a * size * out + b * out * out, layers=2, channels=C_in + C_out) + bn(C_out, out), out


def factorized_reduce(C_in: int, C_out: int, size: int) -> tuple[Cost, int]:
    out = conv_out(size, 1, 2)  # two 1x1 convs of C_out/2 channels each, concatenated
    return Cost(C_in * C_out, C_in * C_out * out * out, layers=2, channels=C_out) + bn(C_out, out), out


def _pool_cost(C_in: int, C_out: int, stride: int, size: int) -> Cost:
    return relu_conv_bn(C_in, C_out, 1, size)[0] if C_in != C_out else ZERO


def _avg_pool_cost(C_in: int, C_out: int, stride: int, size: int) -> Cost:
    return _pool_cost(C_in, C_out, stride, size) + Cost(avgpools=1)


def _skip_cost(C_in: int, C_out: int, stride: int, size: int) -> Cost:
    if stride == 1 and C_in == C_out:
        return ZERO
    if stride == 1:
        return relu_conv_bn(C_in, C_out, 1, size)[0]
    return factorized_reduce(C_in, C_out, size)[0]


OpCost = Callable[[int, int, int, int], Cost]

# form -> the cost of an op of that form: (spec, C_in, C_out, stride, size) -> Cost; the ops come from the one
# op specification table (nets/ops.OP_SPECS), so the costs take the kernels, paddings and dilations the modules have
COST_FORMS: dict[str, Callable[..., Cost]] = {
    "none": lambda s, C_in, C_out, stride, size: ZERO,
    "max_pool": lambda s, C_in, C_out, stride, size: _pool_cost(C_in, C_out, stride, size),
    "avg_pool": lambda s, C_in, C_out, stride, size: _avg_pool_cost(C_in, C_out, stride, size),
    "skip": lambda s, C_in, C_out, stride, size: _skip_cost(C_in, C_out, stride, size),
    "sep_conv": lambda s, C_in, C_out, stride, size: sep_conv(C_in, C_out, s.kernel, size, stride, s.padding)[0],
    "dil_conv": lambda s, C_in, C_out, stride, size: dil_conv(C_in, C_out, s.kernel, size, stride, s.padding, s.dilation)[0],
    "relu_conv_bn": lambda s, C_in, C_out, stride, size: relu_conv_bn(C_in, C_out, s.kernel, size, stride, s.padding)[0],
    "conv_7x1_1x7": lambda s, C_in, C_out, stride, size: conv_7x1_1x7(C_in, C_out, size, stride)[0],
}
OP_COSTS: dict[str, OpCost] = {name: functools.partial(COST_FORMS[s.form], s) for name, s in OP_SPECS.items()}


def op_cost(name: str, C_in: int, C_out: int, stride: int, size: int) -> Cost:
    """b(o): cost of op ``name`` on a ``size`` x ``size`` input."""
    return OP_COSTS[name](C_in, C_out, stride, size)


# ---- DARTS network -----------------------------------------------------------------

def darts_stem_cost(cfg: NetConfig) -> Cost:
    if cfg.stem == "imagenet":
        a, s = conv(cfg.in_channels, cfg.C // 2, 3, cfg.input_size, 2, 1)
        b, s = conv(cfg.C // 2, cfg.C, 3, s, 2, 1)
        c, s2 = conv(cfg.C, cfg.C, 3, s, 2, 1)
        return a + bn(cfg.C // 2, conv_out(cfg.input_size, 3, 2, 1)) + b + bn(cfg.C, s) + c + bn(cfg.C, s2)
    c, s = conv(cfg.in_channels, 3 * cfg.C, 3, cfg.input_size, 1, 1)
    return c + bn(3 * cfg.C, s)


def darts_preprocess_cost(slot: CellSlot) -> Cost:
    pre0 = (factorized_reduce(slot.C_prev_prev, slot.C, slot.size_prev_prev)[0] if slot.reduction_prev
            else relu_conv_bn(slot.C_prev_prev, slot.C, 1, slot.size_prev_prev)[0])
    return pre0 + relu_conv_bn(slot.C_prev, slot.C, 1, slot.size)[0]


def darts_edge_shape(slot: CellSlot, src: int) -> tuple[int, int, int, int]:
    """(C_in, C_out, stride, input size) of an edge of a DARTS cell at ``slot``: in a reduction cell,
    stride 2 from the two inputs, and stride 1 at the already reduced size from intermediate nodes."""
    if not slot.reduction:
        return slot.C, slot.C, 1, slot.size
    if src < 2:
        return slot.C, slot.C, 2, slot.size
    return slot.C, slot.C, 1, conv_out(slot.size, 3, 2, 1)


def darts_edge_cost(slot: CellSlot, op: str, src: int) -> Cost:
    """b(o) of one edge of a DARTS cell at ``slot``."""
    return op_cost(op, *darts_edge_shape(slot, src))


def head_cost(C: int, size: int, num_classes: int) -> Cost:
    """Global average pooling + linear classifier (bias counted)."""
    return Cost(C * num_classes + num_classes, C * size * size + C * num_classes, layers=1, channels=num_classes)


def darts_fixed_cost(cfg: NetConfig, slots: list[CellSlot], multiplier: int) -> Cost:
    """Everything of a DARTS network that does not depend on the genotype's ops."""
    last = slots[-1]
    out_size = conv_out(last.size, 3, 2, 1) if last.reduction else last.size
    return (darts_stem_cost(cfg) + sum((darts_preprocess_cost(s) for s in slots), ZERO)
            + head_cost(multiplier * last.C, out_size, cfg.num_classes))


def darts_network_cost(genotype: DartsGenotype, cfg: NetConfig) -> Cost:
    slots = genotype_layout(genotype, cfg)
    total = darts_fixed_cost(cfg, slots, len(genotype.reduce_concat if slots[-1].reduction else genotype.normal_concat))
    for slot in slots:
        for op, src in (genotype.reduce if slot.reduction else genotype.normal):
            total = total + darts_edge_cost(slot, op, src)
    return total


# ---- NB201 network -----------------------------------------------------------------

def resblock_cost(C_in: int, C_out: int, size: int) -> Cost:
    a, out = relu_conv_bn(C_in, C_out, 3, size, 2, 1)
    b, _ = relu_conv_bn(C_out, C_out, 3, out, 1, 1)
    down, _ = conv(C_in, C_out, 1, size // 2)
    return a + b + down


def nb201_fixed_cost(cfg: NetConfig) -> Cost:
    slots = nb201_layout(cfg)
    stem, _ = conv(cfg.in_channels, cfg.C, 3, cfg.input_size, 1, 1)
    total = stem + bn(cfg.C, cfg.input_size)
    for s in slots:
        if s.reduction:
            total = total + resblock_cost(s.C_in, s.C_out, s.size)
    last = slots[-1]
    return total + bn(last.C_out, last.size) + head_cost(last.C_out, last.size, cfg.num_classes)


def nb201_network_cost(genotype: NB201Genotype, cfg: NetConfig) -> Cost:
    total = nb201_fixed_cost(cfg)
    for s in nb201_layout(cfg):
        if not s.reduction:
            for node in genotype.nodes:
                for op, _ in node:
                    total = total + op_cost(op, s.C_out, s.C_out, 1, s.size)
    return total


def network_cost(genotype: Genotype, cfg: NetConfig) -> Cost:
    """Analytic params and FLOPs of the evaluation network (auxiliary head excluded)."""
    if isinstance(genotype, DartsGenotype):
        return darts_network_cost(genotype, cfg)
    return nb201_network_cost(genotype, cfg)


def fvcore_cost(model, input_size: int, in_channels: int) -> Cost:
    """fvcore's count of the same network in eval mode (the cross-check), auxiliary head excluded."""
    import logging
    import warnings

    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import warns about torch.jit.script
        from fvcore.nn import FlopCountAnalysis, parameter_count

    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, in_channels, input_size, input_size)
        analysis = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings
            flops = int(analysis.total())
        counts = parameter_count(model)
        params = counts[""] - counts.get("auxiliary_head", 0)
    finally:
        model.train(was_training)
    return Cost(int(params), flops)


def module_graph_counts(model) -> Cost:
    """The graph counts of a built module (its weight layers, their output channels, its
    padding-excluding average pools), auxiliary head excluded: what the analytic counts are checked
    against."""
    import torch.nn as nn

    from .ops import AvgPool3x3

    aux = getattr(model, "auxiliary_head", None)
    skip = {id(m) for m in aux.modules()} if aux is not None else set()
    mods = [m for m in model.modules() if id(m) not in skip]
    weights = [m for m in mods if isinstance(m, (nn.Conv2d, nn.Linear))]
    return Cost(layers=len(weights), channels=sum(m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for m in weights),
                avgpools=sum(isinstance(m, AvgPool3x3) for m in mods))

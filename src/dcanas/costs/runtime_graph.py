"""The graph onnxruntime runs for a DARTS evaluation network, counted from the genotype alone (issue 33).

onnxruntime's CPU provider rewrites the exported graph before it runs it: BatchNorm folds into the convolution
before it, a ReLU that is a convolution's only consumer fuses into it, an Add fuses into a convolution that feeds
it as its only consumer, identical nodes on one tensor are computed once (several ReLU-led ops of one input share
one ReLU; two equal pools of one input are one pool), and on x86 its NCHWc transformer runs convolutions and pools
in a blocked layout, inserting a ReorderInput where a plain tensor meets a blocked op and a ReorderOutput where a
blocked tensor meets a plain one (Concat, Div, an Add with a plain input, Pad). So the node counts per type are not
a sum over the genotype's (edge, op) choices, but each follows from the cell's local structure; ``ort_node_counts``
applies those rules. Checked against the runtime's own graph (``benchmarks/latency_model.py``, and every
``latency build`` on its calibration networks): equal on every network for every node type, or the model is not
used (``LatencyModel.structure``).

The latency model's graph form (``LatencyModel.fit_graph``: ms per node of each type) on these counts predicts a
network's latency from its genotype without exporting it.
"""
from __future__ import annotations

from collections import Counter
from typing import Optional

from ..nets.config import NetConfig
from ..nets.darts import CellSlot, genotype_layout
from ..nets.genotype import DARTS_INPUTS, EDGES_PER_NODE, DartsGenotype, Genotype

RUNTIME = "onnxruntime-nchwc"  # the rules' runtime: onnxruntime's CPU provider with its x86 blocked layout
_CONV_NODES = {"sep_conv_3x3": 4, "sep_conv_5x5": 4, "dil_conv_3x3": 2, "dil_conv_5x5": 2}  # convolutions after BN folding
_POOLS = ("max_pool_3x3", "avg_pool_3x3")
BLOCKED, PLAIN = "c", "p"
# Channel counts the rules hold for: multiples of the blocked layout's width (16 floats with AVX-512). With C = 8 or 24
# on an AVX-512 machine some convolutions stay plain, and the reorders differ from these rules.
NCHWC_BLOCK = 16


def ort_node_counts(genotype: Genotype, cfg: NetConfig) -> Optional[dict[str, int]]:
    """Node counts per op type of the graph onnxruntime (NCHWc, x86) runs for ``genotype``'s evaluation network;
    None where the rules do not cover the network (NB201, another stem, a width C that is not a multiple of
    ``NCHWC_BLOCK``, a concatenation other than every node, an op outside the DARTS search space)."""
    if not isinstance(genotype, DartsGenotype) or cfg.stem != "cifar" or cfg.auxiliary or cfg.C % NCHWC_BLOCK:
        return None
    steps = len(genotype.normal) // EDGES_PER_NODE
    every = tuple(range(DARTS_INPUTS, DARTS_INPUTS + steps))
    if genotype.normal_concat != every or genotype.reduce_concat != every:
        return None
    if any(op not in _CONV_NODES and op not in _POOLS and op != "skip_connect" for op, _ in genotype.normal + genotype.reduce):
        return None
    c: Counter[str] = Counter()
    slots = genotype_layout(genotype, cfg)
    c["Conv"] += 1  # the stem; its ReLU-led readers (the first cells' preprocessing) fuse their ReLU into it
    out_layouts = []
    for slot in slots:
        if slot.reduction_prev:  # factorized reduce of s0: ReLU (shared), conv, pad, two slices, reorder, conv, concat, BN
            c.update({"Conv": 3, "Concat": 1, "Pad": 1, "Slice": 2, "ReorderInput": 1})
        else:
            c["Conv"] += 1
        c["Conv"] += 1  # preprocess1
        out_layouts.append(_cell(genotype.reduce if slot.reduction else genotype.normal, slot, c))
    for k, layout in enumerate(out_layouts):
        if k == len(slots) - 1:  # the head: global average (ReduceMean), reshape, linear
            c.update({"ReduceMean": 1, "Reshape": 1, "Gemm": 1, "ReorderOutput": int(layout == BLOCKED)})
            continue
        c["Relu"] += 1  # the next cells' preprocessing share one ReLU of this cell's output
        if layout == PLAIN:
            c["ReorderInput"] += 1
        elif k + 2 < len(slots) and slots[k + 2].reduction_prev:  # the factorized reduce pads a plain tensor
            c["ReorderOutput"] += 1
    return dict(c)


def _cell(edges: tuple, slot: CellSlot, c: Counter) -> str:
    """Add one cell's nodes to ``c``; the layout of its output (blocked when every node is)."""
    layout = {0: BLOCKED, 1: BLOCKED}  # s0, s1: outputs of the preprocessing convolutions
    reduce = slot.reduction
    steps = len(edges) // EDGES_PER_NODE

    def relu_led(op: str, src: int) -> bool:
        return op in _CONV_NODES or (op == "skip_connect" and reduce and src < DARTS_INPUTS)

    # A node whose sum has the same inputs as an earlier node's (pools or identities of the same tensors) is that
    # node's tensor: the runtime computes the Add once.
    canon: dict[int, int] = {0: 0, 1: 1}
    sums: dict[tuple, int] = {}
    for i in range(steps):
        keys = []
        for k, (op, src) in enumerate(edges[EDGES_PER_NODE * i: EDGES_PER_NODE * (i + 1)]):
            keys.append(("conv", i, k) if relu_led(op, src) else (op, canon[src]))
        node, key = DARTS_INPUTS + i, tuple(keys)  # in order: the runtime does not merge Add(a, b) with Add(b, a)
        canon[node] = node if any(k[0] == "conv" for k in keys) else sums.setdefault(key, node)
    readers: dict[int, list[bool]] = {}
    for op, src in edges:
        readers.setdefault(canon[src], []).append(relu_led(op, src))
    seen: set[tuple] = set()

    def once(key: tuple, typ: str, n: int = 1) -> None:  # a node computed once per tensor however many ops read it
        if key not in seen:
            seen.add(key)
            c[typ] += n

    def relu(src: int) -> str:
        if not (src < DARTS_INPUTS and all(readers[src])):  # an input read only by ReLU-led ops: fused into its conv
            once(("relu", src), "Relu")
        return layout[src]

    for i in range(steps):
        node = DARTS_INPUTS + i
        if canon[node] != node:
            layout[node] = layout[canon[node]]
            continue
        outs = []  # per incoming edge: (layout, produced by a convolution of this edge, tensor key)
        for op, src in edges[EDGES_PER_NODE * i: EDGES_PER_NODE * (i + 1)]:
            src = canon[src]
            if op in _CONV_NODES:
                if relu(src) == PLAIN:
                    once(("reorder-in-relu", src), "ReorderInput")
                c["Conv"] += _CONV_NODES[op]
                outs.append((BLOCKED, True, None))
            elif op == "skip_connect" and reduce and src < DARTS_INPUTS:  # factorized reduce
                if relu(src) == BLOCKED:
                    once(("reorder-out-relu", src), "ReorderOutput")
                c.update({"Conv": 3, "Concat": 1})
                once(("pad", src), "Pad")
                once(("slice", src), "Slice", 2)
                once(("reorder-in-slice", src), "ReorderInput")
                outs.append((BLOCKED, True, None))
            elif op in _POOLS:
                if layout[src] == PLAIN:
                    once(("reorder-in", src), "ReorderInput")
                if op == "max_pool_3x3":
                    once(("max", src), "MaxPool")
                    outs.append((BLOCKED, False, ("max", src)))
                else:  # count_include_pad=False: a blocked AveragePool, back to plain, divided by the window's counts
                    once(("avg", src), "AveragePool")
                    once(("avg-out", src), "ReorderOutput")
                    once(("div", src), "Div")
                    outs.append((PLAIN, False, ("div", src)))
            else:  # identity; a cell input read by nothing else is its preprocessing convolution's only consumer
                outs.append((layout[src], src < DARTS_INPUTS and len(readers[src]) == 1, ("node", src)))
        if all(lay == BLOCKED for lay, _, _ in outs):
            if not any(conv for _, conv, _ in outs):  # else the Add fuses into the convolution (its only consumer)
                c["Add"] += 1
            layout[node] = BLOCKED
        else:
            for lay, _, key in outs:
                if lay == BLOCKED:
                    if key is None:
                        c["ReorderOutput"] += 1
                    else:
                        once(("reorder-out",) + key, "ReorderOutput")
            c["Add"] += 1
            layout[node] = PLAIN
    c["Concat"] += 1
    nodes = range(DARTS_INPUTS, DARTS_INPUTS + steps)
    if all(layout[j] == BLOCKED for j in nodes):
        return BLOCKED
    for j in nodes:
        if layout[j] == BLOCKED:
            once(("reorder-out", "node", canon[j]), "ReorderOutput")
    return PLAIN

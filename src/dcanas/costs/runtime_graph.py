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
from typing import Any, Callable, Mapping, Optional, Sequence

from ..nets.config import NetConfig
from ..nets.darts import CellSlot, darts_layout, genotype_layout
from ..nets.genotype import DARTS_INPUTS, EDGES_PER_NODE, DartsGenotype, Genotype

RUNTIME = "onnxruntime-nchwc"  # the rules' runtime: onnxruntime's CPU provider with its x86 blocked layout
_CONV_NODES = {"sep_conv_3x3": 4, "sep_conv_5x5": 4, "dil_conv_3x3": 2, "dil_conv_5x5": 2}  # convolutions after BN folding
_POOLS = ("max_pool_3x3", "avg_pool_3x3")
BLOCKED, PLAIN = "c", "p"
# Channel counts the rules hold for: multiples of the blocked layout's width (16 floats with AVX-512). With C = 8 or 24
# on an AVX-512 machine some convolutions stay plain, and the reorders differ from these rules.
NCHWC_BLOCK = 16


def covers(space: str, cfg: NetConfig) -> bool:
    """Whether the rules count the evaluation networks of ``space`` at ``cfg`` (a genotype may still fall outside)."""
    return space == "darts" and cfg.stem == "cifar" and not cfg.auxiliary and cfg.C % NCHWC_BLOCK == 0


def conv_nodes(op: str, stride: int) -> int:
    """Convolutions one DARTS op instance runs (BN folded): the factorized reduce (a skip at stride 2) runs 3."""
    return _CONV_NODES.get(op, 3 if op == "skip_connect" and stride == 2 else 0)


def ort_node_counts(genotype: Genotype, cfg: NetConfig) -> Optional[dict[str, int]]:
    """Node counts per op type of the graph onnxruntime (NCHWc, x86) runs for ``genotype``'s evaluation network;
    None where the rules do not cover the network (NB201, another stem, a width C that is not a multiple of
    ``NCHWC_BLOCK``, a concatenation other than every node, an op outside the DARTS search space)."""
    if not isinstance(genotype, DartsGenotype) or not covers("darts", cfg):
        return None
    steps = len(genotype.normal) // EDGES_PER_NODE
    every = tuple(range(DARTS_INPUTS, DARTS_INPUTS + steps))
    if genotype.normal_concat != every or genotype.reduce_concat != every:
        return None
    if any(op not in _CONV_NODES and op not in _POOLS and op != "skip_connect" for op, _ in genotype.normal + genotype.reduce):
        return None
    c: Counter[str] = Counter()

    def add(t: str, n: int) -> None:
        c[t] += n

    _network(genotype_layout(genotype, cfg), lambda slot: int(_cell(genotype.reduce if slot.reduction else genotype.normal,
                                                                     slot, c) == BLOCKED), add)
    return {t: n for t, n in c.items() if n}


def _network(slots: Sequence[CellSlot], cell: Callable[[CellSlot], Any], add: Callable[[str, Any], None]) -> None:
    """The nodes outside the cells' edges, counted (``ort_node_counts``) or in expectation (``expected_node_counts``):
    ``cell(slot)`` adds one cell's own nodes and returns its output's probability of being blocked (1 or 0 when
    counted); ``add(type, n)`` adds n nodes of a type."""
    add("Conv", 1)  # the stem; its ReLU-led readers (the first cells' preprocessing) fuse their ReLU into it
    blocked = []
    for slot in slots:
        # s0 after a reduction: factorized reduce (ReLU shared, conv, pad, two slices, reorder, conv, concat, BN)
        for t, n in ({"Conv": 3, "Concat": 1, "Pad": 1, "Slice": 2, "ReorderInput": 1} if slot.reduction_prev else {"Conv": 1}).items():
            add(t, n)
        add("Conv", 1)  # preprocess1
        blocked.append(cell(slot))
    for k, b in enumerate(blocked):
        if k == len(slots) - 1:  # the head: global average (ReduceMean), reshape, linear
            for t in ("ReduceMean", "Reshape", "Gemm"):
                add(t, 1)
            add("ReorderOutput", b)
            continue
        add("Relu", 1)  # the next cells' preprocessing share one ReLU of this cell's output
        add("ReorderInput", 1 - b)  # a plain output, before the preprocessing convolutions
        if k + 2 < len(slots) and slots[k + 2].reduction_prev:  # the factorized reduce pads a plain tensor
            add("ReorderOutput", b)


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


def expected_node_counts(probs: Mapping[str, Any], op_names: Sequence[str], cfg: NetConfig, nodes: int,
                         pairs: Optional[Mapping[str, Sequence[Any]]] = None) -> Optional[dict[str, Any]]:
    """``ort_node_counts`` in expectation, differentiable: ``probs[kind]`` (edges x ops, the rows of
    ``SPACES["darts"].edges(nodes)``) the probability of each op on each edge; ``pairs[kind][i]`` (one weight per
    pair of node i's incoming edges, in ``itertools.combinations`` order) the probability that node i keeps that pair:
    by default uniform, as eq. 3's 2/j weighting. Each rule of ``ort_node_counts`` with probabilities for choices:
    "some reader of kind k" is 1 - prod over the out-edges of (1 - keep x p_k), a node is blocked with the probability
    that both inputs of its pair are. Edges are taken as independent; at one-hot ``probs`` and 0/1 pair weights that
    is exact, and the counts equal ``ort_node_counts`` (except where two nodes compute the same sum, which this form
    counts twice). None where ``ort_node_counts`` would be."""
    import torch

    if not covers("darts", cfg) or any(
            o not in _CONV_NODES and o not in _POOLS and o not in ("skip_connect", "none") for o in op_names):
        return None
    edges = [(s, d) for d in range(DARTS_INPUTS, DARTS_INPUTS + nodes) for s in range(d)]
    slots = darts_layout(cfg, nodes, nodes)
    cells = {kind: _expected_cell(probs[kind], op_names, edges, nodes, kind == "reduce", None if pairs is None else pairs[kind])
             for kind in ("normal", "reduce")}
    c: dict[str, Any] = {}

    def add(t: str, v: Any) -> None:
        c[t] = c.get(t, 0.0) + v

    def cell(slot: CellSlot) -> Any:
        counts, blocked = cells["reduce" if slot.reduction else "normal"]
        for t, v in counts.items():
            add(t, v)
        return blocked

    _network(slots, cell, add)
    return {t: v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=torch.float64) for t, v in c.items()}


def _expected_cell(P: Any, op_names: Sequence[str], edges: list[tuple[int, int]], nodes: int, reduce: bool,
                   pairs: Optional[Sequence[Any]]) -> tuple[dict[str, Any], Any]:
    """One cell's expected node counts and the probability that its output is blocked."""
    import itertools

    P = P.double()
    col = {o: k for k, o in enumerate(op_names)}

    def p(e: int, ops: Sequence[str]) -> Any:
        ks = [col[o] for o in ops if o in col]
        return P[e, ks].sum() if ks else P.new_zeros(())

    conv_ops = [o for o in _CONV_NODES]
    fr = [reduce and s < DARTS_INPUTS for s, _ in edges]
    R = [p(e, conv_ops) + (p(e, ["skip_connect"]) if fr[e] else 0.0) for e in range(len(edges))]  # ReLU-led
    FR = [p(e, ["skip_connect"]) if fr[e] else P.new_zeros(()) for e in range(len(edges))]
    M = [p(e, ["max_pool_3x3"]) for e in range(len(edges))]
    A = [p(e, ["avg_pool_3x3"]) for e in range(len(edges))]
    ID = [P.new_zeros(()) if fr[e] else p(e, ["skip_connect"]) for e in range(len(edges))]
    incoming = {d: [e for e, (_, t) in enumerate(edges) if t == d] for d in range(DARTS_INPUTS, DARTS_INPUTS + nodes)}
    pair_w: dict[int, list[tuple[int, int, Any]]] = {}
    keep = [P.new_zeros(()) for _ in edges]
    for i, d in enumerate(range(DARTS_INPUTS, DARTS_INPUTS + nodes)):
        combos = list(itertools.combinations(incoming[d], 2))
        ws = pairs[i] if pairs is not None else [1.0 / len(combos)] * len(combos)
        pair_w[d] = [(a, b, w) for (a, b), w in zip(combos, ws)]
        for a, b, w in pair_w[d]:
            keep[a] = keep[a] + w
            keep[b] = keep[b] + w
    out = {x: [e for e, (s, _) in enumerate(edges) if s == x] for x in range(DARTS_INPUTS + nodes)}

    def none_of(x: int, f) -> Any:  # probability that no kept out-edge of x is of the kind f(e) gives
        r = P.new_ones(())
        for e in out[x]:
            r = r * (1 - keep[e] * f(e))
        return r

    c: dict[str, Any] = {}

    def add(t: str, v: Any) -> None:
        c[t] = c.get(t, 0.0) + v

    blocked = {0: P.new_ones(()), 1: P.new_ones(())}
    for d in range(DARTS_INPUTS, DARTS_INPUTS + nodes):
        ce = {e: R[e] + M[e] + ID[e] * blocked[edges[e][0]] for e in incoming[d]}  # the edge's output is blocked
        blocked[d] = sum(w * ce[a] * ce[b] for a, b, w in pair_w[d])

        def single(e: int) -> Any:  # a cell input read by nothing but edge e: its convolution's only consumer
            s = edges[e][0]
            if s >= DARTS_INPUTS:
                return P.new_zeros(())
            r = P.new_ones(())
            for e2 in out[s]:
                if e2 != e:
                    r = r * (1 - keep[e2])
            return r

        fe = {e: R[e] + ID[e] * single(e) for e in incoming[d]}  # blocked and from a convolution that can take the Add
        for a, b, w in pair_w[d]:
            add("Add", w * (1 - (ce[a] * ce[b] - (ce[a] - fe[a]) * (ce[b] - fe[b]))))
            add("ReorderOutput", w * (R[a] * (1 - ce[b]) + R[b] * (1 - ce[a])))  # a convolution's output into a plain Add
    for e in range(len(edges)):
        add("Conv", keep[e] * (4 * p(e, ["sep_conv_3x3", "sep_conv_5x5"]) + 2 * p(e, ["dil_conv_3x3", "dil_conv_5x5"]) + 3 * FR[e]))
        add("Concat", keep[e] * FR[e])

    def plain_add(e: int) -> Any:  # edge e kept and its node's sum runs plain
        d = edges[e][1]
        r = P.new_zeros(())
        for a, b, w in pair_w[d]:
            if e in (a, b):
                other = b if e == a else a
                r = r + w * (1 - (R[other] + M[other] + ID[other] * blocked[edges[other][0]]))
        return r

    def blocked_but(x: int) -> Any:  # every node but x blocked
        r = P.new_ones(())
        for d in range(DARTS_INPUTS, DARTS_INPUTS + nodes):
            if d != x:
                r = r * blocked[d]
        return r

    for x in range(DARTS_INPUTS + nodes):
        no_r = none_of(x, lambda e: R[e])
        if x < DARTS_INPUTS:  # ReLU fused into the preprocessing conv unless a reader is not ReLU-led
            add("Relu", 1 - no_r - none_of(x, lambda e: M[e] + A[e] + ID[e]) + none_of(x, lambda e: 1.0))
        else:
            add("Relu", 1 - no_r)
            add("ReorderInput", (1 - blocked[x]) * (1 - no_r))
            add("ReorderInput", (1 - blocked[x]) * (1 - none_of(x, lambda e: M[e] + A[e])))
        some_fr = 1 - none_of(x, lambda e: FR[e])
        for t, n in (("ReorderOutput", 1), ("Pad", 1), ("Slice", 2), ("ReorderInput", 1)):
            add(t, n * some_fr)
        some_max, some_avg = 1 - none_of(x, lambda e: M[e]), 1 - none_of(x, lambda e: A[e])
        add("MaxPool", some_max)
        for t in ("AveragePool", "ReorderOutput", "Div"):
            add(t, some_avg)
        max_out = P.new_ones(())
        id_out = P.new_ones(())
        for e in out[x]:
            max_out = max_out * (1 - M[e] * plain_add(e))
            id_out = id_out * (1 - ID[e] * plain_add(e))
        add("ReorderOutput", 1 - max_out)
        if x < DARTS_INPUTS:
            add("ReorderOutput", 1 - id_out)
        else:
            add("ReorderOutput", blocked[x] * (1 - blocked_but(x) * id_out))  # shared with the concatenation's
    add("Concat", 1.0)
    return c, blocked_but(-1)

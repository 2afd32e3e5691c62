"""costs/runtime_graph.py: the node counts of the graph onnxruntime runs, derived from a genotype, against the
runtime's own graph of the exported network (issue 33)."""
from __future__ import annotations

import random

import pytest
import torch

from dcanas.costs.runtime_graph import ort_node_counts
from dcanas.nets.config import default_config
from dcanas.nets.genotype import KNOWN, genotype_from_json, random_genotype
from dcanas.nets.ops import DARTS_OPS as SPACE_OPS_DARTS

CPU_DEMO = dict(in_channels=1, input_size=28, num_classes=10, C=16, layers=8)  # cpu-demo's evaluation network
SMALL = dict(in_channels=3, input_size=16, num_classes=10, C=16, layers=4)      # another stem width, depth and size


def _runtime_counts(genotype, net, path) -> dict[str, int]:
    from dcanas.export.converters import convert
    from dcanas.export.formats import formats_for
    from dcanas.nets.build import build_network
    from dcanas.runtime.runner import runtime_graph

    with torch.no_grad():
        convert(build_network(genotype, net).eval(), torch.randn(1, net.in_channels, net.input_size, net.input_size),
                formats_for("onnxruntime", "fp32"), path)
    return runtime_graph(str(path), 1)


@pytest.mark.parametrize("net, genotype", [
    (CPU_DEMO, "DARTS_V2"),      # a reduction cell of max pools and skips: blocked Adds nothing fuses, one computed once
    (CPU_DEMO, "PC_DARTS"),      # an average pool beside a convolution: a plain Add, a reorder for the concat
    (SMALL, "DARTS_V1"),         # skips and a pool of the same tensors in two orders: two Adds, not merged
    (SMALL, "DARTS_V2"),         # two nodes of the same sum (a skip and a max pool): one Add
    (CPU_DEMO, 7), (SMALL, 8), ({**SMALL, "C": 32}, 3),   # random genotypes (seeds)
])
def test_counted_from_the_genotype_equals_the_runtimes_graph(tmp_path, net, genotype):
    cfg = default_config("darts", **net)
    g = genotype_from_json(KNOWN[genotype]) if isinstance(genotype, str) else random_genotype("darts", random.Random(genotype))
    runtime = _runtime_counts(g, cfg, tmp_path / "net.onnx")
    if not any(t.startswith("Reorder") for t in runtime):
        pytest.skip("this machine's onnxruntime runs no blocked (NCHWc) layout: the rules are for its x86 CPU provider")
    assert ort_node_counts(g, cfg) == runtime


def test_not_counted_where_the_rules_do_not_reach():
    nb201 = genotype_from_json(KNOWN["NB201_REF"])
    assert ort_node_counts(nb201, default_config("nb201", **CPU_DEMO)) is None
    darts = genotype_from_json(KNOWN["DARTS_V2"])
    assert ort_node_counts(darts, default_config("darts", **{**CPU_DEMO, "input_size": 224})) is None  # ImageNet stem
    assert ort_node_counts(darts, default_config("darts", **{**CPU_DEMO, "C": 24})) is None  # some convolutions stay plain
    nasnet = genotype_from_json(KNOWN["NASNet"])  # ops and a concatenation outside the DARTS space
    assert ort_node_counts(nasnet, default_config("darts", **CPU_DEMO)) is None


def _rows(n, per_node, seed=0):
    """Work-basis genotypes whose latency is the additive table plus ``per_node`` ms for every node of each type
    whose count is not a sum over ops: what the structure model's form says a runtime does."""
    from dcanas.costs.latency import instances, work

    rng = random.Random(seed)
    net = default_config("darts", **SMALL)
    gs = [random_genotype("darts", rng) for _ in range(n)]
    ys = [0.3 + sum(0.01 * work(i) for i in instances(g, net)) + sum(per_node.get(t, 0.0) * k for t, k in ort_node_counts(g, net).items())
          for g in gs]
    return net, gs, ys


def test_the_structure_model_recovers_per_node_costs_the_table_cannot_sum():
    from dcanas.costs.latency import LatencyModel, agreement

    per_node = {"Relu": 0.004, "ReorderOutput": 0.006, "ReorderInput": 0.005, "Add": 0.003}
    net, gs, ys = _rows(40, per_node)
    ops = sorted(o for o in SPACE_OPS_DARTS if o != "none")
    lm = LatencyModel("darts", net.to_json(), ops, "work", 0.0, {o: 0.0 for o in ops})
    fit, held = list(zip(gs[:30], ys[:30])), list(zip(gs[30:], ys[30:]))
    lm.fit(fit).fit_structure([(g, y, None) for g, y in fit], ridge=0.0)
    assert set(per_node) <= set(lm.structure_types) and "Conv" not in lm.structure_types
    structure = agreement([lm.predict_structure(g) for g, _ in held], [y for _, y in held])
    table = agreement([lm.predict(g) for g, _ in held], [y for _, y in held])
    assert structure["mape"] < 1e-6 < table["mape"], (structure, table)  # exact where the additive table is not
    assert lm.structure_stats["checked"] == 0 and "unused" not in lm.structure_stats


def test_the_structure_model_is_not_fitted_where_the_counts_disagree_with_the_runtime():
    from dcanas.costs.latency import LatencyModel

    net, gs, ys = _rows(6, {"Relu": 0.004})
    ops = sorted(o for o in SPACE_OPS_DARTS if o != "none")
    lm = LatencyModel("darts", net.to_json(), ops, "work", 0.0, {o: 0.0 for o in ops}).fit(list(zip(gs, ys)))
    runtime = [ort_node_counts(g, net) for g in gs]
    runtime[2] = {**runtime[2], "Relu": runtime[2]["Relu"] + 1}  # another runtime's graph: one more ReLU
    lm.fit_structure([(g, y, c) for g, y, c in zip(gs, ys, runtime)])
    assert lm.structure_theta == [] and lm.predict_structure(gs[0]) is None
    assert lm.structure_stats["unused"].endswith("differ from the runtime's graph on 1 of 6 networks")


def _one_hot(genotype, nodes=4):
    """The genotype as op probabilities (edges x ops) and 0/1 pair weights per node (itertools.combinations order)."""
    import itertools

    from dcanas.nets.ops import DARTS_OPS

    edges = [(s, d) for d in range(2, 2 + nodes) for s in range(d)]
    probs, pairs = {}, {}
    for kind, cell in (("normal", genotype.normal), ("reduce", genotype.reduce)):
        P = torch.zeros(len(edges), len(DARTS_OPS), dtype=torch.float64)
        pairs[kind] = []
        for i in range(nodes):
            chosen = [(op, src) for op, src in cell[2 * i: 2 * i + 2]]
            for op, src in chosen:
                P[edges.index((src, 2 + i)), DARTS_OPS.index(op)] = 1.0
            incoming = [e for e, (_, d) in enumerate(edges) if d == 2 + i]
            want = {edges.index((src, 2 + i)) for _, src in chosen}
            pairs[kind].append([1.0 if set(ab) == want else 0.0 for ab in itertools.combinations(incoming, 2)])
        probs[kind] = P
    return probs, pairs


def _same_sum_twice(genotype) -> bool:
    for cell in (genotype.normal, genotype.reduce):
        sums = [tuple(cell[2 * i: 2 * i + 2]) for i in range(4)]
        plain = [s for s in sums if not any(op.startswith(("sep", "dil")) or (op == "skip_connect" and src < 2 and cell is genotype.reduce)
                                             for op, src in s)]
        if len(plain) != len(set(plain)):
            return True
    return False


@pytest.mark.parametrize("net", [CPU_DEMO, SMALL])
def test_the_expected_counts_at_one_genotype_are_its_counts(net):
    """``expected_node_counts`` at one-hot op weights and the genotype's pairs kept equals ``ort_node_counts`` (the
    rules checked against the runtime above), for 300 random genotypes and the known ones."""
    from dcanas.costs.runtime_graph import expected_node_counts
    from dcanas.nets.ops import DARTS_OPS

    cfg = default_config("darts", **net)
    rng = random.Random(11)
    gs = [genotype_from_json(KNOWN[n]) for n in ("DARTS_V1", "PC_DARTS")] + [random_genotype("darts", rng) for _ in range(300)]
    checked = 0
    for g in gs:
        if _same_sum_twice(g):  # the expectation counts such a sum twice (DARTS_V2's reduction cell)
            continue
        probs, pairs = _one_hot(g)
        soft = expected_node_counts(probs, DARTS_OPS, cfg, 4, pairs)
        exact = ort_node_counts(g, cfg)
        assert {t: round(float(v), 9) for t, v in soft.items() if float(v) != 0} == {t: float(v) for t, v in exact.items()}, g
        checked += 1
    assert checked > 280

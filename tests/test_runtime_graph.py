"""costs/runtime_graph.py: the node counts of the graph onnxruntime runs, derived from a genotype, against the
runtime's own graph of the exported network (issue 33)."""
from __future__ import annotations

import random

import pytest
import torch
from conftest import skip_unless_ci

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
        skip_unless_ci("this machine's onnxruntime runs no blocked (NCHWc) layout: the rules are for its x86 CPU provider")
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


def _structure_model(net, per_node, seed=0):
    """A work-basis latency model of ``net`` whose structure model is fitted to latencies that are the additive
    table plus ``per_node`` ms for every node of each non-additive type (the form's own truth)."""
    from dcanas.costs.latency import LatencyModel, instances, work

    rng = random.Random(seed)
    gs = [random_genotype("darts", rng) for _ in range(40)]
    ys = [0.3 + sum(0.01 * work(i) for i in instances(g, net)) + sum(per_node.get(t, 0.0) * k for t, k in ort_node_counts(g, net).items())
          for g in gs]
    ops = sorted(o for o in SPACE_OPS_DARTS if o != "none")
    lm = LatencyModel("darts", net.to_json(), ops, "work", 0.0, {o: 0.0 for o in ops}).fit(list(zip(gs, ys)))
    return lm.fit_structure([(g, y, None) for g, y in zip(gs, ys)], ridge=0.0), gs


def test_the_search_sums_the_structure_model_and_its_derivations_hold_it():
    """With a structure model, k_s (eq. 3) takes the node counts in expectation (differentiable, 0 added at uniform
    weights, where it is the mean structure cost of a derived network), and every derivation is within the budget by
    the structure model's own figure of the derived network: over it, derived again under a shrunk budget."""
    from dcanas.search.constraint import Constraints, CostModel
    from dcanas.search.derive import derive_filling, derive_within
    from dcanas.search.searcher import _held

    net = default_config("darts", **CPU_DEMO)
    lm, gs = _structure_model(net, {"Relu": 0.02, "ReorderOutput": 0.03, "ReorderInput": 0.02, "Add": 0.02})
    assert lm.structure_stats["form"] == "table" and lm.structure_stats["loo"]["mape"] < 1e-6
    cm = CostModel("darts", net, SPACE_OPS_DARTS, 4, "latency_ms", latency=lm)
    assert cm.source.structure
    uniform = {k: torch.zeros(14, len(SPACE_OPS_DARTS), dtype=torch.float64, requires_grad=True) for k in ("normal", "reduce")}
    k_u = cm.expected(uniform)
    assert float(cm.source.extra({k: torch.softmax(a.detach()[:, 1:], -1) for k, a in uniform.items()}, SPACE_OPS_DARTS[1:])) == \
        pytest.approx(0.0, abs=1e-9)
    rng_g = random.Random(1)
    mean = sum(lm.bound(random_genotype("darts", rng_g)) for _ in range(1000)) / 1000
    assert float(k_u.detach()) == pytest.approx(mean, rel=0.03)  # the mean of random networks: 2.499 against 2.472 (edges independent)
    k_u.backward()
    assert float(uniform["normal"].grad.abs().sum()) > 0
    costs = sorted(lm.bound(g) for g in gs)
    budget = costs[len(costs) // 3]
    con = Constraints("latency_ms", {"latency_ms": cm}, {"latency_ms": budget}, {"latency_ms": budget})
    rng, again = torch.Generator().manual_seed(0), 0
    for _ in range(12):
        alphas = {k: torch.randn(14, len(SPACE_OPS_DARTS), generator=rng, dtype=torch.float64) for k in ("normal", "reduce")}
        for derive in (lambda K, a=alphas: derive_within("darts", a, SPACE_OPS_DARTS, 4, con.edge_costs(), con.fixed(), K),
                       lambda K, a=alphas: derive_filling("darts", a, SPACE_OPS_DARTS, 4, con.edge_costs(), con.fixed(), K, "latency_ms", 0.9)):
            first, d = derive(dict(con.K_d)), _held(con, derive)
            again += first is not None and not con.within(first.genotype)
            if d is not None:
                assert con.within(d.genotype) and d.cost["latency_ms"] <= budget
                assert d.cost["latency_ms"] == pytest.approx(lm.bound(d.genotype), abs=1e-3)
    assert again > 0  # the knapsack alone went over on some: the test exercises the second derivations

"""The supernet, the constraint and the derivation, on tiny supernets (seconds each)."""
import pytest
import torch

from dcanas.nets.config import NetConfig
from dcanas.nets.genotype import DartsGenotype, NB201Genotype
from dcanas.nets.ops import DARTS_OPS, NB201_OPS
from dcanas.search.constraint import CostModel, add_constraint_gradients, update_lambda, violation
from dcanas.search.derive import cell_edges, derive
from dcanas.search.supernet import SearchCell, SearchOptions, Supernet, SupernetConfig

SPACES = {"darts": dict(nodes=4, cells=5), "nb201": dict(nodes=3, cells=1)}
OPTIONS = {
    "dca-nas": SearchOptions(),
    "vanilla": SearchOptions.vanilla(),
    "ws": SearchOptions(weight_sharing=True, bottleneck=1, derived_cells=False),
    "ws+cb": SearchOptions(weight_sharing=True, bottleneck=4, derived_cells=False),
    "pc-darts": SearchOptions(weight_sharing=False, bottleneck=1, derived_cells=False, partial_channels=4),
}


def tiny(space, options=None, C=8):
    return Supernet(SupernetConfig(space=space, C=C, num_classes=10, in_channels=1, input_size=16,
                                   options=options or SearchOptions(), **SPACES[space]))


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("name", OPTIONS)
def test_forward_backward_every_variant(space, name):
    torch.manual_seed(0)
    net = tiny(space, OPTIONS[name])
    y = net(torch.randn(4, 1, 16, 16))
    assert y.shape == (4, 10)
    y.sum().backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in net.arch_parameters())
    ids = {id(p) for p in net.arch_parameters()}
    assert not any(id(p) in ids for p in net.weight_parameters())


def _mixed_cell(net):
    return next(c for i, c in enumerate(net.cells) if isinstance(c, SearchCell) and net.runs_mixed(i))


def _count_calls(cell):
    calls = {}
    hooks = []
    for key, ml in cell.ops.items():
        for k, m in enumerate(ml):
            hooks.append(m.register_forward_hook(lambda mod, inp, out, key=key, k=k: calls.__setitem__((key, k), calls.get((key, k), 0) + 1)))
    return calls, hooks


@pytest.mark.parametrize("space", SPACES)
def test_weight_sharing_one_module_per_source_and_op_reused_across_edges(space):
    net = tiny(space, SearchOptions(derived_cells=False)).set_fused(False)  # the eager path calls each op module
    cell = _mixed_cell(net)
    sources = cell.inputs + cell.nodes - 1
    assert set(cell.ops) == {str(i) for i in range(sources)}  # eq. 5: w_o^i, not w_o^{i,j}
    calls, hooks = _count_calls(cell)
    net(torch.randn(2, 1, 16, 16))
    for h in hooks:
        h.remove()
    non_none = [k for k, n in enumerate(net.op_names) if n != "none"]
    # each (source, op) ran exactly once per forward, although it feeds several edges
    assert {key for key in calls} == {(str(i), k) for i in range(sources) for k in non_none}
    assert set(calls.values()) == {1}
    vanilla = _mixed_cell(tiny(space, SearchOptions.vanilla()))
    assert len(vanilla.ops) == len(cell_edges(vanilla.inputs, vanilla.nodes))


@pytest.mark.parametrize("space", SPACES)
def test_derived_cells_run_only_selected_ops_and_keep_all_weights(space):
    torch.manual_seed(1)
    net = tiny(space)
    derived = [c for i, c in enumerate(net.cells) if isinstance(c, SearchCell) and not net.runs_mixed(i)]
    assert derived, "the supernet has derived cells"
    cell = derived[0]
    calls, hooks = _count_calls(cell)
    net(torch.randn(2, 1, 16, 16))
    for h in hooks:
        h.remove()
    kind = "reduce" if cell.reduction else "normal"
    selected = {(str(i), k) for pairs in net._selected(kind).values() for i, k in pairs if net.op_names[k] != "none"}
    assert set(calls) == selected
    n_params = sum(p.numel() for p in cell.parameters())
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_()
    net.rederive()
    assert sum(p.numel() for p in cell.parameters()) == n_params  # nothing thrown away


def test_an_nb201_search_whose_arg_max_is_all_none_still_learns():
    """The derived cells run the arg-max genotype; in NB201 that could be a cell whose every path from input to
    output crosses a ``none`` (it outputs zeros, and alpha in the mixed cell before it got no gradient: cpu-demo's
    NB201 search stopped at epoch 3 with "element 0 of tensors does not require grad"). The derivation now keeps
    the most probable connected cell, and the loss reaches alpha."""
    torch.manual_seed(2)
    net = Supernet(SupernetConfig(space="nb201", C=4, cells=2, nodes=3, num_classes=10, in_channels=1, input_size=16,
                                  options=SearchOptions()))  # two cells per stage: the second runs the derived genotype
    with torch.no_grad():
        net.alphas["normal"][:, NB201_OPS.index("none")] = 5.0
    g = net.rederive()
    assert g.connected() and sum(op != "none" for node in g.nodes for op, _ in node) == 1  # one op kept: (0, 3)
    assert any(not net.runs_mixed(i) and isinstance(c, SearchCell) for i, c in enumerate(net.cells))
    for p in net.weight_parameters():
        p.requires_grad_(False)  # the alpha pass: weights frozen, as search_step's lean pass
    torch.nn.functional.cross_entropy(net(torch.randn(4, 1, 16, 16)), torch.arange(4)).backward()
    assert net.alphas["normal"].grad is not None and net.alphas["normal"].grad.abs().sum() > 0


def _cost_model(space, metric="params"):
    ev = NetConfig(C=8, layers=5 if space == "darts" else 1, num_classes=10, in_channels=1, input_size=16)
    ops = DARTS_OPS if space == "darts" else NB201_OPS
    return CostModel(space, ev, ops, SPACES[space]["nodes"], metric)


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("metric", ["params", "flops"])
def test_expected_cost_gradient_matches_finite_differences(space, metric):
    cm = _cost_model(space, metric)
    torch.manual_seed(0)
    alphas = {k: torch.randn(len(cm.edges), len(cm.op_names), dtype=torch.float64, requires_grad=True) for k in cm.B}
    cm.expected(alphas).backward()
    eps = 1e-6
    for kind, a in alphas.items():
        for e, k in [(0, 4), (len(cm.edges) - 1, 2), (1, 0)]:
            plus = {n: v.detach().clone() for n, v in alphas.items()}
            minus = {n: v.detach().clone() for n, v in alphas.items()}
            plus[kind][e, k] += eps
            minus[kind][e, k] -= eps
            fd = (float(cm.expected(plus)) - float(cm.expected(minus))) / (2 * eps)
            assert fd == pytest.approx(float(a.grad[e, k]), rel=1e-4, abs=1e-3)


@pytest.mark.parametrize("space", SPACES)
def test_constraint_gradient_sign(space):
    """Descending the Lagrangian term moves weight from expensive ops to cheap ones."""
    cm = _cost_model(space)
    alphas = {k: torch.zeros(len(cm.edges), len(cm.op_names), requires_grad=True) for k in cm.B}
    v = violation(cm.expected(alphas), 0.5 * float(cm.expected(alphas).detach()))
    assert float(v) == pytest.approx(1.0)
    add_constraint_gradients(list(alphas.values()), {"params": v}, {"params": 1.0}, adaptive=False)
    g = alphas["normal"].grad[0]
    names = list(cm.op_names)
    expensive = names.index("sep_conv_3x3" if space == "darts" else "nor_conv_3x3")
    cheap = names.index("max_pool_3x3" if space == "darts" else "none")
    assert g[expensive] > 0 > g[cheap]
    if space == "darts":  # `none` is never derived, so k_s (eq. 3) does not weight it: no gradient
        assert g[names.index("none")] == 0


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_adaptive_term_matches_the_loss_gradient_norm(space, lam):
    """Adaptive lambda step: the constraint's gradient is rescaled to the loss gradient's norm, so with a
    zero loss gradient elsewhere the added gradient's norm is lambda x that norm, whatever the budget's units."""
    cm = _cost_model(space)
    alphas = {k: torch.zeros(len(cm.edges), len(cm.op_names), requires_grad=True) for k in cm.B}
    loss_grads = {k: 1e-3 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1)) for k, a in alphas.items()}
    norm = float(torch.sqrt(sum((g ** 2).sum() for g in loss_grads.values())))
    for target in (0.5, 5e6):  # units do not matter
        for k, a in alphas.items():
            a.grad = loss_grads[k].clone()
        v = violation(cm.expected(alphas), target * float(cm.expected(alphas).detach()))
        scales, norms = add_constraint_gradients(list(alphas.values()), {"params": v}, {"params": lam}, adaptive=True)
        added = torch.sqrt(sum(((a.grad - loss_grads[k]) ** 2).sum() for k, a in alphas.items()))
        assert float(added) == pytest.approx(lam * norm, rel=1e-5)
        assert norms["params"] == pytest.approx(float(added), rel=1e-5)  # what the report's gradient share reads
        assert norms["loss"] == pytest.approx(norm, rel=1e-5)
        assert scales["params"] > 0


def test_lambda_projected_ascent():
    lam = 0.0
    for _ in range(5):
        new = update_lambda(lam, k_s=150.0, target=100.0, lr=0.1)
        assert new > lam
        lam = new
    for _ in range(100):
        lam = update_lambda(lam, k_s=50.0, target=100.0, lr=0.1)
        assert lam >= 0.0
    assert lam == 0.0


def test_expected_cost_equals_derived_cost_for_one_hot_nb201():
    cm = _cost_model("nb201")
    g = NB201Genotype.from_str("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|")
    a = torch.full((6, 5), -1e4)
    for row, (i, j) in enumerate(cm.edges):
        op = dict((src, name) for name, src in g.nodes[j - 1])[i]
        a[row, NB201_OPS.index(op)] = 0.0
    assert float(cm.expected({"normal": a})) == pytest.approx(cm.derived(g), rel=1e-9)


@pytest.mark.parametrize("space", SPACES)
def test_feasible_range_brackets_derivable_networks(space):
    import random

    from dcanas.nets.genotype import random_genotype
    cm = _cost_model(space)
    lo, hi = cm.feasible_range()
    costs = [cm.derived(random_genotype(space, random.Random(s), steps=SPACES[space]["nodes"])) for s in range(30)]
    assert lo <= min(costs) and max(costs) <= hi and lo < hi


def test_derive_darts_rule():
    K = len(DARTS_OPS)
    a = torch.zeros(len(cell_edges(2, 2)), K)  # 2 nodes: edges (0,2) (1,2) (0,3) (1,3) (2,3)
    a[:, DARTS_OPS.index("none")] = 10.0       # `none` is never chosen, whatever its weight
    a[0, DARTS_OPS.index("sep_conv_3x3")] = 3.0
    a[1, DARTS_OPS.index("max_pool_3x3")] = 2.0
    a[4, DARTS_OPS.index("dil_conv_5x5")] = 5.0
    a[2, DARTS_OPS.index("skip_connect")] = 4.0
    g = derive("darts", {"normal": a, "reduce": a}, DARTS_OPS, nodes=2)
    assert isinstance(g, DartsGenotype)
    assert g.normal == (("sep_conv_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 0), ("dil_conv_5x5", 2))
    g.validate()


def test_derive_nb201_argmax_per_edge():
    a = torch.zeros(6, 5)
    for row in range(6):  # skip, 1x1, 3x3, pool, none, skip: a live cell (the none on 1->3 leaves every op a path)
        a[row, (row + 1) % 5] = 1.0
    g = derive("nb201", {"normal": a}, NB201_OPS, nodes=3)
    assert g.live() and [op for node in g.nodes for op, _ in node] == [NB201_OPS[(r + 1) % 5] for r in range(6)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_derived_cost_matches_the_built_network(seed):
    """The cost the search reports for a derived genotype is what fvcore counts on the evaluation
    network built from it (an independent count, not the analytic counter against itself)."""
    from dataclasses import replace

    from dcanas.nets.build import build_network
    from dcanas.nets.cost import fvcore_cost

    cm = _cost_model("darts")
    g = derive("darts", {k: torch.randn(14, 8, generator=torch.Generator().manual_seed(seed)) for k in ("normal", "reduce")},
               DARTS_OPS, 4)
    net = build_network(g, replace(cm.eval_cfg, auxiliary=False))
    assert cm.derived(g) == fvcore_cost(net, cm.eval_cfg.input_size, cm.eval_cfg.in_channels).params

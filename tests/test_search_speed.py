"""The faster search and training steps compute what the eager ones compute.

The fused mixed cell (search/fused_cell.py) and the channels_last training layout reorder floating-point
sums, so they are compared in float64, where a reordering moves results by ~1e-14: any mistake in the
fused algebra (a kernel in the wrong place, a missing op, a batch norm over the wrong channels, a
running statistic not updated) shows as a difference of order 1e-3 or more. In float32 the supernet's
gradients are too ill-conditioned for a 1e-5 comparison of any reordering: measured here, the eager step
itself changes some cell-0 weight gradients by 11% (relative to the tensor's largest) between 1 and 2
threads, and a 1e-7 relative perturbation of the input moves them by 2.6% in float64 (ReLU and max-pool
kinks); so float32 is checked on the logits and the loss.
"""
import copy

import pytest
import torch

from dcanas.data import datasets as D
from dcanas.nets.ops import DARTS_OPS, NB201_OPS
from dcanas.nets.ops import AvgPool3x3, FactorizedReduce
from dcanas.search import fast_ops, fused_cell
from dcanas.search.config import SearchConfig, cost_models, supernet_config
from dcanas.search.searcher import autocast_for, optimizers, search_step
from dcanas.search.supernet import SearchCell, SearchOptions, Supernet, SupernetConfig

TIGHT = dict(rtol=1e-10, atol=1e-10)
# the equality tests take the `torch_device` fixture (conftest.DEVICES): the CPU, and CUDA where there is one (marked gpu;
# the forms were designed on a CPU)


def _grads(module, extra=()):
    return {n: p.grad.clone() for n, p in [*module.named_parameters(), *extra] if p.grad is not None}


@pytest.mark.parametrize("reduction", [False, True], ids=["normal", "reduce"])
@pytest.mark.parametrize("bottleneck", [4, 1], ids=["bottleneck", "no-bottleneck"])
def test_fused_cell_equals_eager_in_float64(reduction, bottleneck, torch_device):
    torch.manual_seed(0)
    eager = SearchCell(8, 2, 4, DARTS_OPS, reduction, SearchOptions(bottleneck=bottleneck), True).double().to(torch_device)
    assert eager.fused, "the DCA-NAS cell takes the fused path by default"
    fused = copy.deepcopy(eager)
    eager.fused = False
    results = []
    for cell in (eager, fused):
        states = [torch.randn(4, 8, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(s)).to(torch_device).requires_grad_()
                  for s in (1, 2)]
        w = torch.softmax(torch.randn(14, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3)), -1).to(torch_device).requires_grad_()
        out = cell(states, w)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64, device=torch_device).view_as(out)).sum().backward()
        results.append((out.detach(), _grads(cell, [("w", w), ("s0", states[0]), ("s1", states[1])]),
                        {k: b.clone() for k, b in cell.named_buffers()}))
    (o0, g0, b0), (o1, g1, b1) = results
    torch.testing.assert_close(o1, o0, **TIGHT)
    assert g1.keys() == g0.keys() and len(g0) > 40  # every candidate op's weights got a gradient
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], **TIGHT, msg=lambda m, k=k: f"gradient of {k}: {m}")
    for k in b0:  # running statistics and batch counts, as each BN module's own forward leaves them
        torch.testing.assert_close(b1[k], b0[k], **TIGHT, msg=lambda m, k=k: f"buffer {k}: {m}")
    eager.eval(), fused.eval()  # eval mode: the fused batch norms use the modules' running statistics
    x = [torch.randn(2, 8, 12, 12, dtype=torch.float64, device=torch_device) for _ in range(2)]
    w = torch.softmax(torch.randn(14, 8, dtype=torch.float64, device=torch_device), -1)
    torch.testing.assert_close(fused(x, w), eager(x, w), **TIGHT)


def _search_setup(root, dtype, torch_device, batch=16):
    spec = D.get_spec("fashion-mnist")
    s_train, s_val = D.search_split(D.load_split("fashion-mnist", root.parent, train=True), 6 * batch, 0)
    batches = list(zip(D.batches(s_train, spec, batch, shuffle=False, drop_last=True),
                       D.batches(s_val, spec, batch, shuffle=False, drop_last=True)))
    batches = [((xt.to(torch_device, dtype), yt.to(torch_device)), (xv.to(torch_device, dtype), yv.to(torch_device))) for (xt, yt), (xv, yv) in batches]
    cfg = SearchConfig(dataset="fashion-mnist", C=8, cells=5, nodes=4, batch_size=batch, lr=0.025, eval_C=16, eval_layers=8,
                       budget=150_000.0, options=SearchOptions())
    torch.manual_seed(0)
    return cfg, Supernet(supernet_config(cfg)).to(torch_device, dtype), batches


def _steps(model, cfg, batches, lean=True):
    cms = cost_models(cfg)
    w_opt, _, a_opt = optimizers(model, cfg)
    lams, trace = {m: 0.5 for m in cms}, []
    for t, v in batches:
        lams, st = search_step(model, cms, cfg, t, v, w_opt, a_opt, {cfg.metric: 120_000.0}, lams,
                               autocast_for(cfg, torch.device("cpu")), lean=lean)
        trace.append((st["train_loss"], st["val_loss"], lams[cfg.metric], _grads(model)))
    return trace, {n: p.detach().clone() for n, p in model.named_parameters()}, model.derive()


def test_fused_search_steps_equal_eager_in_float64(fashion_root, torch_device):
    """Three seeded search steps on real Fashion-MNIST: losses, every gradient (w and alpha), lambda, the
    weights and alphas after the steps and the derived genotype agree within 1e-10."""
    cfg, base, batches = _search_setup(fashion_root, torch.float64, torch_device)
    eager = _steps(copy.deepcopy(base).set_fused(False), cfg, batches)
    fused = _steps(copy.deepcopy(base).set_fused(True), cfg, batches)
    for (l0, v0, lam0, g0), (l1, v1, lam1, g1) in zip(eager[0], fused[0]):
        assert l1 == pytest.approx(l0, rel=1e-10) and v1 == pytest.approx(v0, rel=1e-10) and lam1 == pytest.approx(lam0, rel=1e-10)
        assert g1.keys() == g0.keys()
        for k in g0:
            torch.testing.assert_close(g1[k], g0[k], **TIGHT, msg=lambda m, k=k: f"gradient of {k}: {m}")
    for k in eager[1]:
        torch.testing.assert_close(fused[1][k], eager[1][k], **TIGHT)
    assert fused[2] == eager[2]


def test_lean_search_steps_equal_full_gradient_steps(fashion_root, torch_device):
    """The lean step (each pass computes only the gradients its optimizer steps) against the step that computes
    every gradient, three seeded steps in float64: losses, lambda, the alpha gradients, every weight and alpha
    after the steps and the derived genotype agree within 1e-10. The weights' .grad differ by design: the full
    step leaves the alpha pass's weight gradients added to the w pass's (unused: the next step zeroes them)."""
    cfg, base, batches = _search_setup(fashion_root, torch.float64, torch_device)
    full = _steps(copy.deepcopy(base), cfg, batches, lean=False)
    lean = _steps(copy.deepcopy(base), cfg, batches, lean=True)
    alphas = {n for n, _ in base.named_parameters() if n.startswith("alphas")}
    assert alphas
    for (l0, v0, lam0, g0), (l1, v1, lam1, g1) in zip(full[0], lean[0]):
        assert l1 == pytest.approx(l0, rel=1e-10) and v1 == pytest.approx(v0, rel=1e-10) and lam1 == pytest.approx(lam0, rel=1e-10)
        for k in alphas:
            torch.testing.assert_close(g1[k], g0[k], **TIGHT, msg=lambda m, k=k: f"gradient of {k}: {m}")
        # the lean alpha pass computed no weight gradient: what is left is the w pass's alone
        assert any(not torch.allclose(g1[k], g0[k]) for k in g0 if k not in alphas)
    for k in full[1]:
        torch.testing.assert_close(lean[1][k], full[1][k], **TIGHT)
    assert lean[2] == full[2]


def test_fused_supernet_float32_logits_and_loss_within_1e5(fashion_root, torch_device):
    cfg, base, batches = _search_setup(fashion_root, torch.float32, torch_device)
    (x, y), _ = batches[0]
    out = [copy.deepcopy(base).set_fused(f)(x) for f in (False, True)]
    torch.testing.assert_close(out[1], out[0], rtol=1e-5, atol=1e-5)
    losses = [float(torch.nn.functional.cross_entropy(o.detach(), y)) for o in out]
    assert abs(losses[1] - losses[0]) < 1e-5


FAST_CASES = {  # (module of the ops table, input shape): odd sizes take FactorizedReduce's padding
    "fr-even": (lambda: FactorizedReduce(6, 8, affine=False), (3, 6, 8, 8)),
    "fr-odd": (lambda: FactorizedReduce(6, 7, affine=True), (3, 6, 7, 9)),
    "avg-s1": (lambda: AvgPool3x3(1), (3, 4, 7, 6)),
    "avg-s1-one-row": (lambda: AvgPool3x3(1), (2, 3, 1, 5)),
    "avg-s2": (lambda: AvgPool3x3(2), (3, 4, 7, 8)),
    "max-s1": (lambda: torch.nn.MaxPool2d(3, 1, padding=1), (3, 4, 7, 6)),
    "max-s2": (lambda: torch.nn.MaxPool2d(3, 2, padding=1), (3, 4, 7, 8)),
    "pw-8to2": (lambda: torch.nn.Conv2d(8, 2, 1, bias=False), (3, 8, 5, 5)),
    "pw-2to8": (lambda: torch.nn.Conv2d(2, 8, 1, bias=False), (3, 2, 6, 5)),
    "pw-24to16": (lambda: torch.nn.Conv2d(24, 16, 1, bias=False), (2, 24, 4, 5)),
}


@pytest.mark.parametrize("make,shape", FAST_CASES.values(), ids=FAST_CASES.keys())
def test_search_time_op_forms_equal_the_table_in_float64(make, shape, torch_device):
    """Each search-time form (search/fast_ops.py) computes its table op's output, input and weight gradients and
    running statistics, in training and eval mode. The input is on a grid of halves, so pooling windows hold
    ties: a max pool's gradient must go to the same (first) maximum."""
    torch.manual_seed(0)
    table = make().double().to(torch_device)
    fast = fast_ops.accelerate(copy.deepcopy(table))
    assert any(isinstance(m, fast_ops.FAST) for m in fast.modules())
    assert not any(isinstance(m, fast_ops.FAST) for m in table.modules())
    assert fast.state_dict().keys() == table.state_dict().keys()
    for mode in ("train", "eval"):
        results = []
        for m in (table, fast):
            m.train(mode == "train")
            x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(torch_device)
            x = (x * 2).round().div(2).requires_grad_()
            y = m(x)
            (y * torch.linspace(-1, 1, y.numel(), dtype=torch.float64, device=torch_device).view_as(y)).sum().backward()
            results.append((y.detach(), x.grad, _grads(m), {k: b.clone() for k, b in m.named_buffers()}))
        (y0, gx0, g0, b0), (y1, gx1, g1, b1) = results
        torch.testing.assert_close(y1, y0, **TIGHT)
        torch.testing.assert_close(gx1, gx0, **TIGHT)
        assert g1.keys() == g0.keys()
        for k in g0:
            torch.testing.assert_close(g1[k], g0[k], **TIGHT)
        for k in b0:
            torch.testing.assert_close(b1[k], b0[k], **TIGHT)
    fast_ops.set_fast(fast, False)
    assert not any(m.fast for m in fast.modules() if isinstance(m, fast_ops.FAST))  # off: the table's forwards


def test_supernet_swaps_in_search_time_forms_and_switches_them_with_fused():
    model = Supernet(SupernetConfig(C=8, cells=5, in_channels=1, input_size=28))
    kinds = {type(m) for m in model.modules() if isinstance(m, fast_ops.FAST)}
    assert kinds == set(fast_ops.FAST)
    assert all(m.fast for m in model.modules() if isinstance(m, fast_ops.FAST))
    model.set_fused(False)
    assert not any(m.fast for m in model.modules() if isinstance(m, fast_ops.FAST))


@pytest.mark.parametrize("space,options,expected", [
    ("darts", SearchOptions(), True),
    ("darts", SearchOptions(bottleneck=1, derived_cells=False), True),
    ("darts", SearchOptions.vanilla(), False),             # one module per edge: the eager path
    ("darts", SearchOptions(weight_sharing=False, bottleneck=1, derived_cells=False, partial_channels=4), False),
    ("nb201", SearchOptions(), False),                     # NB201's op set: the eager path
])
def test_fused_path_taken_where_supported(space, options, expected):
    ops = DARTS_OPS if space == "darts" else NB201_OPS
    cell = SearchCell(8, 2 if space == "darts" else 1, 4 if space == "darts" else 3, ops, False, options, space == "darts")
    assert fused_cell.supports(cell) is expected and cell.fused is expected


def test_training_step_channels_last_equals_nchw_in_float64(tmp_path):
    """The trainer's layout (channels_last) computes the NCHW step's loss and gradients; model.pt is stored contiguous."""
    import torch.nn as nn

    from dcanas.nets.genotype import KNOWN
    from dcanas.train.model_io import load_model, save_model
    from dcanas.train.trainer import MEMORY_FORMAT, TrainConfig, _logits, build_model, to_layout

    torch.manual_seed(0)
    model, meta = build_model(TrainConfig(genotype=KNOWN["DARTS_V2"], C=8, layers=5), D.get_spec("fashion-mnist"))
    model = model.double().train()
    x = torch.randn(8, 1, 28, 28, dtype=torch.float64)
    y = torch.arange(8) % 10
    results = []
    for fmt in (torch.contiguous_format, MEMORY_FORMAT):
        m = copy.deepcopy(model).to(memory_format=fmt)
        out = m(to_layout(x) if fmt is MEMORY_FORMAT else x)
        loss = nn.functional.cross_entropy(_logits(out), y) + 0.4 * nn.functional.cross_entropy(out[1], y)
        loss.backward()
        results.append((float(loss), _grads(m), m))
    (l0, g0, _), (l1, g1, m1) = results
    assert l1 == pytest.approx(l0, rel=1e-12)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], **TIGHT)
    feat = m1.stem(to_layout(x))  # the layout really changed: activations run channels_last
    assert feat.is_contiguous(memory_format=MEMORY_FORMAT) and not feat.is_contiguous()
    save_model(tmp_path / "model.pt", m1.float(), meta)
    blob = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(t.is_contiguous() for t in blob["state_dict"].values())
    load_model(tmp_path / "model.pt")

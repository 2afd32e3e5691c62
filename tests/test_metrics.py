"""The metric registry is the one place a budget is defined: a made-up metric registered here (with its own
cost source) reaches the profile schema, the search's constraints, the derivation, the verdict and the report."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pytest
import yaml

from dcanas.costs import metrics as M
from dcanas.costs import sources as S
from dcanas.nets.config import NetConfig
from dcanas.nets.cost import network_cost, op_cost
from dcanas.nets.genotype import Genotype

KB_PER_WEIGHT = 4 / 1024  # fp32 weights


@dataclass
class WeightKB:
    """A made-up cost source: the fp32 weights' KB (params x 4 bytes), from the analytic counter."""

    space: str
    eval_cfg: NetConfig
    nodes: int
    kind: str = "predicted"

    def instance(self, op: str, C_in: int, C_out: int, stride: int, size: int) -> float:
        return op_cost(op, C_in, C_out, stride, size).params * KB_PER_WEIGHT

    def fixed(self) -> float:
        return S.fixed_cost(self.space, self.eval_cfg, self.nodes).params * KB_PER_WEIGHT

    def network(self, genotype: Genotype) -> float:
        return network_cost(genotype, self.eval_cfg).params * KB_PER_WEIGHT


@pytest.fixture
def weights_kb():
    """Register ``weights_kb`` and its source (the one place), and take them out again."""
    S.SOURCES["weights"] = lambda name, space, cfg, nodes, inputs: WeightKB(space, cfg, nodes)
    M.register(M.Metric("weights_kb", "KB", 1, "model graph (fp32 weights)", lambda e: e.graph["params"] * KB_PER_WEIGHT,
                        source="weights"))
    yield "weights_kb"
    M.unregister("weights_kb")
    S.SOURCES.pop("weights", None)


@pytest.mark.parametrize("name", list(M.METRICS))
def test_every_metric_has_one_record(name):
    m = M.metric(name)
    assert m.text(1234.5).startswith("1,23") and (m.unit in m.text(1) if m.unit else True)
    assert (name in M.searchable()) == (m.source is not None)
    assert name in M.budget_names()


def test_an_unknown_metric_is_one_clear_error():
    from dcanas.errors import UserError

    with pytest.raises(UserError, match="unknown metric 'watts'; valid: params, flops"):
        M.metric("watts")


def test_a_metric_no_source_predicts_is_refused_by_the_search():
    from dcanas.errors import UserError
    from dcanas.nets.config import default_config

    cfg = default_config("darts", in_channels=1, input_size=28, num_classes=10, C=8, layers=5)
    with pytest.raises(UserError, match="no cost model predicts peak_memory_mb"):
        S.make_source("peak_memory_mb", "darts", cfg, 4)


def test_a_made_up_metric_reaches_the_search_constraints_and_the_derivation(weights_kb, tmp_path):
    import torch

    from dcanas.search.config import SearchConfig, apply_preset, budgets, check_budget, cost_model, cost_models
    from dcanas.search.derive import derive_within

    cfg = replace(apply_preset(SearchConfig(), "tiny"), metric="params", budget=15_000)
    cm = cost_model(cfg)
    lo, hi = cm.feasible_range()
    K = round((lo + 0.3 * (hi - lo)) * KB_PER_WEIGHT, 1)  # binds: well under the params budget's network
    cfg = replace(cfg, budget=hi, extra_budgets={weights_kb: K})
    check_budget(cfg, cm)
    cms = cost_models(cfg)
    assert set(cms) == {"params", weights_kb} and isinstance(cms[weights_kb].source, WeightKB)
    prefer_weights = torch.tensor([1.0 if "conv" in op else 0.0 for op in cm.op_names])  # alphas that favour parametric ops
    alphas = {k: prefer_weights.repeat(len(cm.edges), 1) for k in ("normal", "reduce")}
    d = derive_within(cfg.space, alphas, cm.op_names, cm.nodes, {m: c.edge_costs() for m, c in cms.items()},
                      {m: c.fixed for m, c in cms.items()}, budgets(cfg))
    assert d is not None
    assert cms[weights_kb].derived(d.genotype) <= K  # the made-up budget held the derivation
    assert network_cost(d.genotype, cm.eval_cfg).params * KB_PER_WEIGHT <= K
    # without it, the same derivation spends the params budget (the made-up one was binding)
    free = derive_within(cfg.space, alphas, cm.op_names, cm.nodes, {"params": cm.edge_costs()}, {"params": cm.fixed}, {"params": hi})
    assert cms[weights_kb].derived(free.genotype) > K


@pytest.mark.slow
def test_a_made_up_metric_reaches_the_verdict_and_the_report(weights_kb, tmp_path, fashion_root, capsys):
    """A whole tiny run in this process (where the metric is registered): the profile names the made-up budget,
    the search holds it, the verdict judges it on the exported file and the report shows it."""
    from dcanas.cli import main

    prof = tmp_path / "p.yaml"
    prof.write_text(yaml.safe_dump(dict(name="made-up", description="a made-up budget", budget=dict(params=15000, weights_kb=58.0),
                                        runtime=dict(engine="onnxruntime", threads=1, precision="fp32"), connection=dict(transport="local"))))
    out = tmp_path / "run"
    rc = main(["run", "--device", str(prof), "--preset", "tiny", "--runs", "5", "--warmup", "1", "--data-root", str(fashion_root),
               "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err[-3000:]
    stages = json.loads((out / "run.json").read_text())["stages"]
    search = json.loads((out / stages["search"]["summary"]["search_log"]).read_text())["summary"]
    assert search["budgets"] == {"params": 15000.0, "weights_kb": 58.0}
    assert search["derived_weights_kb"] <= 58.0
    rows = {r["budget"]: r for r in stages["verdict"]["summary"]["rows"]}
    assert rows["weights_kb"]["met"] is True and rows["weights_kb"]["source"].startswith("model graph (fp32 weights); predicted ")
    assert rows["weights_kb"]["measured"] == pytest.approx(rows["params"]["measured"] * KB_PER_WEIGHT)
    report = (out / "report" / "report.md").read_text()
    assert "| weights_kb | 58 |" in report

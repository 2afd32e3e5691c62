"""The budget verdict: each budget of the device profile against what was measured on the
device (latency, peak memory), counted from the model's graph (params, FLOPs) or read from the
file (size). Exit 0 when all are met, 1 when any is missed: a release can gate on it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..devices.schema import DeviceProfile
from ..errors import UserError
from ..export.inspect import external_data, graph_cost, metadata
from ..costs.metrics import Evidence, extra_constraints, metric, metric_round
from ..report.tables import MARK, markdown_table, number_text


def analytic_cost(meta: dict[str, Any]) -> Optional[dict[str, float]]:
    """What the search's cost sources say of the genotype a model's metadata names: every metric a source
    computes from the genotype alone (params and FLOPs counted, the model size predicted for the file's format);
    None without a genotype."""
    from ..costs.sources import SourceInputs, make_source  # torch: only when a genotype is there to cost
    from ..nets.config import NetConfig
    from ..nets.genotype import genotype_from_json

    try:
        cfg = NetConfig.from_json(meta["net_config"])
        genotype = genotype_from_json(meta["genotype"])
    except (KeyError, TypeError, ValueError, UserError):  # no genotype, or metadata that does not describe one
        return None
    out: dict[str, float] = {}
    for name in extra_constraints():
        try:
            src = make_source(name, genotype.space, cfg, 0, SourceInputs(size_format=meta.get("format", "")))  # 0 nodes: network() reads none
        except UserError:  # e.g. no size model for this format
            continue
        out[name] = metric_round(name, src.network(genotype))
    return out


def _source_text(name: str, analytic: Optional[dict[str, float]], seconds: dict[str, tuple[str, Optional[float]]]) -> str:
    m = metric(name)
    text = m.verdict_source
    if analytic and name in analytic:
        text += f"; {'analytic' if m.source == 'counter' else 'predicted'} {m.text(analytic[name])}"
    label, value = seconds.get(name, ("", None))
    return text + (f"; {label} {m.text(value)}" if value is not None else "")


def verdict(profile: DeviceProfile, model: Path, measured: dict[str, Any], percentile: str = "p50",
            predicted: Optional[dict[str, float]] = None, graph_predicted_ms: Optional[float] = None,
            latency_check: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Params and FLOPs are counted from the graph of the file that was profiled (batch norm folded
    by the exporters), never taken from its metadata; the cost sources' figures for the genotype in the
    metadata are shown beside them. A quantity the graph does not allow to count is "not counted" and
    not a failure. Where each measured value comes from is the metric registry's (``costs/metrics.py``).
    ``predicted``: what the search's models predicted (the latency model's ms), shown beside the
    measurement; ``graph_predicted_ms``: the latency model's graph model on the node counts of the graph
    the device ran (a second prediction, shown too). ``latency_check`` (``latency.hold.verdict_check``): the same
    graph timed again beside the latency model's reference network and judged at the machine's speed during the
    model's build; a latency row the profiled p50 misses but whose second timing is within the budget there, or over
    it by no more than the measurement's noise, is "noise": said, and not a failure."""
    graph = graph_cost(model)
    analytic = {**(analytic_cost(metadata(model)) or {}), **(predicted or {})} or None
    size = sum(f.stat().st_size for f in [model, *external_data(model)])  # the weights an ONNX file keeps beside it count
    evidence = Evidence(graph=graph, measured=measured, file_kb=size / 1024, percentile=percentile)
    seconds = {"latency_ms": ("graph model", graph_predicted_ms)}
    rows = []
    for key, budget in profile.budget.items():
        m = metric(key)
        value = m.measure(evidence)
        met = None if value is None else value <= budget
        source = _source_text(key, analytic, seconds) if value is not None else "not counted (the graph's shapes are not all known)"
        if key == "latency_ms" and latency_check and value is not None:
            source += f"; {latency_check['why']}"
            if not met and latency_check["decision"] in ("within", "noise"):
                met = "noise"
        rows.append(dict(budget=key + (f" ({percentile})" if m.percentile else ""), limit=budget, measured=value,
                         margin=None if value is None else budget - value, met=met, source=source))
    if measured.get("reference_top1_match") is not None:
        # The device's own output on the reference input must agree with the reference's: a runtime that runs the
        # model fast but wrongly (tflite-runtime 2.14 on a dynamic-range int8 model) fails.
        rows.append(dict(budget="outputs match the reference (top-1)", limit="match", measured=measured["reference_max_abs_diff"],
                         margin=None, met=bool(measured["reference_top1_match"]),
                         source=f"device vs {measured.get('reference_file') or '.ref.npz'}"))
    return dict(device=profile.name, model=model.name, passed=all(r["met"] is not False for r in rows), rows=rows,
                emulated=profile.emulated, graph=graph, analytic=analytic, predicted=predicted or {},
                graph_predicted_ms=graph_predicted_ms, latency_check=latency_check)


def format_table(v: dict[str, Any]) -> str:
    rows = [[r["budget"], number_text(r["limit"]), number_text(r["measured"]),
             "" if r["margin"] is None else ("+" if r["margin"] >= 0 else "") + number_text(r["margin"]), r["source"], MARK[r["met"]]]
            for r in v["rows"]]
    noise = [r["budget"] for r in v["rows"] if r["met"] == "noise"]
    verdict_line = (f"verdict on {v['device']}: {'PASS: every budget met' if v['passed'] else 'FAIL: a budget was missed'}"
                    + (f" ({', '.join(noise)} over as profiled, but timed again beside the reference network within the budget or "
                       "not beyond the measurement's noise at the machine's speed during the latency model's build: profile again "
                       "with more --runs to decide)" if noise else "")
                    + (" (EMULATED device: latency and memory are not real-hardware numbers)" if v["emulated"] else ""))
    return markdown_table(["budget", "limit", "measured", "margin", "source", ""], rows) + "\n" + verdict_line

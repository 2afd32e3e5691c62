"""The budget verdict: each budget of the device profile against what was measured on the
device (latency, peak memory), counted from the model's graph (params, FLOPs) or read from the
file (size). Exit 0 when all are met, 1 when any is missed: a release can gate on it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..devices.schema import DeviceProfile
from ..errors import UserError
from ..export.inspect import graph_cost, metadata
from ..presets import metric_text


def analytic_cost(meta: dict[str, Any]) -> Optional[dict[str, float]]:
    """The analytic counter's params/FLOPs for the genotype a model's metadata names, and the model
    size the search's size model predicted for the file's format (None without a genotype)."""
    try:
        from ..costs.size import SIZE_MODELS, predicted_kb
        from ..nets.config import NetConfig
        from ..nets.cost import network_cost
        from ..nets.genotype import genotype_from_json

        c = network_cost(genotype_from_json(meta["genotype"]), NetConfig.from_json(meta["net_config"]))
    except (KeyError, TypeError, ValueError, UserError):  # no genotype, or metadata that does not describe one
        return None
    out: dict[str, float] = {"params": c.params, "flops": c.flops}
    if meta.get("format") in SIZE_MODELS:
        out["model_size_kb"] = round(predicted_kb(meta["format"], c.params, c.layers, c.channels, c.avgpools), 1)
    return out


SOURCES = {"params": "model graph", "flops": "model graph", "latency_ms": "device", "peak_memory_mb": "device (VmHWM)",
           "model_size_kb": "file"}


def verdict(profile: DeviceProfile, model: Path, measured: dict[str, Any], percentile: str = "p50",
            predicted: Optional[dict[str, float]] = None, graph_predicted_ms: Optional[float] = None) -> dict[str, Any]:
    """Params and FLOPs are counted from the graph of the file that was profiled (batch norm folded
    by the exporters), never taken from its metadata; the analytic counter's figures for the
    genotype in the metadata are shown beside them. A quantity the graph does not allow to count
    is "not counted" and not a failure. ``predicted``: what the search's models predicted (the latency
    model's ms), shown beside the measurement; ``graph_predicted_ms``: the latency model's graph model on
    the node counts of the graph the device ran (a second prediction, shown too)."""
    graph = graph_cost(model)
    analytic = {**(analytic_cost(metadata(model)) or {}), **(predicted or {})} or None
    values: dict[str, Optional[float]] = {
        "params": graph["params"], "flops": graph["flops"],
        "latency_ms": measured["latency_ms"][percentile],
        "peak_memory_mb": measured.get("peak_rss_mb"),
        "model_size_kb": model.stat().st_size / 1024,
    }
    rows = []
    for key, budget in profile.budget.items():
        value = values.get(key)
        met = None if value is None else value <= budget
        source = SOURCES[key] + (f"; {'analytic' if key in ('params', 'flops') else 'predicted'} {metric_text(key, analytic[key])}"
                                 if analytic and key in analytic else "")
        if key == "latency_ms" and graph_predicted_ms is not None:
            source += f"; graph model {metric_text(key, graph_predicted_ms)}"
        rows.append(dict(budget=key + (f" ({percentile})" if key == "latency_ms" else ""), limit=budget, measured=value,
                         margin=None if value is None else budget - value, met=met,
                         source=source if value is not None else "not counted (the graph's shapes are not all known)"))
    if measured.get("reference_top1_match") is not None:
        # The device's own output on the shipped reference input must agree with PyTorch's: a runtime
        # that runs the model fast but wrongly (tflite-runtime 2.14 on a dynamic-range int8 model) fails.
        rows.append(dict(budget="outputs match PyTorch (top-1)", limit="match", measured=measured["reference_max_abs_diff"],
                         margin=None, met=bool(measured["reference_top1_match"]), source="device vs .ref.npz"))
    return dict(device=profile.name, model=model.name, passed=all(r["met"] is not False for r in rows), rows=rows,
                emulated=profile.emulated, graph=graph, analytic=analytic, predicted=predicted or {},
                graph_predicted_ms=graph_predicted_ms)


def format_table(v: dict[str, Any]) -> str:
    lines = ["| budget | limit | measured | margin | source | |", "|---|---:|---:|---:|---|---|"]
    for r in v["rows"]:
        m = "n/a" if r["measured"] is None else (f"{r['measured']:.2g}" if abs(r["measured"]) < 0.01 else f"{r['measured']:,.2f}".rstrip("0").rstrip("."))
        margin = "" if r["margin"] is None else f"{r['margin']:+,.2f}".rstrip("0").rstrip(".")
        limit = f"{r['limit']:,}" if not isinstance(r["limit"], str) else r["limit"]
        lines.append(f"| {r['budget']} | {limit} | {m} | {margin} | {r['source']} | {'✅' if r['met'] else ('–' if r['met'] is None else '❌')} |")
    lines.append(f"verdict on {v['device']}: {'PASS: every budget met' if v['passed'] else 'FAIL: a budget was missed'}"
                 + (" (EMULATED device: latency and memory are not real-hardware numbers)" if v["emulated"] else ""))
    return "\n".join(lines)

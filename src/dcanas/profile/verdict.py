"""The budget verdict: each budget of the device profile against what was measured on the
device (latency, peak memory), counted by the analytic counter (params, FLOPs) or read from the
file (size). Exit 0 when all are met, 1 when any is missed: a release can gate on it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from ..devices.schema import DeviceProfile


def artifact_metadata(model: Path) -> dict[str, Any]:
    """The export stage's metadata: ONNX metadata_props, or the TFLite sidecar <file>.json."""
    if model.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
        return {k: (json.loads(v) if v[:1] in "[{\"" or v in ("null", "true", "false") else v) for k, v in props.items()}
    side = model.with_name(model.name + ".json")
    return json.loads(side.read_text()) if side.is_file() else {}


def analytic_cost(meta: dict[str, Any]) -> Optional[dict[str, int]]:
    if not meta.get("genotype") or not meta.get("net_config"):
        return None
    from ..nets.config import NetConfig
    from ..nets.cost import network_cost
    from ..nets.genotype import genotype_from_json

    c = network_cost(genotype_from_json(meta["genotype"]), NetConfig.from_json(meta["net_config"]))
    return {"params": c.params, "flops": c.flops}


def verdict(profile: DeviceProfile, model: Path, measured: dict[str, Any], percentile: str = "p50") -> dict[str, Any]:
    cost = analytic_cost(artifact_metadata(model))
    values: dict[str, Optional[float]] = {
        "params": cost["params"] if cost else None,
        "flops": cost["flops"] if cost else None,
        "latency_ms": measured["latency_ms"][percentile],
        "peak_memory_mb": measured.get("peak_rss_mb"),
        "model_size_kb": model.stat().st_size / 1024,
    }
    rows = []
    for key, budget in profile.budget.items():
        value = values.get(key)
        met = value is not None and value <= budget
        rows.append(dict(budget=key + (f" ({percentile})" if key == "latency_ms" else ""), limit=budget, measured=value,
                         margin=None if value is None else budget - value, met=met,
                         source={"params": "analytic counter", "flops": "analytic counter", "latency_ms": "device",
                                 "peak_memory_mb": "device (VmHWM)", "model_size_kb": "file"}[key]))
    if measured.get("reference_top1_match") is not None:
        # The device's own output on the shipped reference input must agree with PyTorch's: a runtime
        # that runs the model fast but wrongly (tflite-runtime 2.14 on a dynamic-range int8 model) fails.
        rows.append(dict(budget="outputs match PyTorch (top-1)", limit="match", measured=measured["reference_max_abs_diff"],
                         margin=None, met=bool(measured["reference_top1_match"]), source="device vs .ref.npz"))
    return dict(device=profile.name, model=model.name, passed=all(r["met"] for r in rows), rows=rows,
                emulated=profile.emulated)


def format_table(v: dict[str, Any]) -> str:
    lines = ["| budget | limit | measured | margin | source | |", "|---|---:|---:|---:|---|---|"]
    for r in v["rows"]:
        m = "n/a" if r["measured"] is None else (f"{r['measured']:.2g}" if abs(r["measured"]) < 0.01 else f"{r['measured']:,.2f}".rstrip("0").rstrip("."))
        margin = "" if r["margin"] is None else f"{r['margin']:+,.2f}".rstrip("0").rstrip(".")
        limit = f"{r['limit']:,}" if not isinstance(r["limit"], str) else r["limit"]
        lines.append(f"| {r['budget']} | {limit} | {m} | {margin} | {r['source']} | {'✅' if r['met'] else '❌'} |")
    lines.append(f"verdict on {v['device']}: {'PASS: every budget met' if v['passed'] else 'FAIL: a budget was missed'}"
                 + (" (EMULATED device: latency and memory are not real-hardware numbers)" if v["emulated"] else ""))
    return "\n".join(lines)

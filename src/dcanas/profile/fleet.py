"""``dcanas profile --device a,b MODEL``: one model on several devices, a column each."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from ..devices.fleet import load_fleet
from ..report.tables import met_text
from .remote import profile_model
from .verdict import verdict

Say = Callable[[str], None]


def profile_fleet(names: list[str], model: Path, *, runs: int, warmup: int, percentile: str, any_format: bool,
                  threads: Optional[int], say: Say) -> tuple[list[dict[str, Any]], bool]:
    """``dcanas profile --device a,b MODEL``: the model on each device; a device that fails fails its column."""
    cols = []
    for p in load_fleet(names):
        col: dict[str, Any] = {"device": p.name}
        try:
            res = profile_model(p, model, runs=runs, warmup=warmup, any_format=any_format, threads=threads,
                                progress=lambda msg, n=p.name: say(f"[{n}] {msg}"))
            v = verdict(p, model, res, percentile)
            col.update(status="passed" if v["passed"] else "FAIL", engine=f"{res['engine']} {res['engine_version']}",
                       machine=res["machine"], threads=res["threads"], **{"p50 (ms)": res["latency_ms"]["p50"],
                       "p90 (ms)": res["latency_ms"]["p90"], "peak RSS (MB)": res["peak_rss_mb"]})
            for r in v["rows"]:
                col[r["budget"]] = met_text(r["met"])
            col["warnings"] = "; ".join(res.get("warnings", [])) or "-"
        except Exception as exc:  # noqa: BLE001 - one device's failure is its column's, not the fleet's
            col.update(status="failed", error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            say(f"[{p.name}] failed: {col['error']}")
        cols.append(col)
    return cols, all(c["status"] == "passed" for c in cols)

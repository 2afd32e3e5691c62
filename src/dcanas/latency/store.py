"""The device's measurement store: every whole network timed on the device for one latency model's key (its
calibration networks, the derived networks timed before retraining, the retrained networks a verdict profiled),
one JSON line each, beside the cached model (``<model>.measurements.jsonl``). ``dcanas latency refit`` fits the
model again on all of it; a run reports the model's error on the networks it measured.

Lines are appended whole under an flock (one ``write`` of one line), so a killed process leaves every earlier line
readable; a line that does not parse (a disk that filled mid-write) is skipped with a count, never fatal."""
from __future__ import annotations

import fcntl
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Optional

SOURCES = ("calibration", "hold", "verdict")  # where a measurement came from


def store_path(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name(p.stem + ".measurements.jsonl")


def append(model_path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Append measurements: dicts with genotype (JSON), measured_ms, source, and optionally predicted_ms and
    level (the reference network's time then over its time in the build). Returns how many were written."""
    lines = []
    for r in rows:
        ms = r.get("measured_ms")
        if r.get("source") not in SOURCES or not (isinstance(ms, (int, float)) and math.isfinite(ms) and ms > 0):
            continue
        lines.append(json.dumps({"time": round(time.time(), 3), **r}, sort_keys=True) + "\n")
    if not lines:
        return 0
    path = store_path(model_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, "".join(lines).encode())
    finally:
        os.close(fd)
    return len(lines)


def read(model_path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """The store's measurements (each genotype once per source and value) and how many lines did not parse."""
    path = store_path(model_path)
    if not path.is_file():
        return [], 0
    rows, bad, seen = [], 0, set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            r = json.loads(line)
            key = (json.dumps(r["genotype"], sort_keys=True), r["source"], round(float(r["measured_ms"]), 6))
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        if key not in seen:
            seen.add(key)
            rows.append(r)
    return rows, bad


def at_build_level(r: dict[str, Any]) -> float:
    """A measurement brought to the machine's speed at the model's build: divided by the reference network's level
    when it was timed beside it (the hold does; a verdict's profile does not)."""
    level: Optional[float] = r.get("level")
    return r["measured_ms"] / level if level and level > 0 else r["measured_ms"]

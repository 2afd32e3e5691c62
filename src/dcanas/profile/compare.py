"""``dcanas profile`` with several models or thread counts: every (model, threads) pair measured in one
connection, one table (format, precision, threads, size, p50, p90, peak memory, output difference to
PyTorch, top-1 match, the budget verdict), and a check that more threads took effect."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Callable, Optional

from ..devices.schema import DeviceProfile
from ..errors import UserError
from ..export.inspect import precision_of, recognise
from ..report.tables import number_text
from .remote import check_options, check_reference, condition_warnings, run_runner_jobs, run_timeout
from .verdict import verdict

Progress = Callable[[str], None]
COLUMNS = ["model", "format", "precision", "threads", "threads_readback", "size_kb", "p50_ms", "p90_ms", "peak_rss_mb",
           "max_abs_diff", "top1_match", "verdict", "note"]


def parse_threads(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]."""
    try:
        out = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise UserError(f"--threads {text!r}: give thread counts >= 1, comma-separated (e.g. 1,2,4)")
    return out


def compare(profile: DeviceProfile, models: list[Path], threads: list[int], *, runs: int = 50, warmup: int = 10,
            cooldown_s: float = 0.0, percentile: str = "p50", progress: Progress) -> dict[str, Any]:
    """Measure every (model, threads) pair in one runner session; rows in that order."""
    if len({m.name for m in models}) != len(models):
        raise UserError("the models of a comparison must have distinct file names (they share one work directory)")
    check_options(runs, warmup, max(threads), 0.0, None)
    refs: dict[Path, Optional[Path]] = {}
    kinds: dict[Path, tuple[str, str]] = {}
    for m in models:
        recognise(m)
        refs[m] = check_reference(m)
        kinds[m] = precision_of(m)
    files = [*models, *(r for r in refs.values() if r)]
    jobs = []
    for m in models:
        for t in threads:
            def args(wd: str, m: Path = m, t: int = t) -> list[str]:
                ref = refs[m]
                return (["--model", f"{wd}/{m.name}", "--threads", str(t), "--warmup", str(warmup), "--runs", str(runs)]
                        + (["--ref", f"{wd}/{ref.name}"] if ref else []))
            jobs.append((args, f"{m.name}, {t} threads", run_timeout(profile, m, runs, warmup, 0.0)))
    results, phases, _ = run_runner_jobs(profile, files, jobs, progress, cooldown_s)
    rows, raw = [], []
    pairs = [(m, t) for m in models for t in threads]
    for (m, t), res in zip(pairs, results):
        engine, precision = kinds[m]
        row: dict[str, Any] = dict(model=m.name, format=engine, precision=precision, threads=t, size_kb=m.stat().st_size / 1024)
        if res.get("error"):
            row.update(verdict="error", note=res.get("detail") or res.get("package"))
        else:
            res = {**res, "device": profile.name, "emulated": profile.emulated}
            v = verdict(profile, m, res, percentile)
            lat = res["latency_ms"]
            warnings = condition_warnings(res.get("before", {}), res.get("after", {}))
            row.update(threads_readback=res.get("threads_readback"), p50_ms=lat["p50"], p90_ms=lat["p90"],
                       peak_rss_mb=res.get("peak_rss_mb"), max_abs_diff=res.get("reference_max_abs_diff"),
                       top1_match=res.get("reference_top1_match"), verdict="pass" if v["passed"] else "FAIL",
                       note="; ".join(warnings))
        rows.append(row)
        raw.append(res)
    thread_notes = thread_check(rows)
    return dict(device=profile.name, rows=rows, thread_check=thread_notes, phases=phases, results=raw,
                passed=all(r["verdict"] == "pass" for r in rows))


def thread_check(rows: list[dict[str, Any]]) -> list[str]:
    """Per model: did N threads beat 1 thread, and does the runtime report the count asked for?"""
    notes = []
    by_model: dict[str, dict[int, dict[str, Any]]] = {}
    for r in rows:
        if r.get("p50_ms") is not None:
            by_model.setdefault(r["model"], {})[r["threads"]] = r
    for model, by_t in by_model.items():
        for t, r in sorted(by_t.items()):
            back = r.get("threads_readback")
            if back is not None and back != t:
                notes.append(f"{model}: asked for {t} threads, the runtime reports {back}")
        if 1 in by_t and len(by_t) > 1:
            base = by_t[1]["p50_ms"]
            for t, r in sorted(by_t.items()):
                if t == 1:
                    continue
                speedup = base / r["p50_ms"]
                took = speedup >= 1.1
                notes.append(f"{model}: {t} threads {'took effect' if took else 'did NOT take effect'} "
                             f"(p50 {base:.3f} ms at 1 thread, {r['p50_ms']:.3f} ms at {t}: {speedup:.2f}x)"
                             + ("" if took else "; the runtime may ignore the setting, or the model is too small to split"))
    return notes


def format_comparison(res: dict[str, Any]) -> str:
    cols = [c for c in COLUMNS if c != "note"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(number_text(r.get(c)) for c in cols) + " |" for r in res["rows"]]
    lines += [f"note: {r['model']} at {r['threads']} threads: {r['note']}" for r in res["rows"] if r.get("note")]
    lines += res["thread_check"]
    lines.append(f"comparison on {res['device']}: {'every row met every budget' if res['passed'] else 'a row missed a budget'}")
    return "\n".join(lines)


def to_csv(res: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in res["rows"]:
        w.writerow({k: r.get(k) for k in COLUMNS})
    return buf.getvalue()

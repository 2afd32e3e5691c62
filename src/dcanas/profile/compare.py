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


# p50s within this fraction of the fastest are not told apart by one comparison: two cpu-demo comparisons on `local`,
# minutes apart, ordered onnx and tflite fp32 both ways (1.199 vs 1.185 ms, then 1.148 vs 1.238 ms: 1.2% and 7.8% apart)
SHIP_TIE = 0.10


def ship_choice(rows: list[dict[str, Any]], gates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Which file to ship: of the compared files that passed their accuracy gate (``gates``: file name -> the export's
    row: passed, top1_agreement) and met every budget on the device, the fastest (p50), or the smallest file among
    those within ``SHIP_TIE`` of the fastest; the others' p50 as a ratio to it. {file, format, precision, p50_ms,
    agreement, line}; file None when no file qualifies."""
    timed = [r for r in rows if r.get("p50_ms") is not None]
    ok = [r for r in timed if r.get("verdict") == "pass" and gates.get(r["model"], {}).get("passed", True)]
    if not ok:
        fastest = min(timed, key=lambda r: r["p50_ms"]) if timed else None
        why = (f"; the fastest, {fastest['model']} ({fastest['p50_ms']:.3f} ms p50), missed a budget or its accuracy gate"
               if fastest else "")
        return dict(file=None, format=None, p50_ms=None, agreement=None, line=f"ship: no compared file met every budget{why}")
    fastest_ms = min(r["p50_ms"] for r in ok)
    tied = [r for r in ok if r["p50_ms"] <= (1 + SHIP_TIE) * fastest_ms]
    best = min(tied, key=lambda r: (r.get("size_kb") or 0.0, r["p50_ms"]))
    agreement = gates.get(best["model"], {}).get("top1_agreement")

    def against(r: dict[str, Any]) -> str:
        if r in tied:
            return (f"{r['model']} ({r['precision']}, {r['p50_ms']:.3f} ms) is within {100 * SHIP_TIE:.0f}%: not separated by "
                    f"this measurement, the smaller file is named")
        ratio = r["p50_ms"] / best["p50_ms"]
        pace = f"{ratio:.1f}x slower here" if ratio >= 1 else f"{1 / ratio:.1f}x faster here"
        return f"{r['model']} ({r['precision']}) is {pace}" + ("" if r in ok else " but missed a budget or its accuracy gate")

    versus = "; ".join(against(r) for r in sorted((r for r in timed if r is not best), key=lambda r: r["p50_ms"]))
    line = (f"ship {best['model']}: {best['p50_ms']:.3f} ms p50 at {best['threads']} threads"
            + (f", top-1 agreement with PyTorch {agreement:.3f}" if agreement is not None else "") + (f"; {versus}" if versus else ""))
    return dict(file=best["model"], format=best["format"], precision=best["precision"], p50_ms=best["p50_ms"], agreement=agreement,
                line=line)


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

"""Latency under sustained load (``dcanas profile --duration 10m``): the runner runs the model back to back and
reports each window's p50/p90/p99 with the CPU frequency, temperature and throttling read at its end; here the
windows become a table, a time plot, and one line when the last window drifted from the first by more than the
first window's run-to-run spread."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from ..errors import UserError
from ..report.tables import markdown_table, number_text

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_seconds(text: str, what: str) -> float:
    """'600', '30s', '10m', '1h' -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h)?\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise UserError(f"{what} {text!r}: give a duration like 60, 30s, 10m or 1h")
    return float(m.group(1)) * _UNITS[m.group(2) or ""]


def drift_line(windows: list[dict[str, Any]]) -> Optional[str]:
    """One line when the last window's p50 left the first window's interquartile range (its run-to-run noise), with
    the frequency and temperature beside it; None when it did not (or one window only)."""
    if len(windows) < 2:
        return None
    first, last = windows[0], windows[-1]
    spread = max(first["p75"] - first["p25"], 1e-9)
    moved = last["p50"] - first["p50"]
    f0, f1 = first.get("cpu_freq_mhz"), last.get("cpu_freq_mhz")
    freq_moved = bool(f0 and f1 and abs(f1 - f0) > 0.05 * f0)
    if abs(moved) <= spread and not freq_moved:
        return None
    return (f"drift: p50 {first['p50']:.3f} -> {last['p50']:.3f} ms from the first to the last window ({100 * moved / first['p50']:+.1f}%; "
            f"the first window's run-to-run spread, p25..p75, is {spread:.3f} ms); CPU frequency {f0 or 'n/a'} -> {f1 or 'n/a'} MHz, "
            f"temperature {first.get('temperature_c') or 'n/a'} -> {last.get('temperature_c') or 'n/a'} C: the latency at minute one "
            f"is not the sustained latency")


def windows_table(windows: list[dict[str, Any]]) -> str:
    rows = [[number_text(w["t_end_s"]), str(w["runs"]), f"{w['p50']:.3f}", f"{w['p90']:.3f}", f"{w['p99']:.3f}",
             number_text(w.get("cpu_freq_mhz")), number_text(w.get("temperature_c")),
             "" if w.get("throttled") is None else f"{w['throttled']:#x}"] for w in windows]
    return markdown_table(["until (s)", "runs", "p50 (ms)", "p90 (ms)", "p99 (ms)", "CPU MHz", "temp (C)", "throttled"], rows)


def plot_sustained(windows: list[dict[str, Any]], title: str, path: Path) -> Path:
    """Latency percentiles, CPU frequency and temperature over the run, one point per window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [w["t_end_s"] for w in windows]
    fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    for q in ("p50", "p90", "p99"):
        axes[0].plot(t, [w[q] for w in windows], marker="o", label=q)
    axes[0].set_ylabel("latency (ms)")
    axes[0].legend(fontsize=8)
    axes[0].set_title(title, fontsize=10)
    for ax, key, label in ((axes[1], "cpu_freq_mhz", "CPU frequency (MHz)"), (axes[2], "temperature_c", "temperature (C)")):
        values = [w.get(key) for w in windows]
        if any(v is not None for v in values):
            ax.plot(t, [v if v is not None else float("nan") for v in values], marker="o")
        else:
            ax.text(0.5, 0.5, "not readable on this device", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(label)
    axes[2].set_xlabel("time since the timed runs began (s)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path

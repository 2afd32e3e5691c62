"""The metric registry: every quantity a device profile's budget can name, one record each.

A record says how the quantity is written (unit, digits), where the verdict takes its measured value
from, which cost source predicts it for a search (``costs/sources.py``; None: only the device can tell,
as for peak memory), and whether a search can run on it as its primary metric (the LUG and the fill
rule) or only hold it as a further constraint. The search, the derivations, the LUG, the verdict,
the report and the profile schema read metrics from here only. Torch-free (argparse reads it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..errors import UserError


@dataclass(frozen=True)
class Evidence:
    """What the verdict has to judge a budget with: the graph of the profiled file counted, the device's
    measurement, the file's size and the latency percentile the budget refers to."""

    graph: dict[str, Any]
    measured: dict[str, Any]
    file_kb: float
    percentile: str = "p50"


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str                                           # appended to a value in text ("" for a count)
    digits: int                                         # how a value is rounded to be recorded and printed
    verdict_source: str                                 # where the verdict's measured value comes from
    measure: Callable[[Evidence], Optional[float]]      # that value (None: it could not be counted)
    source: Optional[str] = None                        # the cost source predicting it for a search (costs/sources.py)
    primary: bool = False                               # a search can run on it (LUG, fill rule), not only hold it
    # its cost model is measured on the device for one evaluation network (a latency model): that network is kept,
    # the model belongs to the device, and the metric joins a search only as its primary metric
    per_device: bool = False
    percentile: bool = False                            # the budget is judged at a percentile of repeated measurements

    def round(self, value: float) -> float:
        return int(round(value)) if self.digits == 0 else round(value, self.digits)

    def text(self, value: float) -> str:
        return f"{value:,.{self.digits}f}" + (f" {self.unit}" if self.unit else "")


METRICS: dict[str, Metric] = {}


def register(m: Metric) -> Metric:
    """Add (or replace) a metric: everything that reads the registry sees it from then on."""
    METRICS[m.name] = m
    return m


def unregister(name: str) -> None:
    METRICS.pop(name, None)


for _m in (
    Metric("params", "", 0, "model graph", lambda e: e.graph.get("params"), source="counter", primary=True),
    Metric("flops", "", 0, "model graph", lambda e: e.graph.get("flops"), source="counter", primary=True),
    Metric("latency_ms", "ms", 4, "device", lambda e: e.measured["latency_ms"][e.percentile], source="latency", primary=True,
           per_device=True, percentile=True),
    Metric("peak_memory_mb", "MB", 1, "device (VmHWM)", lambda e: e.measured.get("peak_rss_mb")),
    Metric("model_size_kb", "KB", 1, "file", lambda e: e.file_kb, source="size"),
):
    register(_m)


def metric(name: str) -> Metric:
    if name not in METRICS:
        raise UserError(f"unknown metric {name!r}; valid: {', '.join(METRICS)}")
    return METRICS[name]


def budget_names() -> tuple[str, ...]:
    """What a device profile's budget may name."""
    return tuple(METRICS)


def extra_constraints() -> tuple[str, ...]:
    """What a search holds beside its primary metric (a device-measured model is built only for a primary metric)."""
    return tuple(n for n, m in METRICS.items() if m.source and not m.per_device)


def searchable() -> tuple[str, ...]:
    """What a search can hold as a constraint (a cost source predicts it)."""
    return tuple(n for n, m in METRICS.items() if m.source)


def primary() -> tuple[str, ...]:
    """What a search can run on (``--metric``, a profile's ``search_metric``)."""
    return tuple(n for n, m in METRICS.items() if m.primary)


def metric_round(name: str, value: float) -> float:
    m = METRICS.get(name)
    return m.round(value) if m else round(value, 4)


def round_inward(name: str, lo: float, hi: float) -> tuple[float, float]:
    """A range's ends rounded inwards to the metric's resolution (``lo`` up, ``hi`` down), so that each end can be met:
    a cheapest network of 0.12843 ms rounded to 0.1284 ms is a budget no genotype meets. A range narrower than one
    step is rounded to nearest instead."""
    step = 10.0 ** -(METRICS[name].digits if name in METRICS else 4)
    inward = metric_round(name, math.ceil(lo / step - 1e-9) * step), metric_round(name, math.floor(hi / step + 1e-9) * step)
    return inward if inward[0] <= inward[1] else (metric_round(name, lo), metric_round(name, hi))


def metric_text(name: str, value: float) -> str:
    m = METRICS.get(name)
    return m.text(value) if m else f"{value:,.4f}"

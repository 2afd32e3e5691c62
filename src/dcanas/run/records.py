"""What each stage of ``dcanas run`` hands on (typed records, paths relative to the run directory), the stage list
and the run configuration."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

Say = Callable[[str], None]


# ---- what each stage hands on: typed records (paths relative to the run directory) --------------

@dataclass(frozen=True)
class LatencyOutputs:
    model: Optional[str]     # the latency model the search used (a copy of the cached one); None: no latency budget searched
    source: str              # where it came from (the cache file), or why there is none
    stats: dict[str, Any]    # its fit on the calibration networks (Spearman, Kendall, MAPE, within +-10%)


@dataclass(frozen=True)
class SearchOutputs:
    genotype: str            # the winning genotype (JSON)
    search_log: str          # the winning seed's search.json (epochs, alphas, k_s and lambda per step)
    best_seed: int
    K_d: float
    K_prime: float
    lug: str
    metric: str
    derived_params: int
    derived_flops: int
    val_acc: float
    under_budget: bool
    eval_config: dict[str, Any]
    seeds: list[dict[str, Any]]
    device_checks: list[dict[str, Any]] = field(default_factory=list)  # a latency search: the derived network timed on the device


@dataclass(frozen=True)
class TrainOutputs:
    model: str               # model.pt of the searched network
    train_log: str
    params: int
    test_top1: float
    test_top5: float
    seconds: float
    baselines: list[dict[str, Any]]


@dataclass(frozen=True)
class ExportOutputs:
    manifest: str            # export.json
    device_artifact: str     # the file whose format the device profile's runtime runs
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class ProfileOutputs:
    result: str              # the runner's full result.json
    engine: str
    engine_version: str
    machine: str
    cpu_model: str
    peak_rss_mb: Optional[float]
    latency_ms: dict[str, float]
    wall_s: float
    orchestration_overhead_s: float
    reference_max_abs_diff: Optional[float]
    op_map: Optional[str]    # per-operator times mapped to the stem, cells and edges (ONNX); None where the runtime has no profiler
    comparison: Optional[str]  # every export of the run measured on the device, one row each (when it exported more than one)


@dataclass(frozen=True)
class VerdictOutputs:
    verdict: str
    passed: bool
    rows: list[dict[str, Any]]
    cross_check: dict[str, int]


@dataclass(frozen=True)
class ReportOutputs:
    markdown: str
    html: str


# --baselines: torchvision networks, or a published DARTS-form cell trained in the searched network's shape
BASELINE_GENOTYPES = ("DARTS_V1", "DARTS_V2", "PC_DARTS", "NASNet", "AmoebaNet")
BASELINES = ("mobilenet_v2", "resnet18") + BASELINE_GENOTYPES

# The stage list, defined once: name -> the record it returns, in run order.
OUTPUTS: dict[str, type] = {"latency": LatencyOutputs, "search": SearchOutputs, "train": TrainOutputs, "export": ExportOutputs,
                            "profile": ProfileOutputs, "verdict": VerdictOutputs, "report": ReportOutputs}
STAGES = tuple(OUTPUTS)


@dataclass
class RunConfig:
    device: str
    dataset: str = "fashion-mnist"
    data_root: Optional[str] = None
    metric: Optional[str] = None
    seeds: int = 1
    preset: str = "cpu-demo"
    formats: Optional[list[str]] = None
    space: Optional[str] = None  # None: the preset's space (SEARCH_PRESETS), else SearchConfig's (darts)
    search_overrides: dict[str, Any] = field(default_factory=dict)
    train_overrides: dict[str, Any] = field(default_factory=dict)
    baselines: list[str] = field(default_factory=list)
    runs: int = 50
    warmup: int = 10
    cache_dir: Optional[str] = None
    latency_calibrate: int = 20  # calibration networks of the latency model (a latency-searched run builds one)
    seed_jobs: int = 1           # --seeds searched this many at a time (1: in this process, with its progress lines)
    executor: str = "local"      # where parallel seeds run: local (a process pool) or ray (search/executor.py)
    ray_address: Optional[str] = None
    hold_latency: bool = False   # the profile's latency_ms budget held by the search beside its metric (a latency model built)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

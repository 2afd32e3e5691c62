"""The stages of ``dcanas run`` as thin adapters over each package's library API
(no shelling out to our own CLI): search (K seeds, LUG) -> train -> export -> profile -> verdict -> report."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

from .devices.schema import DeviceProfile
from .errors import UserError
from .io import write_json
from .pipeline import RunDir, StageSpec, hash_inputs

Say = Callable[[str], None]

# `dcanas run --preset` -> (search preset, training preset)
RUN_PRESETS = {"cpu-demo": ("cpu-demo", "cpu-demo"), "tiny": ("tiny", "tiny"), "paper": ("paper", "paper-cifar")}


@dataclass
class RunConfig:
    device: str
    dataset: str = "fashion-mnist"
    data_root: Optional[str] = None
    metric: Optional[str] = None
    seeds: int = 1
    preset: str = "cpu-demo"
    formats: Optional[list[str]] = None
    space: str = "darts"
    search_overrides: dict[str, Any] = field(default_factory=dict)
    train_overrides: dict[str, Any] = field(default_factory=dict)
    baselines: list[str] = field(default_factory=list)
    runs: int = 50
    warmup: int = 10
    cache_dir: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Stages:
    """Binds a RunConfig and a device profile to the stage functions."""

    def __init__(self, cfg: RunConfig, profile: DeviceProfile) -> None:
        from .search.config import SearchConfig, apply_preset, check_budget, cost_model, fit_eval_network

        if cfg.preset not in RUN_PRESETS:
            raise UserError(f"unknown preset {cfg.preset!r}; valid: {', '.join(RUN_PRESETS)}")
        self.cfg, self.profile = cfg, profile
        metric = cfg.metric or profile.search_metric
        if metric is None or metric not in profile.budget:
            raise UserError(f"device {profile.name!r} has no {metric or 'params/flops'} budget to search under; add budget.params "
                            f"or budget.flops to {profile.source}")
        s_preset, self.train_preset = RUN_PRESETS[cfg.preset]
        self.search_cfg = replace(apply_preset(SearchConfig(), s_preset), space=cfg.space, dataset=cfg.dataset,
                                  data_root=cfg.data_root, metric=metric, budget=float(profile.budget[metric]),
                                  **cfg.search_overrides)
        self.notes: list[str] = []
        if "eval_C" not in cfg.search_overrides:  # the user's own --eval-channels is never changed
            self.search_cfg, note = fit_eval_network(self.search_cfg)
            self.notes += [note] if note else []
        check_budget(self.search_cfg, cost_model(self.search_cfg))  # before any connection or work

    def specs(self) -> list[StageSpec]:
        return [StageSpec("search", self.search_inputs, self.search), StageSpec("train", self.train_inputs, self.train),
                StageSpec("export", self.export_inputs, self.export), StageSpec("profile", self.profile_inputs, self.profile_stage),
                StageSpec("verdict", self.verdict_inputs, self.verdict), StageSpec("report", self.report_inputs, self.report)]

    # ---- search -------------------------------------------------------------------
    def search_inputs(self, run: RunDir) -> str:
        from .search.lug import find_lug

        lug = find_lug(self.search_cfg, Path(self.cfg.cache_dir) if self.cfg.cache_dir else None)
        return hash_inputs(self.search_cfg.to_json(), self.cfg.seeds, lug or "no-lug")

    def search(self, run: RunDir, say: Say) -> dict[str, Any]:
        from .search.lug import resolve_search_budget
        from .search.searcher import run_search

        K_prime, lug = resolve_search_budget(self.search_cfg, Path(self.cfg.cache_dir) if self.cfg.cache_dir else None, say)
        d = run.stage_dir("search")
        results = []
        for seed in range(self.cfg.seeds):
            cfg = replace(self.search_cfg, seed=seed, search_budget=K_prime)
            seed_dir = d / f"seed-{seed}"
            say(f"seed {seed + 1}/{self.cfg.seeds}: K_d={cfg.budget:,.0f} {cfg.metric}, K'={K_prime:,.0f}")
            res = run_search(cfg, seed_dir, K_prime, resume=(seed_dir / "checkpoint.pt").exists(), progress=say)
            results.append(res.summary | {"seed": seed, "dir": str(seed_dir.relative_to(run.root))})
        best = max(results, key=lambda r: r["val_acc"])  # the paper keeps the best search-val accuracy of 5 runs
        write_json(d / "genotype.json", best["genotype"])
        summary = dict(best_seed=best["seed"], K_d=best["K_d"], K_prime=K_prime, lug=lug, metric=best["metric"],
                       derived_params=best["derived_params"], derived_flops=best["derived_flops"], val_acc=best["val_acc"],
                       under_budget=best["under_budget"], eval_config=best["eval_config"],
                       seeds=[{k: r[k] for k in ("seed", "val_acc", "derived_cost", "dir")} for r in results])
        write_json(d / "summary.json", summary)
        say(f"best seed {best['seed']}: search-val acc {best['val_acc']:.3f}, derived {best['metric']} {best['derived_cost']:,}")
        return summary

    # ---- train --------------------------------------------------------------------
    def _train_cfg(self, run: RunDir):
        from .train.trainer import TrainConfig, apply_preset

        ev = json.loads((run.root / "search" / "summary.json").read_text())["eval_config"]
        genotype = json.loads((run.root / "search" / "genotype.json").read_text())
        # The network the budget was searched for: the search's evaluation config.
        return replace(apply_preset(TrainConfig(), self.train_preset), genotype=genotype, dataset=self.cfg.dataset,
                       data_root=self.cfg.data_root, C=ev["C"], layers=ev["layers"], **self.cfg.train_overrides)

    def train_inputs(self, run: RunDir) -> str:
        g = run.root / "search" / "genotype.json"
        return hash_inputs(g, self.train_preset, self.cfg.train_overrides, self.cfg.baselines, self.cfg.dataset)

    def train(self, run: RunDir, say: Say) -> dict[str, Any]:
        from .train.trainer import train

        d = run.stage_dir("train")
        cfg = self._train_cfg(run)
        res = train(cfg, d / "searched", resume=(d / "searched" / "checkpoint.pt").exists(), progress=say)
        last = res["history"][-1]
        summary = dict(params=res["params"], test_top1=last["test_top1"], test_top5=last["test_top5"],
                       seconds=sum(r["seconds"] for r in res["history"]), baselines=[])
        for arch in self.cfg.baselines:
            b = replace(cfg, arch=arch, genotype=None, width=0.35 if arch == "mobilenet_v2" else 1.0)
            say(f"baseline {arch}")
            r = train(b, d / arch, resume=(d / arch / "checkpoint.pt").exists(), progress=say)
            summary["baselines"].append(dict(arch=arch, params=r["params"], test_top1=r["history"][-1]["test_top1"]))
        write_json(d / "summary.json", summary)
        return summary

    # ---- export -------------------------------------------------------------------
    def formats(self) -> list[str]:
        from .export.formats import formats_for

        if self.cfg.formats:
            return list(self.cfg.formats)
        target = formats_for(self.profile.runtime.engine, self.profile.runtime.precision).name
        return sorted({target, "onnx"}, key=lambda n: n != target)  # the device's format first

    def export_inputs(self, run: RunDir) -> str:
        return hash_inputs(run.root / "train" / "searched" / "model.pt", self.formats())

    def export(self, run: RunDir, say: Say) -> dict[str, Any]:
        from .export.exporter import export_model

        d = run.stage_dir("export")
        rows = export_model(run.root / "train" / "searched" / "model.pt", self.formats(), d, dataset=self.cfg.dataset,
                            data_root=self.cfg.data_root, progress=say)
        failed = [r for r in rows if not r["passed"]]
        if failed:
            raise RuntimeError("export validation failed: " + "; ".join(f"{r['format']}: {r.get('reason')}" for r in failed))
        return dict(rows=[{k: v for k, v in r.items() if k != "ops"} for r in rows], device_artifact=rows[0]["file"])

    # ---- profile ------------------------------------------------------------------
    def _artifact(self, run: RunDir) -> Path:
        rows = json.loads((run.root / "export" / "export.json").read_text())["rows"]
        return run.root / "export" / rows[0]["file"]

    def profile_inputs(self, run: RunDir) -> str:
        return hash_inputs(self._artifact(run), Path(self.profile.source), self.cfg.runs, self.cfg.warmup)

    def profile_stage(self, run: RunDir, say: Say) -> dict[str, Any]:
        from .profile.remote import profile_model

        res = profile_model(self.profile, self._artifact(run), runs=self.cfg.runs, warmup=self.cfg.warmup, progress=say)
        write_json(run.stage_dir("profile") / "result.json", res)
        say(f"latency p50 {res['latency_ms']['p50']:.3f} ms, peak RSS {res['peak_rss_mb']:.1f} MB on {res['machine']}")
        return {k: res[k] for k in ("engine", "engine_version", "machine", "cpu_model", "peak_rss_mb", "latency_ms", "wall_s",
                                    "orchestration_overhead_s", "reference_max_abs_diff")}

    # ---- verdict ------------------------------------------------------------------
    def verdict_inputs(self, run: RunDir) -> str:
        return hash_inputs(run.root / "profile" / "result.json", Path(self.profile.source))

    def verdict(self, run: RunDir, say: Say) -> dict[str, Any]:
        from .nets.build import build_network
        from .nets.config import NetConfig
        from .nets.cost import fvcore_cost, network_cost
        from .nets.genotype import genotype_from_json
        from .profile.verdict import format_table, verdict

        measured = json.loads((run.root / "profile" / "result.json").read_text())
        v = verdict(self.profile, self._artifact(run), measured)
        model = json.loads((run.root / "search" / "summary.json").read_text())
        g, net = genotype_from_json(json.loads((run.root / "search" / "genotype.json").read_text())), NetConfig.from_json(model["eval_config"])
        analytic = network_cost(g, net)
        fv = fvcore_cost(build_network(g, replace(net, auxiliary=False)), net.input_size, net.in_channels)
        v["cross_check"] = dict(params=analytic.params, flops=analytic.flops, fvcore_params=fv.params, fvcore_flops=fv.flops)
        write_json(run.stage_dir("verdict") / "verdict.json", v)
        for line in format_table(v).splitlines():
            say(line)
        return dict(passed=v["passed"], rows=v["rows"], cross_check=v["cross_check"])

    # ---- report -------------------------------------------------------------------
    def report_inputs(self, run: RunDir) -> str:
        return hash_inputs(*(run.root / f for f in ("search/summary.json", "train/summary.json", "export/export.json",
                                                      "profile/result.json", "verdict/verdict.json")))

    def report(self, run: RunDir, say: Say) -> dict[str, Any]:
        from .report import write_report

        paths = write_report(run.root, self.profile)
        say(f"report: {paths['html']}")
        return {k: str(v) for k, v in paths.items()}


def connection_check(profile: DeviceProfile) -> None:
    """Fail in seconds, before an hour of search, when the device cannot be reached."""
    from .devices.transport import make_transport

    if profile.connection.transport == "local":
        return
    with make_transport(profile):
        pass

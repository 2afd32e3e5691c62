"""The stages of ``dcanas run`` as thin adapters over each package's library API
(no shelling out to our own CLI): search (K seeds, LUG) -> train -> export -> profile -> verdict -> report."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

from ..devices.schema import DeviceProfile
from ..errors import UserError
from ..files import write_json
from .pipeline import RunDir, StageSpec, hash_inputs
from ..costs.metrics import extra_constraints, metric_text
from ..costs.metrics import metric as budget_metric
from ..presets import RUN_PRESETS

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
    space: str = "darts"
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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Stages:
    """Binds a RunConfig and a device profile to the stage functions."""

    def __init__(self, cfg: RunConfig, profile: DeviceProfile) -> None:
        from ..search.config import SearchConfig, apply_preset, check_budget, cost_model, fit_eval_network

        if cfg.preset not in RUN_PRESETS:
            raise UserError(f"unknown preset {cfg.preset!r}; valid: {', '.join(RUN_PRESETS)}")
        self.cfg, self.profile = cfg, profile
        unknown = [b for b in cfg.baselines if b not in BASELINES]
        if unknown:
            raise UserError(f"unknown baseline {unknown[0]!r} in --baselines; valid: {', '.join(BASELINES)}")
        metric = cfg.metric or profile.search_metric
        if metric is None or metric not in profile.budget:
            raise UserError(f"device {profile.name!r} has no {metric or 'params/flops'} budget to search under; add budget.params "
                            f"or budget.flops to {profile.source}")
        s_preset, self.train_preset = RUN_PRESETS[cfg.preset]
        # every budget a cost model predicts is a constraint: the search metric's (through the LUG) and the other one's
        # (model size: the file of the format the device runs, predicted by costs/size.py)
        extra = {m: float(profile.budget[m]) for m in extra_constraints() if m in profile.budget and m != metric}
        self.search_cfg = replace(apply_preset(SearchConfig(), s_preset), space=cfg.space, dataset=cfg.dataset,
                                  data_root=cfg.data_root, metric=metric, budget=float(profile.budget[metric]),
                                  extra_budgets=extra, **cfg.search_overrides)
        if any(budget_metric(m).source == "size" for m in profile.budget):  # only then does the format change the search (shared by config)
            self.search_cfg = replace(self.search_cfg, size_format=self.target_format())
        self.notes: list[str] = []
        if "eval_C" not in cfg.search_overrides:  # the user's own --eval-channels is never changed
            self.search_cfg, note = fit_eval_network(self.search_cfg)
            self.notes += [note] if note else []
        if metric != "latency_ms":  # a latency budget is checked once its model is measured (the latency stage)
            check_budget(self.search_cfg, cost_model(self.search_cfg))  # before any connection or work

    def specs(self) -> list[StageSpec]:
        """The stages in order, from the one table (:data:`OUTPUTS`)."""
        methods = {"latency": (self.latency_inputs, self.latency), "search": (self.search_inputs, self.search), "train": (self.train_inputs, self.train),
                   "export": (self.export_inputs, self.export), "profile": (self.profile_inputs, self.profile_stage),
                   "verdict": (self.verdict_inputs, self.verdict), "report": (self.report_inputs, self.report)}
        return [StageSpec(name, *methods[name]) for name in STAGES]

    # ---- latency model ------------------------------------------------------------
    def _needs_latency(self) -> bool:
        return budget_metric(self.search_cfg.metric).per_device

    def latency_inputs(self, run: RunDir) -> str:
        return hash_inputs(Path(self.profile.source), self.search_cfg.to_json(), self.cfg.latency_calibrate, self._needs_latency())

    def latency(self, run: RunDir, say: Say) -> LatencyOutputs:
        """Build (or reuse from the cache) the device's latency model for the search's evaluation network."""
        import shutil

        if not self._needs_latency():
            say(f"the search runs on {self.search_cfg.metric}: no latency model needed")
            return LatencyOutputs(model=None, source=f"not needed (search on {self.search_cfg.metric})", stats={})
        from ..latency.build import build_latency_model
        from ..nets.ops import SPACE_OPS
        from ..search.config import eval_config

        cfg = self.search_cfg
        lm, path = build_latency_model(self.profile, cfg.space, eval_config(cfg), tuple(SPACE_OPS[cfg.space]),
                                       calibrate=self.cfg.latency_calibrate, cache_dir=Path(self.cfg.cache_dir) if self.cfg.cache_dir else None,
                                       progress=say)
        d = run.stage_dir("latency")
        shutil.copyfile(path, d / "model.json")
        st = lm.stats
        if st.get("rows"):
            say(f"latency model on {st['rows']} calibration networks: Spearman {st.get('spearman', float('nan')):.3f}, "
                f"MAPE {100 * st['mape']:.1f}%, within +-10% {100 * st['within_10']:.0f}%")
        return LatencyOutputs(model="latency/model.json", source=str(path), stats=st)

    def _search_cfg(self, run: RunDir):
        """The search configuration with the run's latency model, checked against every budget."""
        from ..search.config import check_budget, cost_model

        lat = run.outputs("latency", LatencyOutputs)
        if lat.model is None:
            return self.search_cfg
        cfg = replace(self.search_cfg, latency_model=str(run.path(lat.model)))
        check_budget(cfg, cost_model(cfg))
        return cfg

    # ---- search -------------------------------------------------------------------
    def search_inputs(self, run: RunDir) -> str:
        from ..search.lug import find_lug

        from ..search.config import identity

        cfg = self._search_cfg(run)  # the configuration the stage runs with (its latency model by content)
        lug = find_lug(cfg, Path(self.cfg.cache_dir) if self.cfg.cache_dir else None)
        return hash_inputs(identity(cfg), self.cfg.seeds, lug or "no-lug")

    def search(self, run: RunDir, say: Say) -> SearchOutputs:
        from ..search.lug import resolve_search_budget
        from ..search.searcher import run_search

        search_cfg = self._search_cfg(run)
        K_prime, lug = resolve_search_budget(search_cfg, Path(self.cfg.cache_dir) if self.cfg.cache_dir else None, say)
        d = run.stage_dir("search")
        results = []
        seeds = [(replace(search_cfg, seed=seed, search_budget=K_prime), d / f"seed-{seed}") for seed in range(self.cfg.seeds)]
        if self.cfg.seed_jobs > 1 or self.cfg.executor != "local":  # seeds side by side, each in its own process or Ray task
            from ..search.executor import Runner
            from ..search.lug import run_seed

            runner = Runner(jobs=self.cfg.seed_jobs, executor=self.cfg.executor, ray_address=self.cfg.ray_address)
            say(f"{self.cfg.seeds} seeds, {self.cfg.seed_jobs if self.cfg.executor == 'local' else 'as Ray tasks'} at a time, "
                f"K'={metric_text(search_cfg.metric, K_prime)}")
            calls = [(cfg.to_json(), None, str(seed_dir), runner.threads()) for cfg, seed_dir in seeds]  # K': the config's
            by_seed = {}
            for i, summary in runner.run(run_seed, calls):
                say(f"seed {i}: search-val acc {summary['val_acc']:.3f}, derived {metric_text(summary['metric'], summary['derived_cost'])}")
                by_seed[i] = summary
            summaries = [by_seed[i] for i in range(len(seeds))]
        else:
            summaries = []
            for cfg, seed_dir in seeds:
                say(f"seed {cfg.seed + 1}/{self.cfg.seeds}: K_d={metric_text(cfg.metric, cfg.budget)} {cfg.metric}, "
                    f"K'={metric_text(cfg.metric, K_prime)}")
                summaries.append(run_search(cfg, seed_dir, resume=(seed_dir / "checkpoint.pt").exists(), progress=say).summary)
        for (cfg, seed_dir), summary in zip(seeds, summaries):
            results.append(summary | {"seed": cfg.seed, "dir": str(seed_dir.relative_to(run.root))})
        best = max(results, key=lambda r: r["val_acc"])  # the paper keeps the best search-val accuracy of 5 runs
        checks: list[dict[str, Any]] = []
        if self._needs_latency():
            best, checks = self._hold_latency(run, search_cfg, best, say)
        write_json(d / "genotype.json", best["genotype"])
        out = SearchOutputs(genotype="search/genotype.json", search_log=f"{best['dir']}/search.json", best_seed=best["seed"],
                            K_d=best["K_d"], K_prime=K_prime, lug=lug, metric=best["metric"],
                            derived_params=best["derived_params"], derived_flops=best["derived_flops"],
                            val_acc=best["val_acc"], under_budget=best["under_budget"], eval_config=best["eval_config"],
                            seeds=[{k: r[k] for k in ("seed", "val_acc", "derived_cost", "dir")} for r in results],
                            device_checks=checks)
        say(f"best seed {best['seed']}: search-val acc {best['val_acc']:.3f}, derived {best['metric']} {metric_text(best['metric'], best['derived_cost'])}; "
            f"architecture weights: {best.get('learned', 'not recorded')}")
        return out

    def _hold_latency(self, run: RunDir, search_cfg, best: dict[str, Any], say: Say) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The derived network timed on the device before retraining; derived again under a tightened
        budget while it is over (``latency.hold``)."""
        from ..latency.hold import hold_latency
        from ..costs.latency import load_latency_model
        from ..nets.config import NetConfig
        from ..nets.cost import network_cost
        from ..nets.genotype import genotype_from_json
        from ..costs.metrics import metric_round
        from ..search.config import cost_model
        from ..search.searcher import rederive

        lm = load_latency_model(run.path(run.outputs("latency", LatencyOutputs).model))
        net = NetConfig.from_json(best["eval_config"])
        cm = cost_model(search_cfg)
        seed_cfg, seed_dir = replace(search_cfg, seed=best["seed"]), run.root / best["dir"]
        g, checks = hold_latency(self.profile, search_cfg.budget, genotype_from_json(best["genotype"]), net, lm,
                                 lambda K: rederive(replace(seed_cfg, budget=K), seed_dir).genotype, cm.feasible_range()[0],
                                 run.stage_dir("search") / "device-check", progress=say)
        if g.to_json() != best["genotype"]:
            cost = network_cost(g, net)
            derived = cm.derived(g)
            best = best | dict(genotype=g.to_json(), derived_params=cost.params, derived_flops=cost.flops,
                               derived_cost=metric_round(search_cfg.metric, derived), under_budget=derived <= search_cfg.budget)
        return best, checks

    # ---- train --------------------------------------------------------------------
    def _train_cfg(self, run: RunDir):
        from ..train.trainer import TrainConfig, apply_preset

        s = run.outputs("search", SearchOutputs)
        genotype = json.loads(run.path(s.genotype).read_text())
        # The network the budget was searched for: the search's evaluation config.
        return replace(apply_preset(TrainConfig(), self.train_preset), genotype=genotype, dataset=self.cfg.dataset,
                       data_root=self.cfg.data_root, C=s.eval_config["C"], layers=s.eval_config["layers"],
                       **self.cfg.train_overrides)

    def train_inputs(self, run: RunDir) -> str:
        g = run.path(run.outputs("search", SearchOutputs).genotype)
        return hash_inputs(g, self.train_preset, self.cfg.train_overrides, self.cfg.baselines, self.cfg.dataset)

    def train(self, run: RunDir, say: Say) -> TrainOutputs:
        from ..train.trainer import train

        d = run.stage_dir("train")
        cfg = self._train_cfg(run)
        res = train(cfg, d / "searched", resume=(d / "searched" / "checkpoint.pt").exists(), progress=say)
        last = res["history"][-1]
        baselines = []
        for arch in self.cfg.baselines:
            if arch in BASELINE_GENOTYPES:  # a published cell (NASNet, AmoebaNet, DARTS_V2) in the searched network's shape
                from ..nets.genotype import KNOWN

                b = replace(cfg, genotype=KNOWN[arch])
            else:
                b = replace(cfg, arch=arch, genotype=None, width=0.35 if arch == "mobilenet_v2" else 1.0)
            say(f"baseline {arch}")
            r = train(b, d / arch, resume=(d / arch / "checkpoint.pt").exists(), progress=say)
            baselines.append(dict(arch=arch, params=r["params"], test_top1=r["history"][-1]["test_top1"]))
        return TrainOutputs(model="train/searched/model.pt", train_log="train/searched/train.json", params=res["params"],
                            test_top1=last["test_top1"], test_top5=last["test_top5"],
                            seconds=sum(r["seconds"] for r in res["history"]), baselines=baselines)

    # ---- export -------------------------------------------------------------------
    def target_format(self) -> str:
        """The export the device runs: its profile's engine and precision."""
        from ..export.formats import formats_for

        return formats_for(self.profile.runtime.engine, self.profile.runtime.precision).name

    def formats(self) -> list[str]:
        """The exports: --formats, always with the format the device runs (profiled whatever the order)."""
        target = self.target_format()
        if self.cfg.formats:
            return list(self.cfg.formats) + ([] if target in self.cfg.formats else [target])
        return sorted({target, "onnx"}, key=lambda n: n != target)  # the device's format first

    def export_inputs(self, run: RunDir) -> str:
        return hash_inputs(run.path(run.outputs("train", TrainOutputs).model), self.formats())

    def export(self, run: RunDir, say: Say) -> ExportOutputs:
        from ..export.exporter import export_model

        d = run.stage_dir("export")
        if self.cfg.formats and self.target_format() not in self.cfg.formats:
            say(f"exporting {self.target_format()} too: the format {self.profile.name} runs, and the one profiled")
        rows = export_model(run.path(run.outputs("train", TrainOutputs).model), self.formats(), d, dataset=self.cfg.dataset,
                            data_root=self.cfg.data_root, progress=say)
        failed = [r for r in rows if not r["passed"]]
        for r in failed:
            if r.get("traceback"):
                getattr(say, "log", lambda m: None)(f"{r['format']}: {r['traceback']}")
        if failed:
            raise RuntimeError("export validation failed: " + "; ".join(f"{r['format']}: {r.get('reason')}" for r in failed))
        target = self.target_format()
        [match] = [r for r in rows if r["format"] == target]  # formats() always includes it
        return ExportOutputs(manifest="export/export.json", device_artifact=f"export/{match['file']}",
                             rows=[{k: v for k, v in r.items() if k not in ("ops", "traceback")} for r in rows])

    # ---- profile ------------------------------------------------------------------
    def _artifact(self, run: RunDir) -> Path:
        return run.path(run.outputs("export", ExportOutputs).device_artifact)

    def profile_inputs(self, run: RunDir) -> str:
        return hash_inputs(self._artifact(run), Path(self.profile.source), self.cfg.runs, self.cfg.warmup)

    def profile_stage(self, run: RunDir, say: Say) -> ProfileOutputs:
        from ..profile.compare import compare, format_comparison
        from ..profile.ops import map_ops
        from ..profile.remote import profile_model

        d = run.stage_dir("profile")
        artifact = self._artifact(run)
        res = profile_model(self.profile, artifact, runs=self.cfg.runs, warmup=self.cfg.warmup, ops=True, progress=say)
        op_map = map_ops(artifact, res.get("op_profile"))
        write_json(d / "result.json", res)
        write_json(d / "ops.json", op_map)
        say(f"latency p50 {res['latency_ms']['p50']:.3f} ms, peak RSS {res['peak_rss_mb']:.1f} MB on {res['machine']}")
        say(f"per-operator profile: {100 * op_map['placed_share']:.1f}% of {op_map['total_us']:.0f} us node time placed"
            if op_map.get("available") else f"per-operator profile: not available ({op_map.get('why')})")
        exports = [run.path(f"export/{r['file']}") for r in run.outputs("export", ExportOutputs).rows]
        comparison = None
        if len(exports) > 1:  # which format to ship: every export of the run on the device, in one connection
            say(f"comparing the {len(exports)} exports on {self.profile.name}")
            cmp = compare(self.profile, exports, [self.profile.runtime.threads], runs=self.cfg.runs, warmup=self.cfg.warmup,
                          progress=say)
            write_json(d / "comparison.json", {k: v for k, v in cmp.items() if k != "results"})
            for line in format_comparison(cmp).splitlines():
                say(line)
            comparison = "profile/comparison.json"
        return ProfileOutputs(result="profile/result.json", op_map="profile/ops.json" if op_map.get("available") else None,
                              comparison=comparison, **{k: res[k] for k in (
            "engine", "engine_version", "machine", "cpu_model", "peak_rss_mb", "latency_ms", "wall_s",
            "orchestration_overhead_s", "reference_max_abs_diff")})

    # ---- verdict ------------------------------------------------------------------
    def verdict_inputs(self, run: RunDir) -> str:
        return hash_inputs(run.path(run.outputs("profile", ProfileOutputs).result), Path(self.profile.source))

    def verdict(self, run: RunDir, say: Say) -> VerdictOutputs:
        from ..nets.build import build_network
        from ..nets.config import NetConfig
        from ..nets.cost import fvcore_cost, network_cost
        from ..nets.genotype import genotype_from_json
        from ..profile.verdict import format_table, verdict

        measured = json.loads(run.path(run.outputs("profile", ProfileOutputs).result).read_text())
        s = run.outputs("search", SearchOutputs)
        g, net = genotype_from_json(json.loads(run.path(s.genotype).read_text())), NetConfig.from_json(s.eval_config)
        lat = run.outputs("latency", LatencyOutputs)
        predicted, graph_ms = None, None
        if lat.model:
            from ..costs.latency import load_latency_model

            lm = load_latency_model(run.path(lat.model))
            predicted = {"latency_ms": lm.predict(g)}
            graph_ms = lm.predict_graph(measured["graph"]) if measured.get("graph") else None
        v = verdict(self.profile, self._artifact(run), measured, predicted=predicted, graph_predicted_ms=graph_ms)
        analytic = network_cost(g, net)
        fv = fvcore_cost(build_network(g, replace(net, auxiliary=False)), net.input_size, net.in_channels)
        v["cross_check"] = dict(params=analytic.params, flops=analytic.flops, fvcore_params=fv.params, fvcore_flops=fv.flops)
        write_json(run.stage_dir("verdict") / "verdict.json", v)
        for line in format_table(v).splitlines():
            say(line)
        return VerdictOutputs(verdict="verdict/verdict.json", passed=v["passed"], rows=v["rows"], cross_check=v["cross_check"])

    # ---- report -------------------------------------------------------------------
    def _report_sources(self, run: RunDir) -> dict[str, Any]:
        return {name: run.outputs(name, cls) for name, cls in OUTPUTS.items() if name != "report"}

    def report_inputs(self, run: RunDir) -> str:
        o = self._report_sources(run)
        return hash_inputs(*(run.path(p) for p in (o["search"].search_log, o["train"].train_log, o["export"].manifest,
                                                    o["profile"].result, o["verdict"].verdict)))

    def report(self, run: RunDir, say: Say) -> ReportOutputs:
        from .report import write_report

        paths = write_report(run, self.profile, self._report_sources(run))
        say(f"report: {paths['html']}")
        return ReportOutputs(markdown=str(paths["markdown"].relative_to(run.root)), html=str(paths["html"].relative_to(run.root)))


def connection_check(profile: DeviceProfile) -> None:
    """Fail in seconds, before an hour of search, when the device cannot be reached."""
    from ..devices.transport import make_transport

    if profile.connection.transport == "local":
        return
    with make_transport(profile):
        pass

"""The stages of ``dcanas run`` as thin adapters over each package's library API
(no shelling out to our own CLI): search (K seeds, LUG) -> train -> export -> profile -> verdict -> report."""
from __future__ import annotations

from dataclasses import replace

from ..devices.schema import DeviceProfile
from ..errors import UserError
from .pipeline import StageSpec
from ..costs.metrics import extra_constraints
from ..costs.metrics import metric as budget_metric
from ..presets import RUN_PRESETS
from .records import BASELINES, STAGES, RunConfig
from .stage_export import ExportStage
from .stage_latency import LatencyStage
from .stage_profile import ProfileStage
from .stage_report import ReportStage
from .stage_search import SearchStage
from .stage_train import TrainStage
from .stage_verdict import VerdictStage


class Stages(LatencyStage, SearchStage, TrainStage, ExportStage, ProfileStage, VerdictStage, ReportStage):
    """Binds a RunConfig and a device profile to the stage functions."""

    def __init__(self, cfg: RunConfig, profile: DeviceProfile) -> None:
        from ..search.config import SearchConfig, apply_preset, budgets, check_budget, cost_model, fit_eval_network

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
        held = cfg.hold_latency and metric != "latency_ms"  # latency beside the search metric: its model is the latency stage's
        if held and "latency_ms" not in profile.budget:
            raise UserError(f"--hold-latency: device {profile.name!r} has no latency_ms budget; add budget.latency_ms to {profile.source}")
        preset = apply_preset(SearchConfig(), s_preset)
        self.search_cfg = replace(preset, space=cfg.space or preset.space, dataset=cfg.dataset,
                                  data_root=cfg.data_root, metric=metric, budget=float(profile.budget[metric]),
                                  extra_budgets=extra, **cfg.search_overrides)
        if any(budget_metric(m).source == "size" for m in profile.budget):  # only then does the format change the search (shared by config)
            self.search_cfg = replace(self.search_cfg, size_format=self.target_format())
        self.notes: list[str] = []
        if "eval_C" not in cfg.search_overrides:  # the user's own --eval-channels is never changed
            self.search_cfg, note = fit_eval_network(self.search_cfg)
            self.notes += [note] if note else []
        if held:  # after the evaluation network is fitted: the latency model is measured for that network
            self.search_cfg = replace(self.search_cfg, extra_budgets={**extra, "latency_ms": float(profile.budget["latency_ms"])})
        if "latency_ms" not in budgets(self.search_cfg):  # a latency budget is checked once its model is measured (the latency stage)
            check_budget(self.search_cfg, cost_model(self.search_cfg))  # before any connection or work

    def specs(self) -> list[StageSpec]:
        """The stages in order, from the one table (:data:`OUTPUTS`)."""
        methods = {"latency": (self.latency_inputs, self.latency), "search": (self.search_inputs, self.search), "train": (self.train_inputs, self.train),
                   "export": (self.export_inputs, self.export), "profile": (self.profile_inputs, self.profile_stage),
                   "verdict": (self.verdict_inputs, self.verdict), "report": (self.report_inputs, self.report)}
        return [StageSpec(name, *methods[name]) for name in STAGES]


def connection_check(profile: DeviceProfile) -> None:
    """Fail in seconds, before an hour of search, when the device cannot be reached."""
    from ..devices.transport import make_transport

    if profile.connection.transport == "local":
        return
    with make_transport(profile) as t:
        t.sftp_check()  # files can be sent: a login shell that prints on non-interactive sessions breaks it

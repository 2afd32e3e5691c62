"""The latency stage: the device's latency model for the search's evaluation network (built or reused)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..costs.metrics import metric as budget_metric
from .pipeline import RunDir, hash_inputs
from .records import LatencyOutputs, Say


class LatencyStage:
    """The latency stage: its inputs hash and its body, mixed into ``run.stages.Stages``."""

    def _needs_latency(self) -> bool:
        from ..search.config import budgets

        return any(budget_metric(m).per_device for m in budgets(self.search_cfg))

    def _store(self, run: RunDir) -> Optional[Path]:
        """The cached latency model whose measurement store this run's device measurements join (``latency/store.py``;
        None when the run has no latency model)."""
        source = Path(run.outputs("latency", LatencyOutputs).source)
        return source if source.suffix == ".json" and source.is_file() else None

    def latency_inputs(self, run: RunDir) -> str:
        return hash_inputs(Path(self.profile.source), self.search_cfg.to_json(), self.cfg.latency_calibrate, self._needs_latency())

    def latency(self, run: RunDir, say: Say) -> LatencyOutputs:
        """Build (or reuse from the cache) the device's latency model for the search's evaluation network."""
        import shutil

        if not self._needs_latency():
            say(f"the search holds no latency budget: no latency model needed (--hold-latency holds it beside {self.search_cfg.metric})")
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

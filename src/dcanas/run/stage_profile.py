"""The profile stage: the export the device runs, measured on the device (and every export in one connection)."""
from __future__ import annotations

from pathlib import Path

from ..files import write_json
from .pipeline import RunDir, hash_inputs
from .records import ExportOutputs, ProfileOutputs, Say


class ProfileStage:
    """The profile stage: its inputs hash and its body, mixed into ``run.stages.Stages``."""

    def _artifact(self, run: RunDir) -> Path:
        return run.path(run.outputs("export", ExportOutputs).device_artifact)

    def profile_inputs(self, run: RunDir) -> str:
        return hash_inputs(self._artifact(run), Path(self.profile.source), self.cfg.runs, self.cfg.warmup)

    def profile_stage(self, run: RunDir, say: Say) -> ProfileOutputs:
        from ..profile.compare import compare, format_comparison, ship_choice
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
            gates = {r["file"]: r for r in run.outputs("export", ExportOutputs).rows}
            cmp["ship"] = ship_choice(cmp["rows"], gates)
            write_json(d / "comparison.json", {k: v for k, v in cmp.items() if k != "results"})
            for line in format_comparison(cmp).splitlines():
                say(line)
            say(cmp["ship"]["line"])
            comparison = "profile/comparison.json"
        return ProfileOutputs(result="profile/result.json", op_map="profile/ops.json" if op_map.get("available") else None,
                              comparison=comparison, **{k: res[k] for k in (
            "engine", "engine_version", "machine", "cpu_model", "peak_rss_mb", "latency_ms", "wall_s",
            "orchestration_overhead_s", "reference_max_abs_diff")})

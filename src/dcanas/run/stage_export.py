"""The export stage: the retrained model in the device's format (and the others asked for), each checked."""
from __future__ import annotations


from .pipeline import RunDir, hash_inputs
from .records import ExportOutputs, TrainOutputs, Say


class ExportStage:
    """The export stage: its inputs hash and its body, mixed into ``run.stages.Stages``."""

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

"""The report stage: report.md and report.html from the finished stages."""
from __future__ import annotations

from typing import Any

from .pipeline import RunDir, hash_inputs
from .records import OUTPUTS, ReportOutputs, Say


class ReportStage:
    """The report stage: its inputs hash and its body, mixed into ``run.stages.Stages``."""

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

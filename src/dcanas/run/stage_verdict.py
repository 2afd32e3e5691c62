"""The verdict stage: every budget of the profile against what the device measured."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional

from ..files import write_json
from .pipeline import RunDir, hash_inputs
from .records import LatencyOutputs, ProfileOutputs, SearchOutputs, VerdictOutputs, Say


class VerdictStage:
    """The verdict stage: its inputs hash and its body, mixed into ``run.stages.Stages``."""

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
            predicted = {"latency_ms": lm.predict_used(g)}
            graph_ms = lm.predict_graph(measured["graph"]) if measured.get("graph") else None
        latency_check = self._latency_check(run, lm, g, net, measured, say) if lat.model else None
        v = verdict(self.profile, self._artifact(run), measured, predicted=predicted, graph_predicted_ms=graph_ms,
                    latency_check=latency_check)
        if predicted:
            v["latency_model_error"] = self._model_error(run, s, g, predicted["latency_ms"], measured["latency_ms"]["p50"], say)
        analytic = network_cost(g, net)
        fv = fvcore_cost(build_network(g, replace(net, auxiliary=False)), net.input_size, net.in_channels)
        v["cross_check"] = dict(params=analytic.params, flops=analytic.flops, fvcore_params=fv.params, fvcore_flops=fv.flops)
        write_json(run.stage_dir("verdict") / "verdict.json", v)
        for line in format_table(v).splitlines():
            say(line)
        return VerdictOutputs(verdict="verdict/verdict.json", passed=v["passed"], rows=v["rows"], cross_check=v["cross_check"])

    def _latency_check(self, run: RunDir, lm, g, net, measured: dict, say: Say) -> Optional[dict]:
        """Where the profile has a latency budget, the profiled graph timed again beside the model's reference network
        (``latency.hold.verdict_check``): judged at the machine's speed during the model's build, and within its noise."""
        from ..latency.hold import verdict_check

        budget = self.profile.budget.get("latency_ms")
        p50 = (measured.get("latency_ms") or {}).get("p50")
        if budget is None or p50 is None:
            return None
        check = verdict_check(self.profile, budget, p50, g, net, lm, run.stage_dir("verdict") / "again", progress=say)
        if check is not None:
            say(f"latency at the verdict: profiled p50 {p50:.4f} ms; {check['why']} (the reference network {check['reference_ms']:.4f} ms "
                f"now, {check['build_reference_ms']:.4f} ms in the model's build)")
        return check

    def _model_error(self, run: RunDir, s: SearchOutputs, g, predicted_ms: float, p50_ms: float, say: Say) -> dict:
        """The latency model against every network this run measured on the device (the derivations timed before
        retraining, the profiled file), and the profiled one added to the device's measurement store."""
        from ..latency.store import append

        rows = [dict(network=f"derivation {k + 1}, untrained", predicted_ms=c["predicted_ms"], measured_ms=c["measured_ms"])
                for k, c in enumerate(s.device_checks)]
        rows.append(dict(network="retrained, profiled (p50)", predicted_ms=predicted_ms, measured_ms=p50_ms))
        for r in rows:
            r["error"] = r["predicted_ms"] / r["measured_ms"] - 1
        store = self._store(run)
        if store is not None:
            append(store, [dict(genotype=g.to_json(), measured_ms=p50_ms, predicted_ms=predicted_ms, source="verdict")])
        worst = max(rows, key=lambda r: abs(r["error"]))
        out = dict(rows=rows, mape=sum(abs(r["error"]) for r in rows) / len(rows), worst=worst["error"],
                   store=str(store) if store else None)
        say(f"latency model on the {len(rows)} network(s) this run measured: mean |error| {100 * out['mape']:.1f}%, worst "
            f"{100 * out['worst']:+.1f}% ({worst['network']})" + (f"; recorded for `dcanas latency refit --model {store}`" if store else ""))
        return out

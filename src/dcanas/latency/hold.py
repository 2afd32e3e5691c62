"""The derived network timed on the device before retraining. The search holds the latency
model's bound, and the model ranks networks imperfectly (design note 17); an untrained copy of the derived
network has the derived network's graph, so its time. Over the budget, the same search is derived again
under a budget tightened by the measured overshoot, at most ``REPAIRS`` times, before any retraining."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from ..devices.schema import DeviceProfile
from ..nets.config import NetConfig
from ..nets.genotype import Genotype, genotype_from_json
from .build import genotype_latency_rows
from ..costs.latency import LatencyModel

REPAIRS = 2  # derivations after the first, each under the budget shrunk by the last measured overshoot
AIM = 0.97   # a repair aims this far under the budget: a derivation's cost moves in steps, and timing has noise


def hold_latency(profile: DeviceProfile, budget_ms: float, genotype: Genotype, cfg: NetConfig, lm: LatencyModel,
                 rederive: Callable[[float], Genotype], feasible_ms: float, work: Path,
                 progress: Callable[[str], None] = print) -> tuple[Genotype, list[dict[str, Any]]]:
    """Time ``genotype`` on the device; while over ``budget_ms``, derive again (``rederive(K)``: the search's
    derivation under derivation budget K ms) with K shrunk by the overshoot (aiming at ``AIM`` x the budget),
    not below ``feasible_ms``.
    Returns the first genotype measured within the budget, else the fastest measured, and every check."""
    reference = genotype_from_json(lm.device["reference"]["genotype"]) if (lm.device.get("reference") or {}).get("genotype") \
        else genotype
    build_ref = (lm.device.get("reference") or {}).get("ms")
    checks: list[dict[str, Any]] = []
    K = budget_ms
    for attempt in range(REPAIRS + 1):
        tag = "derived:" + hashlib.sha256(json.dumps(genotype.to_json(), sort_keys=True).encode()).hexdigest()[:12]
        [ms], ref_ms = genotype_latency_rows(profile, cfg, [genotype], work, tag, reference,
                                             progress=lambda m: progress(m) if m.startswith("WARNING") else None)
        level = ref_ms / build_ref if ref_ms and build_ref else None
        predicted = lm.predict(genotype)
        checks.append(dict(genotype=genotype.to_json(), budget_ms=budget_ms, derivation_budget_ms=K, predicted_ms=predicted,
                           measured_ms=ms, reference_ms=ref_ms, level=level))
        progress(f"derived network on {profile.name} before retraining (untrained weights, same graph): {ms:.4f} ms against "
                 f"the {budget_ms:g} ms budget; the latency model predicted {predicted:.4f} ms"
                 + (f"; the reference network takes {level:.3f}x its time at the model's build" if level else ""))
        if ms <= budget_ms:
            return genotype, checks
        if attempt == REPAIRS:
            break
        K = K * AIM * budget_ms / ms
        if K < feasible_ms:
            progress(f"no tighter derivation: {K:.4f} ms is under the least the space can derive ({feasible_ms:.4f} ms)")
            break
        progress(f"over the budget by {100 * (ms / budget_ms - 1):.1f}%: deriving again under {K:.4f} ms")
        genotype = rederive(K)
    best = min(checks, key=lambda c: c["measured_ms"])
    progress(f"WARNING: no derivation measured within {budget_ms:g} ms on {profile.name} (fastest {best['measured_ms']:.4f} ms); "
             f"keeping the fastest: the verdict will say whether the retrained network meets it")
    return genotype_from_json(best["genotype"]), checks

"""The derived network timed on the device before retraining. The search holds the latency
model's bound, and the model ranks networks imperfectly (design note 17); an untrained copy of the derived
network has the derived network's graph, so its time. The decision is taken at the machine's speed during the
model's build (the reference network is timed beside the copy) and an overshoot within the build's noise is said,
not repaired (``decide``). Over the budget beyond that, the same search is derived again under a budget tightened
by the overshoot, at most ``REPAIRS`` times, before any retraining."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Optional

from ..devices.schema import DeviceProfile
from ..nets.config import NetConfig
from ..nets.genotype import Genotype, genotype_from_json
from .build import genotype_latency_rows
from .store import append
from ..costs.latency import LatencyModel

REPAIRS = 2  # derivations after the first, each under the budget shrunk by the last measured overshoot
AIM = 0.97   # a repair aims this far under the budget: a derivation's cost moves in steps, and timing has noise
NOISE_K = 2.0  # an overshoot within this many times the build's timing noise (build.figure_noise) is not told from noise


def timing_noise(lm: LatencyModel) -> Optional[float]:
    """The build's noise of a kept figure (``figure_noise``); models built before it was recorded: the rounds' CV."""
    return lm.device.get("figure_noise", lm.device.get("repeat_cv"))


def decide(ms: float, level: Optional[float], budget_ms: float, cv: Optional[float]) -> tuple[str, float, str]:
    """Whether a derivation timed at ``ms`` meets ``budget_ms``: ("within" | "noise" | "over", the figure decided on,
    why). The figure is the time at the machine's speed during the model's build (``ms / level``, the reference network
    timed beside it) when known, else as measured; an overshoot within ``NOISE_K`` x the build's timing noise is noise."""
    figure = ms / level if level and level > 0 else ms
    how = (f"{figure:.4f} ms at the build's machine speed (measured {ms:.4f} ms, the reference network at {level:.3f}x)"
           if figure != ms else f"{ms:.4f} ms")
    if figure <= budget_ms:
        return "within", figure, f"{how}: within the {budget_ms:g} ms budget"
    tol = NOISE_K * cv if cv is not None and cv == cv and cv > 0 else 0.0
    over = figure / budget_ms - 1
    if over <= tol:
        return "noise", figure, (f"{how}: over the {budget_ms:g} ms budget by {100 * over:.1f}%, within the measurement's noise "
                                 f"({NOISE_K:g} x the build's timing noise = {100 * tol:.1f}%)")
    return "over", figure, f"{how}: over the {budget_ms:g} ms budget by {100 * over:.1f}%"


def hold_latency(profile: DeviceProfile, budget_ms: float, genotype: Genotype, cfg: NetConfig, lm: LatencyModel,
                 rederive: Callable[[float], Genotype], feasible_ms: float, work: Path,
                 progress: Callable[[str], None] = print, store: Optional[Path] = None) -> tuple[Genotype, list[dict[str, Any]]]:
    """Time ``genotype`` on the device; while over ``budget_ms``, derive again (``rederive(K)``: the search's
    derivation under derivation budget K ms) with K shrunk by the overshoot (aiming at ``AIM`` x the budget),
    not below ``feasible_ms``.
    Returns the first genotype measured within the budget, else the fastest measured, and every check; each check is
    appended to the measurement store of the model at ``store`` (its cached file) when given."""
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
        predicted = lm.predict_used(genotype)
        decision, figure, why = decide(ms, level, budget_ms, timing_noise(lm))
        checks.append(dict(genotype=genotype.to_json(), budget_ms=budget_ms, derivation_budget_ms=K, predicted_ms=predicted,
                           measured_ms=ms, reference_ms=ref_ms, level=level, decision=decision, decided_ms=figure))
        if store is not None:
            append(store, [dict(genotype=genotype.to_json(), measured_ms=ms, predicted_ms=predicted, level=level, source="hold")])
        progress(f"derived network on {profile.name} before retraining (untrained weights, same graph): {why}"
                 f"{'; not derived again, the verdict decides' if decision == 'noise' else ''}; the latency model predicted {predicted:.4f} ms")
        if decision != "over":
            return genotype, checks
        if attempt == REPAIRS:
            break
        K = K * AIM * budget_ms / figure
        if K < feasible_ms:
            progress(f"no tighter derivation: {K:.4f} ms is under the least the space can derive ({feasible_ms:.4f} ms)")
            break
        progress(f"over the budget by {100 * (figure / budget_ms - 1):.1f}%: deriving again under {K:.4f} ms")
        genotype = rederive(K)
    best = min(checks, key=lambda c: c["decided_ms"])
    progress(f"WARNING: no derivation measured within {budget_ms:g} ms on {profile.name} (fastest {best['measured_ms']:.4f} ms); "
             f"keeping the fastest: the verdict will say whether the retrained network meets it")
    return genotype_from_json(best["genotype"]), checks


def verdict_check(profile: DeviceProfile, budget_ms: float, p50_ms: float, genotype: Genotype, cfg: NetConfig, lm: LatencyModel,
                  work: Path, progress: Callable[[str], None] = print) -> Optional[dict[str, Any]]:
    """The verdict's latency on measurements that hold: the profiled network's graph (an untrained copy) timed again
    in one chunk beside the latency model's reference network, so that the machine's level is known for that very
    measurement, and ``decide`` on it. A profile's p50 taken in a slow phase of the machine (seen: 1.459 ms for a
    network that reads 0.84 ms before and after) shows against it. None when the model has no reference network (a
    fitted model) or the chunk could not be timed."""
    ref = lm.device.get("reference") or {}
    if not ref.get("genotype") or not ref.get("ms"):
        return None
    [again], ref_ms = genotype_latency_rows(profile, cfg, [genotype], work, "verdict", genotype_from_json(ref["genotype"]),
                                            progress=lambda m: progress(m) if m.startswith("WARNING") else None)
    if not ref_ms or not again:
        return None
    level = ref_ms / ref["ms"]
    decision, figure, why = decide(again, level, budget_ms, timing_noise(lm))
    return dict(decision=decision, decided_ms=figure, why=f"timed again beside the reference network: {why}", level=level,
                again_ms=again, reference_ms=ref_ms, build_reference_ms=ref["ms"], measured_ms=p50_ms, budget_ms=budget_ms)

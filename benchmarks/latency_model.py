"""Latency model quality (issue 14): on one device, 30 random networks not used in any fit, measured
end to end, against the predictions of FLOPs alone, params alone (each mapped to ms by a line fitted
on the calibration networks), the per-op table alone, the calibrated model (table + 5, 10, 20
calibration networks), the structure model (the table plus the node counts of the graph onnxruntime runs,
counted from the genotype: ``costs/runtime_graph.py``) and the end-to-end-only model (`latency fit` on the same
20 networks); with --repeat [N], the held-out networks measured N more times, the second ranked against the first (no
predictor can rank a measurement better than the measurement ranks itself), each network's figure then its fastest over
all measurements, and the structure model also given against each measurement alone:
Spearman, Kendall, MAPE and the share within +-10%, with the measurement conditions and the
repeat-to-repeat CV. The calibrated models also rescaled by the reference level: the reference network's
time beside the held-out set over its time in the build (the machine's speed then against now).

    python benchmarks/latency_model.py [--device local] [--space darts] [--preset cpu-demo] [--test 30] [--ceiling 200] [--repeat [N]]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def apportioned(lm, net, op_nodes, calib, test_g) -> dict:
    """Additive forms built from the graph model's features apportioned to the op that makes them (issue 33): each op
    position's node counts as the runtime runs the op alone, summed over a genotype's instances, per node type; alone
    and beside the per-op table. Least squares on relative errors with a ridge toward the table's prior (node weights:
    0 beside the table, the calibration networks' mean time per node alone), the ridge chosen by leave-one-out."""
    import numpy as np

    from dcanas.costs.latency import instance_key, instances

    types = sorted({t for c in op_nodes.values() for t in c})

    def feats(g, table: bool) -> list[float]:
        phi, psi = dict.fromkeys(lm.op_names, 0.0), dict.fromkeys(types, 0.0)
        for inst in instances(g, net):
            if inst[0] == "none":
                continue
            phi[inst[0]] += lm.base(inst)
            for t, k in op_nodes[instance_key(inst)].items():
                psi[t] += k
        return [1.0] + ([phi[o] for o in lm.op_names] if table else []) + [psi[t] for t in types]

    y = np.array([ms for _, ms in calib])
    out = {}
    for name, table in (("apportioned node counts alone", False), ("per-op table + apportioned node counts", True)):
        X, T = np.array([feats(g, table) for g, _ in calib]), np.array([feats(g, table) for g in test_g])
        n_ops = len(lm.op_names) if table else 0
        per_node = max(float((y.mean() - lm.fixed_ms) / X[:, 1 + n_ops:].sum(axis=1).mean()), 1e-6)
        prior = np.array([lm.fixed_ms] + [1.0] * n_ops + [0.0 if table else per_node] * len(types))
        scale = np.array([lm.fixed_ms] + [1.0] * n_ops + [per_node] * len(types))

        ridge, theta = _ridge_fit(X, y, prior, scale)
        out[f"{name} (ridge {ridge})"] = list(T @ theta)
    return out


def settling(work: Path, tag: str) -> str:
    """How a held-out measurement settled: rounds per network, and how many networks' two fastest rounds still disagreed."""
    import numpy as np

    measured = [m for k, m in json.loads((work / tag.replace(":", "-") / "measured.json").read_text())["measured"].items()
                if k.startswith(tag + ":")]
    n = [len(m["p50_ms_rounds"]) for m in measured]
    return (f"{tag.split(':')[0]} measurement: rounds per network {min(n)} .. {max(n)} (median {np.median(n):.0f}); "
            f"{sum(m.get('confirmed') is False for m in measured)} of {len(measured)} networks unsettled")


def reuse_exports(work: Path, src: str, dst: str, n: int) -> None:
    """A repeated measurement times the files the first exported (hard links under the repeat's names) instead of
    exporting the same networks again (3 minutes for 30 of cpu-demo's)."""
    import os

    from dcanas.latency.build import REFERENCE, _safe

    a, b = (work / t.replace(":", "-") / "models" for t in (src, dst))
    b.mkdir(parents=True, exist_ok=True)
    for old, new in [(f"{src}:{i}", f"{dst}:{i}") for i in range(n)] + [(REFERENCE, REFERENCE)]:
        for f in a.glob(_safe(old) + ".*"):
            target = b / (_safe(new) + f.suffix)
            if not target.exists():
                os.link(f, target)


def _ridge_fit(X, y, prior, scale):
    """argmin sum((X theta - y) / y)^2 + ridge * sum((theta - prior) / scale)^2, the ridge of RIDGES with the smallest
    leave-one-out relative error; (ridge, theta on every row)."""
    import numpy as np

    from dcanas.costs.latency import RIDGES

    def solve(rows, ridge):
        A = np.vstack([X[rows] / y[rows, None], np.sqrt(ridge) * np.diag(1 / scale)])
        b = np.concatenate([np.ones(len(rows)), np.sqrt(ridge) * prior / scale])
        return np.linalg.lstsq(A, b, rcond=None)[0]

    idx = np.arange(len(y))
    loo = {r: float(np.mean([abs(X[i] @ solve(idx[idx != i], r) - y[i]) / y[i] for i in idx])) for r in RIDGES}
    ridge = min(RIDGES, key=lambda r: (loo[r], -r))
    return ridge, solve(idx, ridge)


def main() -> int:
    import numpy as np

    from dcanas.devices.schema import load_profile
    from dcanas.latency.build import build_latency_model, default_cache_dir, genotype_graphs, genotype_latency_rows, model_stem
    from dcanas.latency.measure import calibration_genotypes
    from dcanas.costs.latency import LatencyModel, agreement, instance_key, instances
    from dcanas.latency.timing import Timing
    from dcanas.nets.cost import network_cost
    from dcanas.nets.genotype import genotype_from_json
    from dcanas.nets.ops import SPACE_OPS
    from dcanas.search.config import SearchConfig, apply_preset, eval_config

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="local")
    p.add_argument("--space", default="darts")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--preset", default="cpu-demo")
    p.add_argument("--calibrate", type=int, default=20)
    p.add_argument("--test", type=int, default=30)
    p.add_argument("--runs", type=int, default=Timing.runs)
    p.add_argument("--rounds", type=int, default=Timing.rounds)
    p.add_argument("--min-seconds", type=float, default=Timing.min_seconds)
    p.add_argument("--confirm", type=float, default=Timing.confirm, help="more rounds where a model's two fastest differ by more (0: none)")
    p.add_argument("--max-rounds", type=int, default=Timing.max_rounds, help="rounds per model at most (0: 3x --rounds)")
    p.add_argument("--ceiling", type=int, default=0, help="also measure this many more networks and fit the per-position additive form on them")
    p.add_argument("--repeat", type=int, nargs="?", const=1, default=0, metavar="N",
                   help="measure the held-out networks N more times (default 1; the second ranked against the first)")
    p.add_argument("--cache-dir", default=str(default_cache_dir()))
    p.add_argument("--out", default=str(Path(__file__).with_name("latency_model.last.md")))
    args = p.parse_args()
    profile = load_profile(args.device)
    cfg = apply_preset(SearchConfig(space=args.space, dataset=args.dataset), args.preset)
    net = eval_config(cfg)
    timing = Timing(runs=args.runs, rounds=args.rounds, min_seconds=args.min_seconds, confirm=args.confirm, max_rounds=args.max_rounds)
    lm, path = build_latency_model(profile, args.space, net, tuple(SPACE_OPS[args.space]), calibrate=args.calibrate,
                                   timing=timing, cache_dir=Path(args.cache_dir))
    calib = [(genotype_from_json(c["genotype"]), c["measured_ms"]) for c in lm.calibration]
    test_g = calibration_genotypes(args.space, args.test, seed=1000 + args.calibrate)
    seen = {repr(g.to_json()) for g, _ in calib}
    test_g = [g for g in test_g if repr(g.to_json()) not in seen]
    t1 = time.time()
    work = Path(args.cache_dir) / model_stem(lm.device["key"])
    reference = genotype_from_json(lm.device["reference"]["genotype"])
    y, ref_now = genotype_latency_rows(profile, net, test_g, work, f"test:{1000 + args.calibrate}", reference, timing=timing)
    y = np.array(y)
    level = ref_now / lm.device["reference"]["ms"]  # the machine's speed now against the build's, by the reference network
    t_test = time.time() - t1

    def line_fit(metric: str):
        x = np.array([network_cost(g, net).get(metric) for g, _ in calib], dtype=float)
        a, b = np.polyfit(x, [ms for _, ms in calib], 1)
        return [a * network_cost(g, net).get(metric) + b for g in test_g]

    rows = {"FLOPs alone (line fitted on the calibration networks)": line_fit("flops"),
            "params alone (same)": line_fit("params"),
            "per-op table alone": [lm.table_only(g) for g in test_g]}
    for n in (5, 10, 20):
        if n <= len(calib):
            m = copy.deepcopy(lm)
            m.fit(calib[:n])
            rows[f"table + calibration on {n} networks (ridge {m.stats['ridge']})"] = [m.predict(g) for g in test_g]
    op_nodes = {k[3:]: v.get("graph") for k, v in json.loads((work / "measured.json").read_text())["measured"].items() if k.startswith("op:")}
    if op_nodes and all(op_nodes.values()) and len(calib) >= 20:  # the graph model's node counts apportioned to the ops
        for name, pred in apportioned(lm, net, op_nodes, calib[:20], test_g).items():
            rows[f"{name} + calibration on 20 networks (additive; not used by dcanas)"] = pred
    graphs = genotype_graphs(work, f"test:{1000 + args.calibrate}", len(test_g))
    cal_graphs = [c.get("graph") for c in lm.calibration]
    if all(graphs) and all(cal_graphs):
        for n in (5, 10, 20):
            if n <= len(calib):
                m = copy.deepcopy(lm).fit_graph([(c, ms) for c, (_, ms) in zip(cal_graphs[:n], calib[:n])])
                pred = [m.predict_graph(c) for c in graphs]
                if None not in pred:  # None: a held-out network has an op type none of these n networks had
                    rows[f"graph model (runtime node counts) + calibration on {n} networks (ridge {m.graph_stats['ridge']})"] = pred
    structure_note = ""
    for n in (10, 20):  # the structure model: the table plus the runtime graph's counts derived from the genotype
        if n <= len(calib):
            m = copy.deepcopy(lm).fit_structure([(g, ms, c) for (g, ms), c in zip(calib[:n], cal_graphs[:n])])
            if m.structure_theta:
                rows[f"structure model (the runtime graph counted from the genotype; {m.structure_stats['form']} form), "
                     f"calibration on {n} networks (ridge {m.structure_stats['ridge']})"] = [m.predict_structure(g) for g in test_g]
            else:
                structure_note = f"structure model not fitted: {m.structure_stats.get('unused')}"
    derived = [lm.node_counts(g) for g in test_g]
    if all(graphs):
        structure_note = "; ".join([f"node counts derived from the genotype equal the runtime's graph on "
                                    f"{sum(d == c for d, c in zip(derived, graphs))} of {len(test_g)} held-out networks"]
                                   + ([structure_note] if structure_note else []))
    e2e = LatencyModel.unfitted_work(args.space, net.to_json()).fit(calib)
    rows[f"end to end only (latency fit, {len(calib)} rows)"] = [e2e.predict(g) for g in test_g]
    if args.ceiling:  # the best any model additive over (op, position) can do here: one weight per position, fitted on many networks
        more = [g for g in calibration_genotypes(args.space, args.ceiling + len(test_g), seed=5000)
                if repr(g.to_json()) not in seen | {repr(t.to_json()) for t in test_g}][:args.ceiling]
        y_more = np.array(genotype_latency_rows(profile, net, more, work, "ceiling:5000", reference, timing=timing)[0])
        keys = sorted(lm.table)

        def per_position(g) -> list[float]:
            counts = dict.fromkeys(keys, 0.0)
            for inst in instances(g, net):
                if inst[0] != "none":
                    counts[instance_key(inst)] += 1
            return [1.0] + [counts[k] for k in keys]

        X = np.array([per_position(g) for g in more])
        theta, *_ = np.linalg.lstsq(X / y_more[:, None], np.ones_like(y_more), rcond=None)
        rows[f"additive per (op, position), fitted on {len(more)} more networks (the form's ceiling)"] = \
            [float(np.array(per_position(g)) @ theta) for g in test_g]
    truth, again, passes = y, [], [("test", y)]
    for k in range(1, args.repeat + 1):  # the held-out set measured again: no predictor ranks better than one measurement ranks the next
        tag = "again" if k == 1 else f"again{k}"
        reuse_exports(work, f"test:{1000 + args.calibrate}", f"{tag}:{1000 + args.calibrate}", len(test_g))
        yk, refk = genotype_latency_rows(profile, net, test_g, work, f"{tag}:{1000 + args.calibrate}", reference, timing=timing)
        passes.append((tag, np.array(yk)))
        # Interference only adds time, so each network's figure is its fastest over all measurements, and the
        # reference's likewise for the level.
        truth = np.minimum(truth, passes[-1][1])
        ref_now = min(ref_now, refk)
    if len(passes) > 1:
        a = agreement(list(passes[1][1]), y)
        again = [f"the held-out networks measured a second time, against the first (the measurement's own repeatability): "
                 f"Spearman {a['spearman']:.3f}, Kendall {a['kendall']:.3f}, MAPE {100 * a['mape']:.1f}%, "
                 f"within +-10% {100 * a['within_10']:.0f}%"]
        level = ref_now / lm.device["reference"]["ms"]
    for name in [n for n in rows if "on 20 networks" in n and "additive;" not in n]:  # the calibrated models, rescaled by the level at use
        rows[f"{name}, x reference level {level:.3f}"] = [level * v for v in rows[name]]
    cond = lm.device.get("conditions") or [{}]
    info = lm.device.get("info") or {}
    lines = [f"# Latency model on {profile.name} ({lm.device['key']['format']}, {profile.runtime.threads} threads), "
             f"{args.space} evaluation network C={net.C}, {net.layers} layers, {net.input_size}px",
             "", f"CPU {info.get('cpu_model')}, {info.get('cores')} cores; runtimes {lm.device['key'].get('runtimes')}",
             f"conditions at the first and last measurement chunk: {cond[0].get('before')} -> {cond[-1].get('after')}",
             f"repeat-to-repeat CV (median over the build's models of the CV of {args.rounds} round p50s): "
             f"{100 * lm.device.get('repeat_cv', float('nan')):.2f}%",
             f"build: {len(lm.table)} op positions + fixed parts + {len(calib)} calibration networks "
             + (f"in {lm.device['build_s']:.0f} s" if lm.device.get("build_s", 0) >= 5 else "fitted on measurements of an earlier build (reused)")
             + f"; {len(test_g)} held-out networks " + (f"measured in {t_test:.0f} s" if t_test >= 5 else "measured by an earlier run (reused)")
             + f"; held-out latency {y.min():.3f} .. {y.max():.3f} ms",
             f"reference network: {lm.device['reference']['ms']:.4f} ms in the build (chunks "
             f"{min(c['reference_ms'] for c in cond):.4f} .. {max(c['reference_ms'] for c in cond):.4f} ms, "
             f"{sum(c.get('attempts', 1) - 1 for c in cond)} chunk timings repeated), {ref_now:.4f} ms beside the held-out set"
             f"{f' (the fastest of its {len(passes)} measurements)' if again else ''}: "
             f"level {level:.3f}",
             ] + ([structure_note] if structure_note else [])
    lines += [settling(work, f"{t}:{1000 + args.calibrate}") for t, _ in passes] + again + [
             "", "held-out figure ranked against: " + (f"each network's fastest round over all {len(passes)} measurements" if again
                                                      else "one measurement"),
             "", "| predictor | Spearman | Kendall | MAPE | within +-10% |", "|---|---:|---:|---:|---:|"]
    for name, pred in rows.items():
        a = agreement(pred, truth)
        lines.append(f"| {name} | {a['spearman']:.3f} | {a['kendall']:.3f} | {100 * a['mape']:.1f}% | {100 * a['within_10']:.0f}% |")
    used = [n for n in rows if n.startswith("structure model") and "on 20 networks" in n and ", x reference" not in n]
    if again and used:  # the search's predictor against each measurement alone
        one = [(t, agreement(rows[used[0]], m)) for t, m in passes]
        lines += ["", "the structure model (20 networks) against each measurement alone: "
                  + "; ".join(f"{t} Spearman {a['spearman']:.3f}, within +-10% {100 * a['within_10']:.0f}%" for t, a in one)]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

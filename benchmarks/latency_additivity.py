"""Is a network's runtime graph additive over its (op, position) choices? (issue 33)

The search sums a latency per op instance; the graph model (node counts per op type as onnxruntime runs the
network, after its rewrites) ranks networks better. This measures why: N random evaluation networks of a space
are exported to ONNX and run once under onnxruntime's profiler; for each node type, its count per network is
fitted by least squares on the network's (op, position) instance counts (the terms the search's latency model
sums: for NB201 one per op and stage) on the first networks, and the fit's error is read on the others (held
out). A type whose held-out error is 0 is additive: the search can sum it.
Beside each type: its share of the networks' node time in the profiled runs, so the table says how much of a
network's latency the search cannot sum exactly.

    python benchmarks/record.py latency_additivity [--space darts] [--preset cpu-demo] [--networks 90] [--fit 60] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def profiled_counts(path: str, threads: int, runs: int) -> tuple[dict[str, int], dict[str, float]]:
    """Node counts per op type as onnxruntime runs the model, and the node time per type (microseconds, summed
    over ``runs`` profiled runs after one warm-up)."""
    import numpy as np

    from dcanas.runtime.runner import _kernel_events, _profiled_session

    sess = _profiled_session(path, threads, "ort_additivity")
    inp = sess.get_inputs()[0]
    x = {inp.name: np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in inp.shape]).astype(np.float32)}
    for _ in range(runs + 1):
        sess.run(None, x)
    events = _kernel_events(sess)
    names: dict[str, str] = {}
    us: dict[str, float] = {}
    for e in events:
        names[e["name"]] = e.get("args", {}).get("op_name", "?")
    per_run = len(names)
    for e in events[per_run:]:  # the warm-up run is the first per_run events
        op = e.get("args", {}).get("op_name", "?")
        us[op] = us.get(op, 0.0) + float(e.get("dur", 0))
    counts: dict[str, int] = {}
    for op in names.values():
        counts[op] = counts.get(op, 0) + 1
    return counts, us


def main() -> int:
    import numpy as np
    import torch

    from dcanas.costs.latency import instance_key, instances
    from dcanas.export.converters import convert
    from dcanas.export.formats import formats_for
    from dcanas.latency.measure import calibration_genotypes
    from dcanas.nets.build import build_network
    from dcanas.search.config import SearchConfig, apply_preset, eval_config

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="darts", choices=("darts", "nb201"))
    p.add_argument("--preset", default="cpu-demo", help="search preset whose evaluation network is measured")
    p.add_argument("--networks", type=int, default=90)
    p.add_argument("--fit", type=int, default=60, help="networks the additive fit sees; the rest are held out")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20, help="profiled runs per network for the time shares")
    p.add_argument("--seed", type=int, default=4242)
    args = p.parse_args()
    if not 0 < args.fit < args.networks:
        print(f"--fit {args.fit} must be between 1 and --networks {args.networks} - 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    cfg = eval_config(apply_preset(SearchConfig(space=args.space, budget=1.0), args.preset))
    fmt = formats_for("onnxruntime", "fp32")
    genotypes = calibration_genotypes(args.space, args.networks, seed=args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, g in enumerate(genotypes):
            path = os.path.join(tmp, f"g{i}.onnx")
            with torch.no_grad():
                convert(build_network(g, cfg).eval(), torch.randn(1, cfg.in_channels, cfg.input_size, cfg.input_size), fmt, Path(path))
            counts, us = profiled_counts(path, args.threads, args.runs)
            os.remove(path)
            rows.append(dict(inst=[instance_key(x) for x in instances(g, cfg) if x[0] != "none"], counts=counts, us=us))
            if (i + 1) % 10 == 0:
                print(f"[additivity] {i + 1}/{len(genotypes)} networks exported and profiled", file=sys.stderr, flush=True)

    keys = sorted({k for r in rows for k in r["inst"]})
    types = sorted({t for r in rows for t in r["counts"]})
    X = np.array([[1.0] + [float(r["inst"].count(k)) for k in keys] for r in rows])
    fit, held = slice(0, args.fit), slice(args.fit, None)
    total_us = sum(sum(r["us"].values()) for r in rows)
    print(f"{args.space} evaluation network of preset {args.preset} (C={cfg.C}, {cfg.layers} layers, {cfg.input_size}px); "
          f"{len(rows)} random networks (seed {args.seed}), onnxruntime at {args.threads} threads; "
          f"{len(keys)} (op, position) terms + an intercept fitted on {args.fit} networks, errors on the other {len(rows) - args.fit}\n")
    print("| node type | nodes per network (mean) | sd between networks | held-out error of the additive fit (RMS) | max | share of node time |")
    print("|---|---:|---:|---:|---:|---:|")
    summary = {"additive": 0.0, "not additive": 0.0}
    for t in types:
        y = np.array([float(r["counts"].get(t, 0)) for r in rows])
        theta, *_ = np.linalg.lstsq(X[fit], y[fit], rcond=None)
        err = y[held] - X[held] @ theta
        rms, mx = float(np.sqrt(np.mean(err ** 2))), float(np.abs(err).max())
        share = sum(r["us"].get(t, 0.0) for r in rows) / total_us
        summary["additive" if mx < max(0.5, 0.01 * y.mean()) else "not additive"] += share
        print(f"| {t} | {y.mean():.1f} | {y.std():.2f} | {rms:.2f} | {mx:.2f} | {100 * share:.1f}% |")
    print(f"\nNode time in types whose counts the additive fit gets on every held-out network (exactly, or within 1% of the "
          f"type's mean count): "
          f"{100 * summary['additive']:.1f}%; in the others: {100 * summary['not additive']:.1f}%.")
    print(json.dumps({"space": args.space, "threads": args.threads, "shares": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

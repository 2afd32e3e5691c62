"""Budget precision with and without the LUG (paper Section 3.2): for 5 device budgets across the
range of a CPU-sized configuration on real Fashion-MNIST, search with K' from the LUG and with
K' = K_d, and report the derived network's cost and its relative error against the budget.

    python benchmarks/budget_precision.py [--preset cpu-lug] [--points 7] [--jobs 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _search(cfg_json: dict, K_d: float, K_prime: float, threads: int) -> dict:
    import torch

    from dcanas.search.config import SearchConfig
    from dcanas.search.searcher import run_search

    torch.set_num_threads(threads)
    cfg = replace(SearchConfig.from_json(cfg_json), budget=K_d, search_budget=K_prime)
    with tempfile.TemporaryDirectory() as d:
        s = run_search(cfg, d, K_prime, progress=lambda m: None).summary
    return dict(K_d=K_d, K_prime=K_prime, derived=s["derived_cost"], rel_error=s["rel_error"], val_acc=s["val_acc"])


def main() -> int:
    from dcanas.search.lug import build_lug
    from dcanas.search.config import SearchConfig, apply_preset

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu-lug")
    p.add_argument("--points", type=int, default=7)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--data-root", default="data")
    p.add_argument("--cache-dir", default=str(Path(__file__).parent / ".lug-cache"))
    p.add_argument("--json")
    args = p.parse_args()
    cfg = replace(apply_preset(SearchConfig(dataset="fashion-mnist", data_root=args.data_root), args.preset))
    t0 = time.time()
    lug, path = build_lug(cfg, points=args.points, jobs=args.jobs, cache_dir=Path(args.cache_dir))
    t_lug = time.time() - t0
    lo, hi = lug.range
    budgets = [round(lo + (hi - lo) * f) for f in (0.1, 0.3, 0.5, 0.7, 0.9)]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    jobs = [(b, lug.lookup(b)) for b in budgets] + [(b, float(b)) for b in budgets]
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        rows = list(pool.map(_search, [cfg.to_json()] * len(jobs), [j[0] for j in jobs], [j[1] for j in jobs], [threads] * len(jobs)))
    with_lug, without = rows[:5], rows[5:]
    print(f"{args.preset} on real Fashion-MNIST, metric {cfg.metric}; LUG {path.name} ({args.points} points, built in {t_lug:.0f}s "
          f"with {args.jobs} jobs), measured range {lo:,.0f} .. {hi:,.0f}")
    print("| K_d (budget) | LUG: K' | LUG: derived | LUG: error | no LUG (K'=K_d): derived | no LUG: error |")
    print("|---:|---:|---:|---:|---:|---:|")
    for a, b in zip(with_lug, without):
        print(f"| {a['K_d']:,} | {a['K_prime']:,.0f} | {a['derived']:,} | {100 * a['rel_error']:+.1f}% | {b['derived']:,} | {100 * b['rel_error']:+.1f}% |")
    over = sum(r["rel_error"] > 0 for r in with_lug)
    print(f"with the LUG: {over}/5 over budget, mean |error| {100 * sum(abs(r['rel_error']) for r in with_lug) / 5:.1f}%; "
          f"without: {sum(r['rel_error'] > 0 for r in without)}/5 over, mean |error| {100 * sum(abs(r['rel_error']) for r in without) / 5:.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(lug=str(path), with_lug=with_lug, without=without), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

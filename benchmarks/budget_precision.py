"""Budget precision (issue 13): for 8 device budgets spread over the feasible range of a CPU-sized
configuration on real Fashion-MNIST, search with K' from the (conservative, refined) LUG and with
K' = K_d, and report what each derivation gives against the budget: the paper's arg-max rule and
the budget-aware rule (the default) and the filling rule (most probable within [0.95 K_d, K_d]), with
the search-val accuracy beside each. Then the lambda step (0.01, 0.1, 1), fixed and adaptive, two seeds
each, at the second budget (where the constraint binds), with an unconstrained search beside it.

    python benchmarks/budget_precision.py [--preset cpu-lug] [--points 7] [--max-points 12] [--jobs 2] [--part all|budgets|lambda]
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

FRACTIONS = [0.1 + 0.8 * i / 7 for i in range(8)]
LAMBDA_STEPS = (0.01, 0.1, 1.0)
LAMBDA_MODES = ("fixed", "adaptive")
LAMBDA_SEEDS = (0, 1)
LAMBDA_BUDGET = 1  # the second budget: low enough that the constraint binds (an unconstrained search derives above it)


def _search(cfg_json: dict, K_d: float, K_prime: float, threads: int) -> dict:
    import torch

    from dcanas.search.config import SearchConfig
    from dcanas.search.searcher import run_search

    torch.set_num_threads(threads)
    cfg = replace(SearchConfig.from_json(cfg_json), budget=K_d, search_budget=K_prime)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        s = run_search(cfg, d, K_prime, progress=lambda m: None).summary
        last = json.loads((Path(d) / "search.json").read_text())["epochs"][-1]
    cost = {rule: d["cost"][cfg.metric] for rule, d in s["derivations"].items()}
    return dict(K_d=K_d, K_prime=K_prime, lambda_lr=cfg.lambda_lr, lambda_step=cfg.lambda_step if cfg.options.constraint else "off", seed=cfg.seed,
                final_lambda=last["lambda"], final_ratio=last["k_s"] / K_prime, val_acc=s["val_acc"], seconds=time.time() - t0,
                argmax=cost["argmax"], budget=cost["budget"], fill=cost["fill"], log_prob={r: d["log_prob"] for r, d in s["derivations"].items()})


def _err(r: dict, rule: str) -> float:
    return (r[rule] - r["K_d"]) / r["K_d"]


def _summary(rows: list[dict], rule: str) -> str:
    errs = [_err(r, rule) for r in rows]
    over = sum(e > 0 for e in errs)
    short = [-e for e in errs if e <= 0]
    return (f"{rule}: {over}/{len(rows)} over budget, mean shortfall {100 * sum(short) / max(len(short), 1):.1f}%, "
            f"worst shortfall {100 * max(short, default=0):.1f}%, worst overshoot {100 * max([e for e in errs if e > 0], default=0):.1f}%")


def _lambda_table(cfg, budget: float, rows: list[dict]) -> list[str]:
    rules = ("argmax", "budget", "fill")
    cell = lambda r, rule: f"{r[rule]:,} ({100 * _err(r, rule):+.1f}%)"  # noqa: E731
    out = [f"\nlambda step at K_d = {budget:,} (K'=K_d, {cfg.metric}); 'off' = --no-constraint:",
           "| lambda step | mode | seed | final lambda | final k_s/K' | argmax derived | budget-aware derived | fill derived | search-val acc |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["lambda_step"], r["lambda_lr"], r["seed"])):
        out.append(f"| {r['lambda_lr']:g} | {r['lambda_step']} | {r['seed']} | {r['final_lambda']:.3f} | {r['final_ratio']:.3f} | "
                   + " | ".join(cell(r, rule) for rule in rules) + f" | {r['val_acc']:.3f} |")
    return out


def lug_arguments(doc: str) -> argparse.ArgumentParser:
    """The options of a benchmark that builds LUGs (this one and eq3_ablation.py)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu-lug")
    p.add_argument("--points", type=int, default=7)
    p.add_argument("--max-points", type=int, default=12)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--data-root", default="data")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-dir", default=str(Path(__file__).parent / ".lug-cache"))
    return p


def main() -> int:
    from dcanas.search.config import SearchConfig, apply_preset, cost_model
    from dcanas.search.lug import build_lug

    p = lug_arguments(__doc__)
    p.add_argument("--epochs", type=int, help="override the preset's search epochs")
    p.add_argument("--part", choices=["all", "budgets", "lambda"], default="all")
    p.add_argument("--json")
    args = p.parse_args()
    cfg = apply_preset(SearchConfig(dataset="fashion-mnist", data_root=args.data_root, device=args.device), args.preset)
    if args.epochs:
        cfg = replace(cfg, epochs=args.epochs)
    lo, hi = cost_model(cfg).feasible_range()
    budgets = [round(lo + (hi - lo) * f) for f in FRACTIONS]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    t0 = time.time()
    lug, path, t_lug = None, None, 0.0
    if args.part in ("all", "budgets"):
        lug, path = build_lug(cfg, points=args.points, max_points=args.max_points, jobs=args.jobs, cache_dir=Path(args.cache_dir))
        t_lug = time.time() - t0
    runs: list[tuple] = []
    if lug is not None:
        runs += [(cfg, b, lug.lookup(b)) for b in budgets if b >= lug.range[0]] + [(cfg, b, float(b)) for b in budgets]
    b_lam = budgets[LAMBDA_BUDGET]
    lam_runs = [(replace(cfg, lambda_lr=s, lambda_step=m, seed=seed), b_lam, float(b_lam))
                for m in LAMBDA_MODES for s in LAMBDA_STEPS for seed in LAMBDA_SEEDS]
    lam_runs += [(replace(cfg, seed=seed, options=replace(cfg.options, constraint=False)), b_lam, float(b_lam)) for seed in LAMBDA_SEEDS]
    if args.part in ("all", "lambda"):
        runs += lam_runs
    t1 = time.time()
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        rows = list(pool.map(_search, [c.to_json() for c, _, _ in runs], [b for _, b, _ in runs], [k for _, _, k in runs],
                             [threads] * len(runs)))
    result: dict = {}
    if lug is not None:
        n_lug = sum(1 for b in budgets if b >= lug.range[0])
        with_lug, without = rows[:n_lug], rows[n_lug:n_lug + len(budgets)]
        print(f"{args.preset} on real Fashion-MNIST, metric {cfg.metric}, {cfg.epochs} search epochs, device {args.device}; "
              f"LUG {path.name}: {len(lug.points)} points ({args.points} grid + refinement), built in {t_lug:.0f}s with "
              f"{args.jobs} jobs; measured K_d range {lug.range[0]:,.0f} .. {lug.range[1]:,.0f}; feasible range {lo:,} .. {hi:,}; "
              f"{len(runs)} searches in {time.time() - t1:.0f}s")
        rules = ("argmax", "budget", "fill")
        cell = lambda r, rule: f"{r[rule]:,} ({100 * _err(r, rule):+.1f}%)"  # noqa: E731
        print("| K_d (budget) | LUG: K' | LUG argmax | LUG budget-aware | LUG fill | LUG val acc "
              "| K'=K_d argmax | K'=K_d budget-aware | K'=K_d fill | K'=K_d val acc |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        by_b = {r["K_d"]: r for r in with_lug}
        for b in without:
            a = by_b.get(b["K_d"])
            lug_cols = (f"{a['K_prime']:,.0f} | " + " | ".join(cell(a, r) for r in rules) + f" | {a['val_acc']:.3f}") if a \
                else "below the LUG's range | | | | "
            print(f"| {b['K_d']:,} | {lug_cols} | " + " | ".join(cell(b, r) for r in rules) + f" | {b['val_acc']:.3f} |")
        for name, rs in (("with the LUG", with_lug), ("K'=K_d", without)):
            print(f"{name}: " + "; ".join(_summary(rs, rule) for rule in rules))
        result.update(lug=lug.to_json(), with_lug=with_lug, without=without)
    if args.part in ("all", "lambda"):
        lam_rows = rows[len(rows) - len(lam_runs):]
        print(f"{len(lam_runs)} lambda-step searches ({args.preset}, {cfg.epochs} epochs) in {time.time() - t1:.0f}s" if lug is None else "")
        print("\n".join(_lambda_table(cfg, b_lam, lam_rows)))
        result["lambda_steps"] = lam_rows
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

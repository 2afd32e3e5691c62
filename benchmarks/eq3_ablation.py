"""Eq. 3 read two ways (issue 18): k_s sums b(o) over every edge of the DARTS supernet cell as the paper
writes it ("literal"), or weights each edge by 2/j, since the derived cell keeps 2 of node j's j incoming
edges (the project's reading, docs/design-notes.md). Each reading gets its own LUG (the LUG exists to absorb
the gap between k_s and the derived network's cost), built with the same preset, points and seeds; then the
same 8 device budgets are searched with K' from each LUG. Side by side: the derived cost with the paper's
arg-max rule and the budget-aware rule (the most probable genotype within the budget), and the search-val accuracy.

    python benchmarks/eq3_ablation.py [--preset cpu-lug] [--points 7] [--max-points 12] [--jobs 2] [--span feasible|lug] [--seeds 1]

--span feasible spreads the budgets over the derivable range; budgets above what an unconstrained search derives
never bind, so --span lug spreads them over the range both LUGs measured instead (where the readings can differ).
"""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget_precision import FRACTIONS, _err, _search, _summary, lug_arguments  # noqa: E402

READINGS = ("2/j", "literal")
RULES = ("argmax", "budget")


def main() -> int:
    from dcanas.search.config import SearchConfig, apply_preset, cost_model
    from dcanas.search.lug import build_lug

    p = lug_arguments(__doc__)
    p.add_argument("--span", choices=["feasible", "lug"], default="feasible")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--json")
    args = p.parse_args()
    base = apply_preset(SearchConfig(dataset="fashion-mnist", data_root=args.data_root, device=args.device), args.preset)
    lo, hi = cost_model(base).feasible_range()  # the derived networks' range: the same for both readings
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    cfgs = {r: replace(base, options=replace(base.options, edge_weight=r)) for r in READINGS}
    lugs, built = {}, {}
    for r, cfg in cfgs.items():
        t0 = time.time()
        lugs[r], path = build_lug(cfg, points=args.points, max_points=args.max_points, jobs=args.jobs, cache_dir=Path(args.cache_dir))
        built[r] = time.time() - t0
        print(f"LUG {r}: {path.name}, {len(lugs[r].points)} points, K' range {min(q['K_prime'] for q in lugs[r].points):,.0f} .. "
              f"{max(q['K_prime'] for q in lugs[r].points):,.0f}, measured K_d {lugs[r].range[0]:,.0f} .. {lugs[r].range[1]:,.0f}, "
              f"{built[r]:.0f}s", flush=True)
    b_lo, b_hi = (lo, hi) if args.span == "feasible" else (max(g.range[0] for g in lugs.values()), min(g.range[1] for g in lugs.values()))
    budgets = [round(b_lo + (b_hi - b_lo) * f) for f in FRACTIONS]
    runs = [(r, b, lugs[r].lookup(b), seed) for r in READINGS for b in budgets if b >= lugs[r].range[0] for seed in range(args.seeds)]
    t1 = time.time()
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        rows = list(pool.map(_search, [replace(cfgs[r], seed=seed).to_json() for r, _, _, seed in runs], [b for _, b, _, _ in runs],
                             [k for _, _, k, _ in runs], [threads] * len(runs)))
    by: dict = {}
    for (r, _, _, _), row in zip(runs, rows):
        by.setdefault((r, row["K_d"]), []).append(row)
    print(f"\n{args.preset} on real Fashion-MNIST, metric {base.metric}, {base.epochs} search epochs, {args.seeds} seed(s) per "
          f"budget (cells: seed 0; summaries: every seed); {len(runs)} searches in {time.time() - t1:.0f}s ({args.jobs} jobs); "
          f"feasible range {lo:,} .. {hi:,}; budgets over {args.span} range {b_lo:,.0f} .. {b_hi:,.0f}")
    cell = lambda xs, rule: f"{xs[0][rule]:,} ({100 * _err(xs[0], rule):+.1f}%)"  # noqa: E731
    head = " | ".join(f"{r}: K' | {r}: argmax | {r}: budget-aware | {r}: val acc (seed mean)" for r in READINGS)
    print(f"| K_d (budget) | {head} |\n|---:|" + "---:|" * (4 * len(READINGS)))
    for b in budgets:
        cols = []
        for r in READINGS:
            xs = by.get((r, b))
            cols.append(f"{xs[0]['K_prime']:,.0f} | " + " | ".join(cell(xs, rule) for rule in RULES)
                        + f" | {sum(x['val_acc'] for x in xs) / len(xs):.3f}" if xs else "below the LUG's range | | | ")
        print(f"| {b:,} | " + " | ".join(cols) + " |")
    for r in READINGS:
        rs = [x for b in budgets for x in by.get((r, b), [])]
        acc = sum(x["val_acc"] for x in rs) / len(rs)
        mae = {rule: sum(abs(_err(x, rule)) for x in rs) / len(rs) for rule in RULES}
        print(f"{r}: " + "; ".join(_summary(rs, rule) for rule in RULES)
              + f"; mean |error| argmax {100 * mae['argmax']:.1f}%, budget-aware {100 * mae['budget']:.1f}%; mean search-val acc {acc:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(budgets=budgets, lugs={r: g.to_json() for r, g in lugs.items()},
                                                   rows=[dict(reading=r, **row) for (r, _, _, _), row in zip(runs, rows)]), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

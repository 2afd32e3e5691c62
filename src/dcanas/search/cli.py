"""``dcanas search``: argument parsing only; the work is in :func:`dcanas.search.searcher.run_search`."""
from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import replace

from ..argtypes import add_dist_options, add_folder_options, apply_dist_options, nonneg_float, nonneg_int, positive_float, positive_int
from ..errors import UserError
from ..costs.size import SIZE_MODELS
from ..costs.metrics import metric, metric_text, searchable
from ..presets import DERIVE_RULES, PROXY_DRAWS
from ..presets import SEARCH_PRESETS, describe

_SUFFIX = {"": 1, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9}


def parse_quantity(text: str) -> float:
    """'200000', '200k', '3.5M', '1.2e6', '600M' -> a number."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgG]?)\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number like 200000, 200k or 3.5M")
    value = float(m.group(1)) * _SUFFIX[m.group(2)]
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is beyond any finite number; give a budget like 200000, 200k or 3.5M")
    return value


def parse_extra_budget(text: str) -> tuple[str, float]:
    """'flops=50M' / 'model_size_kb=512' -> (metric, value)."""
    metric, sep, value = str(text).partition("=")
    if not sep or metric.strip() not in searchable():
        raise argparse.ArgumentTypeError(f"{text!r} is not METRIC=VALUE with METRIC one of {', '.join(searchable())} "
                                         f"(e.g. flops=50M, model_size_kb=512)")
    return metric.strip(), parse_quantity(value)


def add_search_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `search` and (later) `lug build`."""
    p.add_argument("--space", choices=["darts", "nb201"], help="darts or nb201 (default: the preset's, else darts)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-root", help="folder holding the dataset files (default ./data)")
    add_folder_options(p)
    p.add_argument("--metric", default="params", type=lambda m: "latency_ms" if m == "latency" else m,
                   help="params, flops or latency (latency_ms: needs --latency-model)")
    p.add_argument("--latency-model", help="a latency model file (dcanas latency build / fit) for a latency budget")
    p.add_argument("--preset", choices=list(SEARCH_PRESETS), help=describe(SEARCH_PRESETS))
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--channels", type=positive_int, help="supernet initial channels C")
    p.add_argument("--cells", type=positive_int, help="supernet cells (DARTS) or cells per stage (NB201)")
    p.add_argument("--nodes", type=positive_int, help="intermediate nodes per DARTS cell")
    p.add_argument("--eval-channels", type=positive_int, help="channels of the evaluation network the budget refers to")
    p.add_argument("--eval-layers", type=positive_int, help="layers of the evaluation network the budget refers to")
    p.add_argument("--subset", type=positive_int, help="use only N training images (split in halves)")
    p.add_argument("--seed", type=nonneg_int)
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--arch-lr", type=positive_float)
    p.add_argument("--warmup-epochs", type=nonneg_int, help="the first N epochs train the weights alone, alpha held (PC-DARTS)")
    p.add_argument("--lambda-lr", type=nonneg_float, help="lambda's step per unit of budget violation")
    p.add_argument("--lambda-step", choices=["fixed", "adaptive"], help="adaptive: the budget term's gradient is rescaled to "
                   "the loss gradient's norm, so lambda=1 weighs them equally (see README, lambda step)")
    p.add_argument("--no-weight-sharing", action="store_true")
    p.add_argument("--bottleneck", type=positive_int, metavar="R", help="channel bottleneck ratio r (1 = off; default 4)")
    p.add_argument("--no-derived-cells", action="store_true")
    p.add_argument("--no-constraint", action="store_true")
    p.add_argument("--edge-weight", choices=["2/j", "literal"], help="eq. 3's weight of a DARTS edge's cost in k_s: 2/j "
                   "(default: the derived cell keeps 2 of node j's j edges) or literal (every edge counts 1, as written)")
    p.add_argument("--sampling", choices=["softmax", "gumbel", "gdas"], help="the mixed ops' weights: softmax (default, the "
                   "paper); gumbel: each step trains and scores one architecture drawn from alpha (every op computed); gdas: "
                   "the same draw, only the drawn op computed (GDAS' estimator, a step costs about one network)")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (ignored on the CPU)")
    p.add_argument("--derive", choices=DERIVE_RULES, help="fill (default): the most probable genotype whose cost "
                   "is within [0.95 x budget, budget]; budget: the most probable within the budget (exact; may leave much of "
                   "it unused); argmax: the paper's rule (may exceed the budget); naswot: of the fill pick and --proxy-pool "
                   "minus 1 networks drawn from the alphas in the same window (or --proxy-draw uniform), the highest (or "
                   "--proxy-rank-th) NASWOT score at initialisation")
    p.add_argument("--proxy-pool", type=positive_int, metavar="N", help="networks the naswot derivation scores (default 100)")
    p.add_argument("--proxy-rank", type=positive_int, metavar="R", help="the naswot derivation takes the pool's R-th highest "
                   "score (default 1). Measured against random networks of the budget (docs/search-quality.md): with "
                   "--proxy-draw uniform, rank 1 +0.13 points, rank 5 +0.80 in the benchmark's code and +0.54 (interval "
                   "touching zero) through the search")
    p.add_argument("--proxy-draw", choices=PROXY_DRAWS, help="where the naswot derivation's pool comes from: alphas (default: "
                   "the final alphas' op distribution, the fill pick first) or uniform (the budget window's random networks, "
                   "the alphas ignored)")


def config_from_args(args: argparse.Namespace):
    from .config import SearchConfig, apply_preset

    cfg = apply_preset(SearchConfig(), args.preset)
    fields = dict(space=args.space, dataset=args.dataset, data_root=args.data_root, metric=args.metric,
                  epochs=args.epochs, batch_size=args.batch_size, C=args.channels, cells=args.cells, nodes=args.nodes,
                  eval_C=args.eval_channels, eval_layers=args.eval_layers, subset=args.subset, seed=args.seed,
                  latency_model=args.latency_model, lr=args.lr, arch_lr=args.arch_lr, lambda_lr=args.lambda_lr,
                  lambda_step=args.lambda_step, device=args.device, amp=args.amp or None,
                  derive=args.derive, proxy_pool=args.proxy_pool,
                  proxy_rank=args.proxy_rank, proxy_draw=args.proxy_draw, warmup_epochs=args.warmup_epochs)
    cfg = replace(cfg, **{k: v for k, v in fields.items() if v is not None})
    flags = dict(weight_sharing=False if args.no_weight_sharing else None, bottleneck=args.bottleneck,
                 derived_cells=False if args.no_derived_cells else None, constraint=False if args.no_constraint else None,
                 edge_weight=args.edge_weight, sampling=args.sampling)
    opts = replace(cfg.options, **{k: v for k, v in flags.items() if v is not None})  # the preset's options, then the flags
    if opts.bottleneck < 1:
        raise UserError(f"--bottleneck must be >= 1 (1 disables it), got {opts.bottleneck}")
    return replace(cfg, options=opts)


def cmd_search(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.datasets import get_spec
    from .lug import resolve_search_budget
    from .searcher import run_search

    apply_dist_options(args)
    cfg = config_from_args(args)
    get_spec(cfg.dataset)
    extra = dict(args.also_budget)
    if cfg.metric in extra:
        raise UserError(f"--also-budget {cfg.metric}=... repeats the primary metric; give it with --budget")
    cfg = replace(cfg, budget=args.budget, search_budget=args.search_budget, extra_budgets=extra,
                  size_format=args.size_format or cfg.size_format)
    cache = Path(args.cache_dir) if args.cache_dir else None
    import os
    import sys

    rank0 = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if rank0 else (lambda m: None)
    result = run_search(cfg, args.out, lambda: resolve_search_budget(cfg, cache, say)[0], resume=args.resume)
    if not rank0:
        return 0
    s = result.summary
    print(json.dumps(s["genotype"]))
    for rule, d in s["derivations"].items():
        print(f"{rule:7} derivation: {cfg.metric}={metric_text(cfg.metric, d['cost'][cfg.metric])}  log-probability {d['log_prob']:.3f}"
              + ("  (chosen)" if rule == cfg.derive else ""))
    pool = s["derivations"].get("naswot", {}).get("info")
    if pool:  # what the proxy chose among
        print(f"naswot: {pool['pool']} networks of the window drawn {'uniformly' if pool.get('draw') == 'uniform' else 'from the alphas'}; "
              f"the pick's NASWOT score {pool['score']:.1f} ranks {pool.get('rank', 1)} of {pool['pool']} "
              f"(scores {min(pool['scores']):.1f} .. {max(pool['scores']):.1f})")
    t = lambda v: metric_text(cfg.metric, v)  # noqa: E731
    print(f"K_d={t(s['K_d'])}  K'={t(s['K_prime'])}  derived {cfg.metric}={t(s['derived_cost'])} "
          f"({100 * s['rel_error']:+.1f}% of budget, {'under' if s['under_budget'] else 'OVER'} budget)  "
          f"search-val acc={s['val_acc']:.3f}  -> {args.out}/genotype.json")
    print(f"architecture weights: {s['learned']}")
    chosen = s["derivations"][cfg.derive]["cost"]
    for m, K in cfg.extra_budgets.items():
        print(f"also {m}: {metric_text(m, chosen[m])} of {metric_text(m, K)}" + (f" (predicted for {cfg.size_format})" if metric(m).source == "size" else ""))
    return 0


def add_search_parser(sub) -> None:
    p = sub.add_parser("search", help="DCA-NAS search under a params, FLOPs or latency budget")
    add_search_options(p)
    p.add_argument("--budget", type=parse_quantity, required=True, help="device budget K_d (e.g. 200k, 3.5M; latency: ms)")
    p.add_argument("--search-budget", type=parse_quantity, help="search budget K' (default: K_d)")
    p.add_argument("--also-budget", type=parse_extra_budget, action="append", default=[], metavar="METRIC=VALUE",
                   help="another budget held as a constraint with its own lambda (repeatable): flops=50M, params=300k, "
                   "model_size_kb=512 (the file of --size-format, predicted)")
    p.add_argument("--size-format", choices=list(SIZE_MODELS), help="the export format a model_size_kb budget refers to (default tflite)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the search checkpointed in --out")
    p.add_argument("--cache-dir", help="LUG cache (default ~/.cache/dcanas/lug)")
    add_dist_options(p)
    p.set_defaults(func=cmd_search)


def add_lug_parser(sub) -> None:
    p = sub.add_parser("lug", help="look-up graph: build (parallel searches), show, merge run directories")
    lug_sub = p.add_subparsers(dest="lug_command", required=True, parser_class=type(p))
    b = lug_sub.add_parser("build", help="one search per K' on a grid; records the derived K_d of each")
    add_search_options(b)
    b.add_argument("--points", type=positive_int, default=5)
    b.add_argument("--range", nargs=2, type=parse_quantity, metavar=("LO", "HI"), help="K' range (default: the feasible range)")
    b.add_argument("--max-points", type=positive_int, help="refine where K_d jumps > 5%% between neighbours, up to this "
                   "many points in all (default: 2 x --points)")
    b.add_argument("--jobs", type=positive_int, default=1, help="searches at a time, each in its own process (--executor local)")
    b.add_argument("--executor", default="local", choices=["local", "ray"], help="local: a process pool on this machine; "
                   "ray: one Ray task per search, retried (resuming from its checkpoint) when its worker or node dies")
    b.add_argument("--ray-address", help="an existing Ray cluster (ray start --head ...); default: a local Ray instance")
    b.add_argument("--cpus-per-search", type=positive_int, default=1, help="Ray: CPUs (and torch threads) per search")
    b.add_argument("--gpus-per-search", type=nonneg_float, default=0.0, help="Ray: GPUs per search (a fraction shares one)")
    b.add_argument("--cache-dir")
    b.add_argument("--runs-dir", help="where the grid's search run directories go (default: under the cache)")
    b.set_defaults(func=cmd_lug_build)
    s = lug_sub.add_parser("show", help="print a LUG table")
    s.add_argument("file", nargs="?", help="LUG JSON (default: every LUG in the cache)")
    s.add_argument("--cache-dir")
    s.set_defaults(func=cmd_lug_show)
    m = lug_sub.add_parser("merge", help="build a LUG from search run directories made elsewhere")
    m.add_argument("dirs", nargs="+")
    m.add_argument("--cache-dir")
    m.add_argument("--out", help="LUG file to write (default: the cache, keyed by the runs' options)")
    m.set_defaults(func=cmd_lug_merge)


def _print_lug(lug, path) -> None:
    print(f"{path}: {lug.space} / {lug.dataset} / {lug.metric}, options {lug.options_hash}, dcanas {lug.code_version}")
    print("| K' | measured K_d | monotone K_d | search-val acc |")
    print("|---:|---:|---:|---:|")
    for i, (p, m) in enumerate(zip(lug.points, lug.monotone)):
        mark = " (repaired)" if i in lug.repaired else ""
        t = lambda v: metric_text(lug.metric, v)  # noqa: E731
        print(f"| {t(p['K_prime'])} | {t(p['K_d'])} | {t(m)}{mark} | {p.get('val_acc', float('nan')):.3f} |")


def cmd_lug_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .executor import check_executor
    from .lug import Runner, build_lug

    cfg = config_from_args(args)
    check_executor(args.executor, args.ray_address)  # Ray missing: one line naming the extra, before any work
    runner = Runner(jobs=args.jobs, executor=args.executor, ray_address=args.ray_address, cpus=args.cpus_per_search,
                    gpus=args.gpus_per_search)
    lug, path = build_lug(cfg, points=args.points, value_range=tuple(args.range) if args.range else None, jobs=args.jobs,
                          cache_dir=Path(args.cache_dir) if args.cache_dir else None,
                          runs_dir=Path(args.runs_dir) if args.runs_dir else None, max_points=args.max_points, runner=runner)
    _print_lug(lug, path)
    print(f"plot: {path.with_suffix('.png')}")
    return 0


def cmd_lug_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .lug import LUG, default_cache_dir

    files = [Path(args.file)] if args.file else sorted(Path(args.cache_dir or default_cache_dir()).glob("*.json"))
    if not files:
        raise UserError(f"no LUG in {args.cache_dir or default_cache_dir()}; build one with `dcanas lug build`")
    for f in files:
        _print_lug(LUG.load(f), f)
    return 0


def cmd_lug_merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .lug import merge_runs

    lug, path = merge_runs([Path(d) for d in args.dirs], Path(args.cache_dir) if args.cache_dir else None,
                           Path(args.out) if args.out else None)
    _print_lug(lug, path)
    return 0

"""Does the search earn its keep (issue 34)? At one budget, the networks of several search seeds against random
networks of the same budget, every one retrained with one recipe and tested on the whole test set.

Arms, each at the budget K_d (params of the preset's evaluation network):
  dcanas    the search as shipped: eq. 4's Lagrangian in the objective, K' = K_d, the fill derivation
  lambda0   the same search with lambda held at 0 (no constraint in the objective): the budget is enforced by
            the fill derivation alone
  shuffled  with --arms ...,shuffled: the shipped search on the same images with the training labels permuted (one
            fixed permutation, ``shuffled_labels``), its networks trained on the real labels like every other: a search
            that cannot learn anything from the data. Whatever it matches of the shipped arm's choice or its lead over
            random does not come from the data
  argmax    the paper's arg-max derivation of the dcanas searches, where it lands within the budget
  random    genotypes of the space's random distribution kept when their cost is in the fill window
            [fill_fraction x K_d, K_d], the window the fill derivation chooses from
  convs     with --convs N: N random genotypes of the same window whose every edge is a convolution or none (no
            pool, no skip; ``convs_and_none``), the family the shipped NB201 search derives: does the search choose
            within that family, or only the family?
  naswot    the --proxy-top networks with the highest NASWOT score at initialisation among --proxy-pool random
            networks of the same window (a zero-cost proxy: no training)
  naswot1   with --proxy-seeds N: N pools of --proxy-pool random networks of the window, each drawn with its own seed,
            and one network of each pool trained, its --proxy-rank-th highest NASWOT score (default: the highest): what a
            user who runs the zero-cost pick once gets
Every network is trained with its own seed: its index in its arm (a search's seed, a random network's number),
so networks of one arm that share a genotype are still independent trainings and the arm's standard error is not
understated. The first --rank-networks random networks are trained with a second seed (the index + 1000): the Spearman between the two seeds'
test accuracies says whether the recipe can rank networks at all. The difference of each arm's mean to the
random arm's has a 95% Welch interval.

    python benchmarks/search_vs_random.py [--preset cpu-demo] [--budget 200k] [--seeds 3] [--random 8] [--jobs 2]
        [--variant NAME=JSON] [--train-preset cpu-rank] [--train-epochs E] [--train-subset N] [--device cpu] [--work DIR] [--out FILE.md] [--deadline S]

Every search and training keeps its result under --work (default benchmarks/.search-vs-random): a rerun
resumes, skipping what is done. The table goes to --out (default benchmarks/search_vs_random.last.md, with a
.json and a .png of the accuracies beside it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

HERE = Path(__file__).resolve().parent
ARMS = ["dcanas", "lambda0", "shuffled", "argmax", "random", "convs", "naswot", "naswot1"]  # --variant adds searched arms after lambda0
SECOND_SEED = 1000  # a network's second training seed: its first + this
PROXY_SEED = 1000  # the naswot1 arm's pool s is drawn with random.Random(--random-seed + this + s)
DRAW_RULE = "nb201 live cells"  # random_genotype's rule, in the draw's key: draws kept under another rule are drawn again
SHUFFLED_SEED = 0  # the one permutation of the training labels that every `shuffled` search reads
SHUFFLED_ROOT = "shuffled-labels-"  # + the seed: the folder shuffled_labels writes (alpha_rank.label_blind reads it)


# ---- jobs (each in a worker process) ------------------------------------------------------------

def network_index(name: str) -> int:
    """A network's index in its arm, its training seed: 3 for dcanas-s3, argmax-s3 and random-3, 1 for an ensemble's
    group dcanasx2-g1."""
    tail = name.rsplit("-", 1)[-1]
    digits = tail.lstrip("sg")
    if not digits.isdigit():
        raise ValueError(f"network name {name!r} has no index")
    return int(digits)


def _search_job(cfg_json: dict, run_dir: str, threads: int, until: float | None) -> dict:
    import torch

    from dcanas.search.config import SearchConfig
    from dcanas.search.searcher import run_search

    torch.set_num_threads(threads)
    t0 = time.time()
    resume = (Path(run_dir) / "checkpoint.pt").exists()
    s = run_search(SearchConfig.from_json(cfg_json), run_dir, cfg_json["budget"], resume=resume, progress=lambda m: None,
                   until=until).summary
    hist = json.loads((Path(run_dir) / "search.json").read_text())["epochs"]
    return dict(derivations=s["derivations"], val_acc=s["val_acc"], separated=s["separated"], learned=s["learned"],
                search_seconds=sum(r["seconds"] for r in hist), wall_seconds=time.time() - t0, epochs_run=len(hist),
                final_lambda=hist[-1]["lambda"], final_k_s=hist[-1]["k_s"], gradient_share=hist[-1].get("gradient_share", {}))


def _train_job(train_json: dict, genotype: dict, seed: int, run_dir: str, threads: int) -> dict:
    import torch

    from dcanas.train.trainer import TrainConfig, train

    torch.set_num_threads(threads)
    cfg = replace(TrainConfig(**train_json), genotype=genotype, seed=seed)
    t0 = time.time()
    r = train(cfg, run_dir, resume=(Path(run_dir) / "checkpoint.pt").exists(), progress=lambda m: None)
    last = r["history"][-1]
    return dict(test_top1=last["test_top1"], train_seconds=sum(h["seconds"] for h in r["history"]), wall_seconds=time.time() - t0)


# ---- the plan ---------------------------------------------------------------------------------

def shuffled_labels(dataset: str, data_root: str, work: Path, seed: int = SHUFFLED_SEED) -> Path:
    """A data root holding ``dataset``'s training split (IDX files: Fashion-MNIST, MNIST) with its labels permuted: the
    same images and label counts, each label moved to another image, so nothing links an image to its label. Written
    once under ``work`` (each file atomically, the labels last: their presence means the copy is whole)."""
    import torch

    from dcanas.data import datasets as D
    from dcanas.files import atomic_write

    root = work / f"{SHUFFLED_ROOT}{seed}"
    folder = root / dataset
    labels = folder / "train-labels-idx1-ubyte"
    if labels.is_file():
        return root
    data = D.load_split(dataset, data_root, train=True)
    perm = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(seed))
    folder.mkdir(parents=True, exist_ok=True)
    for path, array in ((folder / "train-images-idx3-ubyte", data.images[:, 0].numpy()), (labels, data.labels[perm].numpy())):
        atomic_write(path, lambda f, a=array: f.write(D.write_idx(a)))
    return root


def _cost_fn(cfg) -> Callable:
    from dcanas.search.config import cost_model

    cm = cost_model(cfg)
    return lambda g: cm.derived(g)


def _probe_step(cfg, steps: int = 4) -> float:
    """Seconds per search step of ``cfg``'s supernet on its device in this process (median of ``steps`` after two warm-up
    steps, random inputs of the dataset's shape): what --search-seconds sizes the searches with."""
    import torch

    from dcanas.data import datasets as D
    from dcanas.search.config import cost_models, supernet_config
    from dcanas.search.searcher import autocast_for, optimizers, search_step
    from dcanas.search.supernet import Supernet

    device = torch.device(cfg.device)
    spec = D.get_spec(cfg.dataset)
    model = Supernet(supernet_config(cfg)).to(device).set_fused(cfg.fused)
    cms = cost_models(cfg)
    w_opt, _, a_opt = optimizers(model, cfg)
    x = torch.randn(cfg.batch_size, spec.in_channels, spec.size, spec.size, device=device)
    y = torch.randint(0, spec.num_classes, (cfg.batch_size,), device=device)
    lams, times = {m: 0.0 for m in cms}, []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        lams, _ = search_step(model, cms, cfg, (x, y), (x, y), w_opt, a_opt, {cfg.metric: cfg.budget}, lams, autocast_for(cfg, device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _naswot_pool(cfg, train_cfg, genotypes: list, device: str, batch: int = 64) -> list[float]:
    """The NASWOT score of each genotype's evaluation network at initialisation, on one batch of training images."""
    import torch

    from dcanas.data import datasets as D
    from dcanas.search.baselines import naswot_score
    from dcanas.train.trainer import build_model

    spec = D.get_spec(cfg.dataset)
    data = D.load_split(cfg.dataset, cfg.data_root, train=True)
    x, _ = next(iter(D.batches(data.subset(slice(0, batch)), spec, batch, shuffle=False)))
    scores = []
    for i, g in enumerate(genotypes):
        torch.manual_seed(i)
        model, _ = build_model(replace(train_cfg, genotype=g.to_json()), spec)
        scores.append(naswot_score(model.to(device), x.to(device)))
    return scores


def _ordinal(rank: int) -> str:
    """How the report names the naswot1 arm's pick: 'top ' for rank 1, else '5th highest ' and the like."""
    if rank == 1:
        return "top "
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(rank % 10 if rank % 100 not in (11, 12, 13) else 0, "th")
    return f"{rank}{suffix} highest "


def option_value(text: str) -> Any:
    """A --search or --train value: JSON (5, 0.1, true, "nb201", {...}), or else the text itself (space=nb201 as a shell
    that strips the quotes passes it)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def welch(a: list[float], b: list[float]) -> dict[str, float]:
    """mean(a) - mean(b) with its standard error and 95% Welch interval."""
    from scipy import stats

    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) if len(a) > 1 else math.nan
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) if len(b) > 1 else math.nan
    se2 = va / len(a) + vb / len(b)
    df = se2 ** 2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1)) if se2 > 0 else math.nan
    t = float(stats.t.ppf(0.975, df)) if df == df else math.nan
    d = ma - mb
    return dict(diff=d, se=math.sqrt(se2), lo=d - t * math.sqrt(se2), hi=d + t * math.sqrt(se2), df=df)


def arm_summary(arm: str, v: list[float], rnd: list[float]) -> dict[str, Any]:
    """An arm's row of the table: its networks' test top-1 (points) as n, mean, standard error and, for an arm other
    than random, the 95% Welch interval of its difference to the random arm."""
    m, se = mean_se(v)
    return dict(n=len(v), mean=m, se=se, **({"vs_random": welch(v, rnd)} if arm != "random" and len(v) > 1 and len(rnd) > 1 else {}))


def mean_se(v: list[float]) -> tuple[float, float]:
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1) / len(v)) if len(v) > 1 else math.nan
    return m, s


def digest(*parts: Any) -> str:
    """A short key for a job's inputs: a training is the same job in every run with the same genotype, recipe and
    seed (the random arms are shared by runs that differ only in the search)."""
    import hashlib

    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


# search options added after work folders were kept: left out of a search's key at their default, so the kept searches
# (which ran with that default) stay valid
LATER_OPTIONS = {"sampling": "softmax"}


def _search_inputs(cfg) -> dict:
    """What determines a search's result: its configuration but where the data sits and the device. The search's own
    fields added after work folders were kept (``searcher.LATER_FIELDS``: a derivation's, which never change the alphas)
    are left out at their default, as LATER_OPTIONS are."""
    from dcanas.search.searcher import LATER_FIELDS

    d = {k: v for k, v in cfg.to_json().items() if LATER_FIELDS.get(k, object()) != v}
    d.update(data_root=None, device=None)
    d["options"] = {k: v for k, v in d["options"].items() if LATER_OPTIONS.get(k, object()) != v}
    return d


class Work:
    """Results kept as one JSON file per job under ``root``; a job whose file exists is not run again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "results").mkdir(parents=True, exist_ok=True)

    def result(self, key: str) -> dict | None:
        p = self.root / "results" / f"{key}.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def keep(self, key: str, value: dict) -> None:
        from dcanas.files import write_json

        write_json(self.root / "results" / f"{key}.json", value)


def main() -> int:  # noqa: C901 (one plan, read top to bottom)
    from dcanas.nets.cost import network_cost
    from dcanas.nets.genotype import genotype_from_json
    from dcanas.presets import DERIVE_RULES, RUN_PRESETS, TRAIN_PRESETS
    from dcanas.search.baselines import convs_and_none, random_within
    from dcanas.search.config import SearchConfig, apply_preset, eval_config
    from dcanas.search.proxy import ranked
    from dcanas.search.searcher import LATER_FIELDS, derive_again, final_log_probs
    from dcanas.train.trainer import TrainConfig
    from dcanas.train.trainer import apply_preset as train_preset

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu-demo", choices=list(RUN_PRESETS), help="run preset: search and training presets")
    p.add_argument("--budget", type=float, default=200_000.0, help="K_d in params")  # a float as --budget gives: one search key
    p.add_argument("--seeds", type=int, default=3, help="search seeds per searched arm")
    p.add_argument("--first-seed", type=int, default=0, help="the first search seed: seeds --first-seed .. --first-seed + --seeds - 1 "
                   "(a new set of searches beside kept ones)")
    p.add_argument("--convs", type=int, default=0, metavar="N", help="also an arm of N random genotypes of the window whose every edge "
                   "is a convolution or none")
    p.add_argument("--random", type=int, default=8, help="random networks in the window")
    p.add_argument("--proxy-pool", type=int, default=50, help="random networks scored by NASWOT")
    p.add_argument("--proxy-top", type=int, default=3, help="of which the best-scored are trained")
    p.add_argument("--proxy-seeds", type=int, default=0, metavar="N", help="the naswot1 arm: N pools of --proxy-pool random "
                   "networks, each drawn with its own seed, each pool's highest NASWOT score trained")
    p.add_argument("--proxy-rank", type=int, default=1, metavar="R", help="the naswot1 arm trains each pool's R-th highest score "
                   "instead of its highest")
    p.add_argument("--rank-networks", type=int, default=6, help="random networks trained with a second seed (Spearman)")
    p.add_argument("--arms", default="dcanas,lambda0,argmax", help="the searched arms to run (argmax: "
                   "the arg-max derivation of the dcanas searches, no search of its own; shuffled: the shipped search on "
                   "permuted training labels, a control)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=JSON", help="one more searched arm: the shipped search "
                   "with these overrides, e.g. 'nd={\"options\": {\"derived_cells\": false}, \"warmup_epochs\": 5}'")
    p.add_argument("--ensemble", type=int, default=1, metavar="N", help="also an arm ARMxN per searched arm: one network per N "
                   "consecutive seeds, derived from their summed log-softmax alphas (seeds // N networks; no extra search)")
    p.add_argument("--search-epochs", type=int, help="override the search preset's epochs")
    p.add_argument("--search-subset", type=int, help="override the search preset's image subset (0: all)")
    p.add_argument("--search", action="append", default=[], metavar="KEY=VALUE",
                   help="another search option for both searched arms (JSON value), e.g. warmup_epochs=5")
    p.add_argument("--search-seconds", type=float, help="time one search step on the device first and run as many of the "
                   "preset's epochs as fit this many seconds (warm-up scaled to a third)")
    p.add_argument("--share", type=float, default=0.35, help="with --search-seconds: the slowdown of a search per other search "
                   "running beside it (a GPU's launch-bound searches overlap)")
    p.add_argument("--train-preset", default="cpu-rank", choices=list(TRAIN_PRESETS),
                   help="the training recipe, one for every network (cpu-rank: the one measured to rank networks)")
    p.add_argument("--train", action="append", default=[], metavar="KEY=VALUE", help="another training option (JSON value), "
                   "e.g. cutout=0")
    p.add_argument("--train-epochs", type=int, help="override the training preset's epochs")
    p.add_argument("--train-subset", type=int, help="override the training preset's images (0: all)")
    p.add_argument("--random-seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="searches and trainings at a time, each its own process")
    p.add_argument("--threads", type=int, help="torch threads per job (default: CPUs / jobs)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-root", default="data")
    p.add_argument("--work", help="results and run folders (default benchmarks/.search-vs-random; results are keyed by what determines them)")
    p.add_argument("--out", default=str(HERE / "search_vs_random.last.md"))
    p.add_argument("--deadline", type=float, help="seconds: then stop the running and queued jobs and write the table of what "
                   "finished (for a time-limited machine)")
    p.add_argument("--retrain", nargs="+", metavar="FILE.json", help="no search: the searched arms' networks of these kept "
                   "results (same search options), trained again with this run's recipe beside the random networks")
    p.add_argument("--derive", choices=DERIVE_RULES, help="derive the searched arms' networks by this rule from their searches' "
                   "final alphas (default: the search's own, --search derive=...); the searches and their keys are the same "
                   "whatever the rule, so a kept search is derived again, not searched again")
    p.add_argument("--plan", action="store_true", help="print the plan (networks, windows, jobs) and stop")
    p.add_argument("--render", metavar="FILE.json", help="write the table and plot again from a result kept in its .json (no job runs)")
    p.add_argument("--pool", nargs="+", metavar="FILE.json", help="pool kept results (no job runs): each arm's networks of all the files "
                   "together, a network trained in two files counted once; --pool-as NAME=ARM names a --variant that is the shipped search")
    p.add_argument("--pool-as", action="append", default=[], metavar="NAME=ARM", help="with --pool: count arm NAME as arm ARM (e.g. rep=dcanas)")
    args = p.parse_args()
    if args.render:
        return _write(json.loads(Path(args.render).read_text()), Path(args.out))
    if args.pool:
        try:
            pooled = pool_results([json.loads(Path(f).read_text()) for f in args.pool], dict(kv.split("=", 1) for kv in args.pool_as))
        except ValueError as e:
            print(f"error: {e}; pool results of one recipe and one window", file=sys.stderr)
            return 2
        return _write_pool(pooled, args.pool, args.pool_as, Path(args.out))

    variants = {n: json.loads(v) for n, v in (kv.split("=", 1) for kv in args.variant)}
    if any("-" in n or n in ARMS for n in variants):
        p.error("a --variant NAME has no \"-\" and is not an arm's name")
    if args.proxy_seeds and not 1 <= args.proxy_rank <= args.proxy_pool:
        p.error(f"--proxy-rank {args.proxy_rank} is not a rank in a pool of --proxy-pool {args.proxy_pool}: give 1 .. {args.proxy_pool}")
    s_preset, t_preset = RUN_PRESETS[args.preset]
    t_preset = args.train_preset or t_preset
    cfg = apply_preset(SearchConfig(dataset="fashion-mnist", data_root=args.data_root, device=args.device, budget=args.budget),
                       s_preset)
    if args.search_epochs:
        cfg = replace(cfg, epochs=args.search_epochs)
    if args.search_subset is not None:
        cfg = replace(cfg, subset=args.search_subset or None)
    for k, v in (kv.split("=", 1) for kv in args.search):
        v = option_value(v)
        cfg = replace(cfg, options=replace(cfg.options, **v)) if k == "options" else replace(cfg, **{k: v})
    net = eval_config(cfg)
    rule = args.derive or cfg.derive  # the searched networks' derivation (the searches themselves run under cfg)
    train_cfg = replace(train_preset(TrainConfig(dataset=cfg.dataset, data_root=args.data_root, device=args.device), t_preset),
                        C=net.C, layers=net.layers, test_subset=None, test_every=0)  # the whole test set, after the last epoch
    if args.train_epochs:
        train_cfg = replace(train_cfg, epochs=args.train_epochs)
    if args.train_subset is not None:
        train_cfg = replace(train_cfg, subset=args.train_subset or None)
    train_cfg = replace(train_cfg, **{k: option_value(v) for k, v in (kv.split("=", 1) for kv in args.train)})
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    work = Work(Path(args.work or HERE / ".search-vs-random"))
    lo, hi = cfg.fill_fraction * cfg.budget, cfg.budget
    cost = _cost_fn(cfg)
    t_start = time.time()

    # the networks that need no search: random and NASWOT-ranked, drawn once and kept
    drawn_key = "drawn-" + digest(cfg.space, lo, hi, net.to_json(), args.random_seed, args.random, args.proxy_pool, DRAW_RULE)
    drawn = work.result(drawn_key)
    convs_key = "convs-" + digest(cfg.space, lo, hi, net.to_json(), args.random_seed, args.convs, DRAW_RULE)
    convs = work.result(convs_key) if args.convs else {"convs": []}
    if convs is None:
        convs = dict(convs=[g.to_json() for g in random_within(cfg.space, cost, lo, hi, random.Random(args.random_seed + 2), args.convs,
                                                               cfg.nodes, keep=convs_and_none)])
        work.keep(convs_key, convs)
    if drawn is None:
        t0 = time.time()
        rnd = random_within(cfg.space, cost, lo, hi, random.Random(args.random_seed), args.random, cfg.nodes)
        pool = random_within(cfg.space, cost, lo, hi, random.Random(args.random_seed + 1), args.proxy_pool, cfg.nodes)
        scores = _naswot_pool(cfg, train_cfg, pool, args.device)
        drawn = dict(random=[g.to_json() for g in rnd], pool=[g.to_json() for g in pool], scores=scores,
                     naswot_seconds=time.time() - t0)
        work.keep(drawn_key, drawn)
    if "random_scores" not in drawn:  # the proxy on the random arm too: does it rank the networks the recipe trains?
        drawn["random_scores"] = _naswot_pool(cfg, train_cfg, [genotype_from_json(g) for g in drawn["random"]], args.device)
        work.keep(drawn_key, drawn)
    top = sorted(range(len(drawn["pool"])), key=lambda i: -drawn["scores"][i])[:args.proxy_top]
    pools1 = []  # the naswot1 arm: one pool per seed, its --proxy-rank-th score
    for s in range(args.proxy_seeds):
        key1 = "naswot1-" + digest(cfg.space, lo, hi, net.to_json(), args.random_seed, s, args.proxy_pool, DRAW_RULE)
        one = work.result(key1)
        if one is None or "pool" not in one:  # a pool kept before its genotypes were: drawn again (the same), not scored again
            t0 = time.time()
            pool1 = random_within(cfg.space, cost, lo, hi, random.Random(args.random_seed + PROXY_SEED + s), args.proxy_pool, cfg.nodes)
            sc = one["scores"] if one else _naswot_pool(cfg, train_cfg, pool1, args.device)
            one = dict(pool=[g.to_json() for g in pool1], scores=sc, seconds=one["seconds"] if one else time.time() - t0)
            work.keep(key1, one)
        i = ranked(one["scores"], args.proxy_rank)
        pools1.append(dict(genotype=one["pool"][i], score=one["scores"][i], seconds=one["seconds"]))

    # networks: name -> (arm, genotype json); searched ones are added as their searches finish
    networks: dict[str, dict[str, Any]] = {}
    for i, g in enumerate(drawn["random"]):
        networks[f"random-{i}"] = dict(arm="random", genotype=g, naswot=drawn["random_scores"][i])
    for i, g in enumerate(convs["convs"]):
        networks[f"convs-{i}"] = dict(arm="convs", genotype=g)
    for rank, i in enumerate(top):
        networks[f"naswot-{rank}"] = dict(arm="naswot", genotype=drawn["pool"][i], naswot=drawn["scores"][i])
    for s, one in enumerate(pools1):
        networks[f"naswot1-{s}"] = dict(arm="naswot1", genotype=one["genotype"], naswot=one["score"])
    searched = {"dcanas": cfg, "lambda0": replace(cfg, options=replace(cfg.options, constraint=False))}
    if "shuffled" in args.arms.split(","):
        searched["shuffled"] = replace(cfg, data_root=str(shuffled_labels(cfg.dataset, args.data_root, work.root)))
    for name, over in variants.items():  # --variant: the shipped search with other options, its own arm
        searched[name] = replace(cfg, **{k: v for k, v in over.items() if k != "options"},
                                 options=replace(cfg.options, **over.get("options", {})))
        ARMS.insert(ARMS.index("argmax"), name)
    searched = {a: c for a, c in searched.items() if a in args.arms.split(",") or a in variants}
    if args.search_seconds:  # a time-limited machine: every arm gets as many epochs (up to the preset's) as the slowest fits
        probes = {a: _probe_step(c) for a, c in searched.items() if a != "lambda0"}  # lambda0 steps as dcanas does
        n_steps = (cfg.subset or 60_000) // 2 // cfg.batch_size
        slow = max(1.0, len(searched) * args.seeds * args.share)
        epochs = max(1, min(cfg.epochs, int(args.search_seconds / (max(probes.values()) * n_steps * slow))))
        searched = {a: replace(c, epochs=epochs, warmup_epochs=min(c.warmup_epochs, epochs // 3)) for a, c in searched.items()}
        print(f"search step (one process): {', '.join(f'{a} {1000 * t:.0f} ms' for a, t in probes.items())}; {n_steps} steps an "
              f"epoch, {len(searched) * args.seeds} searches at {slow:.1f}x: {epochs} of {cfg.epochs} epochs fit {args.search_seconds:.0f} s",
              flush=True)
        cfg = searched.get("dcanas", cfg)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    searches = {f"{arm}-s{seed}": replace(c, seed=seed) for arm, c in searched.items() for seed in seeds}
    try:
        retrained = retrain_networks(args.retrain, cfg, {*searched, "argmax"} & set(args.arms.split(","))) if args.retrain else {}
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.retrain:  # the searched arms' networks as kept, trained again with this run's recipe: no search runs
        searches = {}
    ensembles = {f"{arm}x{args.ensemble}-g{g}": [f"{arm}-s{seed}" for seed in seeds[g * args.ensemble:(g + 1) * args.ensemble]]
                 for arm in searched for g in range(args.seeds // args.ensemble)} if args.ensemble > 1 else {}
    searched_by = {a: a for a in searched}  # arm -> the searched arm whose searches it took
    for arm in (searched if ensembles else []):
        ARMS.insert(ARMS.index("argmax"), f"{arm}x{args.ensemble}")
        searched_by[f"{arm}x{args.ensemble}"] = arm
    search_key = {k: "search-" + digest(_search_inputs(c), *(["labels shuffled", SHUFFLED_SEED] if k.startswith("shuffled-") else []))
                  for k, c in searches.items()}
    second_seed = {f"random-{i}" for i in range(min(args.rank_networks, args.random))}

    def derived_again(key: str) -> dict[str, dict]:
        """Every derivation of a kept search's final alphas by today's rules, ``rule`` among them; kept under the work
        folder by the search's key and the derivation's own options (naswot scores a pool of networks: seconds)."""
        scfg = replace(searches[key], derive=rule)
        later = [getattr(scfg, k) for k in ("proxy_rank", "proxy_draw") if getattr(scfg, k) != LATER_FIELDS[k]]  # keys kept before them stay
        dkey = "derived-" + digest(search_key[key], rule, *((scfg.proxy_pool, scfg.fill_fraction, *later) if rule == "naswot" else ()))
        kept = work.result(dkey)
        if kept is None:
            kept = {n: d.to_json() for n, d in derive_again(scfg, work.root / "runs" / search_key[key]).items()}
            work.keep(dkey, kept)
        return kept

    def add_searched(key: str, res: dict) -> None:
        arm = key.split("-")[0]
        # derived again from the kept final alphas by today's rules (a derivation is a pure function of them): a kept
        # search outlives a change of rule; the search's own derivations stay in its result
        found = derived_again(key)
        networks[f"{key}"] = dict(arm=arm, genotype=found[rule]["genotype"], search=key)
        for name, keys in ensembles.items():  # a group whose every seed is kept: its ensemble's network
            if name not in networks and all(work.result(search_key[k]) is not None for k in keys):
                runs = [work.root / "runs" / search_key[k] for k in keys]
                g = derive_again(replace(searches[keys[0]], derive=rule), *runs)[rule].genotype.to_json()
                networks[name] = dict(arm=name.split("-")[0], genotype=g, search=None, searches=keys)
        if arm == "dcanas" and "argmax" in args.arms.split(","):
            am = found["argmax"]
            if am["cost"][cfg.metric] <= cfg.budget:
                networks[f"argmax-{key.split('-')[1]}"] = dict(arm="argmax", genotype=am["genotype"], search=key)

    networks.update(retrained)
    recipe = recipe_key({**train_cfg.to_json(), "data_root": None, "device": None})

    def train_keys(name: str) -> list[tuple[str, int]]:
        first = network_index(name)
        seeds = (first, first + SECOND_SEED) if name in second_seed else (first,)
        return [("train-" + digest(networks[name]["genotype"], recipe, t), t) for t in seeds]

    if args.plan:
        for key, res in ((k, work.result(search_key[k])) for k in searches):
            if res is not None:
                add_searched(key, res)
        todo = [k for name in networks for k, _ in train_keys(name) if work.result(k) is None]
        print(f"networks now: {len(networks)} ({sum(work.result(search_key[k]) is not None for k in searches)} searches kept); "
              f"trainings to run: {len(todo)}")
        print(f"search: {cfg.to_json()}\ntraining: {train_cfg.to_json()}\nwindow {lo:,.0f} .. {hi:,.0f}; "
              f"{len(searches)} searches; {args.jobs} jobs x {threads} threads; work {work.root}")
        return 0

    log = lambda m: print(f"[{time.time() - t_start:7.0f}s] {m}", flush=True)  # noqa: E731
    # one queue, dispatched a job at a time as workers free up: the searches first, then the first network of every
    # arm before the second of any (so a run stopped by --deadline still has every arm), the second seeds last
    queue: list[tuple[tuple, str, str, Callable, tuple]] = []
    arm_count: dict[str, int] = {}

    scheduled: set[str] = set()  # the trainings queued or running

    def enqueue_training(name: str) -> None:
        arm = networks[name]["arm"]
        arm_count[arm] = arm_count.get(arm, 0) + 1
        for key, t in train_keys(name):
            if work.result(key) is None and key not in scheduled:  # two networks of one genotype share one training
                scheduled.add(key)
                job = (_train_job, (train_cfg.to_json(), networks[name]["genotype"], t, str(work.root / "runs" / key), threads))
                queue.append(((1 + 100 * (t >= SECOND_SEED), arm_count[arm], ARMS.index(arm)), "train", key, *job))

    for key, scfg in searches.items():  # the searched networks' trainings wait for their searches
        res = work.result(search_key[key])
        if res is None:
            until = t_start + args.search_seconds * 1.25 if args.search_seconds else None  # --search-seconds: a time box
            queue.append(((0, len(queue), 0), "search", key, _search_job, (scfg.to_json(), str(work.root / "runs" / search_key[key]), threads, until)))
        else:
            add_searched(key, res)
    for name in list(networks):
        enqueue_training(name)
    stopped = 0
    pending: dict[Future, tuple[str, str]] = {}
    pool_ex = ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill ends the workers too (below), not only this process
    try:
        while queue or pending:
            if args.deadline and time.time() - t_start > args.deadline:
                stopped = len(queue) + len(pending)
                log(f"deadline of {args.deadline:.0f} s: {len(pending)} running and {len(queue)} queued jobs stopped")
                break
            queue.sort(key=lambda j: j[0])
            while queue and len(pending) < args.jobs:
                _, kind, key, fn, fargs = queue.pop(0)
                pending[pool_ex.submit(fn, *fargs)] = (kind, key)
            done, _ = wait(list(pending), timeout=30, return_when=FIRST_COMPLETED)
            for f in done:
                kind, key = pending.pop(f)
                res = f.result()
                work.keep(search_key[key] if kind == "search" else key, res)
                if kind == "search":
                    before = set(networks)
                    add_searched(key, res)
                    for name in sorted(set(networks) - before):
                        enqueue_training(name)
                    log(f"search {key}: {res['search_seconds']:.0f} s, search-val acc {res['val_acc']:.3f}; {res['learned']}")
                else:
                    log(f"{key}: test top-1 {100 * res['test_top1']:.2f}% ({res['train_seconds']:.0f} s); "
                        f"{len(pending) + len(queue)} jobs left")
    except BaseException:  # ^C or a failed job: stop the others too
        stopped = stopped or 1
        raise
    finally:
        if stopped:  # the executor has no verb for running jobs: end their processes
            for proc in list(getattr(pool_ex, "_processes", {}).values()):
                proc.terminate()
        pool_ex.shutdown(wait=True, cancel_futures=True)
    wall = time.time() - t_start

    # ---- the table -------------------------------------------------------------------------------
    rows = []
    for name, n in networks.items():
        g = genotype_from_json(n["genotype"])
        c = network_cost(g, net)
        accs = [a for a in (work.result(k) for k, _ in train_keys(name)) if a is not None]
        if not accs:
            continue  # not trained before the deadline
        rows.append(dict(name=name, arm=n["arm"], seed=network_index(name), params=c.params, macs=c.flops, top1=accs[0]["test_top1"],
                         top1_seed1=accs[1]["test_top1"] if len(accs) > 1 else None, naswot=n.get("naswot"),
                         train_seconds=sum(a["train_seconds"] for a in accs), search=n.get("search"), genotype=n["genotype"]))
    by_arm = {a: [r for r in rows if r["arm"] == a] for a in ARMS}
    rnd = [100 * r["top1"] for r in by_arm["random"]]
    search_res = {k: r for k in searches if (r := work.result(search_key[k])) is not None}
    summary = {}
    for a in ARMS:
        v = [100 * r["top1"] for r in by_arm[a]]
        if not v:
            continue
        secs = sum(r["train_seconds"] for r in by_arm[a])
        if a in searched_by:  # its searches (an ensemble arm: its seeds' searches), by the arm's exact name
            secs += sum(s["search_seconds"] for k, s in search_res.items() if k.split("-")[0] == searched_by[a])
        if a == "naswot":
            secs += drawn["naswot_seconds"]
        if a == "naswot1":
            secs += sum(one["seconds"] for one in pools1)
        summary[a] = dict(**arm_summary(a, v, rnd), seconds=secs)
    from dcanas.costs.latency import agreement

    # do the searches' final alphas rank the window's trained networks? Each search against the networks it did not
    # derive itself (its own is its alphas' choice by construction); a network's accuracy is its seeds' mean
    alpha_rank = {}
    for k in search_res:
        others = [r for r in rows if lo <= r["params"] <= hi and r["search"] != k]
        if len(others) >= 3:
            accs = [r["top1"] if r["top1_seed1"] is None else (r["top1"] + r["top1_seed1"]) / 2 for r in others]
            scores = final_log_probs(searches[k], work.root / "runs" / search_key[k], [genotype_from_json(r["genotype"]) for r in others])
            alpha_rank[k] = agreement(scores, accs).get("spearman", math.nan)
    pairs = [(r["top1"], r["top1_seed1"]) for r in rows if r["top1_seed1"] is not None]
    spearman = agreement([p[0] for p in pairs], [p[1] for p in pairs]).get("spearman", math.nan) if len(pairs) >= 3 else math.nan
    meta = dict(preset=args.preset, search_preset=s_preset, device=args.device, window=[lo, hi], variants=variants, ensemble=args.ensemble,
                work=os.path.relpath(work.root, HERE.parent), retrained_from=args.retrain, stopped=stopped, deadline=args.deadline, proxy_top=args.proxy_top,
                proxy_seeds=args.proxy_seeds, proxy_rank=args.proxy_rank, proxy_seed_scores=[one["score"] for one in pools1],
                pool=dict(n=len(drawn["scores"]), lo=min(drawn["scores"], default=None), hi=max(drawn["scores"], default=None)))
    result = dict(meta=meta, search=replace(cfg, derive=rule).to_json(), training=train_cfg.to_json(), rows=rows, summary=summary,
                  spearman=spearman, alpha_rank=alpha_rank,
                  searches=search_res, naswot_pool=[(r["naswot"], r["top1"]) for r in rows if r["naswot"] is not None],
                  wall_seconds=wall, jobs=args.jobs, threads=threads)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    return _write(result, out)


def retrain_networks(files: list[str], cfg: Any, arms: set[str]) -> dict[str, dict]:
    """--retrain: the networks of the searched ``arms`` in kept results (each under its name and seed, a network kept in
    two files once), for training again with another recipe. The results must come from this run's search
    configuration (seed, data root and device aside), or the table's search line would not describe them (ValueError)."""
    same = lambda c: {k: v for k, v in c.items() if k not in ("seed", "data_root", "device")}  # noqa: E731
    want = same(cfg.to_json())
    from dcanas.search.searcher import LATER_FIELDS

    kept_search = lambda k: {**LATER_FIELDS, **k}  # noqa: E731 (a result kept before a field existed: its value then)
    networks: dict[str, dict] = {}
    for f in files:
        kept = json.loads(Path(f).read_text())
        if same(kept_search(kept["search"])) != want:
            raise ValueError(f"--retrain {f} was searched with another configuration than this run's; "
                             "give the same --search options as the run that wrote it")
        for row in kept["rows"]:
            if row["arm"] in arms:
                networks.setdefault(row["name"], dict(arm=row["arm"], genotype=row["genotype"], search=row.get("search")))
    return networks


def kept_recipe(training: dict) -> dict:
    """A kept result's training recipe as TrainConfig reads it now: results kept before ``lr_schedule`` existed
    (2026-12-07) annealed the cosine once an epoch."""
    return {"lr_schedule": "epoch", **training}


def recipe_key(training: dict) -> dict:
    """The recipe as a training's key is made of it: kept_recipe's inverse, so a training with the cosine annealed once an
    epoch keeps the key it had before ``lr_schedule`` existed (and is found in the work folder)."""
    return {k: v for k, v in training.items() if (k, v) != ("lr_schedule", "epoch")}


def pool_results(results: list[dict], same_as: dict[str, str]) -> dict:
    """Several kept results as one: every arm's networks of all of them (arm NAME counted as ``same_as[NAME]``), a
    network trained in more than one (same genotype and seed under the one recipe) counted once, and each arm's
    mean, standard error and 95% Welch interval against the pooled random arm. Results of different recipes or
    windows cannot be pooled (ValueError)."""
    first = results[0]
    recipe = lambda r: {k: v for k, v in kept_recipe(r["training"]).items() if k not in ("data_root", "device")}  # noqa: E731
    for r in results[1:]:
        if recipe(r) != recipe(first) or _window(r) != _window(first):
            raise ValueError("cannot pool results of different training recipes or fill windows")
    seen: dict[tuple, dict] = {}
    for r in results:
        for row in r["rows"]:
            arm = same_as.get(row["arm"], row["arm"])
            seen.setdefault((arm, json.dumps(row["genotype"], sort_keys=True), row["seed"]), {**row, "arm": arm})
    rows = list(seen.values())
    arms = sorted(dict.fromkeys(r["arm"] for r in rows), key=lambda a: ARMS.index(a) if a in ARMS else len(ARMS))
    rnd = [100 * r["top1"] for r in rows if r["arm"] == "random"]
    summary = {}
    for a in arms:
        summary[a] = arm_summary(a, [100 * r["top1"] for r in rows if r["arm"] == a], rnd)
    return dict(rows=rows, summary=summary, window=_window(first), training=first["training"])


def _window(result: dict) -> list[float]:
    return [round(x) for x in result["meta"]["window"]]


def _write_pool(pooled: dict, files: list[str], same_as: list[str], out: Path) -> int:
    lo, hi = pooled["window"]
    again = " ".join(["python benchmarks/search_vs_random.py --pool", *(os.path.relpath(Path(f).resolve(), HERE.parent) for f in files),
                      *(f"--pool-as {a}" for a in same_as)])
    lines = [f"# Search vs random, pooled: {len(files)} kept results", "",
             f"Networks of {', '.join(Path(f).name for f in files)}: one recipe, window {lo:,} .. {hi:,} params; a network trained in "
             "more than one of them (same genotype and seed) counted once" + (f"; arms counted as another: {', '.join(same_as)}" if same_as else "")
             + f". Written by `{again}`.", "",
             "| arm | networks | mean test top-1 | std. error | mean - random (points) | 95% interval |", "|---|---:|---:|---:|---:|---|"]
    for a, s in pooled["summary"].items():
        w = s.get("vs_random")
        diff = f"{w['diff']:+.2f} | [{w['lo']:+.2f}, {w['hi']:+.2f}]" if w else " | "
        lines.append(f"| {a} | {s['n']} | {s['mean']:.2f}% | {s['se']:.2f} | {diff} |")
    verdict = pooled["summary"].get("dcanas", {}).get("vs_random")
    if verdict:
        lines += ["", f"Outcome, pooled: the shipped search {'beats' if verdict['lo'] > 0 else 'does not beat'} the random networks: "
                  f"{verdict['diff']:+.2f} points, 95% interval [{verdict['lo']:+.2f}, {verdict['hi']:+.2f}]."]
    lines += control_lines(pooled["rows"])
    text = "\n".join(lines) + "\n"
    print(text)
    out.write_text(text)
    return 0


def control_lines(rows: list[dict]) -> list[str]:
    """With a `shuffled` arm beside the shipped one: how many cells the two derived alike, and the shipped arm's mean minus
    the control's with its 95% Welch interval. A lead over random counts as learned from the data only where the search
    blind to the labels lacks it."""
    cells = {a: [json.dumps(r["genotype"], sort_keys=True) for r in rows if r["arm"] == a] for a in ("dcanas", "shuffled")}
    if len(cells["dcanas"]) < 2 or len(cells["shuffled"]) < 2:
        return []
    common = max(dict.fromkeys(cells["dcanas"]), key=cells["dcanas"].count)  # ties: the first derived (a set's order changes per process)
    acc = {a: [100 * r["top1"] for r in rows if r["arm"] == a] for a in cells}
    w = welch(acc["dcanas"], acc["shuffled"])
    return [f"What the searches derived: dcanas {len(set(cells['dcanas']))} distinct cells in {len(cells['dcanas'])} searches, shuffled "
            f"{len(set(cells['shuffled']))} in {len(cells['shuffled'])}; {sum(c in cells['dcanas'] for c in cells['shuffled'])} of the shuffled "
            f"searches derived a cell a dcanas search derived; dcanas's most common cell ({cells['dcanas'].count(common)} of "
            f"{len(cells['dcanas'])}) was derived by {cells['shuffled'].count(common)} shuffled searches.",
            f"Against its control, the same search blind to the labels (shuffled): the shipped search {w['diff']:+.2f} points, 95% interval "
            f"[{w['lo']:+.2f}, {w['hi']:+.2f}]: " + ("what it chose came in part from the data." if w["lo"] > 0 else
                                                  "no gain from the data is shown (its lead over random, where it has one, is not shown to "
                                                  "exceed that of a search that cannot learn).")]


def room(pairs: list[tuple[float, float]]) -> dict[str, float]:
    """How far apart the networks of the window are, against the recipe's noise: a one-way random-effects analysis of
    the networks trained with two seeds (test top-1 in points). sd_between is the spread of the networks' own
    accuracies (what a search can exploit), sd_noise one training's seed-to-seed noise; p is the F test of "every
    network is as good as the others"."""
    from scipy import stats

    k = len(pairs)
    if k < 3:
        return {}
    means = [(a + b) / 2 for a, b in pairs]
    grand = sum(means) / k
    msb = 2 * sum((m - grand) ** 2 for m in means) / (k - 1)
    msw = sum((a - m) ** 2 + (b - m) ** 2 for (a, b), m in zip(pairs, means)) / k
    between, noise = math.sqrt(max(0.0, (msb - msw) / 2)), math.sqrt(msw)
    # networks per arm for a 95% interval of half-width 2 sd_between, each network's sd sqrt(between^2 + noise^2)
    needed = 2 * (1.96 * math.hypot(between, noise) / (2 * between)) ** 2 if between > 0 else math.inf
    return dict(networks=k, sd_between=between, sd_noise=noise, f=msb / msw if msw > 0 else math.inf,
                p=float(stats.f.sf(msb / msw, k - 1, k)) if msw > 0 else 0.0, needed=needed)


def _write(result: dict, out: Path) -> int:
    """The table (markdown, printed and written to ``out``) and the plot, from a result as kept in the .json."""
    from dcanas.costs.latency import agreement
    from dcanas.search.config import SearchConfig
    from dcanas.train.trainer import TrainConfig

    meta, rows, summary, search_res = result["meta"], result["rows"], result["summary"], result["searches"]
    cfg, train_cfg = SearchConfig.from_json(result["search"]), TrainConfig(**kept_recipe(result["training"]))
    lo, hi = meta["window"]
    arms = list(summary)  # every arm with a network, in the run's order
    pairs = [(100 * r["top1"], 100 * r["top1_seed1"]) for r in rows if r["top1_seed1"] is not None]
    seed_diff = [abs(a - b) for a, b in pairs]
    pool = meta["pool"]
    lines = [f"# Search vs random at K_d = {cfg.budget:,.0f} params ({meta['preset']}, {cfg.dataset}, device {meta['device']})", "",
             f"Search ({meta['search_preset']}): C={cfg.C}, {cfg.cells} cells, batch {cfg.batch_size}, {cfg.epochs} epochs "
             f"({cfg.warmup_epochs} warm-up), subset {cfg.subset or 'all'}, arch lr {cfg.arch_lr:g}, lambda lr {cfg.lambda_lr:g}, "
             f"K' = K_d, derivation {cfg.derive}, derived cells {cfg.options.derived_cells}, bottleneck {cfg.options.bottleneck}; "
             f"evaluation network C={cfg.eval_C}, {cfg.eval_layers} cells. Fill window {lo:,.0f} .. {hi:,.0f} params."
             + "".join(f" Arm {n}: the same search with {json.dumps(v)}." for n, v in meta["variants"].items())
             + (" Arm shuffled: the same search on the same training images with their labels permuted (a control that cannot "
                "learn from the data; its networks train on the real labels)." if "shuffled" in arms else "")
             + (f" Arms ARMx{meta['ensemble']}: one network per {meta['ensemble']} consecutive seeds of ARM, derived from the "
                "sum of those searches' log-softmax alphas (no search of its own; the job time counts its seeds' searches)."
                if meta.get("ensemble", 1) > 1 else ""),
             f"Training (one recipe for every network): {train_cfg.epochs} epochs on {train_cfg.subset or 'all'} training images "
             f"({100 * train_cfg.val_fraction:.0f}% held out), batch {train_cfg.batch_size}, lr {train_cfg.lr:g} cosine (annealed every "
             f"{train_cfg.lr_schedule}), cutout {train_cfg.cutout}, drop path {train_cfg.drop_path:g}, auxiliary head {train_cfg.auxiliary}; "
             f"test top-1 on the whole "
             f"test set after the last epoch. {result['jobs']} jobs x {result['threads']} threads; wall time of this run "
             f"{result['wall_seconds'] / 60:.1f} min (results kept in {meta['work']})."
             + (f" No search ran: the searched networks are those of {', '.join(Path(f).name for f in meta['retrained_from'])}, "
                "trained again with this recipe." if meta.get("retrained_from") else "")
             + (f" Stopped at the --deadline of {meta['deadline']:.0f} s with {meta['stopped']} jobs unfinished: the arms hold what "
                "finished." if meta["stopped"] else ""), "",
             "| network | arm | params | MACs | test top-1 | second seed | NASWOT | search-val acc | alphas separated |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in sorted(rows, key=lambda r: (arms.index(r["arm"]), r["name"])):
        s = search_res.get(r["search"] or "", None)
        lines.append(f"| {r['name']} | {r['arm']} | {r['params']:,} | {r['macs']:,} | {100 * r['top1']:.2f}% | "
                     + (f"{100 * r['top1_seed1']:.2f}%" if r["top1_seed1"] is not None else "") + " | "
                     + (f"{r['naswot']:.1f}" if r["naswot"] is not None else "") + " | "
                     + (f"{s['val_acc']:.3f} | {'yes' if s['separated'] else 'no'}" if s else " | ") + " |")
    lines += ["", "| arm | networks | mean test top-1 | std. error | mean - random (points) | 95% interval | job time (searches + trainings, summed) |",
              "|---|---:|---:|---:|---:|---|---:|"]
    for a, s in summary.items():
        w = s.get("vs_random")
        lines.append(f"| {a} | {s['n']} | {s['mean']:.2f}% | {s['se']:.2f} | " + (f"{w['diff']:+.2f} | [{w['lo']:+.2f}, {w['hi']:+.2f}]" if w else " | ")
                     + f" | {s['seconds'] / 60:.1f} min |")
    rho = (f"{result['spearman']:.3f}" if isinstance(result.get("spearman"), (int, float)) and math.isfinite(result["spearman"])
           else "undefined (it needs 3 networks trained twice whose accuracies are not all tied)")
    lines += ["", f"Recipe check: {len(pairs)} random networks trained with two seeds: Spearman {rho} between the "
              f"seeds' test top-1; mean |first - second| {sum(seed_diff) / max(len(seed_diff), 1):.2f} points (max {max(seed_diff, default=0):.2f}).",
              f"NASWOT pool: {pool['n']} random networks of the window, scores {pool['lo']:.1f} .. {pool['hi']:.1f}; "
              f"the top {meta['proxy_top']} trained." if pool["n"] else "NASWOT pool: none (--proxy-pool 0)."]
    if meta.get("proxy_seeds"):
        lines.append(f"naswot1: {meta['proxy_seeds']} pools of {pool['n']} random networks of the window, one per seed; each pool's "
                     f"{_ordinal(meta.get('proxy_rank', 1))}NASWOT score trained ({', '.join(f'{v:.1f}' for v in meta['proxy_seed_scores'])}).")
    lines += [f"Search {k} ({s['search_seconds']:.0f} s, {s.get('epochs_run', '?')} epochs, final lambda {s['final_lambda']:.3f}, "
              f"gradient share {s['gradient_share']}): {s['learned']}" for k, s in search_res.items()]
    if result.get("alpha_rank"):
        ranks = result["alpha_rank"]
        finite = sorted(v for v in ranks.values() if math.isfinite(v))
        lines.append(f"Do the searches' final alphas rank this run's trained networks of the window ({sum(lo <= r['params'] <= hi for r in rows)}, "
                     "less the search's own: Spearman between a network's log-probability under a search's alphas, the derivations' "
                     f"objective, and its test top-1)? Median {statistics.median(finite) if finite else math.nan:+.3f} over {len(ranks)} searches; "
                     + ", ".join(f"{k} {v:+.3f}" for k, v in ranks.items()) + ".")
    rk = [(r["naswot"], r["top1"]) for r in rows if r["arm"] == "random" and r["naswot"] is not None]
    if len(rk) >= 3:
        lines.append(f"NASWOT against test top-1 over the random networks: Spearman "
                     f"{agreement([a for a, _ in rk], [b for _, b in rk]).get('spearman', math.nan):.3f}.")
    gap = room(pairs)
    verdict = summary.get("dcanas", {}).get("vs_random")
    if gap:
        lines.append(f"Room: over the {gap['networks']} random networks trained twice, the networks' own accuracies spread by "
                     f"{gap['sd_between']:.2f} points (sd between networks) against {gap['sd_noise']:.2f} for one training's noise "
                     f"(F test that every network is as good: p = {gap['p']:.2f}); a network 2 sd above the window's mean would be "
                     f"{2 * gap['sd_between']:+.2f} points"
                     + (f", against the interval's half-width of {(verdict['hi'] - verdict['lo']) / 2:.2f} here: at this scale no "
                        "search can show a win over random with this many networks" if verdict and 2 * gap["sd_between"] < (verdict["hi"] - verdict["lo"]) / 2
                        else "") + (f"; an interval that narrow needs about {gap['needed']:.0f} networks per arm" if math.isfinite(gap["needed"])
                           else "; the networks are indistinguishable under this recipe") + ".")
    if verdict:
        lines.append(f"Outcome: the shipped search {'beats' if verdict['lo'] > 0 else 'does not beat'} the random networks: "
                     f"{verdict['diff']:+.2f} points, 95% interval [{verdict['lo']:+.2f}, {verdict['hi']:+.2f}].")
    lines += control_lines(rows)
    text = "\n".join(lines) + "\n"
    print(text)
    out.write_text(text)
    _plot(rows, out.with_suffix(".png"), cfg.budget, arms)
    return 0


def _plot(rows: list[dict], path: Path, budget: float, arms: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for x, a in enumerate(arms):
        v = [100 * r["top1"] for r in rows if r["arm"] == a]
        if not v:
            continue
        ax.scatter([x + 0.08 * (i - len(v) / 2) / max(len(v), 1) * 4 for i in range(len(v))], v, s=28)
        ax.hlines(sum(v) / len(v), x - 0.3, x + 0.3, color="k")
    ax.set_xticks(range(len(arms)), arms)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"networks at K_d = {budget:,.0f} params: one dot per network, bar = arm mean", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())

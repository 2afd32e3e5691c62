"""Would a pick by the trained supernet's loss beat random networks of the window? (issue 34)

``supernet_rank.py`` found that supernets trained at the long schedule order the window's trained cells by their
one-shot loss better than supernets of the same length searched on shuffled labels. This tries the derivation that
reading suggests, without building it into the search: for each kept search (``search_vs_random.py``'s work folder,
--match as in supernet_rank.py), --candidates live cells drawn from its fill window by the random arm's rule
(--draw-seed), each run inside the supernet (``supernet_rank.kept_scores``: one-shot loss on --images search-val
images of the real labels); the --top cells with the lowest loss are each trained with the recipe of a kept result
(--recipe: its training; rank r's seed the search's seed + (r - 1) x RANK_SEED, so rank 1's is the search's own, as
``search_vs_random.py`` trains an arm's networks, and every network has a seed of its own) and tested on the whole
test set, against that result's random networks. The picks of the supernets searched on real labels and of those
searched on shuffled labels (the control) are two arms, each against random with its 95% Welch interval.

--ensemble orders the candidates by the mean over a label group's supernets (the real-label ones; the control's) of
each candidate's rank in that supernet's order, and trains the --top of each group's order instead (rank r's seed
ENSEMBLE_SEED + (r - 1) x RANK_SEED, a seed no search's pick has): does the order of several supernets pick better
than one supernet's, whose order is mostly its own seed's (the agreement table)?

    python benchmarks/oneshot_pick.py --match cells=2 --match epochs=30 \\
        --recipe benchmarks/search_vs_random.nb201-matchedlong.last.json [--top 8]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

RANK_SEED = 100  # the training seed of a supernet's rank-r pick: the search's seed + (r - 1) x this
ENSEMBLE_SEED = 1000  # an ensemble's rank-r pick: this + (r - 1) x RANK_SEED


def score_one(run: str, cfg_json: dict, candidates: int, draw_seed: int, images: int, data_root: str, threads: int) -> dict:
    """One supernet: the candidates ordered by their one-shot loss, lowest first, as (loss, genotype JSON)."""
    import torch

    from dcanas.search.baselines import random_within
    from dcanas.search.config import SearchConfig
    from search_vs_random import _cost_fn
    from supernet_rank import cell_key, kept_scores

    torch.set_num_threads(threads)
    cfg = SearchConfig.from_json(cfg_json)
    t0 = time.time()
    drawn = random_within(cfg.space, _cost_fn(cfg), cfg.fill_fraction * cfg.budget, cfg.budget, random.Random(draw_seed),
                          candidates, cfg.nodes)
    raw = kept_scores(Path(run), cfg, drawn, images, data_root)  # beside supernet_rank's: a cell scored once serves both
    ranked = sorted((raw["cells"][cell_key(g)][1], i) for i, g in enumerate(drawn))
    return dict(run=Path(run).name, seed=cfg.seed, ranked=[(loss, drawn[i].to_json()) for loss, i in ranked],
                val_acc=raw["val_acc"], score_seconds=time.time() - t0)


def pick_dir(run: str, draw_seed: int, candidates: int, images: int, rank: int) -> str:
    """Where rank ``rank`` (1 = the lowest loss) is trained; rank 1 keeps the folder of the first look (a rerun reads it)."""
    return str(Path(run) / (f"oneshot-pick-d{draw_seed}-n{candidates}-i{images}" + (f"-r{rank}" if rank > 1 else "")))


def ensemble(group: list[dict], work: str) -> dict:
    """One label group's supernets as one order: each candidate's mean rank over the group (0 = a supernet's lowest
    loss), lowest first, ties by the draw's order; shaped like ``score_one``'s result, with the mean rank as the score,
    its ``dir`` a folder of its own under ``work``."""
    keys = [json.dumps(g, sort_keys=True) for _, g in group[0]["ranked"]]
    if any(sorted(json.dumps(g, sort_keys=True) for _, g in s["ranked"]) != sorted(keys) for s in group):
        raise SystemExit("oneshot_pick.py: --ensemble needs supernets scored on the same candidates (one --draw-seed, one window)")
    rank = {k: 0.0 for k in keys}
    for s in group:
        for r, (_, g) in enumerate(s["ranked"]):
            rank[json.dumps(g, sort_keys=True)] += r / len(group)
    order = sorted(range(len(keys)), key=lambda i: (rank[keys[i]], i))
    seeds = "-".join(str(s["seed"]) for s in group)
    blind = group[0]["blind"]
    return dict(run=f"ensemble of s{seeds}", seed=ENSEMBLE_SEED, blind=blind, members=len(group),
                ranked=[(rank[keys[i]], json.loads(keys[i])) for i in order],
                val_acc=sum(s["val_acc"] for s in group) / len(group), score_seconds=sum(s["score_seconds"] for s in group),
                dir=str(Path(work) / f"oneshot-ensemble-{'shuffled' if blind else 'real'}-s{seeds}"))


def agreement_table(scored: list[dict], top: int) -> list[str]:
    """How far the supernets agree on the same candidates: the Spearman of their one-shot losses, and how many of their
    ``top`` lowest-loss cells two supernets share (a pair whose candidates differ: a dash). Supernets whose orders are
    each their own seed's noise agree near 0 and share few picks."""
    from scipy.stats import spearmanr

    loss = [{json.dumps(g, sort_keys=True): v for v, g in s["ranked"]} for s in scored]
    best = [{json.dumps(g, sort_keys=True) for _, g in s["ranked"][:top]} for s in scored]
    names = [f"{'shuffled' if s['blind'] else 'real'} s{s['seed']}" for s in scored]
    lines = [f"Agreement between the supernets on the same candidates: Spearman of their one-shot losses (shared of their {top} "
             "lowest-loss cells).", "", "| supernet | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for i, a in enumerate(loss):
        cells, keys = [], sorted(a)
        for j, b in enumerate(loss):
            cells.append(f"{spearmanr([a[k] for k in keys], [b[k] for k in keys])[0]:+.2f} ({len(best[i] & best[j])})"
                         if a.keys() == b.keys() and len(a) > 2 else "-")
        lines.append(f"| {names[i]} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    from alpha_rank import kept_searches, label_blind
    from search_vs_random import _train_job, kept_recipe, mean_se, welch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=str(HERE / ".svr-nb201"))
    p.add_argument("--results", default=str(HERE / "search_vs_random.*.last.json"))
    p.add_argument("--match", action="append", default=[], metavar="KEY=VALUE", help="only searches whose config has KEY=VALUE (JSON)")
    p.add_argument("--recipe", required=True, help="a kept search_vs_random result: its training recipe and its random networks")
    p.add_argument("--candidates", type=int, default=200, help="live cells of the window each supernet scores")
    p.add_argument("--top", type=int, default=1, help="the lowest-loss cells of each supernet trained (its picks of rank 1 .. TOP)")
    p.add_argument("--draw-seed", type=int, default=100, help="the candidates' draw (one draw for every supernet)")
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--data-root", default="data")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--ensemble", action="store_true", help="train the top of each label group's mean-rank order, not each supernet's")
    args = p.parse_args()
    recipe = json.loads(Path(args.recipe).read_text())
    train_json = dict(kept_recipe(recipe["training"]), data_root=args.data_root)
    rnd = [100 * r["top1"] for r in recipe["rows"] if r["arm"] == "random"]
    want = [(k, json.loads(v)) for k, v in (m.split("=", 1) for m in args.match)]
    kept = [(run, record, cfg) for run, record, cfg, _ in kept_searches(args.work, args.results, want)]
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=args.jobs) as ex:
        scored = [dict(f.result(), blind=label_blind(cfg), dir=str(run)) for run, cfg, f in
                  [(run, cfg, ex.submit(score_one, str(run), record["config"], args.candidates, args.draw_seed, args.images, args.data_root, 1))
                   for run, record, cfg in kept]]
        for s in scored:
            print(f"[{time.time() - t0:7.0f}s] {s['run']}: {len(s['ranked'])} candidates scored, lowest one-shot loss "
                  f"{s['ranked'][0][0]:.3f}", file=sys.stderr, flush=True)
        agreement = agreement_table(scored, args.top)
        if args.ensemble:
            scored = [ensemble([s for s in scored if s["blind"] == blind], args.work)
                      for blind in (False, True) if any(s["blind"] == blind for s in scored)]
        # the real-label supernets' picks first, rank by rank, then the control's: a run stopped early has the main arm
        order = sorted(((s["blind"], rank, k) for k, s in enumerate(scored) for rank in range(1, min(args.top, len(s["ranked"])) + 1)))
        futures = {(k, rank): ex.submit(_train_job, train_json, scored[k]["ranked"][rank - 1][1],
                                        scored[k]["seed"] + (rank - 1) * RANK_SEED,
                                        pick_dir(scored[k]["dir"], args.draw_seed, args.candidates, args.images, rank), 1)
                   for _, rank, k in order}
        for n, f in enumerate(as_completed(futures.values()), 1):  # progress: the picks trained so far (stderr)
            print(f"[{time.time() - t0:7.0f}s] {n} of {len(futures)} picks trained: test top-1 {100 * f.result()['test_top1']:.2f}%",
                  file=sys.stderr, flush=True)
        trained = {key: f.result() for key, f in futures.items()}
    for k, s in enumerate(scored):
        s["picks"] = [100 * trained[k, rank]["test_top1"] for rank in range(1, len(s["ranked"]) + 1) if (k, rank) in trained]
        s["train_seconds"] = sum(trained[k, rank]["wall_seconds"] for rank in range(1, len(s["picks"]) + 1))
    top = max(len(s["picks"]) for s in scored) if scored else 0
    what = ("each label group's supernets' mean rank" if args.ensemble else "each supernet") + "'s"
    lines = [f"# A pick by the supernet's one-shot loss, trained: the {top} lowest-loss cells of {what} order", "",
             f"{len(kept)} kept searches under {Path(args.work).name}; {args.candidates} live cells of each window (draw {args.draw_seed}) "
             f"scored on {args.images} search-val images; the {top} first of {what} order trained with the recipe of "
             f"{Path(args.recipe).name} (rank r's seed: the row's seed + {RANK_SEED} x (r - 1)); its {len(rnd)} random networks "
             f"{sum(rnd) / len(rnd):.2f}%. Wall time {(time.time() - t0) / 60:.1f} min, {args.jobs} jobs x 1 thread.", "",
             "| search | labels | seed | supernet val acc | " + ("mean rank" if args.ensemble else "one-shot loss")
             + ": pick, median, worst of the candidates | "
             + " | ".join(f"rank {r}" for r in range(1, top + 1)) + " | mean | scoring s | training s |",
             "|---|---|---:|---:|---|" + "---:|" * (top + 3)]
    for s in scored:
        losses = [loss for loss, _ in s["ranked"]]
        lines.append(f"| {s['run']} | {'shuffled' if s['blind'] else 'real'} | {s['seed']} | {s['val_acc']:.3f} | "
                     f"{losses[0]:.3f}, {losses[len(losses) // 2]:.3f}, {losses[-1]:.3f} | "
                     + " | ".join(f"{a:.2f}%" for a in s["picks"]) + f" | {sum(s['picks']) / len(s['picks']):.2f}% | "
                     f"{s['score_seconds']:.0f} | {s['train_seconds']:.0f} |")
    lines += [""] + agreement
    lines += ["", "| arm | networks | supernets | mean test top-1 | std. error | mean - random (points) | 95% interval |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for blind, who in ((False, "real-label supernets' picks"), (True, "shuffled-label supernets' picks (the control)")):
        picks = [a for s in scored if s["blind"] == blind for a in s["picks"]]
        if len(picks) >= 2:
            m, se = mean_se(picks)
            w, members = welch(picks, rnd), sum(s.get("members", 1) for s in scored if s["blind"] == blind)
            lines.append(f"| {who} | {len(picks)} | {members} | {m:.2f}% | {se:.2f} | {w['diff']:+.2f} | "
                         f"[{w['lo']:+.2f}, {w['hi']:+.2f}] |")
    m, se = mean_se(rnd)
    lines += [f"| random | {len(rnd)} | | {m:.2f}% | {se:.2f} | | |", "",
              "(A supernet's picks share its errors: the interval treats the networks as independent, so it is narrower than "
              "one over supernets would be.)"]
    print("\n".join(lines))
    return 0 if scored else 1


if __name__ == "__main__":
    sys.exit(main())

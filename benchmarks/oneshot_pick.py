"""Would a pick by the trained supernet's loss beat random networks of the window? (issue 34, a first look)

``supernet_rank.py`` found that supernets trained at the long schedule order the window's trained cells by their
one-shot loss better than supernets of the same length searched on shuffled labels. This tries the derivation that
reading suggests, without building it into the search: for each kept search (``search_vs_random.py``'s work folder,
--match as in supernet_rank.py), --candidates live cells drawn from its fill window by the random arm's rule
(--draw-seed), each run inside the supernet (``supernet_rank.kept_scores``: one-shot loss on --images search-val
images of the real labels); the cell with the lowest loss is trained with the recipe of a kept result (--recipe: its
training, the search's seed as the training seed, as ``search_vs_random.py`` trains an arm's networks) and tested on
the whole test set, against that result's random networks.

    python benchmarks/oneshot_pick.py --match cells=2 --match epochs=30 \\
        --recipe benchmarks/search_vs_random.nb201-matchedlong.last.json
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def pick_one(run: str, cfg_json: dict, train_json: dict, candidates: int, draw_seed: int, images: int, data_root: str,
             threads: int) -> dict:
    """One supernet: score the candidates, train the lowest-loss cell (kept under the run folder: a second call resumes
    or reads it)."""
    import torch

    from dcanas.search.baselines import random_within
    from dcanas.search.config import SearchConfig
    from search_vs_random import _cost_fn, _train_job
    from supernet_rank import cell_key, kept_scores

    torch.set_num_threads(threads)
    cfg = SearchConfig.from_json(cfg_json)
    t0 = time.time()
    drawn = random_within(cfg.space, _cost_fn(cfg), cfg.fill_fraction * cfg.budget, cfg.budget, random.Random(draw_seed),
                          candidates, cfg.nodes)
    raw = kept_scores(Path(run), cfg, drawn, images, data_root)  # beside supernet_rank's: a cell scored once serves both
    losses = sorted((raw["cells"][cell_key(g)][1], i) for i, g in enumerate(drawn))
    best = drawn[losses[0][1]]
    scored_s = time.time() - t0
    out = Path(run) / f"oneshot-pick-d{draw_seed}-n{candidates}-i{images}"
    trained = _train_job(train_json, best.to_json(), cfg.seed, str(out), threads)
    return dict(run=Path(run).name, seed=cfg.seed, genotype=best.to_json(), loss=losses[0][0],
                loss_spread=[losses[0][0], losses[len(losses) // 2][0], losses[-1][0]], val_acc=raw["val_acc"],
                top1=100 * trained["test_top1"], score_seconds=scored_s, train_seconds=trained["wall_seconds"])


def main() -> int:
    from alpha_rank import kept_searches, label_blind
    from search_vs_random import welch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=str(HERE / ".svr-nb201"))
    p.add_argument("--results", default=str(HERE / "search_vs_random.*.last.json"))
    p.add_argument("--match", action="append", default=[], metavar="KEY=VALUE", help="only searches whose config has KEY=VALUE (JSON)")
    p.add_argument("--recipe", required=True, help="a kept search_vs_random result: its training recipe and its random networks")
    p.add_argument("--candidates", type=int, default=200, help="live cells of the window each supernet scores")
    p.add_argument("--draw-seed", type=int, default=100, help="the candidates' draw (one draw for every supernet)")
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--data-root", default="data")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    recipe = json.loads(Path(args.recipe).read_text())
    train_json = dict(recipe["training"], data_root=args.data_root)
    rnd = [100 * r["top1"] for r in recipe["rows"] if r["arm"] == "random"]
    want = [(k, json.loads(v)) for k, v in (m.split("=", 1) for m in args.match)]
    kept = [(run, record, cfg) for run, record, cfg, _ in kept_searches(args.work, args.results, want)]
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=args.jobs) as ex:
        futures = [(cfg, ex.submit(pick_one, str(run), record["config"], train_json, args.candidates, args.draw_seed, args.images,
                                   args.data_root, 1)) for run, record, cfg in kept]
        rows = [dict(f.result(), blind=label_blind(cfg)) for cfg, f in futures]
    lines = ["# A pick by the supernet's one-shot loss, trained", "",
             f"{len(rows)} kept searches under {Path(args.work).name}; {args.candidates} live cells of each window (draw {args.draw_seed}) "
             f"scored on {args.images} search-val images; the lowest one-shot loss trained with the recipe of {Path(args.recipe).name} "
             f"(the search's seed); its {len(rnd)} random networks {sum(rnd) / len(rnd):.2f}%. Wall time {(time.time() - t0) / 60:.1f} min, "
             f"{args.jobs} jobs x 1 thread.", "",
             "| search | labels | seed | supernet val acc | one-shot loss: pick, median, worst of the candidates | pick's test top-1 "
             "| scoring s | training s |",
             "|---|---|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        lo, mid, hi = r["loss_spread"]
        lines.append(f"| {r['run']} | {'shuffled' if r['blind'] else 'real'} | {r['seed']} | {r['val_acc']:.3f} | {lo:.3f}, {mid:.3f}, {hi:.3f} | "
                     f"{r['top1']:.2f}% | {r['score_seconds']:.0f} | {r['train_seconds']:.0f} |")
    for blind, who in ((False, "real labels"), (True, "shuffled labels (the control)")):
        picks = [r["top1"] for r in rows if r["blind"] == blind]
        if len(picks) >= 2:
            w = welch(picks, rnd)
            lines += ["", f"Picks of the supernets searched on {who}: {sum(picks) / len(picks):.2f}% over {len(picks)}, minus random "
                      f"{w['diff']:+.2f} points, 95% interval [{w['lo']:+.2f}, {w['hi']:+.2f}]."]
    print("\n".join(lines))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())

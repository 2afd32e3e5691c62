"""Do a search's final alphas know which networks train better? (issue 34)

Every search kept under --work (a ``search_vs_random.py`` work folder) is scored against every network of the same
fill window and training recipe that the kept result files (``search_vs_random.*.last.json``) trained: a network's
log-probability under the search's final alphas (the sum over its chosen (edge, op) pairs, the objective the
derivations maximise) against its test top-1 (its seeds' mean). Where several recipes trained networks of the
window, the one that trained the most is used. The search's own derived network is left out (its alphas chose it).
A Spearman near 0 means the alphas carry no information about the stand-alone networks, however far they moved; the
entropy column says how far that was.

    python benchmarks/record.py alpha_rank [--work benchmarks/.svr-nb201]

It reads what search_vs_random.py kept, so it runs after that (by hand: not part of `make bench`, whose fresh clone
has no kept searches).
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from statistics import median
from typing import Any, Iterator, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

HERE = Path(__file__).resolve().parent


def trained_networks(pattern: str) -> dict[str, dict[str, list[float]]]:
    """Per recipe (window and training), genotype JSON -> test top-1 of each of its trainings, from the kept result files
    matching ``pattern`` (a pooled table is not a run and is skipped; one training kept in two results counts once)."""
    from search_vs_random import kept_recipe

    trained: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for f in sorted(glob.glob(pattern)):
        d = json.loads(Path(f).read_text())
        if "rows" not in d or "meta" not in d:
            continue
        recipe = json.dumps({"window": d["meta"]["window"], **{k: v for k, v in kept_recipe(d["training"]).items() if k not in ("data_root", "device")}},
                            sort_keys=True)
        for r in d["rows"]:
            accs = [100 * r["top1"]] + ([100 * r["top1_seed1"]] if r.get("top1_seed1") is not None else [])
            seen = trained[recipe][json.dumps(r["genotype"], sort_keys=True)]
            seen.extend(a for a in accs if a not in seen)
    return trained


def label_blind(cfg: Any) -> bool:
    """Whether a kept search ran on the shuffled copy of the labels (the folder search_vs_random.shuffled_labels
    writes): the control, which cannot learn from the data."""
    from search_vs_random import SHUFFLED_ROOT

    return Path(cfg.data_root).name.startswith(SHUFFLED_ROOT)


def describe(cfg: Any) -> str:
    """A kept search's group in the tables: what its schedule and supernet were, and whether it searched on the real
    labels (``label_blind``)."""
    o = cfg.options
    shuffled = ", labels shuffled" if label_blind(cfg) else ""
    return (f"{cfg.space}, {cfg.cells} cells, {cfg.epochs} epochs on {cfg.subset or 'all'} ({cfg.warmup_epochs} warm-up), "
            f"arch lr {cfg.arch_lr:g}, bottleneck {o.bottleneck}, constraint {o.constraint}{shuffled}")


def kept_searches(work: str, results: str, match: Sequence[tuple[str, Any]] = ()) -> Iterator[tuple[Path, dict, Any, list]]:
    """Every search kept under ``work``/runs (whose config has each KEY=VALUE of ``match``) with the trained networks of
    its fill window and evaluation network: (run folder, search.json, SearchConfig, [(genotype, mean test top-1)]), the
    search's own network left out; a search with fewer than 3 such networks is skipped. Where several recipes trained
    networks of the window, the one that trained the most."""
    from dcanas.nets.genotype import genotype_from_json
    from dcanas.search.config import SearchConfig

    trained = trained_networks(results)
    for run in sorted(Path(work, "runs").glob("search-*")):
        if not (run / "checkpoint.pt").is_file() or not (run / "search.json").is_file():
            continue
        record = json.loads((run / "search.json").read_text())
        if any(record["config"].get(k) != v for k, v in match):
            continue
        cfg = SearchConfig.from_json(record["config"])
        own = json.dumps(record["summary"]["genotype"], sort_keys=True)
        net = ([cfg.fill_fraction * cfg.budget, cfg.budget], cfg.eval_C, cfg.eval_layers)
        nets = max((n for recipe, n in trained.items() if _net(json.loads(recipe)) == net), key=len, default={})
        pool = [(genotype_from_json(json.loads(g)), sum(a) / len(a)) for g, a in nets.items()
                if g != own and json.loads(g).get("space") == cfg.space]
        if len(pool) >= 3:
            yield run, record, cfg, pool


def main() -> int:
    from dcanas.costs.latency import agreement
    from dcanas.search.searcher import final_log_probs

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=str(HERE / ".svr-nb201"), help="a search_vs_random.py work folder (its runs/search-*)")
    p.add_argument("--results", default=str(HERE / "search_vs_random.*.last.json"), help="glob of kept result files")
    args = p.parse_args()
    rows = []
    for run, record, cfg, pool in kept_searches(args.work, args.results):
        scores = final_log_probs(cfg, run, [g for g, _ in pool])
        rho = agreement(scores, [a for _, a in pool]).get("spearman", math.nan)
        ent = median(h for kind in record["epochs"][-1]["learned"].values() for h in kind["entropy"])  # the final alphas' record
        o = cfg.options
        what = describe(cfg) + f", {o.sampling}, derived cells {o.derived_cells}"
        rows.append(dict(what=what, seed=cfg.seed, networks=len(pool), entropy=ent, spearman=rho, blind=label_blind(cfg)))
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["what"]].append(r)
    lines = ["# Do a search's final alphas rank the networks the benchmarks trained?", "",
             f"{len(rows)} kept searches under {Path(args.work).name}; each scored against the trained networks of its fill window "
             "(the search's own left out): Spearman between a network's log-probability under the final alphas and its test top-1 "
             "(mean over its trainings).", "",
             "| search | seeds | networks scored | median edge entropy (of uniform) | Spearman: median | min .. max |", "|---|---:|---:|---:|---:|---|"]
    for what, rs in sorted(groups.items()):
        rho = sorted(r["spearman"] for r in rs)
        lines.append(f"| {what} | {len(rs)} | {min(r['networks'] for r in rs)}-{max(r['networks'] for r in rs)} | "
                     f"{min(r['entropy'] for r in rs):.3f}-{max(r['entropy'] for r in rs):.3f} | {median(rho):+.3f} | {rho[0]:+.3f} .. {rho[-1]:+.3f} |")
    for blind, who in ((False, "Every search on the real labels"), (True, "Every search on shuffled labels (the control)")):
        every = sorted(r["spearman"] for r in rows if r["blind"] == blind)
        if every:
            lines += ["", f"{who}: median {median(every):+.3f}, {sum(v > 0 for v in every)} of {len(every)} above 0 "
                      f"(range {every[0]:+.3f} .. {every[-1]:+.3f})."]
    print("\n".join(lines))
    return 0 if rows else 1


def _net(recipe: dict) -> tuple:
    return recipe["window"], recipe["C"], recipe["layers"]


if __name__ == "__main__":
    sys.exit(main())

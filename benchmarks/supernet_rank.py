"""Do a search's trained supernet weights know which networks train better? (issue 34)

``alpha_rank.py`` found that the final alphas carry no information about which cells of the window train better
(Spearman -0.03). This asks the supernet's weights instead, the way weight-sharing NAS is judged (Yu et al. 2020,
"Evaluating the search phase of NAS"; Wang et al. 2021, "Rethinking architecture selection in differentiable NAS"):

  one-shot     every trained network of the search's window run inside the supernet (its cells as one-hot op weights
               in the mixed cells, an edge it does not keep as ``none``, and as the genotype of the derived cells), batch-norm statistics of the batch, on
               --images search-val images: its accuracy (and loss) there;
  perturbation each (edge, op) of the mixed cells removed in turn from the supernet as trained (its alpha to -inf, the
               rest renormalised): how much the search-val loss rises; a network's score is the sum over its
               chosen (edge, op) pairs (DARTS-PT's removal score, summed as the derivations sum log-probabilities).

Each against the networks' test top-1 (their trainings' mean; the search's own network left out), Spearman. Reads the
searches and result files ``search_vs_random.py`` kept, as ``alpha_rank.py`` does.

    python benchmarks/supernet_rank.py [--work benchmarks/.svr-nb201] [--match cells=2] [--images 1024] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from alpha_rank import describe, kept_searches  # noqa: E402  (the kept searches and their windows' trained networks, read one way)


def _evaluate(model, kept: list) -> tuple[float, float]:
    """The model's mean cross-entropy and accuracy on the kept search-val batches (no gradient)."""
    import torch
    import torch.nn.functional as F

    loss = correct = seen = 0.0
    with torch.no_grad():
        for x, y in kept:
            out = model(x)
            loss += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
    return loss / seen, correct / seen


def _set_alphas(model, table: dict) -> None:
    import torch

    with torch.no_grad():
        for t, a in model.alphas.items():
            a.copy_(table[t])


def score_search(run: Path, cfg, pool: list, images: int, data_root: str, device: str = "cpu") -> dict:
    """One kept search's supernet against the pool of (genotype, test top-1): the Spearman of its one-shot accuracy, its
    one-shot loss and its perturbation score with the test top-1, and the supernet's own search-val accuracy."""
    import torch

    from dcanas.costs.latency import agreement
    from dcanas.data import datasets as D
    from dcanas.files import load_checkpoint
    from dcanas.nets.genotype import genotype_from_json
    from dcanas.search.config import supernet_config
    from dcanas.search.derive import genotype_log_prob, genotype_picks
    from dcanas.search.supernet import Supernet

    model = Supernet(supernet_config(cfg))
    state = load_checkpoint(run / "checkpoint.pt", "run the search again")
    model.load_state_dict(state["model"])
    model.to(device)
    model.genotype = genotype_from_json(state["genotype"])  # what the derived cells ran at the search's end
    model.train()  # batch statistics: every network normalised by its own activations (no recalibration pass)
    _, s_val = D.search_split(D.load_split(cfg.dataset, data_root, train=True), cfg.subset, cfg.seed)
    x, y = next(D.batches(s_val, D.get_spec(cfg.dataset), images, shuffle=False))
    kept = list(zip(x.to(device).split(256), y.to(device).split(256)))
    trained = {t: a.detach().clone() for t, a in model.alphas.items()}
    base_loss, base_acc = _evaluate(model, kept)
    # perturbation: each (edge, op) of the mixed cells removed in turn (its alpha to -inf, the rest renormalised)
    removal = {t: torch.zeros(a.shape, dtype=torch.float64) for t, a in trained.items()}
    for t, table in removal.items():
        for e in range(table.shape[0]):
            for k in range(table.shape[1]):
                cut = trained[t].clone()
                cut[e, k] = -1e9
                _set_alphas(model, {**trained, t: cut})
                table[e, k] = _evaluate(model, kept)[0] - base_loss
    pert = [genotype_log_prob(g, removal, model.op_names, cfg.nodes) for g, _ in pool]
    # one-shot: every network inside the supernet: its ops one-hot in the mixed cells (an edge it does not keep: `none`,
    # where the space has it), its genotype in the derived cells
    none = model.op_names.index("none") if "none" in model.op_names else None
    one_acc, one_loss = [], []
    for g, _ in pool:
        hot = {t: torch.full_like(a, -1e9) for t, a in trained.items()}
        if none is not None:
            for t in hot:
                hot[t][:, none] = 0.0
        for t, e, k in genotype_picks(g, model.op_names, cfg.nodes):
            hot[t][e, :] = -1e9
            hot[t][e, k] = 0.0
        _set_alphas(model, hot)
        model.genotype = g
        loss, acc = _evaluate(model, kept)
        one_acc.append(acc)
        one_loss.append(-loss)
    accs = [a for _, a in pool]

    def rho(score: list[float]) -> float:
        return agreement(score, accs).get("spearman", math.nan)

    return dict(val_acc=base_acc, one_acc=rho(one_acc), one_loss=rho(one_loss), pert=rho(pert))


def scored(run: Path, cfg, pool: list, images: int, data_root: str, device: str = "cpu") -> dict:
    """``score_search``, kept in the search's run folder under a key of what determines it (the checkpoint, the pool
    with its accuracies, the images and the data), so that a second call (another grouping, a re-render) costs nothing."""
    import hashlib

    from dcanas.files import write_json

    h = hashlib.sha256()
    for part in (str((run / "checkpoint.pt").stat().st_mtime_ns), json.dumps([[g.to_json(), a] for g, a in pool], sort_keys=True),
                 str(images), str(Path(data_root).resolve()), device):
        h.update(part.encode() + b"\0")
    path = run / f"supernet-rank-{h.hexdigest()[:12]}.json"
    if path.is_file():
        return json.loads(path.read_text())
    r = score_search(run, cfg, pool, images, data_root, device)
    write_json(path, r)
    return r


def main() -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=str(HERE / ".svr-nb201"))
    p.add_argument("--results", default=str(HERE / "search_vs_random.*.last.json"))
    p.add_argument("--match", action="append", default=[], metavar="KEY=VALUE", help="only searches whose config has KEY=VALUE (JSON)")
    p.add_argument("--images", type=int, default=1024, help="search-val images each network is scored on")
    p.add_argument("--limit", type=int, default=0, help="at most this many searches (0: all)")
    p.add_argument("--data-root", default="data")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    want = [(k, json.loads(v)) for k, v in (m.split("=", 1) for m in args.match)]
    rows = []
    for run, _, cfg, pool in kept_searches(args.work, args.results, want):
        t0 = time.time()
        r = scored(run, cfg, pool, args.images, args.data_root, args.device)
        what = describe(cfg)
        rows.append(dict(r, what=what, networks=len(pool)))
        print(f"- {run.name} seed {cfg.seed} {what}: supernet val acc {r['val_acc']:.3f}; Spearman one-shot acc {r['one_acc']:+.3f}, "
              f"one-shot loss {r['one_loss']:+.3f}, perturbation {r['pert']:+.3f} ({len(pool)} networks, {time.time() - t0:.0f} s)", flush=True)
        if args.limit and len(rows) >= args.limit:
            break
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["what"]].append(r)
    lines = ["", "# Do a search's supernet weights rank the networks the benchmarks trained?", "",
             f"{len(rows)} kept searches under {Path(args.work).name}, each against the trained networks of its window (its own left out); "
             f"{args.images} search-val images; Spearman with test top-1 (mean over trainings).", "",
             "| search | seeds | networks | supernet val acc | one-shot acc: median (range) | one-shot loss: median (range) | perturbation: median (range) |",
             "|---|---:|---:|---|---|---|---|"]
    for what, rs in sorted(groups.items()):
        cols = []
        for key in ("one_acc", "one_loss", "pert"):
            v = sorted(r[key] for r in rs)
            cols.append(f"{median(v):+.3f} ({v[0]:+.3f} .. {v[-1]:+.3f})")
        lines.append(f"| {what} | {len(rs)} | {rs[0]['networks']} | {min(r['val_acc'] for r in rs):.3f}-{max(r['val_acc'] for r in rs):.3f} | "
                     + " | ".join(cols) + " |")
    print("\n".join(lines))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())

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

Each against the networks' test top-1 (their trainings' mean; the search's own network left out), Spearman; and what a
pick by the score would have given: the mean test top-1 of the pool's TOP best-scored networks minus the pool's mean.
Reads the searches and result files ``search_vs_random.py`` kept, as ``alpha_rank.py`` does.

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


TOP = 5  # a pick by a score: the mean test top-1 of the pool's TOP best-scored networks, minus the pool's mean


def cell_key(genotype) -> str:
    """A genotype's key in the kept scores (and in the result files' pools): its JSON, keys sorted."""
    return json.dumps(genotype.to_json(), sort_keys=True)


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


def _open_supernet(run: Path, cfg, images: int, data_root: str, device: str):
    """A kept search's trained supernet (batch statistics: every network normalised by its own activations, no
    recalibration pass) and the first ``images`` search-val images of the real labels, in batches of 256."""
    from dcanas.data import datasets as D
    from dcanas.files import load_checkpoint
    from dcanas.nets.genotype import genotype_from_json
    from dcanas.search.config import supernet_config
    from dcanas.search.supernet import Supernet

    model = Supernet(supernet_config(cfg))
    state = load_checkpoint(run / "checkpoint.pt", "run the search again")
    model.load_state_dict(state["model"])
    model.to(device)
    model.genotype = genotype_from_json(state["genotype"])  # what the derived cells ran at the search's end
    model.train()
    _, s_val = D.search_split(D.load_split(cfg.dataset, data_root, train=True), cfg.subset, cfg.seed)
    x, y = next(D.batches(s_val, D.get_spec(cfg.dataset), images, shuffle=False))
    return model, list(zip(x.to(device).split(256), y.to(device).split(256)))


def cell_scores(run: Path, cfg, genotypes: list, kept: dict, images: int, data_root: str, device: str = "cpu") -> dict:
    """The supernet's raw scores, ``kept`` (a previous call's result, or {}) extended by what it lacks: its own
    search-val accuracy, the perturbation table (each (edge, op) of the mixed cells removed in turn: its alpha to -inf,
    the rest renormalised; the rise of the search-val loss) and, per genotype (its JSON), the one-shot accuracy and
    loss (its ops one-hot in the mixed cells, an edge it does not keep as ``none`` where the space has it, its genotype
    in the derived cells). A pool that grows costs only its new cells."""
    import torch

    from dcanas.search.derive import genotype_picks

    cells = dict(kept.get("cells", {}))
    todo = [g for g in genotypes if cell_key(g) not in cells]
    if "removal" in kept and not todo:
        return kept
    model, batches = _open_supernet(run, cfg, images, data_root, device)
    trained = {t: a.detach().clone() for t, a in model.alphas.items()}
    out = dict(kept)
    if "removal" not in kept:
        base_loss, out["val_acc"] = _evaluate(model, batches)
        removal = {t: [[0.0] * a.shape[1] for _ in range(a.shape[0])] for t, a in trained.items()}
        for t, table in removal.items():
            for e in range(len(table)):
                for k in range(len(table[e])):
                    cut = trained[t].clone()
                    cut[e, k] = -1e9
                    _set_alphas(model, {**trained, t: cut})
                    table[e][k] = _evaluate(model, batches)[0] - base_loss
        out["removal"] = removal
    none = model.op_names.index("none") if "none" in model.op_names else None
    for g in todo:
        hot = {t: torch.full_like(a, -1e9) for t, a in trained.items()}
        if none is not None:
            for t in hot:
                hot[t][:, none] = 0.0
        for t, e, k in genotype_picks(g, model.op_names, cfg.nodes):
            hot[t][e, :] = -1e9
            hot[t][e, k] = 0.0
        _set_alphas(model, hot)
        model.genotype = g
        loss, acc = _evaluate(model, batches)
        cells[cell_key(g)] = [acc, loss]
    out["cells"] = cells
    out["op_names"] = list(model.op_names)
    return out


def kept_scores(run: Path, cfg, genotypes: list, images: int, data_root: str, device: str = "cpu") -> dict:
    """``cell_scores`` kept in the search's run folder under a key of what determines them (the checkpoint, the images,
    the data, the device): a second call, another pool or another script scores only the cells the file lacks."""
    import hashlib

    from dcanas.files import write_json

    h = hashlib.sha256()
    for part in (str((run / "checkpoint.pt").stat().st_mtime_ns), str(images), str(Path(data_root).resolve()), device):
        h.update(part.encode() + b"\0")
    path = run / f"supernet-scores-{h.hexdigest()[:12]}.json"
    kept = json.loads(path.read_text()) if path.is_file() else {}
    raw = cell_scores(run, cfg, genotypes, kept, images, data_root, device)
    if raw is not kept:
        write_json(path, raw)
    return raw


def scored(run: Path, cfg, pool: list, images: int, data_root: str, device: str = "cpu") -> dict:
    """One kept search's supernet against the pool of (genotype, test top-1): the Spearman of its one-shot accuracy, its
    one-shot loss (lower is better) and its perturbation score (the removal table summed over a network's chosen
    (edge, op) pairs, as the derivations sum log-probabilities) with the test top-1, the supernet's own search-val
    accuracy, and what a pick of each score's TOP would have trained to (``kept_scores``: each cell scored once)."""
    import torch

    from dcanas.costs.latency import agreement
    from dcanas.search.derive import genotype_log_prob

    raw = kept_scores(run, cfg, [g for g, _ in pool], images, data_root, device)
    removal = {t: torch.tensor(v, dtype=torch.float64) for t, v in raw["removal"].items()}
    one = [raw["cells"][cell_key(g)] for g, _ in pool]
    pert = [genotype_log_prob(g, removal, raw["op_names"], cfg.nodes) for g, _ in pool]
    accs = [a for _, a in pool]

    def rho(score: list[float]) -> float:
        return agreement(score, accs).get("spearman", math.nan)

    def top(score: list[float]) -> float:  # what a pick by the score would have trained to: its best TOP, minus the pool
        best = sorted(range(len(accs)), key=lambda i: -score[i])[:TOP]
        return sum(accs[i] for i in best) / len(best) - sum(accs) / len(accs)

    loss_score = [-loss for _, loss in one]
    return dict(val_acc=raw["val_acc"], one_acc=rho([a for a, _ in one]), one_loss=rho(loss_score), pert=rho(pert),
                top_loss=top(loss_score), top_pert=top(pert))


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
              f"one-shot loss {r['one_loss']:+.3f}, perturbation {r['pert']:+.3f}; its top {TOP} by one-shot loss {r['top_loss']:+.2f} points, "
              f"by perturbation {r['top_pert']:+.2f} against the pool's mean ({len(pool)} networks, {time.time() - t0:.0f} s)", flush=True)
        if args.limit and len(rows) >= args.limit:
            break
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["what"]].append(r)
    lines = ["", "# Do a search's supernet weights rank the networks the benchmarks trained?", "",
             f"{len(rows)} kept searches under {Path(args.work).name}, each against the trained networks of its window (its own left out); "
             f"{args.images} search-val images; Spearman with test top-1 (mean over trainings).", "",
             f"| search | seeds | networks | supernet val acc | one-shot acc: median (range) | one-shot loss: median (range) | perturbation: median (range) "
             f"| top {TOP} by one-shot loss, minus the pool (points): median | top {TOP} by perturbation |",
             "|---|---:|---:|---|---|---|---|---:|---:|"]
    for what, rs in sorted(groups.items()):
        cols = []
        for key in ("one_acc", "one_loss", "pert"):
            v = sorted(r[key] for r in rs)
            cols.append(f"{median(v):+.3f} ({v[0]:+.3f} .. {v[-1]:+.3f})")
        lines.append(f"| {what} | {len(rs)} | {rs[0]['networks']} | {min(r['val_acc'] for r in rs):.3f}-{max(r['val_acc'] for r in rs):.3f} | "
                     + " | ".join(cols) + f" | {median(r['top_loss'] for r in rs):+.2f} | {median(r['top_pert'] for r in rs):+.2f} |")
    print("\n".join(lines))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())

"""The report's plots (matplotlib, PNG): genotype, architecture weights and what they learned, the constraint,
training curves, accuracy against cost, latency distributions, the latency model, where the time goes."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..files import atomic_write


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _plt().close(fig)
    return atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def plot_alphas(search: dict[str, Any], op_names: list[str], path: Path) -> Path:
    """softmax(alpha) per edge over the search epochs, one panel per edge, per cell type."""
    plt = _plt()
    epochs = search["epochs"]
    kinds = list(epochs[0]["alphas"])
    n_edges = len(epochs[0]["alphas"][kinds[0]])
    cols = min(n_edges, 7)
    rows = -(-n_edges // cols)
    fig, axes = plt.subplots(rows * len(kinds), cols, figsize=(2.1 * cols, 1.7 * rows * len(kinds)), squeeze=False, sharey=True)
    x = [e["epoch"] for e in epochs]
    for ki, kind in enumerate(kinds):
        for e in range(rows * cols):
            ax = axes[ki * rows + e // cols][e % cols]
            if e >= n_edges:
                ax.axis("off")
                continue
            for k, name in enumerate(op_names):
                ax.plot(x, [ep["alphas"][kind][e][k] for ep in epochs], label=name, lw=1.2)
            ax.set_title(f"{kind} edge {e}", fontsize=8)
            ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=5, loc="upper left")
    fig.suptitle("softmax(alpha) per edge over the search epochs", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_learning(search: dict[str, Any], path: Path) -> Path | None:
    """What the search learned (search/learned.py): each edge's op-distribution entropy (share of uniform) over
    the epochs, the share of the push on alpha that came from the loss and from each budget, and each edge's
    margin between the chosen op and the runner-up at the end. None for a search recorded before these existed."""
    epochs = [e for e in search["epochs"] if "learned" in e]
    if not epochs:
        return None
    plt = _plt()
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.4))
    x = [e["epoch"] for e in epochs]
    colors = {"normal": "tab:blue", "reduce": "tab:orange"}
    for kind in epochs[-1]["learned"]:
        n = len(epochs[-1]["learned"][kind]["entropy"])
        for k in range(n):
            a.plot(x, [e["learned"][kind]["entropy"][k] for e in epochs], color=colors.get(kind, "tab:blue"), lw=0.7, alpha=0.6,
                   label=kind if k == 0 else None)
    from ..search.learned import SEPARATED_ENTROPY

    a.axhline(SEPARATED_ENTROPY, color="k", ls=":", lw=1, label="separated below")
    _label(a, "epoch", "entropy / uniform's", title="each edge's op distribution", legend=7)
    shares = [e for e in epochs if e.get("gradient_share")]
    for part in (shares[-1]["gradient_share"] if shares else {}):
        b.plot([e["epoch"] for e in shares], [e["gradient_share"].get(part, 0.0) for e in shares], "o-", ms=3,
               label="validation loss" if part == "loss" else f"budget: {part}")
    b.set_ylim(0, 1.02)
    _label(b, "epoch", "share of the alpha gradient", title="what pushed alpha (per-step norms, epoch mean)", legend=7)
    last = epochs[-1]["learned"]
    pos = 0
    for kind, r in last.items():
        m = r["margin"]
        c.bar(range(pos, pos + len(m)), m, color=colors.get(kind, "tab:blue"), label=kind)
        pos += len(m) + 1
    _label(c, "edge", "p(chosen) - p(runner-up)", title="margin per edge at the end", legend=7)
    fig.tight_layout()
    return _save(fig, path)


def _label(ax, xlabel: str, ylabel: str, title: str | None = None, legend: int | None = None) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    if legend:
        ax.legend(fontsize=legend)


def plot_constraint(search: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    steps, summary = search["steps"], search["summary"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    a.plot([s[0] for s in steps], label="k_s (expected cost, eq. 3)")
    a.axhline(summary["K_prime"], color="r", ls="--", label="K' (search budget)")
    a.axhline(summary["K_d"], color="k", ls=":", label="K_d (device budget)")
    _label(a, "alpha step", summary["metric"], legend=7)
    b.plot([s[1] for s in steps], color="tab:purple")
    _label(b, "alpha step", "lambda", title="Lagrange multiplier")
    fig.tight_layout()
    return _save(fig, path)


def plot_training(train: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    ep = train["epochs"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    for key, label in (("train_acc", "train"), ("val_top1", "validation (chooses best.pt)"), ("test_top1", "test top-1")):
        pts = [(e["epoch"], e[key]) for e in ep if e.get(key) is not None]
        if pts:
            a.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    _label(a, "epoch", "accuracy", legend=8)
    for key, label in (("train_loss", "train"), ("test_loss", "test")):
        pts = [(e["epoch"], e[key]) for e in ep if e.get(key) is not None]  # the test split may be scored every N epochs
        b.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    _label(b, "epoch", "loss", legend=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_pareto(points: list[dict[str, Any]], budget: float | None, path: Path) -> Path:
    """Accuracy against parameters: the searched network and the baselines trained (paper Fig. 2)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for p in points:
        ax.scatter(p["params"], 100 * p["test_top1"], s=60, marker="*" if p["name"] == "DCA-NAS (searched)" else "o")
        ax.annotate(p["name"], (p["params"], 100 * p["test_top1"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    if budget:
        ax.axvline(budget, color="r", ls="--", lw=1, label="params budget")
        ax.legend(fontsize=8)
    ax.set_xlabel("parameters")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("accuracy vs parameters", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_latency(result: dict[str, Any], budget_ms: float | None, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.hist(result["latencies_ms"], bins=30, color="tab:green")
    ax.axvline(result["latency_ms"]["p50"], color="k", ls="-", label=f"p50 {result['latency_ms']['p50']:.3f} ms")
    ax.axvline(result["latency_ms"]["p90"], color="k", ls=":", label=f"p90 {result['latency_ms']['p90']:.3f} ms")
    if budget_ms and budget_ms < 5 * result["latency_ms"]["max"]:
        ax.axvline(budget_ms, color="r", ls="--", label=f"budget {budget_ms} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("runs")
    ax.set_title(f"on-device latency: {result['device']} ({result['engine']}, {result['machine']})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_latency_model(model: dict[str, Any], derived: tuple[float, float] | None, path: Path) -> Path:
    """The latency model's predictions against end-to-end measurements: its calibration networks, and
    the derived network (predicted by the model, measured by the profile stage)."""
    from ..costs.latency import agreement

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.0, 4.2))
    cal = model.get("calibration") or []
    m = [c["measured_ms"] for c in cal]
    pr = [c["predicted_ms"] for c in cal]
    if cal:
        a = agreement(pr, m)
        ax.scatter(m, pr, s=18, zorder=3, label=f"calibration ({len(cal)}): Spearman {a.get('spearman', float('nan')):.3f}, Kendall "
                   f"{a.get('kendall', float('nan')):.3f}\nMAPE {100 * a['mape']:.1f}%, within +-10% {100 * a['within_10']:.0f}%")
    gcal = [(c["measured_ms"], c["graph_predicted_ms"]) for c in cal if c.get("graph_predicted_ms") is not None]
    if len(gcal) >= 3:  # the graph model's leave-one-out predictions would be fairer; these are its fit
        gm, gp = [x for x, _ in gcal], [p for _, p in gcal]
        a = agreement(gp, gm)
        ax.scatter(gm, gp, s=14, marker="x", color="tab:green", zorder=3,
                   label=f"graph model, fit ({len(gcal)}): Spearman {a.get('spearman', float('nan')):.3f}, MAPE {100 * a['mape']:.1f}%")
        pr = pr + gp
    if derived:
        ax.scatter([derived[1]], [derived[0]], marker="*", s=160, color="tab:red", zorder=4, label="derived network")
    vals = m + pr + (list(derived) if derived else [])
    if vals:
        lo, hi = min(vals) * 0.9, max(vals) * 1.1
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.fill_between([lo, hi], [0.9 * lo, 0.9 * hi], [1.1 * lo, 1.1 * hi], color="0.85", label="+-10%", zorder=0)
    ax.set_xlabel("measured p50 (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.set_title("latency model: predicted vs measured", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _genotype_cells(genotype: dict[str, Any]) -> list[tuple[str, str, list, int]]:
    """(title, cell kind as the per-op profile names it, edges [op, source], inputs) per cell type."""
    from ..nets.genotype import genotype_from_json

    return [(title, kind, [list(e) for e in edges], inputs) for title, kind, edges, inputs in genotype_from_json(genotype).cells()]


def plot_genotype(genotype: dict[str, Any], path: Path, edge_us: dict[str, list[float]] | None = None, axes=None) -> Path | None:
    """The two cells of a DARTS genotype (or the NB201 cell) as graphs drawn with matplotlib; with
    ``edge_us`` (cell kind -> us per edge, from the per-op profile) each edge is coloured by its time."""
    from ..nets.genotype import DARTS_INPUTS, darts_edge_node

    plt = _plt()
    cells = _genotype_cells(genotype)
    own = axes is None
    if own:
        fig, axes = plt.subplots(1, len(cells), figsize=(6.5 * len(cells), 3.6), squeeze=False)
        axes = axes[0]
    top = max((max(v) for v in (edge_us or {}).values() if v), default=0.0) or 1.0
    cmap = plt.get_cmap("YlOrRd")
    for ax, (title, kind, edges, inputs) in zip(axes, cells):
        times = (edge_us or {}).get(kind)
        if inputs == DARTS_INPUTS:
            targets = [darts_edge_node(k) for k in range(len(edges))]
        else:
            targets = [j for j in range(1, 4) for _ in range(j)]
        n_nodes = max(targets) + 1
        pos = {i: (i, (0.6 if i % 2 else -0.6) if i < inputs else (0.9 if i % 2 else -0.9) * 0.5) for i in range(n_nodes)}
        pos["out"] = (n_nodes, 0)
        for e, ((op, src), dst) in enumerate(zip(edges, targets)):
            (x0, y0), (x1, y1) = pos[src], pos[dst]
            us = times[e] if times and e < len(times) else None
            color = "tab:blue" if times is None else cmap(0.15 + 0.85 * (us or 0.0) / top)
            ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", color=color, lw=1 if us is None else 1 + 3 * us / top,
                                                                  connectionstyle=f"arc3,rad={0.25 if (src + dst) % 2 else -0.25}"))
            f = 0.5 if times is None else (0.3, 0.5, 0.7)[e % 3]  # labels spread along their edges when they carry times
            ax.text(x0 + f * (x1 - x0), y0 + f * (y1 - y0) + 0.08, op if us is None else f"{op}\n{us:.0f} us", fontsize=6.5,
                    ha="center", color="tab:red" if times is None else "black")
        for n in range(n_nodes):
            label = (f"c_{{k-{2 - n}}}" if inputs == 2 else "in") if n < inputs else str(n)
            ax.add_patch(plt.Circle(pos[n], 0.18, color="lightsteelblue" if n >= inputs else "lightgreen", zorder=3))
            ax.text(*pos[n], f"${label}$" if n < inputs else label, ha="center", va="center", fontsize=8, zorder=4)
        for n in range(inputs, n_nodes) if inputs == 2 else [n_nodes - 1]:
            ax.annotate("", pos["out"], pos[n], arrowprops=dict(arrowstyle="->", color="gray", lw=0.6))
        ax.add_patch(plt.Rectangle((pos["out"][0] - 0.2, -0.2), 0.4, 0.4, color="khaki", zorder=3))
        ax.text(*pos["out"], "out", ha="center", va="center", fontsize=8, zorder=4)
        ax.set_xlim(-0.5, n_nodes + 0.5)
        ax.set_ylim(-1.3, 1.3)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(title if times is None else f"{title}: us per run, summed over its {kind} cells", fontsize=10 if times is None else 8)
    if not own:
        return None
    fig.tight_layout()
    return _save(fig, path)


def plot_op_time(op_map: dict[str, Any], genotype: dict[str, Any] | None, path: Path) -> Path:
    """Where the time goes on the device: us per run for the stem, each cell and the head (onnxruntime's
    node profile), and the genotype with each edge coloured by its time."""
    from .tables import part_order

    plt = _plt()
    n_cells = len(_genotype_cells(genotype)) if genotype and op_map.get("per_edge") else 0
    fig = plt.figure(figsize=(6.5 * max(n_cells, 1), 3.6 + 4.2 * bool(n_cells)))
    grid = fig.add_gridspec(1 + bool(n_cells), max(n_cells, 1), height_ratios=[1, 1.3] if n_cells else [1])
    ax = fig.add_subplot(grid[0, :])
    parts = part_order(op_map["per_cell"])
    us = [op_map["per_cell"][k] for k in parts]
    ax.bar(range(len(parts)), us, color="tab:orange")
    ax.set_xticks(range(len(parts)), parts, rotation=60, fontsize=7)
    _label(ax, "", "us per run (node time)", title=f"time per cell: {op_map['total_us']:.0f} us of node time, "
           f"{100 * op_map['placed_share']:.1f}% placed")
    if n_cells:
        plot_genotype(genotype, path, op_map["per_edge"], axes=[fig.add_subplot(grid[1, k]) for k in range(n_cells)])
    fig.tight_layout()
    return _save(fig, path)

"""The look-up graph (paper Section 3.2, Appendix B): the derived network's real cost K_d as a
function of the search budget K', measured by one search per grid point (in parallel processes),
made monotone conservatively (the running maximum: a grid point's K_d is never taken lower than any
K_d measured at a smaller K'), cached per (space, dataset, metric, search options), and inverted:
``lookup(K_d) -> K'``, which never returns a grid point whose measured K_d is above the budget."""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

from ..progress import step_bar
from .. import __version__
from ..costs.metrics import metric, metric_round, metric_text, round_inward
from ..errors import UserError
from ..files import atomic_write, cache_dir, write_json
from .config import SearchConfig, cost_model, identity
from .executor import Runner
from .searcher import run_search

# Fields that change nothing about the K' -> K_d relation (where data lives, which device, the budgets, the
# derivation rule: a LUG records what the arg-max derivation gives at each K').
_NOT_IN_KEY = ("budget", "search_budget", "data_root", "device", "seed", "derive", "fused")
# The other budgets a search holds, and the export format a size budget refers to, are budgets too: every derivation
# holds each of them exactly whatever K' the LUG gives, and with them in the key a run under a profile with a size
# budget never found the LUG `dcanas lug build` made (which holds the primary metric alone). They enter the key at
# their defaults, so the keys of LUGs built before stay what they were.
_AT_DEFAULT = {"extra_budgets": {}, "size_format": "tflite"}


def default_cache_dir() -> Path:
    return cache_dir("lug")


def options_key(cfg) -> dict[str, Any]:
    return {k: _AT_DEFAULT.get(k, v) for k, v in identity(cfg).items() if k not in _NOT_IN_KEY}


def options_hash(cfg) -> str:
    return hashlib.sha256(json.dumps(options_key(cfg), sort_keys=True).encode()).hexdigest()[:16]


def lug_filename(cfg) -> str:
    return f"{cfg.space}-{cfg.dataset}-{cfg.metric}-{options_hash(cfg)}.json"


@dataclass
class LUG:
    space: str
    dataset: str
    metric: str
    options_hash: str
    options: dict[str, Any]
    points: list[dict[str, Any]]           # measured: K_prime, K_d, run_dir
    monotone: list[float] = field(default_factory=list)  # the upper envelope: running max of the measured K_d
    repaired: list[int] = field(default_factory=list)    # indices whose K_d the envelope raised
    code_version: str = __version__

    @classmethod
    def from_points(cls, cfg, points: list[dict[str, Any]]) -> "LUG":
        pts = sorted(points, key=lambda p: p["K_prime"])
        mono = upper_envelope([float(p["K_d"]) for p in pts])
        repaired = [i for i, (p, m) in enumerate(zip(pts, mono)) if abs(p["K_d"] - m) > 1e-9]
        return cls(cfg.space, cfg.dataset, cfg.metric, options_hash(cfg), options_key(cfg), pts, mono, repaired)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, path: str | Path) -> "LUG":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"LUG file {path} not found; build one with `dcanas lug build ...`")
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise UserError(f"{path} is not a LUG file ({exc})") from None

    @property
    def range(self) -> tuple[float, float]:
        return (self.monotone[0], self.monotone[-1])

    def lookup(self, K_d: float) -> float:
        """The largest K' whose envelope K_d (linearly interpolated) does not exceed ``K_d``. The
        envelope is at least every K_d measured at or below that K', so no measured grid point at or
        below the answer is over the budget; a budget above the top of the range takes the top point."""
        xs = [p["K_prime"] for p in self.points]
        ys = self.monotone
        lo, hi = self.range
        if K_d >= hi:
            return xs[-1]
        if K_d < lo:
            t = lambda v: metric_text(self.metric, v)  # noqa: E731
            raise UserError(f"budget {t(K_d)} is below this LUG's measured range {t(lo)} .. {t(hi)} ({self.metric}); "
                            f"rebuild it with a lower --range or pick a budget inside it")
        best = xs[0]
        for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
            if y1 <= K_d:
                best = x1
            elif y0 <= K_d < y1:
                best = max(best, x0 + (x1 - x0) * (K_d - y0) / (y1 - y0))
        return best


def upper_envelope(ys: list[float]) -> list[float]:
    """The running maximum: the smallest non-decreasing sequence that is nowhere below ``ys``.
    (Least-squares pooling would lower a measured K_d and let a lookup pick a K' measured over budget.)"""
    out: list[float] = []
    for y in ys:
        out.append(max(y, out[-1]) if out else y)
    return out


def _run_point(cfg_json: dict[str, Any], K_prime: float, run_dir: str, threads: int) -> dict[str, Any]:
    """One grid point in its own process, limited to ``threads`` torch threads."""
    cfg = replace(SearchConfig.from_json(cfg_json), budget=K_prime, search_budget=K_prime)
    summary = run_seed(cfg.to_json(), K_prime, run_dir, threads)
    return dict(K_prime=K_prime, K_d=natural_cost(summary), run_dir=run_dir, val_acc=summary["val_acc"])


def run_seed(cfg_json: dict[str, Any], K_prime: Optional[float], run_dir: str, threads: int) -> dict[str, Any]:
    """One search in its own process or Ray task (a seed of ``dcanas run --seeds``, a LUG point), limited to
    ``threads`` torch threads and resumed from its checkpoint; its summary."""
    import torch

    torch.set_num_threads(threads)
    resume = (Path(run_dir) / "checkpoint.pt").exists()
    return run_search(SearchConfig.from_json(cfg_json), run_dir, K_prime, resume=resume, progress=lambda m: None).summary


def natural_cost(summary: dict[str, Any]) -> float:
    """What the search at K' produces by itself: the arg-max derivation's cost (the budget-aware one is
    cut to its budget by construction, so it would say nothing about K')."""
    return summary["derivations"]["argmax"]["cost"][summary["metric"]]


def point_from_run(run_dir: Path) -> Optional[dict[str, Any]]:
    """A finished search run directory -> a LUG point (None if unfinished)."""
    report = run_dir / "search.json"
    if not (report.is_file() and (run_dir / "genotype.json").is_file()):
        return None
    s = json.loads(report.read_text())
    return dict(K_prime=s["summary"]["K_prime"], K_d=natural_cost(s["summary"]), run_dir=str(run_dir),
                val_acc=s["summary"]["val_acc"], config=s["config"])


def grid(lo: float, hi: float, n: int, name: str = "params") -> list[float]:
    """``n`` search budgets from ``lo`` to ``hi``, at the metric's resolution (whole params, 1e-4 ms); the ends are
    rounded inwards, so that the cheapest point is not under the cheapest network (0.15714 ms is not 0.1571)."""
    if n < 2:
        raise UserError(f"--points must be >= 2, got {n}")
    ends = round_inward(name, lo, hi)
    points = [ends[0]] + [lo + (hi - lo) * i / (n - 1) for i in range(1, n - 1)] + [ends[1]]
    return [metric_round(name, p) for p in points]


def _slug(metric: str, kp: float) -> str:
    """A search budget in a folder name: 200000, or 0p4512 for 0.4512 ms."""
    return str(metric_round(metric, kp)).replace(".", "p")


def build_lug(cfg, *, points: int = 5, value_range: Optional[tuple[float, float]] = None, jobs: int = 1,
              cache_dir: Optional[Path] = None, runs_dir: Optional[Path] = None, max_points: Optional[int] = None,
              progress: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
              runner: Optional[Runner] = None) -> tuple[LUG, Path]:
    """Run the grid (resuming finished and checkpointed points), then refine it where K_d jumps by more
    than 5% between neighbours (bisection, up to ``max_points`` in all; default 2 x points), and write
    the LUG JSON + PNG atomically."""
    cm = cost_model(cfg)
    lo, hi = value_range or cm.feasible_range()
    flo, fhi = cm.feasible_range()
    if not (flo <= lo < hi <= fhi):
        t = lambda v: metric_text(cfg.metric, v)  # noqa: E731
        raise UserError(f"--range {t(lo)} {t(hi)} must lie inside the feasible range {t(flo)} .. {t(fhi)} and LO < HI")
    runner = runner or Runner(jobs=jobs)
    max_points = max(points, max_points if max_points is not None else 2 * points)
    cache = Path(cache_dir or default_cache_dir())
    runs = Path(runs_dir or cache / "runs" / options_hash(cfg))
    done = _measure(cfg, [(runs / f"point-{i:02d}-{_slug(cfg.metric, kp)}", kp) for i, kp in enumerate(grid(lo, hi, points, cfg.metric))],
                    runner, progress)
    step = 2 * 10.0 ** -metric(cfg.metric).digits  # the smallest interval worth bisecting: two steps of the metric's resolution
    while len(done) < max_points:
        pts = sorted(done, key=lambda p: p["K_prime"])
        mids = [metric_round(cfg.metric, (a["K_prime"] + b["K_prime"]) / 2) for a, b in zip(pts, pts[1:])
                if abs(b["K_d"] - a["K_d"]) > JUMP * max(a["K_d"], b["K_d"]) and b["K_prime"] - a["K_prime"] >= step]
        if not mids:
            break
        progress(f"refining: K_d jumps by more than {JUMP:.0%} in {len(mids)} interval(s); bisecting")
        done += _measure(cfg, [(runs / f"point-r-{_slug(cfg.metric, kp)}", kp) for kp in mids[:max_points - len(done)]], runner, progress)
    lug = LUG.from_points(cfg, [{k: p[k] for k in ("K_prime", "K_d", "run_dir", "val_acc")} for p in done])
    path = save_lug(lug, cache / lug_filename(cfg))
    if lug.repaired:
        where = ", ".join(metric_text(cfg.metric, lug.points[i]["K_prime"]) for i in lug.repaired)
        progress(f"made monotone: K_d at K'={where} raised to the largest K_d measured below them (measurement noise)")
    return lug, path


JUMP = 0.05  # neighbours whose K_d differ by more than this fraction are bisected


def _measure(cfg, targets: list[tuple[Path, float]], runner: Runner, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """One search per (run directory, K'): finished ones reused, the rest run by ``runner``."""
    done: list[dict[str, Any]] = []
    todo = []
    for d, kp in targets:
        pt = point_from_run(d)
        if pt is not None:
            done.append(pt)
            progress(f"K'={metric_text(cfg.metric, kp)}: reused {d}")
        else:
            todo.append((kp, d))
    threads = runner.threads()
    if todo:
        progress(f"running {len(todo)} searches {runner.describe()}, {threads} torch thread(s) each")
        bar = step_bar(len(todo), "LUG searches", unit="search")
        calls = [(cfg.to_json(), float(kp), str(d), threads) for kp, d in todo]
        for n, (i, pt) in enumerate(runner.run(_run_point, calls), 1):
            bar.update(1)
            done.append(pt)
            progress(f"point {n}/{len(todo)} K'={metric_text(cfg.metric, todo[i][0])}: derived K_d={metric_text(cfg.metric, pt['K_d'])}")
        bar.close()
    return done


def save_lug(lug: LUG, path: Path) -> Path:
    write_json(path, lug.to_json())
    plot_lug(lug, path.with_suffix(".png"))
    return path


def plot_lug(lug: LUG, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p["K_prime"] for p in lug.points]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(xs, [p["K_d"] for p in lug.points], "o", label="measured K_d")
    ax.plot(xs, lug.monotone, "-", label="monotone LUG")
    lo = min(min(xs), min(lug.monotone))
    hi = max(max(xs), max(lug.monotone))
    ax.plot([lo, hi], [lo, hi], ":", color="gray", label="K_d = K'")
    ax.set_xlabel(f"search budget K' ({lug.metric})")
    ax.set_ylabel(f"derived network K_d ({lug.metric})")
    ax.set_title(f"LUG {lug.space} / {lug.dataset}")
    ax.legend()
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def merge_runs(run_dirs: list[Path], cache_dir: Optional[Path] = None, out: Optional[Path] = None) -> tuple[LUG, Path]:
    """Build a LUG from search run directories made elsewhere (a cluster, torchrun-launched searches)."""
    pts = [point_from_run(Path(d)) for d in run_dirs]
    missing = [str(d) for d, p in zip(run_dirs, pts) if p is None]
    if missing:
        raise UserError(f"not finished search runs (no genotype.json/search.json): {', '.join(missing)}")
    cfgs = [SearchConfig.from_json(p["config"]) for p in pts]
    keys = {options_hash(c) for c in cfgs}
    if len(keys) != 1:
        raise UserError(f"the runs were made with different search options ({len(keys)} option sets); a LUG needs one")
    if len(pts) < 2:
        raise UserError("a LUG needs at least 2 finished search runs")
    lug = LUG.from_points(cfgs[0], [{k: p[k] for k in ("K_prime", "K_d", "run_dir", "val_acc")} for p in pts])
    return lug, save_lug(lug, Path(out) if out else Path(cache_dir or default_cache_dir()) / lug_filename(cfgs[0]))


def find_lug(cfg, cache_dir: Optional[Path] = None) -> Optional[Path]:
    path = Path(cache_dir or default_cache_dir()) / lug_filename(cfg)
    return path if path.is_file() else None


def resolve_search_budget(cfg, cache_dir: Optional[Path] = None,
                          progress: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> tuple[float, str]:
    """K' for a search: --search-budget if given, else the matching LUG, else K_d with a warning."""
    if cfg.search_budget:
        return float(cfg.search_budget), "given"
    if cfg.chooser():  # K' moves only the alphas, which this derivation does not read
        progress(f"no LUG needed: the derivation reads no architecture weights ({cfg.chooser()}); K'=K_d")
        return float(cfg.budget), "not needed"
    path = find_lug(cfg, cache_dir)
    if path is not None:
        kp = LUG.load(path).lookup(cfg.budget)
        progress(f"LUG {path}: K_d={metric_text(cfg.metric, cfg.budget)} -> K'={metric_text(cfg.metric, kp)}")
        return kp, str(path)
    progress(f"WARNING: no LUG for space={cfg.space} dataset={cfg.dataset} metric={cfg.metric} and these search options; "
             f"searching with K'=K_d={metric_text(cfg.metric, cfg.budget)}, and the derived network may miss the budget. Build one with: "
             f"dcanas lug build --space {cfg.space} --dataset {cfg.dataset} --metric {cfg.metric} [the same search options]")
    return float(cfg.budget), "none"

"""Look-up graph: interpolation and monotone repair, a tiny real build with 2 jobs, cache keying,
automatic use by the search, and resume of a killed build."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import run_command

from dcanas.errors import UserError
from dcanas.search.lug import LUG, find_lug, upper_envelope, lug_filename, options_hash
from dcanas.search.config import SearchConfig, apply_preset
from dcanas.search.supernet import SearchOptions


def tiny_cfg(**kw):
    return replace(apply_preset(SearchConfig(dataset="fashion-mnist"), "tiny"), **kw)


def synthetic(kd):
    return LUG.from_points(tiny_cfg(), [dict(K_prime=100.0 * (i + 1), K_d=v, run_dir="", val_acc=0.0) for i, v in enumerate(kd)])


def test_upper_envelope_repairs_and_reports():
    assert upper_envelope([1, 3, 2, 4]) == [1, 3, 3, 4]
    lug = synthetic([50, 80, 70, 120, 160])
    assert lug.monotone == [50, 80, 80, 120, 160] and lug.repaired == [2]
    assert synthetic([50, 60, 70]).repaired == []


def test_lookup_inverts_and_never_overshoots():
    lug = synthetic([50, 80, 120, 160])  # K' = 100, 200, 300, 400
    assert lug.lookup(100) == pytest.approx(250.0)
    assert lug.lookup(50) == 100.0 and lug.lookup(160) == 400.0
    flat = synthetic([50, 80, 80, 160])  # a flat step: take the largest K' that stays at 80
    assert flat.lookup(80) == 300.0
    for kd in (55, 79, 90, 150):
        kp = lug.lookup(kd)
        # the interpolated K_d at the chosen K' is the budget itself
        xs = [p["K_prime"] for p in lug.points]
        i = max(j for j in range(len(xs)) if xs[j] <= kp)
        y = lug.monotone[i] if i == len(xs) - 1 else lug.monotone[i] + (lug.monotone[i + 1] - lug.monotone[i]) * (kp - xs[i]) / (xs[i + 1] - xs[i])
        assert y == pytest.approx(kd)


def test_lookup_is_conservative():
    """The issue's case: (150, 99), (200, 130), (250, 120). Least-squares pooling gave lookup(124) = 198.1
    next to K' = 200, measured 130. The envelope never picks a K' at or beyond a grid point measured
    over the budget, for any budget and any measured curve."""
    lug = LUG.from_points(tiny_cfg(), [dict(K_prime=k, K_d=d, run_dir="", val_acc=0.0) for k, d in ((150, 99), (200, 130), (250, 120))])
    assert lug.lookup(124) < 200
    rng = np.random.default_rng(0)
    for _ in range(300):
        kd = np.cumsum(rng.integers(-20, 40, 8)) + 500
        lug = synthetic([float(v) for v in kd])
        budget = float(rng.uniform(kd.min(), kd.max() + 50))
        if budget < lug.monotone[0]:
            continue
        kp = lug.lookup(budget)
        assert all(p["K_d"] <= budget for p in lug.points if p["K_prime"] <= kp), (kd, budget, kp)


def test_budget_above_the_top_takes_the_top_point_and_below_names_the_range():
    lug = synthetic([50, 80, 120, 160])
    assert lug.lookup(1000) == 400.0
    with pytest.raises(UserError, match="below this LUG's measured range 50 .. 160"):
        lug.lookup(10)


def test_cache_key_depends_on_search_options_only():
    a = tiny_cfg()
    assert options_hash(a) == options_hash(replace(a, budget=123, seed=7, data_root="/x", search_budget=5))
    # the other budgets of a run's profile: a LUG built for the primary metric alone is used under them
    assert options_hash(a) == options_hash(replace(a, extra_budgets={"model_size_kb": 4096.0}, size_format="onnx"))
    assert options_hash(a) != options_hash(replace(a, options=SearchOptions(bottleneck=2)))
    assert options_hash(a) != options_hash(replace(a, epochs=3))
    assert lug_filename(a) != lug_filename(replace(a, metric="flops"))


def lug_cmd(*args, **kw):
    return [sys.executable, "-m", "dcanas", "lug", *args]


@pytest.mark.slow
def test_tiny_build_with_two_jobs_then_search_uses_it(tmp_path, fashion_root):
    cache = tmp_path / "cache"
    args = ["build", "--preset", "tiny", "--epochs", "1", "--points", "3", "--max-points", "5", "--jobs", "2",
            "--data-root", str(fashion_root), "--cache-dir", str(cache)]
    r = run_command(lug_cmd(*args), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "2 at a time" in r.stderr
    files = list(cache.glob("*.json"))
    assert len(files) == 1 and files[0].with_suffix(".png").is_file()
    lug = LUG.load(files[0])
    assert 3 <= len(lug.points) <= 5 and lug.options_hash == options_hash(tiny_cfg(epochs=1))
    # refinement stops when no neighbours' K_d differ by more than 5%, or at --max-points
    kd = [p["K_d"] for p in lug.points]
    jumps = [abs(b - a) > 0.05 * max(a, b) for a, b in zip(kd, kd[1:])]
    assert len(lug.points) == 5 or not any(jumps), kd
    assert ("refining" in r.stderr) == (len(lug.points) > 3)
    assert all(Path(p["run_dir"], "genotype.json").is_file() for p in lug.points)
    show = run_command(lug_cmd("show", str(files[0])), capture_output=True, text=True, timeout=60)
    assert show.returncode == 0 and "| K' |" in show.stdout
    # the search finds it by its options...
    lo, hi = lug.range
    budget = int(lo + 0.5 * (hi - lo)) if hi > lo else int(hi)
    s = run_command([sys.executable, "-m", "dcanas", "search", "--preset", "tiny", "--epochs", "1", "--budget", str(budget),
                        "--data-root", str(fashion_root), "--cache-dir", str(cache), "--out", str(tmp_path / "s")],
                       capture_output=True, text=True, timeout=600)
    assert s.returncode == 0, s.stderr
    assert f"LUG {files[0]}" in s.stderr
    summary = json.loads((tmp_path / "s" / "search.json").read_text())["summary"]
    assert summary["K_prime"] == pytest.approx(lug.lookup(budget))
    # ...and a different search option does not reuse it
    assert find_lug(replace(tiny_cfg(epochs=1), options=SearchOptions(bottleneck=2)), cache) is None
    s2 = run_command([sys.executable, "-m", "dcanas", "search", "--preset", "tiny", "--epochs", "1", "--bottleneck", "2",
                         "--budget", str(budget), "--data-root", str(fashion_root), "--cache-dir", str(cache),
                         "--out", str(tmp_path / "s2")], capture_output=True, text=True, timeout=600)
    assert s2.returncode == 0 and "WARNING: no LUG" in s2.stderr and "dcanas lug build" in s2.stderr
    # merge: the same runs, made into a LUG elsewhere
    m = run_command(lug_cmd("merge", *[p["run_dir"] for p in lug.points], "--out", str(tmp_path / "merged.json")),
                       capture_output=True, text=True, timeout=120)
    assert m.returncode == 0, m.stderr
    assert LUG.load(tmp_path / "merged.json").monotone == lug.monotone


@pytest.mark.slow
def test_killed_build_resumes_reusing_finished_points(tmp_path, fashion_root):
    cache = tmp_path / "cache"
    args = ["build", "--preset", "tiny", "--epochs", "1", "--points", "3", "--max-points", "3", "--jobs", "1",
            "--data-root", str(fashion_root), "--cache-dir", str(cache)]
    proc = subprocess.Popen(lug_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(cache.glob("runs/*/point-00-*/genotype.json")):
        time.sleep(0.1)
    assert proc.poll() is None, "the build finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the build and its worker processes
    proc.wait()
    assert not list(cache.glob("*.json"))
    r = run_command(lug_cmd(*args), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lug = LUG.load(next(cache.glob("*.json")))
    assert len(lug.points) == 3
    first = f"K'={lug.points[0]['K_prime']:,.0f}: reused"  # the lowest grid point, the one finished before the kill
    assert first in r.stderr and "point 1/2" in r.stderr, r.stderr[-2000:]  # the finished point reused, the other two run


def test_lug_key_holds_a_latency_model_by_content_not_path(tmp_path):
    """Two copies of one latency model (a run folder's and the cache's) share a LUG; another model does not."""
    from dataclasses import replace

    from dcanas.search.config import SearchConfig

    a, b, c = tmp_path / "run-a.json", tmp_path / "cache-b.json", tmp_path / "other.json"
    a.write_text('{"intercept": 0.1}')
    b.write_text('{"intercept": 0.1}')
    c.write_text('{"intercept": 0.2}')
    key = {p: options_hash(replace(SearchConfig(), metric="latency_ms", latency_model=str(p))) for p in (a, b, c)}
    assert key[a] == key[b] != key[c]


@pytest.mark.parametrize("name, lo, hi", [("latency_ms", 0.15714, 0.31236), ("latency_ms", 0.15716, 0.3), ("params", 3698, 26546)])
def test_grid_is_at_the_metrics_resolution_and_inside_the_range(name, lo, hi):
    """A latency grid in steps of 1e-4 ms (a grid rounded to whole units had collapsed to 0 and 1), its ends rounded
    inwards: a cheapest point rounded under the cheapest network gave "no genotype meets every budget"."""
    from dcanas.search.lug import grid

    pts = grid(lo, hi, 4, name)
    assert lo <= pts[0] and pts[-1] <= hi and pts == sorted(set(pts)) and len(pts) == 4
    assert all(round(p, 4) == p for p in pts) and (name != "params" or all(isinstance(p, int) for p in pts))

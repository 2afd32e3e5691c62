"""The naswot derivation (search/proxy.py): draws from the final alphas, the fill window's pool, the proxy's pick, and
the search and CLI that choose it."""
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from dcanas.nets.genotype import NB201Genotype
from dcanas.nets.spaces import SPACES
from dcanas.search.config import SearchConfig, apply_preset, constraints, cost_model, supernet_config
from dcanas.search.proxy import sample_picks, window_pool

PEAK = {"darts": "sep_conv_3x3", "nb201": "nor_conv_3x3"}


def _cfg(space: str, **kw) -> SearchConfig:
    cfg = replace(apply_preset(SearchConfig(dataset="fashion-mnist"), "tiny"), space=space)
    lo, hi = cost_model(cfg).feasible_range()
    return replace(cfg, budget=lo + 0.5 * (hi - lo), **kw)


def _alphas(cfg: SearchConfig, peak: str | None = None) -> dict[str, torch.Tensor]:
    cm = cost_model(cfg)
    a = torch.zeros(len(cm.edges), len(cm.op_names))
    if peak is not None:
        a[:, cm.op_names.index(peak)] = 30.0  # every other op at exp(-30) of it
    return {k: a.clone() for k in SPACES[cfg.space].cell_kinds}


@pytest.mark.parametrize("space", sorted(SPACES))
def test_draws_follow_the_alphas(space):
    """Peaked alphas: every kept edge draws the peak op. Uniform ones: each derivable op about equally often, never an
    op the derivation cannot pick (DARTS' none); a DARTS node keeps two incoming edges, NB201 every edge."""
    cfg = _cfg(space)
    cm, sp = cost_model(cfg), SPACES[space]
    rng = np.random.default_rng(0)
    peak = cm.op_names.index(PEAK[space])
    for picks in sample_picks(space, _alphas(cfg, PEAK[space]), cm.op_names, cm.nodes, 50, rng):
        assert {k for _, _, k in picks} == {peak}
    draws = sample_picks(space, _alphas(cfg), cm.op_names, cm.nodes, 3000, rng)
    usable = sp.derivable(cm.op_names)
    counts = np.bincount([k for picks in draws for _, _, k in picks], minlength=len(cm.op_names))
    assert all(counts[k] == 0 for k in range(len(cm.op_names)) if k not in usable)
    share = counts[usable] / counts.sum()
    assert np.abs(share - 1 / len(usable)).max() < 0.02, share
    for picks in draws[:200]:
        for kind in sp.cell_kinds:
            targets = [cm.edges[e][1] for kd, e, _ in picks if kd == kind]
            if sp.every_edge:
                assert sorted(e for kd, e, _ in picks if kd == kind) == list(range(len(cm.edges)))
            else:
                assert all(targets.count(t) == 2 for t in set(t for _, t in cm.edges))


@pytest.mark.parametrize("space", sorted(SPACES))
def test_the_pool_is_the_fill_window(space):
    """The pool: the given genotype first, then distinct draws whose cost lies in [fill x K_d, K_d] (NB201: live
    cells), at most ``pool`` in all."""
    from dcanas.search.derive import derive_filling

    cfg = _cfg(space)
    cm, con = cost_model(cfg), constraints(cfg)
    alphas = _alphas(cfg)
    first = derive_filling(space, alphas, cm.op_names, cm.nodes, con.edge_costs(), con.fixed(), con.K_d, cfg.metric, 0.9)
    pool = window_pool(space, alphas, cm.op_names, cm.nodes, con, 0.9, first.genotype, 25, seed=3)
    assert pool[0] == first.genotype and 1 < len(pool) <= 25
    assert len({str(g.to_json()) for g in pool}) == len(pool)
    for g in pool:
        assert 0.9 * cfg.budget <= cm.derived(g) <= cfg.budget and con.within(g)
        assert not isinstance(g, NB201Genotype) or g.live()
    assert window_pool(space, alphas, cm.op_names, cm.nodes, con, 0.9, first.genotype, 25, seed=3) == pool  # seeded


@pytest.mark.parametrize("space", sorted(SPACES))
def test_the_proxy_picks_the_pools_best_score(space):
    """The naswot derivation chooses the highest NASWOT score of its pool, records every score and the fill pick's rank,
    gives the same pick twice and leaves the caller's random state alone; its cost is the network's own."""
    from dcanas.search.baselines import naswot_score
    from dcanas.nets.build import build_network
    from dcanas.search.searcher import derivations
    from dcanas.search.supernet import Supernet

    cfg = _cfg(space, derive="naswot", proxy_pool=6, fill_fraction=0.9)
    cm, con = cost_model(cfg), constraints(cfg)
    torch.manual_seed(0)
    model = Supernet(supernet_config(cfg))
    x = torch.randn(16, 1, 28, 28)
    state = torch.get_rng_state()
    found = derivations(cfg, model, con, x)
    assert torch.equal(torch.get_rng_state(), state)
    d = found["naswot"]
    info = d.info
    assert d.rule == "naswot" and 2 <= info["pool"] <= 6 and len(info["scores"]) == info["pool"]
    assert info["score"] == pytest.approx(max(info["scores"]), abs=1e-3)
    assert info["fill_score"] == pytest.approx(info["scores"][0], abs=1e-3)
    assert info["fill_rank"] == 1 + sum(s > info["fill_score"] + 1e-3 for s in info["scores"])
    assert d.cost[cfg.metric] == pytest.approx(cm.derived(d.genotype), rel=1e-6) and con.within(d.genotype)
    assert derivations(cfg, model, con, x)["naswot"].to_json() == d.to_json()
    # the recorded score is the network's own, rebuilt under its index's seed
    pool = window_pool(space, model.alphas, cm.op_names, cm.nodes, con, 0.9, found["fill"].genotype, 6, cfg.seed)
    i = [str(g.to_json()) for g in pool].index(str(d.genotype.to_json()))
    torch.manual_seed(cfg.seed * 100_003 + i)
    assert naswot_score(build_network(d.genotype, cm.eval_cfg), x) == pytest.approx(info["score"], abs=1e-3)


@pytest.mark.parametrize("space", sorted(SPACES))
def test_a_uniform_pool_ignores_the_alphas_and_the_rank_is_taken(space):
    """``proxy_draw="uniform"``: the pool is the window's random networks whatever the alphas (peaked or flat give one
    pool and one pick), the fill pick is not put first, and ``proxy_rank`` R takes the R-th highest score."""
    from dcanas.search.derive import derive_filling
    from dcanas.search.proxy import derive_by_proxy

    cfg = _cfg(space)
    cm, con = cost_model(cfg), constraints(cfg)
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    picks = {}
    for peak in (None, PEAK[space]):
        alphas = _alphas(cfg, peak)
        first = derive_filling(space, alphas, cm.op_names, cm.nodes, con.edge_costs(), con.fixed(), con.K_d, cfg.metric, 0.9)
        picks[peak] = derive_by_proxy(space, alphas, cm.op_names, cm.nodes, con, cm.eval_cfg, 0.9, first, x, 6, seed=2,
                                      rank=2, uniform=True)
    flat, peaked = picks[None], picks[PEAK[space]]
    assert flat.genotype == peaked.genotype and flat.info["scores"] == peaked.info["scores"]
    info = flat.info
    assert info["draw"] == "uniform" and "fill_rank" not in info and info["rank"] == min(2, info["pool"])
    assert info["score"] == pytest.approx(sorted(info["scores"])[-info["rank"]], abs=1e-3)
    pool = window_pool(space, _alphas(cfg), cm.op_names, cm.nodes, con, 0.9, None, 6, seed=2)
    assert flat.genotype in pool and len(pool) == info["pool"]
    # the rank past a thin pool: its lowest score
    last = derive_by_proxy(space, _alphas(cfg), cm.op_names, cm.nodes, con, cm.eval_cfg, 0.9, first, x, 6, seed=2, rank=99, uniform=True)
    assert last.info["rank"] == info["pool"] and last.info["score"] == pytest.approx(min(info["scores"]), abs=1e-3)


def test_other_rules_score_nothing(monkeypatch):
    """The proxy runs only when it is the chosen rule (it builds a network per pool member)."""
    import dcanas.search.proxy as proxy
    from dcanas.search.searcher import derivations
    from dcanas.search.supernet import Supernet

    monkeypatch.setattr(proxy, "derive_by_proxy", lambda *a, **k: pytest.fail("the proxy ran for the fill rule"))
    cfg = _cfg("nb201")
    found = derivations(cfg, Supernet(supernet_config(cfg)), constraints(cfg), torch.randn(4, 1, 28, 28))
    assert "naswot" not in found and set(found) == {"argmax", "budget", "fill"}


@pytest.mark.slow
def test_search_derives_by_the_proxy(tmp_path, fashion_root):
    """``dcanas search --derive naswot``: the chosen network is the naswot derivation's, the summary keeps its pool, and
    derived again from the checkpoint it is the same; a pool of 0 is one line and exit 2."""
    from dcanas.search.searcher import derive_again

    cfg = _cfg("nb201", derive="naswot", proxy_pool=4, data_root=str(fashion_root), epochs=1)
    r = subprocess.run([sys.executable, "-m", "dcanas", "search", "--preset", "tiny", "--space", "nb201", "--epochs", "1",
                        "--derive", "naswot", "--proxy-pool", "4", "--budget", str(int(cfg.budget)),
                        "--data-root", str(fashion_root), "--out", str(tmp_path / "s")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "networks of the window drawn from the alphas; the pick's NASWOT score" in r.stdout and " ranks 1 of " in r.stdout
    assert "naswot  derivation" in r.stdout and "(chosen)" in [ln for ln in r.stdout.splitlines() if ln.startswith("naswot")][0]
    assert "WARNING: no LUG" in r.stderr and "not read by the derivation" not in r.stdout  # a pool from the alphas reads them
    s = json.loads((tmp_path / "s" / "search.json").read_text())
    summary, kept = s["summary"], s["config"]
    assert summary["derive"] == "naswot" and summary["derivations"]["naswot"]["info"]["pool"] <= 4
    assert json.loads((tmp_path / "s" / "genotype.json").read_text()) == summary["derivations"]["naswot"]["genotype"]
    again = derive_again(SearchConfig.from_json(kept), tmp_path / "s")
    assert again["naswot"].to_json() == summary["derivations"]["naswot"]
    bad = subprocess.run([sys.executable, "-m", "dcanas", "search", "--preset", "tiny", "--derive", "naswot", "--proxy-pool", "0",
                          "--data-root", str(fashion_root), "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--proxy-pool" in bad.stderr and not (tmp_path / "bad").exists()
    rank = subprocess.run([*bad.args[:8], "--proxy-pool", "4", "--proxy-rank", "5", "--budget", str(int(cfg.budget)), *bad.args[10:]],
                          capture_output=True, text=True, timeout=120)
    assert rank.returncode == 2 and "--proxy-rank 5 is not a rank in a pool of --proxy-pool 4" in rank.stderr, rank.stderr
    assert len(rank.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_a_uniform_pool_needs_no_lug_and_the_summary_says_what_chose(tmp_path, fashion_root):
    """With ``--proxy-draw uniform`` the derivation reads no architecture weights: the search needs no LUG (K' moves
    only the alphas; no warning that the network may miss the budget) and its summary line says that the proxy's rank
    in a uniform pool chose the network, not that the budget did."""
    cfg = _cfg("nb201")
    r = subprocess.run([sys.executable, "-m", "dcanas", "search", "--preset", "tiny", "--space", "nb201", "--epochs", "1",
                        "--derive", "naswot", "--proxy-draw", "uniform", "--proxy-pool", "4", "--proxy-rank", "2",
                        "--budget", str(int(cfg.budget)), "--data-root", str(fashion_root), "--cache-dir", str(tmp_path / "cache"),
                        "--out", str(tmp_path / "s")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "no LUG needed: the derivation reads no architecture weights" in r.stderr and "WARNING" not in r.stderr, r.stderr
    [line] = [ln for ln in r.stdout.splitlines() if ln.startswith("architecture weights:")]
    assert ("not read by the derivation: the network is the 2nd highest NASWOT score at initialisation among 4 networks "
            "drawn uniformly from the budget's window") in line and "chosen by the budget" not in line, line
    summary = json.loads((tmp_path / "s" / "search.json").read_text())["summary"]
    assert summary["K_prime"] == summary["K_d"] and summary["derivations"]["naswot"]["info"]["rank"] == 2


def test_old_search_checkpoints_resume_with_the_proxy_pool_they_ran_under():
    """A checkpoint written before ``proxy_pool``, ``proxy_rank`` and ``proxy_draw`` existed reads as the defaults it ran
    under (100, 1, alphas)."""
    from dcanas.search.searcher import upgrade_checkpoint

    cfg = _cfg("nb201").to_json()
    old = {k: v for k, v in cfg.items() if k not in ("proxy_pool", "proxy_rank", "proxy_draw")}
    assert upgrade_checkpoint({"config": old, "epoch": 3}) == {"config": cfg, "epoch": 3}
    assert upgrade_checkpoint({"config": {**old, "proxy_pool": 7}})["config"]["proxy_pool"] == 7


def test_the_nb201_zerocost_preset_is_the_configuration_measured_against_random_networks():
    """`--preset nb201-zerocost` (`dcanas search` and `dcanas run`) is the configuration whose networks the benchmark
    trained against random networks of the budget (its kept result, benchmarks/search_vs_random.nb201-step8-zerocost2):
    every search field, the run's training recipe and network; `--space darts` still overrides the preset's space."""
    import argparse
    from pathlib import Path

    from dcanas.devices.schema import load_profile
    from dcanas.presets import RUN_PRESETS, TRAIN_PRESETS
    from dcanas.presets import apply_preset as apply_table
    from dcanas.run.records import RunConfig
    from dcanas.run.stages import Stages
    from dcanas.search.cli import add_search_options, config_from_args
    from dcanas.search.config import eval_config
    from dcanas.train.trainer import TrainConfig

    measured = json.loads((Path(__file__).parents[1] / "benchmarks" / "search_vs_random.nb201-step8-zerocost2.last.json").read_text())
    local = ("data_root", "seed", "budget", "extra_budgets", "device", "size_format")  # the run's, its device's; not the method's
    p = argparse.ArgumentParser()
    add_search_options(p)
    cfg = config_from_args(p.parse_args(["--preset", "nb201-zerocost"]))
    differ = {k: (v, measured["search"][k]) for k, v in cfg.to_json().items() if k not in local and v != measured["search"][k]}
    assert not differ, differ
    assert config_from_args(p.parse_args(["--preset", "nb201-zerocost", "--space", "darts"])).space == "darts"
    assert config_from_args(p.parse_args([])).space == "darts"

    stages = Stages(RunConfig(device="local", preset="nb201-zerocost"), load_profile("local"))
    run_cfg = stages.search_cfg.to_json()
    assert {k: v for k, v in run_cfg.items() if k not in local} == {k: v for k, v in cfg.to_json().items() if k not in local}
    assert run_cfg["budget"] == measured["search"]["budget"] == 200_000  # the local profile's params budget is the one measured
    # the run's search also holds the profile's model size (4,096 KB), which no network of the space comes near at this
    # evaluation network (its largest's params in float32 are under a quarter of it)
    assert set(run_cfg["extra_budgets"]) <= {"model_size_kb"} and cost_model(stages.search_cfg).feasible_range()[1] * 4 / 1024 < 4096
    train = apply_table(TrainConfig(), TRAIN_PRESETS, RUN_PRESETS["nb201-zerocost"][1], "training").to_json()
    net = eval_config(stages.search_cfg)
    assert (net.C, net.layers) == (measured["training"]["C"], measured["training"]["layers"]) == (16, 2)
    # test_every: how often the run reads the test set while training (the benchmark: at the end only), not how it trains
    differ = {k: (v, measured["training"][k]) for k, v in train.items()
              if k not in local + ("genotype", "arch", "C", "layers", "test_every") and v != measured["training"][k]}
    assert not differ, differ
    assert Stages(RunConfig(device="local", preset="nb201-zerocost", space="darts"), load_profile("local")).search_cfg.space == "darts"

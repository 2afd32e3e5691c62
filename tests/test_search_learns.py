"""Whether a search learned (search/learned.py), the warm-up, and what a search is measured against
(search/baselines.py: random genotypes of the same budget, the NASWOT proxy; benchmarks/search_vs_random.py)."""
import json
import math
import random
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dcanas.nets.ops import SPACE_OPS
from dcanas.nets.ops import OP_SPECS
from dcanas.search.baselines import PARAMETER_FREE_FORMS, convs_and_none, naswot_score, random_within
from dcanas.search.config import SearchConfig, apply_preset, cost_model
from dcanas.search.learned import SEPARATED_ENTROPY, alpha_record, edge_entropy, edge_margin, edge_probs, gradient_shares, separated

ROOT = Path(__file__).resolve().parents[1]


def _tiny(**kw) -> SearchConfig:
    cfg = apply_preset(SearchConfig(dataset="fashion-mnist"), "tiny")
    lo, hi = cost_model(cfg).feasible_range()
    return replace(cfg, budget=lo + 0.5 * (hi - lo), **kw)


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_entropy_and_margin_of_known_distributions(space):
    ops = SPACE_OPS[space]
    usable = [k for k, o in enumerate(ops) if not (space == "darts" and o == "none")]
    n = len(usable)
    uniform = torch.zeros(3, len(ops))
    peaked = torch.zeros(3, len(ops))
    peaked[:, usable[0]] = math.log(n - 1)  # p = (n-1) / (2n - 2) = 0.5 on one op, the rest equal
    for alpha, h_expected, m_expected in ((uniform, 1.0, 0.0), (peaked, None, 0.5 - 0.5 / (n - 1))):
        p = edge_probs(space, alpha, ops)
        assert p.shape == (3, n) and torch.allclose(p.sum(-1), torch.ones(3, dtype=p.dtype))
        h = edge_entropy(p)
        if h_expected is None:  # one op at 0.5, n-1 at 0.5/(n-1): H = log 2 + 0.5 log(n-1)
            h_expected = (math.log(2) + 0.5 * math.log(n - 1)) / math.log(n)
        assert h == pytest.approx([h_expected] * 3, abs=1e-4)
        assert edge_margin(p) == pytest.approx([m_expected] * 3, abs=1e-4)
    assert not separated(alpha_record(space, {"normal": uniform}, ops))
    assert separated(alpha_record(space, {"normal": peaked}, ops)) == (h_expected < SEPARATED_ENTROPY)


def test_gradient_shares_average_the_steps():
    shares = gradient_shares([{"loss": 3.0, "params": 1.0}, {"loss": 1.0, "params": 1.0}])
    assert shares == pytest.approx({"loss": (0.75 + 0.5) / 2, "params": (0.25 + 0.5) / 2})
    assert gradient_shares([{"loss": 0.0}]) == {"loss": 0.0}


@pytest.mark.slow
def test_zero_alpha_steps_say_the_weights_did_not_separate(tmp_path, fashion_root):
    """A search whose every epoch is warm-up never moves alpha or lambda: its summary line says the network was chosen
    by the budget, and the epochs record entropy 1 and no gradient shares."""
    from dcanas.search.searcher import run_search

    cfg = _tiny(data_root=str(fashion_root), epochs=2, warmup_epochs=2)
    res = run_search(cfg, tmp_path / "s", cfg.budget, progress=lambda m: None)
    s = res.summary
    assert not s["separated"] and "did not separate" in s["learned"] and "chosen by the budget" in s["learned"]
    hist = json.loads((tmp_path / "s" / "search.json").read_text())["epochs"]
    assert [e["lambda"] for e in hist] == [0.0, 0.0] and [e["alpha_steps"] for e in hist] == [False, False]
    assert all(e["gradient_share"] == {} for e in hist)
    assert all(h == pytest.approx(1.0, abs=1e-4) for e in hist for r in e["learned"].values() for h in r["entropy"])
    assert hist[0]["alphas"] == hist[1]["alphas"]  # untouched by the warm-up
    # the CLI prints it as the search's last line
    lo, hi = cost_model(cfg).feasible_range()
    r = subprocess.run([sys.executable, "-m", "dcanas", "search", "--preset", "tiny", "--epochs", "1", "--warmup-epochs", "1",
                        "--budget", str(int(cfg.budget)), "--data-root", str(fashion_root), "--out", str(tmp_path / "cli")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("architecture weights: the architecture weights did not separate")


@pytest.mark.slow
def test_warmup_holds_alpha_then_the_search_moves_it(tmp_path, fashion_root):
    """Warm-up epochs train w alone; after them alpha moves, lambda rises (the budget binds at the tiny preset's middle
    budget) and each epoch records the loss's and the budget's shares of the push on alpha. Derived again from the
    checkpoint (what benchmarks/search_vs_random.py does with a kept search), the derivations are the search's own."""
    from dcanas.search.searcher import derive_again, run_search

    cfg = _tiny(data_root=str(fashion_root), epochs=3, warmup_epochs=1, lambda_lr=2.0)
    cfg = replace(cfg, budget=cost_model(cfg).feasible_range()[0] * 1.2)
    res = run_search(cfg, tmp_path / "s", cfg.budget, progress=lambda m: None)
    assert {k: d.to_json() for k, d in derive_again(cfg, tmp_path / "s").items()} == res.summary["derivations"]
    # an ensemble of the search with itself: the derivations of the summed log-softmax alphas, 2 log_softmax(alpha)
    from dcanas.files import load_checkpoint
    from dcanas.search.config import constraints, supernet_config
    from dcanas.search.searcher import derivations
    from dcanas.search.supernet import Supernet

    model = Supernet(supernet_config(cfg))
    model.load_state_dict(load_checkpoint(tmp_path / "s" / "checkpoint.pt", "")["model"])
    with torch.no_grad():
        for a in model.alphas.values():
            a.copy_(2 * torch.log_softmax(a.double(), dim=-1))
    expected = {k: d.to_json() for k, d in derivations(cfg, model, constraints(cfg)).items()}
    assert {k: d.to_json() for k, d in derive_again(cfg, tmp_path / "s", tmp_path / "s").items()} == expected
    hist = json.loads((tmp_path / "s" / "search.json").read_text())["epochs"]
    init = apply_init_alphas(cfg)
    assert hist[0]["alphas"] == init and hist[0]["lambda"] == 0.0 and not hist[0]["alpha_steps"]
    assert hist[2]["alphas"] != init and hist[2]["lambda"] > 0 and hist[2]["alpha_steps"]
    share = hist[2]["gradient_share"]
    assert set(share) == {"loss", "params"} and sum(share.values()) == pytest.approx(1.0, abs=1e-3) and share["params"] > 0


def apply_init_alphas(cfg: SearchConfig) -> dict:
    """softmax of the supernet's initial alphas for ``cfg``'s seed, as the search records them."""
    from dcanas.search.config import supernet_config
    from dcanas.search.supernet import Supernet

    torch.manual_seed(cfg.seed)
    model = Supernet(supernet_config(cfg))
    return {t: torch.softmax(a.detach(), -1).tolist() for t, a in model.alphas.items()}


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_random_within_draws_distinct_genotypes_in_the_window(space):
    cfg = replace(apply_preset(SearchConfig(dataset="fashion-mnist"), "tiny"), space=space)
    cm = cost_model(cfg)
    lo, hi = cm.feasible_range()
    a, b = lo + 0.3 * (hi - lo), lo + 0.4 * (hi - lo)
    gs = random_within(space, cm.derived, a, b, random.Random(0), 5, cfg.nodes)
    assert len(gs) == 5 and len({json.dumps(g.to_json()) for g in gs}) == 5
    assert all(a <= cm.derived(g) <= b for g in gs)
    assert [g.to_json() for g in random_within(space, cm.derived, a, b, random.Random(0), 5, cfg.nodes)] == [g.to_json() for g in gs]
    assert random_within(space, cm.derived, a, b, random.Random(0), 0, cfg.nodes, max_draws=1) == []  # --proxy-pool 0: none asked, none drawn


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_random_within_a_family_draws_only_its_members(space):
    """--convs: random genotypes of the window whose every edge is a convolution or none; the family test itself
    tells a pool or a skip from a convolution (the cells drawn without it hold both kinds)."""
    cfg = replace(apply_preset(SearchConfig(dataset="fashion-mnist"), "tiny"), space=space)
    cm = cost_model(cfg)
    lo, hi = cm.feasible_range()
    forms = lambda g: {OP_SPECS[op].form for _, _, edges, _ in g.cells() for op, _ in edges}  # noqa: E731
    family = random_within(space, cm.derived, lo, hi, random.Random(0), 4, cfg.nodes, keep=convs_and_none)
    assert len(family) == 4 and all(not forms(g) & PARAMETER_FREE_FORMS and convs_and_none(g) for g in family)
    anyone = random_within(space, cm.derived, lo, hi, random.Random(0), 20, cfg.nodes)
    assert any(forms(g) & PARAMETER_FREE_FORMS for g in anyone)
    assert all(convs_and_none(g) == (not forms(g) & PARAMETER_FREE_FORMS) for g in anyone)


def test_random_within_an_empty_window_is_one_clear_error():
    from dcanas.errors import UserError

    cfg = apply_preset(SearchConfig(dataset="fashion-mnist"), "tiny")
    cm = cost_model(cfg)
    lo, _ = cm.feasible_range()
    with pytest.raises(UserError, match="widen the window"):
        random_within("darts", cm.derived, lo - 10, lo - 1, random.Random(0), 2, cfg.nodes, max_draws=500)


def test_naswot_scores_separable_images_above_repeated_ones():
    """K_H of a batch whose images are all the same has rank 1 (log det -inf); distinct images score finite and higher.
    The score is a property of the network at initialisation: the same seed gives the same score."""
    from dcanas.nets.build import build_network
    from dcanas.nets.config import default_config
    from dcanas.nets.genotype import KNOWN, genotype_from_json

    net_cfg = default_config("darts", in_channels=1, input_size=28, num_classes=10, C=4, layers=3)
    g = genotype_from_json(KNOWN["DARTS_V2"])

    def score(x, seed=0):
        torch.manual_seed(seed)
        return naswot_score(build_network(g, net_cfg), x)

    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    distinct, same = score(x), score(x[:1].repeat(16, 1, 1, 1))
    assert math.isfinite(distinct) and distinct > same
    assert score(x) == distinct


@pytest.mark.slow
def test_search_vs_random_benchmark_runs_end_to_end(tmp_path, fashion_root):
    """The benchmark at the tiny preset: every arm in the table, a Spearman for the recipe, the outcome line, and a
    rerun that reuses every result (nothing is searched or trained twice)."""
    lo, hi = cost_model(_tiny()).feasible_range()
    args = [sys.executable, str(ROOT / "benchmarks" / "search_vs_random.py"), "--preset", "tiny", "--budget", str(int(lo + 0.5 * (hi - lo))),
            "--seeds", "2", "--random", "3", "--proxy-pool", "6", "--proxy-top", "2", "--proxy-seeds", "2", "--rank-networks", "3",
            "--train-preset", "tiny", "--train-epochs", "1",
            "--train-subset", "200", "--jobs", "2", "--data-root", str(fashion_root), "--work", str(tmp_path / "work"),
            "--arms", "dcanas,lambda0,argmax,shuffled", "--out", str(tmp_path / "svr.md")]
    r = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    text = (tmp_path / "svr.md").read_text()
    for arm in ("dcanas", "lambda0", "shuffled", "random", "naswot"):
        assert f"| {arm} |" in text
    # the control's searches are their own (not the shipped ones under another name) and read the permuted labels
    runs = sorted((tmp_path / "work" / "runs").glob("search-*"))
    roots = [json.loads((r / "search.json").read_text())["config"]["data_root"] for r in runs]
    assert len(runs) == 6 and sum("shuffled-labels" in root for root in roots) == 2, roots
    assert "What the searches derived: dcanas " in text
    assert "Spearman" in text and "Outcome: the shipped search" in text
    data = json.loads((tmp_path / "svr.json").read_text())
    assert sum(r["arm"] == "random" for r in data["rows"]) == 3 and all(0 <= r["top1"] <= 1 for r in data["rows"])
    # each network its own training seed, its index in its arm: two searches that derive one genotype are two trainings
    assert sorted(r["seed"] for r in data["rows"] if r["arm"] == "dcanas") == [0, 1]
    assert sorted(r["seed"] for r in data["rows"] if r["arm"] == "random") == [0, 1, 2]
    # naswot1: one network per pool, its pool's highest score, trained with the pool's seed
    pools = [json.loads(f.read_text()) for f in sorted((tmp_path / "work" / "results").glob("naswot1-*.json"))]
    ones = sorted((r for r in data["rows"] if r["arm"] == "naswot1"), key=lambda r: r["seed"])
    assert [r["seed"] for r in ones] == [0, 1] and len(pools) == 2 and all(len(p["scores"]) == 6 for p in pools)
    assert sorted(r["naswot"] for r in ones) == sorted(max(p["scores"]) for p in pools)
    assert "| naswot1 | 2 |" in text and "naswot1: 2 pools of 6 random networks" in text
    # --proxy-rank 2: each pool's second highest score instead, from the kept pools (not scored again)
    second = subprocess.run([*args[:-1], str(tmp_path / "second.md"), "--arms", "none", "--proxy-rank", "2"], capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    ranked2 = [r for r in json.loads((tmp_path / "second.json").read_text())["rows"] if r["arm"] == "naswot1"]
    assert sorted(r["naswot"] for r in ranked2) == sorted(sorted(p["scores"])[-2] for p in pools)
    assert "each pool's 2nd highest NASWOT score trained" in (tmp_path / "second.md").read_text()
    assert (tmp_path / "svr.png").stat().st_size > 0
    assert "Room: over the 3 random networks trained twice" in text
    # each search's final alphas scored against the trained networks of the window: one Spearman per search
    assert "Do the searches' final alphas rank" in text
    assert set(data["alpha_rank"]) == set(data["searches"]) and all(math.isnan(v) or -1 <= v <= 1 for v in data["alpha_rank"].values())
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "test top-1" not in again.stdout.split("# Search vs random")[0]  # no job ran again
    shown = subprocess.run([*args[:2], "--render", str(tmp_path / "svr.json"), "--out", str(tmp_path / "again.md")], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0 and (tmp_path / "again.md").read_text() == (tmp_path / "svr.md").read_text(), shown.stderr[-2000:]
    # benchmarks/alpha_rank.py on what the run kept: the 6 searches (3 arms x 2 seeds) scored against the other networks of the window
    ranked = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "alpha_rank.py"), "--work", str(tmp_path / "work"), "--results",
                             str(tmp_path / "svr.json")], capture_output=True, text=True, timeout=300)
    assert ranked.returncode == 0 and "6 kept searches" in ranked.stdout and "| darts, " in ranked.stdout, ranked.stderr[-2000:]
    # the control's searches are a group of their own and are not pooled with the searches on the real labels
    assert re.search(r"Every search on the real labels: median [-+](?:\d\.\d{3}|nan), \d of 4 above 0", ranked.stdout), ranked.stdout
    assert re.search(r"Every search on shuffled labels \(the control\): median [-+](?:\d\.\d{3}|nan), \d of 2 above 0", ranked.stdout), ranked.stdout
    assert ", labels shuffled, " in ranked.stdout  # and a row of their own
    # benchmarks/supernet_rank.py on the same: the supernets' one-shot and perturbation scores of those networks
    one_shot = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "supernet_rank.py"), "--work", str(tmp_path / "work"), "--results",
                               str(tmp_path / "svr.json"), "--images", "64", "--data-root", str(fashion_root)],
                              capture_output=True, text=True, timeout=600)
    assert one_shot.returncode == 0 and "6 kept searches" in one_shot.stdout and "| darts, " in one_shot.stdout, one_shot.stderr[-2000:]
    assert sum(line.startswith("- search-") and "supernet val acc " in line for line in one_shot.stdout.splitlines()) == 6
    assert ", labels shuffled | 2 |" in one_shot.stdout  # the control's two supernets, a row of their own
    # each search's scores are kept in its run folder: a second call reads them (same table, no supernet scored again)
    assert len(list((tmp_path / "work" / "runs").glob("search-*/supernet-scores-*.json"))) == 6
    kept_scores = subprocess.run(one_shot.args, capture_output=True, text=True, timeout=120)
    assert kept_scores.returncode == 0 and kept_scores.stdout.split("\n# ")[1] == one_shot.stdout.split("\n# ")[1], kept_scores.stderr[-2000:]
    # the raw scores are kept per cell: a cell the kept file lacks is scored alone, the other supernets are not opened
    files = sorted((tmp_path / "work" / "runs").glob("search-*/supernet-scores-*.json"))
    raw = json.loads(files[0].read_text())
    lost = sorted(raw["cells"])[0]
    del raw["cells"][lost]
    files[0].write_text(json.dumps(raw))
    before = {f: f.stat().st_mtime_ns for f in files[1:]}
    regained = subprocess.run(one_shot.args, capture_output=True, text=True, timeout=300)
    assert regained.returncode == 0 and regained.stdout.split("\n# ")[1] == one_shot.stdout.split("\n# ")[1], regained.stderr[-2000:]
    assert lost in json.loads(files[0].read_text())["cells"] and before == {f: f.stat().st_mtime_ns for f in files[1:]}
    # --retrain: the kept dcanas networks under this run's recipe, no search: the run's own recipe, so every training is
    # found kept (another recipe's keys: test_a_recipe_kept_before_lr_schedule...; the trainer's schedules: test_train.py)
    base = args[:args.index("--arms")]
    re_args = [*base, "--arms", "dcanas", "--retrain", str(tmp_path / "svr.json"), "--out", str(tmp_path / "re.md")]
    again_trained = subprocess.run(re_args, capture_output=True, text=True, timeout=600)
    assert again_trained.returncode == 0, again_trained.stderr[-2000:]
    assert "test top-1" not in again_trained.stdout.split("# Search vs random")[0]  # no job ran
    re_data = json.loads((tmp_path / "re.json").read_text())
    assert re_data["training"]["lr_schedule"] == "step"
    assert {r["name"]: (r["genotype"], r["top1"]) for r in re_data["rows"] if r["arm"] == "dcanas"} == \
        {r["name"]: (r["genotype"], r["top1"]) for r in data["rows"] if r["arm"] == "dcanas"}
    assert "No search ran: the searched networks are those of svr.json" in (tmp_path / "re.md").read_text()
    assert len(list((tmp_path / "work" / "runs").glob("search-*"))) == 6
    other = subprocess.run([*base, "--arms", "dcanas", "--search-epochs", "99", "--retrain", str(tmp_path / "svr.json"), "--out",
                            str(tmp_path / "bad.md")], capture_output=True, text=True, timeout=120)
    assert other.returncode == 2 and "searched with another configuration" in other.stderr and len(other.stderr.strip().splitlines()) == 1
    # benchmarks/oneshot_pick.py on the same: each seed-0 supernet's 2 lowest-loss cells of 4 candidates, trained with the run's recipe
    picked = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "oneshot_pick.py"), "--work", str(tmp_path / "work"), "--results",
                             str(tmp_path / "svr.json"), "--recipe", str(tmp_path / "svr.json"), "--match", "seed=0", "--candidates", "4",
                             "--top", "2", "--images", "64", "--data-root", str(fashion_root)], capture_output=True, text=True, timeout=600)
    assert picked.returncode == 0, picked.stderr[-2000:]
    rows = [line for line in picked.stdout.splitlines() if line.startswith("| search-")]
    assert len(rows) == 3 and sum("| shuffled | 0 |" in row for row in rows) == 1, picked.stdout
    assert "| real-label supernets' picks | 4 | 2 |" in picked.stdout  # dcanas and lambda0: 2 picks each against random
    assert "| shuffled-label supernets' picks (the control) | 2 | 1 |" in picked.stdout
    # the three supernets scored the same 4 candidates: each agrees with itself fully and shares its 2 picks with itself
    agree = [line for line in picked.stdout.splitlines() if line.startswith(("| real s0 |", "| shuffled s0 |"))]
    assert len(agree) == 3 and all(line.strip("| ").split(" | ")[1 + k] == "+1.00 (2)" for k, line in enumerate(agree)), picked.stdout
    for rank in ("", "-r2"):  # each pick trained in a folder of its own
        assert len(list((tmp_path / "work" / "runs").glob(f"search-*/oneshot-pick-d100-n4-i64{rank}/model.pt"))) == 3
    # --first-seed: a set of searches from another seed on; seed 1 is kept, so nothing runs and the arm holds it alone
    later = [*args[:args.index("--seeds")], "--first-seed", "1", "--seeds", "1", *args[args.index("--seeds") + 2:-1], str(tmp_path / "s1.md")]
    r1 = subprocess.run(later, capture_output=True, text=True, timeout=300)
    assert r1.returncode == 0 and "test top-1" not in r1.stdout.split("# Search vs random")[0], r1.stderr[-2000:]
    assert [r["seed"] for r in json.loads((tmp_path / "s1.json").read_text())["rows"] if r["arm"] == "dcanas"] == [1]


def test_shuffled_labels_keep_the_images_and_the_label_counts_and_break_the_pairing(tmp_path, fashion_root):
    """The `shuffled` arm's data: the real training images and the same labels, permuted (agreement near chance), as
    IDX files the loader reads; written once (a second call finds the copy and leaves it)."""
    from dcanas.data import datasets as D

    svr = _benchmark("search_vs_random")
    root = svr.shuffled_labels("fashion-mnist", str(fashion_root), tmp_path)
    real, shuffled = D.load_split("fashion-mnist", fashion_root, train=True), D.load_split("fashion-mnist", root, train=True)
    assert torch.equal(real.images, shuffled.images)
    assert torch.equal(real.labels.sort().values, shuffled.labels.sort().values)
    assert (real.labels == shuffled.labels).float().mean() < 0.12  # 10 classes: ~0.1 by chance
    labels = root / "fashion-mnist" / "train-labels-idx1-ubyte"
    before = labels.stat().st_mtime_ns
    assert svr.shuffled_labels("fashion-mnist", str(fashion_root), tmp_path) == root and labels.stat().st_mtime_ns == before
    assert not list(root.rglob("*.tmp"))


def test_a_recipe_kept_before_lr_schedule_reads_as_epoch_and_keeps_its_training_key():
    """Results kept before TrainConfig had ``lr_schedule`` trained with the cosine annealed once an epoch: kept_recipe
    says so, and recipe_key (what a training's key is made of) gives such a recipe the key it had then."""
    svr = _benchmark("search_vs_random")
    old = {"epochs": 3, "lr": 0.05, "subset": 20000}
    assert svr.kept_recipe(old) == {**old, "lr_schedule": "epoch"}
    assert svr.recipe_key(svr.kept_recipe(old)) == old
    new = {**old, "lr_schedule": "step"}
    assert svr.kept_recipe(new) == new and svr.recipe_key(new) == new


def test_ensemble_orders_candidates_by_their_mean_rank_over_the_supernets(tmp_path):
    """oneshot_pick's --ensemble: a candidate's score is its mean rank (0 = a supernet's lowest loss) over the group's
    supernets, lowest first, ties in the first supernet's order; supernets scored on other candidates are refused."""
    pick = _benchmark("oneshot_pick")
    cells = [{"cell": k} for k in "abcd"]

    def scored(seed, order):  # a supernet's result: (one-shot loss, genotype), lowest loss first
        return dict(seed=seed, blind=False, val_acc=0.5 + seed / 10, score_seconds=1.0,
                    ranked=[(float(i), cells["abcd".index(c)]) for i, c in enumerate(order)])

    group = [scored(4, "abcd"), scored(5, "bacd"), scored(6, "cbad")]
    # mean ranks: a (0+1+2)/3 = 1, b (1+0+1)/3 = 2/3, c (2+2+0)/3 = 4/3, d 3
    e = pick.ensemble(group, str(tmp_path))
    assert [g["cell"] for _, g in e["ranked"]] == ["b", "a", "c", "d"]
    assert [round(v, 6) for v, _ in e["ranked"]] == [round(2 / 3, 6), 1.0, round(4 / 3, 6), 3.0]
    assert e["members"] == 3 and e["seed"] == pick.ENSEMBLE_SEED and e["dir"].endswith("oneshot-ensemble-real-s4-5-6")
    tied = pick.ensemble([scored(4, "abcd"), scored(5, "badc")], str(tmp_path))  # a and b tie at 0.5, c and d at 2.5
    assert [g["cell"] for _, g in tied["ranked"]] == ["a", "b", "c", "d"]
    other = scored(7, "abcd")
    other["ranked"][3] = (3.0, {"cell": "e"})
    with pytest.raises(SystemExit, match="same candidates"):
        pick.ensemble([group[0], other], str(tmp_path))


@pytest.mark.parametrize("shape", [(5,), (3, 4, 2), (0, 28, 28)])
def test_write_idx_is_read_idx_inverse(shape):
    from dcanas.data.datasets import read_idx, write_idx

    a = np.arange(int(np.prod(shape)), dtype=np.uint8).reshape(shape)
    back = read_idx(write_idx(a))
    assert back.shape == a.shape and np.array_equal(back, a)


@pytest.mark.parametrize("text, value", [("5", 5), ("0.1", 0.1), ("true", True), ('"nb201"', "nb201"), ("nb201", "nb201"),
                                         ('{"bottleneck": 1}', {"bottleneck": 1})])
def test_search_and_train_values_are_json_or_the_text_itself(text, value):
    assert _benchmark("search_vs_random").option_value(text) == value


def _benchmark(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name, index", [("dcanas-s3", 3), ("argmax-s12", 12), ("random-0", 0), ("naswot-2", 2), ("dcanasx2-g1", 1),
                                         ("wide-s5", 5)])
def test_every_network_trains_with_its_index_as_seed(name, index):
    assert _benchmark("search_vs_random").network_index(name) == index


def _kept(rows: list[tuple[str, str, int, float]], recipe_lr: float = 0.05) -> dict:
    """A kept result as search_vs_random.py writes its .json, with only what pooling reads."""
    return dict(meta=dict(window=[190_000.0, 200_000.0]), training=dict(lr=recipe_lr, epochs=3, data_root="data", device="cpu"),
                rows=[dict(name=f"{arm}-{seed}", arm=arm, genotype={"cell": g}, seed=seed, top1=acc) for arm, g, seed, acc in rows])


def test_pooling_counts_a_network_trained_in_two_results_once():
    """--pool: the shipped arm of one result and a variant of the shipped search (--pool-as rep=dcanas) of another
    together; the network both trained (same genotype, same seed) counts once, two random draws both count."""
    svr = _benchmark("search_vs_random")
    first = _kept([("dcanas", "a", 0, 0.86), ("dcanas", "b", 1, 0.87), ("random", "r", 0, 0.84), ("random", "s", 1, 0.85)])
    second = _kept([("rep", "a", 0, 0.86), ("rep", "c", 2, 0.88), ("random", "t", 0, 0.83), ("random", "u", 1, 0.86)])
    pooled = svr.pool_results([first, second], {"rep": "dcanas"})
    assert list(pooled["summary"]) == ["dcanas", "random"]
    assert pooled["summary"]["dcanas"]["n"] == 3 and pooled["summary"]["random"]["n"] == 4
    assert pooled["summary"]["dcanas"]["vs_random"] == pytest.approx(svr.welch([86.0, 87.0, 88.0], [84.0, 85.0, 83.0, 86.0]))
    with pytest.raises(ValueError, match="recipes"):
        svr.pool_results([first, _kept([("random", "r", 0, 0.84)], recipe_lr=0.1)], {})


@pytest.mark.parametrize("shipped, blind, learned", [([86.0, 87.0, 88.0, 87.5], [84.0, 85.0, 84.5, 84.2], True),
                                                      ([85.0, 87.0, 84.0, 86.0], [86.0, 85.5, 87.0, 85.0], False)])
def test_the_shipped_search_is_judged_against_its_label_blind_control(shipped, blind, learned):
    """control_lines: the shipped arm's mean minus the shuffled arm's, with its Welch interval; a gain from the data is
    claimed only when the interval is above zero. Cells: 'a' twice in the shipped arm, once in the control."""
    svr = _benchmark("search_vs_random")
    cells = ["a", "a", "b", "c"], ["a", "d", "e", "f"]
    rows = [dict(arm=arm, genotype={"cell": g}, top1=acc / 100) for arm, accs, gs in (("dcanas", shipped, cells[0]), ("shuffled", blind, cells[1]))
            for acc, g in zip(accs, gs)]
    derived, verdict = svr.control_lines(rows)
    w = svr.welch(shipped, blind)
    assert f"{w['diff']:+.2f} points, 95% interval [{w['lo']:+.2f}, {w['hi']:+.2f}]" in verdict
    assert ("came in part from the data" in verdict) is learned and (w["lo"] > 0) is learned
    assert "dcanas 3 distinct cells in 4 searches, shuffled 4 in 4; 1 of the shuffled" in derived
    assert "most common cell (2 of 4) was derived by 1 shuffled" in derived
    assert svr.control_lines([r for r in rows if r["arm"] == "dcanas"]) == []


def test_pooling_different_recipes_is_one_line_and_exit_2(tmp_path):
    files = [tmp_path / "a.json", tmp_path / "b.json"]
    files[0].write_text(json.dumps(_kept([("random", "r", 0, 0.84)])))
    files[1].write_text(json.dumps(_kept([("random", "r", 0, 0.84)], recipe_lr=0.1)))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_vs_random.py"), "--pool", *map(str, files), "--out", str(tmp_path / "p.md")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "one recipe" in r.stderr and not (tmp_path / "p.md").exists()


def test_a_network_name_without_an_index_is_refused():
    with pytest.raises(ValueError, match="no index"):
        _benchmark("search_vs_random").network_index("dcanas")


@pytest.mark.parametrize("spread, noise, distinct", [(2.0, 0.3, True), (0.0, 0.6, False)])
def test_room_separates_networks_that_differ_from_noise(spread, noise, distinct):
    """The benchmark's room analysis: 30 networks whose own accuracies spread by `spread` points, each trained twice with
    `noise` points of seed noise; it finds the spread (and says how many networks an interval would need) or finds none."""
    import random

    rng = random.Random(0)
    means = [88 + rng.gauss(0, spread) for _ in range(30)]
    gap = _benchmark("search_vs_random").room([(m + rng.gauss(0, noise), m + rng.gauss(0, noise)) for m in means])
    assert gap["networks"] == 30 and abs(gap["sd_noise"] - noise) < 0.25 * noise
    if distinct:
        assert gap["p"] < 0.001 and abs(gap["sd_between"] - spread) < 0.25 * spread and gap["needed"] < 5
    else:
        assert gap["p"] > 0.05 and gap["sd_between"] < 0.3 and gap["needed"] > 50


def test_preset_options_reach_the_search_and_flags_override_them():
    """A search preset's options (cpu-search: every cell mixed) are the starting point; the CLI's flags change only
    what they name."""
    import argparse

    from dcanas.search.cli import add_search_options, config_from_args

    p = argparse.ArgumentParser()
    add_search_options(p)
    cfg = config_from_args(p.parse_args(["--preset", "cpu-search"]))
    assert not cfg.options.derived_cells and cfg.options.constraint and cfg.warmup_epochs == 5 and cfg.epochs == 15
    cfg = config_from_args(p.parse_args(["--preset", "cpu-search", "--no-constraint", "--bottleneck", "2", "--warmup-epochs", "3"]))
    assert not cfg.options.derived_cells and not cfg.options.constraint and cfg.options.bottleneck == 2 and cfg.warmup_epochs == 3
    assert config_from_args(p.parse_args(["--preset", "cpu-demo"])).options.derived_cells
    assert config_from_args(p.parse_args(["--preset", "cpu-demo"])).options.sampling == "softmax"
    for s in ("gumbel", "gdas"):
        assert config_from_args(p.parse_args(["--preset", "cpu-demo", "--sampling", s])).options.sampling == s


def _sampling_supernet(space: str, **opts):
    from dcanas.search.supernet import SearchOptions, Supernet, SupernetConfig

    torch.manual_seed(0)
    cfg = SupernetConfig(space=space, C=8, cells=3 if space == "darts" else 1, nodes=4 if space == "darts" else 3, num_classes=10,
                         in_channels=1, input_size=16, options=SearchOptions(**{"sampling": "gumbel", **opts}))
    return Supernet(cfg)


@pytest.mark.parametrize("sampling", ["gumbel", "gdas"])
@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_gumbel_sampling_trains_one_drawn_op_per_edge_and_gives_alpha_a_gradient(space, sampling):
    """GDAS' sampling: while training, every edge's weights are one op at exactly 1 (drawn from alpha, a new draw per
    forward), in evaluation the arg-max op; the loss's gradient still reaches alpha (the soft sample's)."""
    import torch.nn.functional as F

    model = _sampling_supernet(space, sampling=sampling)
    x, y = torch.randn(8, 1, 16, 16), torch.arange(8) % 10
    draws, grads = set(), 0
    for _ in range(6):
        model.train()
        for t, a in model.alphas.items():
            w = model.op_weights(a)
            assert torch.equal(w.detach().sum(-1), torch.ones(len(a))) and set(w.detach().unique().tolist()) == {0.0, 1.0}
            draws.add((t, tuple(w.detach().argmax(-1).tolist())))
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        grads += sum(int(a.grad is not None and a.grad.abs().sum() > 0) for a in model.alphas.values())
    assert len(draws) > len(model.alphas), "every forward draws again"
    assert grads > 0
    model.eval()
    for a in model.alphas.values():
        assert torch.equal(model.op_weights(a).argmax(-1), a.argmax(-1)) and model.op_weights(a).sum() == len(a)


def test_a_gumbel_sample_runs_the_drawn_cell():
    """An NB201 mixed cell under a drawn one-hot weight computes exactly the discrete cell of the drawn ops: the step
    trains and scores one architecture, not a mixture."""
    model = _sampling_supernet("nb201", derived_cells=False).train()
    cell = next(c for i, c in enumerate(model.cells) if model.cell_kind[i] == "normal")
    x = torch.randn(4, 8, 16, 16)
    torch.manual_seed(3)
    w = model.op_weights(model.alphas["normal"]).detach()
    k = w.argmax(-1).tolist()
    selected = {j: [(i, k[cell.edge_index[(i, j)]]) for i in range(j)] for j in range(1, 4)}
    assert torch.allclose(cell([x], w), cell([x], selected=selected), atol=1e-5)
    assert torch.allclose(cell([x], w, drawn=k), cell([x], selected=selected), atol=1e-5)  # "gdas": the drawn ops alone


@pytest.mark.parametrize("reduction", [False, True])
def test_a_gdas_draw_of_none_on_every_edge_gives_zero_nodes_of_the_cells_shape(reduction):
    """A DARTS cell whose drawn ops are all `none` (about 1 in 8^2 for a node at uniform alpha) still returns a
    tensor of the cell's output shape (half the size in a reduction cell), all zeros."""
    model = _sampling_supernet("darts", sampling="gdas", derived_cells=False).train()
    i = model.cell_kind.index("reduce" if reduction else "normal")
    cell = model.cells[i]
    states = [torch.randn(2, cell.squeeze[0][1].in_channels, 8, 8) for _ in range(2)]
    w = torch.zeros(len(cell.edges), len(cell.op_names))
    none = cell.op_names.index("none")
    w[:, none] = 1.0
    expected = cell(states, w)  # the mixed path (every op computed, weight 0 but for none)
    out = cell(states, w, drawn=[none] * len(cell.edges))
    assert out.shape == expected.shape and not out.any()


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_gdas_computes_only_the_drawn_op_of_each_edge(space):
    """sampling "gdas": a training forward calls only the op modules of the drawn ops (every mixed cell: about one
    discrete network's work), and gives the same output as "gumbel" (every op computed) for the same draw; evaluation
    runs the arg-max ops either way."""
    import torch.nn.functional as F

    models = {s: _sampling_supernet(space, sampling=s, derived_cells=False).train() for s in ("gumbel", "gdas")}
    models["gdas"].load_state_dict(models["gumbel"].state_dict())
    gdas = models["gdas"]
    calls, expected = set(), set()
    mixed = [(i, c) for i, c in enumerate(gdas.cells) if gdas.runs_mixed(i)]
    for i, cell in mixed:
        for key, mods in cell.ops.items():  # weight sharing: one module per (source node, op)
            for k, mod in enumerate(mods):
                mod.register_forward_hook(lambda *_a, i=i, key=key, k=k: calls.add((i, key, k)))
    x, y = torch.randn(4, 1, 16, 16), torch.arange(4)
    outs = {}
    for s, m in models.items():
        torch.manual_seed(7)  # the same draw
        outs[s] = m(x)
        F.cross_entropy(outs[s], y).backward()
    assert torch.allclose(outs["gdas"], outs["gumbel"], atol=1e-5)
    for i, cell in mixed:
        drawn = gdas._drawn[gdas.cell_kind[i]]
        expected |= {(i, str(src), drawn[e]) for e, (src, _j) in enumerate(cell.edges) if cell.op_names[drawn[e]] != "none"}
    every = sum(len(mods) for _i, c in mixed for mods in c.ops.values())
    assert calls == expected and len(calls) < every / 2, (len(calls), every)
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in models["gdas"].alphas.values())


def test_gumbel_temperature_falls_from_ten_to_a_tenth_and_unknown_sampling_is_one_error():
    from dcanas.errors import UserError
    from dcanas.search.supernet import gumbel_tau

    assert [gumbel_tau(e, 3) for e in range(3)] == pytest.approx([10.0, 5.05, 0.1])
    assert gumbel_tau(0, 1) == 10.0
    with pytest.raises(UserError, match="unknown sampling 'hard' for the mixed ops; valid: softmax, gumbel, gdas"):
        _sampling_supernet("nb201", sampling="hard")

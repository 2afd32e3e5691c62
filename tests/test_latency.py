"""The latency model (issue 14): the fit recovers an additive table exactly, CSV input errors are one
line, `latency build` measures on the local device through the runner and resumes, and a search
holds a latency budget through it."""
from __future__ import annotations

import json
import platform
import random
import shutil
from types import SimpleNamespace
from dataclasses import replace
from functools import partial

import pytest

from conftest import run_dcanas

from dcanas.costs.latency import LatencyModel, instances, load_latency_model, work
from dcanas.errors import UserError
from dcanas.nets.config import default_config
from dcanas.nets.genotype import dumps, random_genotype
from dcanas.nets.ops import SPACE_OPS

SPACES = ["darts", "nb201"]
HOST = platform.node()  # latency models are cached by the machine they measured, not the profile name


def _net(space):
    return default_config(space, in_channels=1, input_size=28, num_classes=10, C=8, layers=5 if space == "darts" else 2)


def _synthetic(space, n, seed=0):
    """Genotypes and latencies from a known additive table: theta_0 + sum of theta_op x work(instance)."""
    rng = random.Random(seed)
    ops = sorted(o for o in SPACE_OPS[space] if o != "none")
    truth = {o: rng.uniform(0.2, 3.0) for o in ops}
    gs = [random_genotype(space, rng) for _ in range(n)]
    ys = [1.5 + sum(truth.get(i[0], 0.0) * work(i) for i in instances(g, _net(space))) for g in gs]
    return ops, truth, gs, ys


dcanas = partial(run_dcanas, timeout=900)


@pytest.mark.parametrize("space", SPACES)
def test_fit_recovers_a_synthetic_additive_table(space):
    ops, truth, gs, ys = _synthetic(space, 20)
    lm = LatencyModel(space, _net(space).to_json(), ops, "work", 0.0, {o: 0.0 for o in ops}).fit(list(zip(gs, ys)))
    assert lm.stats["ridge"] == 0.0  # leave-one-out picks the plain least squares on exact data
    assert lm.intercept == pytest.approx(1.5, rel=1e-6)
    for o in ops:
        assert lm.weights[o] == pytest.approx(truth[o], rel=1e-6), o
    assert lm.stats["mape"] < 1e-9 and lm.stats["spearman"] == pytest.approx(1.0)


def test_models_are_keyed_by_the_machine_and_its_settings_not_the_profile_name():
    """Two profiles of one machine with the same runtime settings share a latency model (same key, same file);
    another precision, thread count or machine does not."""
    from dcanas.devices.schema import load_profile
    from dcanas.export.formats import formats_for
    from dcanas.latency.build import model_key, model_stem
    from dcanas.latency.cli import with_precision

    info = dict(hostname="box", machine="aarch64", system="Linux", cpu_model="Cortex-A72", cores=4, runtimes={"ai_edge_litert": "2.3.0"})
    net = _net("darts")
    base = load_profile("rpi4")

    def key(profile, **kw):
        return model_key(profile, formats_for(profile.runtime.engine, profile.runtime.precision), "darts", net, info | kw)

    renamed = replace(base, name="my-pi")
    assert key(renamed) == key(base) and model_stem(key(renamed)) == model_stem(key(base)) and "my-pi" not in model_stem(key(base))
    assert base.runtime.precision == "int8"
    fp32 = with_precision(base, "fp32")
    assert fp32.runtime.precision == "fp32" and key(fp32)["format"] == "tflite" and key(base)["format"] == "tflite-int8"
    assert model_stem(key(fp32)) != model_stem(key(base))
    assert model_stem(key(replace(base, runtime=replace(base.runtime, threads=1)))) != model_stem(key(base))
    assert model_stem(key(base, hostname="other-pi")) != model_stem(key(base))
    with pytest.raises(UserError, match="onnxruntime runs fp32 models only"):
        with_precision(load_profile("local"), "int8")


def test_graph_model_recovers_per_node_costs_and_refuses_unknown_op_types():
    """fit_graph on exact synthetic rows (latency = c_0 + per-node cost x node count) recovers the costs;
    a network with an op type no calibration network had gets no prediction rather than a wrong one."""
    rng = random.Random(1)
    truth = {"Conv": 0.004, "Relu": 0.0015, "Add": 0.002, "ReorderOutput": 0.003, "MaxPool": 0.0025}
    rows = []
    for _ in range(20):
        counts = {t: rng.randint(1, 60) for t in truth}
        rows.append((counts, 0.05 + sum(truth[t] * n for t, n in counts.items())))
    lm = LatencyModel("darts", _net("darts").to_json(), [], "table", 0.0, {}).fit_graph(rows)
    assert lm.graph_stats["ridge"] == 0.0 and lm.graph_stats["loo"]["mape"] < 1e-9
    assert lm.graph_intercept == pytest.approx(0.05, rel=1e-6)
    for t, c in truth.items():
        assert lm.graph_weights[t] == pytest.approx(c, rel=1e-6), t
    counts = {"Conv": 10, "Relu": 3, "Add": 0, "ReorderOutput": 2, "MaxPool": 1}
    assert lm.predict_graph(counts) == pytest.approx(0.05 + sum(truth[t] * n for t, n in counts.items()), rel=1e-6)
    assert lm.predict_graph({**counts, "Gemm": 1}) is None


@pytest.mark.parametrize("space", SPACES)
def test_latency_fit_predict_show_cli(tmp_path, space):
    ops, truth, gs, ys = _synthetic(space, 12, seed=1)
    csv = tmp_path / "rows.csv"
    # NB201 rows as arch strings, DARTS rows as genotype JSON files: both spellings the CSV accepts
    lines = ["genotype,latency_ms"]
    for i, (g, y) in enumerate(zip(gs, ys)):
        if space == "nb201":
            lines.append(f"{g.tostr()},{y}")
        else:
            (tmp_path / f"g{i}.json").write_text(dumps(g))
            lines.append(f"{tmp_path / f'g{i}.json'},{y}")
    csv.write_text("\n".join(lines) + "\n")
    model = tmp_path / "lat.json"
    r = dcanas("latency", "fit", "--space", space, "--dataset", "fashion-mnist", "--eval-channels", "8",
               "--eval-layers", "5" if space == "darts" else "2", "--csv", str(csv), "--out", str(model))
    assert r.returncode == 0, r.stderr
    assert "MAPE 0.00%" in r.stdout and "within +-10% 100%" in r.stdout
    out = tmp_path / "pred.csv"
    r = dcanas("latency", "predict", "--model", str(model), "--csv", str(csv), "--out", str(out))
    assert r.returncode == 0, r.stderr
    got = [float(line.split(",")[-1]) for line in out.read_text().splitlines()[1:]]
    assert got == pytest.approx(ys, rel=1e-4)
    r = dcanas("latency", "show", str(model))
    assert r.returncode == 0 and "basis work" in r.stdout


@pytest.mark.parametrize("content, says", [
    ("arch,ms\nDARTS_V2,3\n", "no column genotype, latency_ms"),
    ("genotype,latency_ms\nDARTS_V2,-3\n", "line 2: latency_ms '-3' is not a number of milliseconds in (0, 3.6e+06]"),
    ("genotype,latency_ms\nDARTS_V2,3\nNOT_A_GENOTYPE,4\n", "line 3: genotype 'NOT_A_GENOTYPE'"),
    ("genotype,latency_ms\n", "no rows after the header"),
])
def test_latency_fit_bad_csv_one_line(tmp_path, content, says):
    csv = tmp_path / "rows.csv"
    csv.write_text(content)
    r = dcanas("latency", "fit", "--space", "darts", "--csv", str(csv), "--out", str(tmp_path / "m.json"))
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and says in r.stderr, r.stderr
    assert not (tmp_path / "m.json").exists()


def test_show_refuses_a_file_that_is_not_a_model(tmp_path):
    f = tmp_path / "x.json"
    f.write_text(json.dumps({"a": 1}))
    r = dcanas("latency", "show", str(f))
    assert r.returncode == 2 and "not a dcanas latency model" in r.stderr


def test_search_holds_a_latency_budget(tmp_path, fashion_root):
    """`dcanas search --metric latency`: k_s in ms through the latency model, and the derived network's
    predicted latency within the budget and in the fill window; a model for another network is refused."""
    from dcanas.search.config import SearchConfig, apply_preset, cost_model, eval_config

    cfg = apply_preset(SearchConfig(dataset="fashion-mnist"), "tiny")
    net = eval_config(cfg)
    ops = sorted(o for o in SPACE_OPS["darts"] if o != "none")
    lm = LatencyModel("darts", net.to_json(), ops, "work", 0.2, {o: 0.4 + 0.2 * i for i, o in enumerate(ops)})
    path = lm.save(tmp_path / "lat.json")
    cfg = replace(cfg, metric="latency_ms", latency_model=str(path))
    lo, hi = cost_model(cfg).feasible_range()
    budget = lo + 0.5 * (hi - lo)
    r = dcanas("search", "--preset", "tiny", "--epochs", "1", "--metric", "latency", "--latency-model", str(path),
               "--budget", f"{budget:.4f}", "--data-root", str(fashion_root), "--out", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "s" / "search.json").read_text())["summary"]
    assert s["metric"] == "latency_ms" and s["under_budget"]
    assert 0.95 * budget <= s["derived_cost"] <= budget + 1e-4
    from dcanas.nets.genotype import genotype_from_json
    assert s["derived_cost"] == pytest.approx(lm.predict(genotype_from_json(s["genotype"])), abs=1e-4)
    assert " ms" in r.stdout
    other = dcanas("search", "--preset", "tiny", "--epochs", "1", "--metric", "latency", "--latency-model", str(path),
                   "--eval-channels", "6", "--budget", "1", "--data-root", str(fashion_root), "--out", str(tmp_path / "t"))
    assert other.returncode == 2 and "not for this search's evaluation network" in other.stderr
    missing = dcanas("search", "--preset", "tiny", "--metric", "latency", "--budget", "1", "--data-root", str(fashion_root),
                     "--out", str(tmp_path / "u"))
    assert missing.returncode == 2 and "needs a latency model" in missing.stderr


def _build(cache, device, *extra):
    return dcanas("latency", "build", "--device", str(device), "--preset", "tiny", "--runs", "3", "--rounds", "2",
                  "--min-seconds", "0.01", "--cache-dir", str(cache), *extra)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One `latency build` on `local` at 1 thread (the tiny network, 4 calibration networks), measured once for the
    tests that need a model measured here (about 75 s each); each copies the cache (``_cache``) before it writes there.
    1 thread: on a 2-vCPU VM onnxruntime's 2 threads time a network 2x slow in phases (README, latency model)."""
    from dcanas.devices.schema import PROFILES_DIR

    root = tmp_path_factory.mktemp("latency-build")
    profile = root / "local-1t.yaml"
    profile.write_text((PROFILES_DIR / "local.yaml").read_text().replace("name: local", "name: local-1t")
                       .replace("threads: 2", "threads: 1"))
    return SimpleNamespace(cache=root / "cache", profile=profile, result=_build(root / "cache", profile, "--calibrate", "4"))


def _cache(built, tmp_path):
    """The shared build's cache, copied: its model, measurements, exported files and measurement store."""
    assert built.result.returncode == 0, built.result.stderr[-3000:]
    return shutil.copytree(built.cache, tmp_path / "cache")


@pytest.mark.slow
def test_latency_build_on_local_measures_resumes_and_locks(built, tmp_path):
    """`latency build` through the local transport and the real runner: a per-op table, fixed parts and
    calibration networks measured; after losing the model and two measurements a rebuild exports nothing
    and measures only those two; a second build on the same device waits its turn (refused)."""
    import fcntl

    from dcanas.costs.latency import load_latency_model

    cache, r = _cache(built, tmp_path), built.result
    [path] = list(cache.glob(f"{HOST}-darts-*.json"))
    lm = load_latency_model(path)
    assert lm.basis == "table" and len(lm.table) >= 10 and lm.fixed_ms > 0
    # each op's time alone less the per-call probe: >= 0 (an identity skip costs nothing), > 0 for convolutions
    assert all(v >= 0 for v in lm.table.values()) and all(v > 0 for k, v in lm.table.items() if k.startswith("sep_conv"))
    assert len(lm.calibration) == 4 and lm.stats["rows"] == 4
    assert lm.device["info"]["cpu_model"] and lm.device["conditions"][0]["engine"] == "onnxruntime"
    assert "repeat-to-repeat CV" in r.stdout and "fit on 4 networks" in r.stdout
    # the reference network, timed in every chunk: the machine's level while each chunk ran
    assert all(c["reference_ms"] > 0 for c in lm.device["conditions"]) and len(lm.device["conditions"]) >= 3
    assert lm.device["reference"]["ms"] > 0 and "reference network (timed in every chunk" in r.stdout
    # each round times at least 3 runs and 0.01 s: a model of microseconds runs far more than 3 times
    assert lm.device["timing"] == dict(runs=3, rounds=2, warmup=20, min_seconds=0.01, confirm=0.02, max_rounds=0) and "at least 3 runs and 0.01 s" in r.stdout
    measured = json.loads(next(cache.glob(f"{HOST}-darts-*/measured.json")).read_text())["measured"]
    probe = next(v for k, v in measured.items() if k.startswith("probe:"))
    # 2 rounds, up to 6 (3x) while the two fastest differ by over 2% (Timing.confirm)
    assert 2 <= len(probe["runs_per_round"]) <= 6 and min(probe["runs_per_round"]) > 30, probe
    assert len(probe["runs_per_round"]) == 2 or sorted(probe["p50_ms_rounds"][:-1])[1] > 1.02 * min(probe["p50_ms_rounds"][:-1]), probe
    # the calibration networks' graphs as onnxruntime runs them (after its fusions) and the graph model on them
    from collections import Counter

    import onnx

    graph = lm.calibration[0]["graph"]
    exported = [n.op_type for n in onnx.load(str(next(cache.glob(f"{HOST}-darts-*/models/net_0_0.onnx")))).graph.node]
    # not the file's graph: onnxruntime's own rewrites (on x86, layout reorders around its blocked convolutions)
    assert graph["Conv"] >= exported.count("Conv") > 10, graph
    assert sorted(graph.items()) != sorted(Counter(exported).items()), graph
    assert lm.graph_stats["rows"] == 4 and "graph model" in r.stdout
    assert all(c["graph_predicted_ms"] > 0 for c in lm.calibration)
    # `latency fit` on rows measured here (the calibration networks' end-to-end p50s) as JSON genotype paths
    rows = ["genotype,latency_ms"]
    for i, c in enumerate(lm.calibration):
        (tmp_path / f"c{i}.json").write_text(json.dumps(c["genotype"]))
        rows.append(f"{tmp_path / f'c{i}.json'},{c['measured_ms']}")
    (tmp_path / "measured.csv").write_text("\n".join(rows) + "\n")
    fit = dcanas("latency", "fit", "--space", "darts", "--preset", "tiny", "--csv", str(tmp_path / "measured.csv"),
                 "--out", str(tmp_path / "fit.json"))
    assert fit.returncode == 0, fit.stderr
    fitted = load_latency_model(tmp_path / "fit.json")
    assert fitted.basis == "work" and fitted.stats["rows"] == 4 and fitted.stats["mape"] < 0.25
    state_path = next(cache.glob(f"{HOST}-darts-*/measured.json"))
    state = json.loads(state_path.read_text())
    for name in list(state["measured"])[:2]:
        del state["measured"][name]
    state_path.write_text(json.dumps(state))
    path.unlink()
    again = _build(cache, built.profile, "--calibrate", "4")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[export]" not in again.stderr and "chunk 1/1: 2 models" in again.stderr, again.stderr
    cached = _build(cache, built.profile, "--calibrate", "4")
    assert "latency model cached" in cached.stderr and "[measure]" not in cached.stderr
    # another profile of this machine with the same settings uses the same model (it measures the same thing)
    mine = tmp_path / "my-box.yaml"
    mine.write_text(built.profile.read_text().replace("name: local-1t", "name: my-box"))
    shared = dcanas("latency", "build", "--device", str(mine), "--preset", "tiny", "--calibrate", "4", "--cache-dir", str(cache))
    assert shared.returncode == 0 and f"latency model cached: {path}" in shared.stderr, shared.stderr[-2000:]
    with open(cache / f"{HOST}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        busy = _build(cache, built.profile, "--calibrate", "4")
    assert busy.returncode == 2 and f"another latency measurement is running on {HOST}" in busy.stderr


def test_a_chunk_timed_in_a_slow_phase_is_timed_again(tmp_path, monkeypatch):
    """Four op models and the reference network timed on `local` through the real runner, two models per
    chunk. The machine's slow phase cannot be called up on demand, so it is simulated: the first chunk's
    figures (reference included) come back multiplied by SLOWED, as a whole chunk's were (2x) in a rerun of the
    benchmark. Its reference then reads far above the other chunk's: the chunk is timed again and the faster
    attempt kept. SLOWED is 10, not the 2 once seen: CI failed with 2 (stop 49) when the second chunk itself
    landed in a slow phase (this VM had 2.4x phases), so 2x no longer read above SLOW (1.10) x the second."""
    from dcanas.devices.schema import load_profile
    from dcanas.export.formats import formats_for
    from dcanas.latency import build
    from dcanas.latency.measure import instance_module, instance_shape, op_positions
    from dcanas.latency.timing import Timing

    profile = load_profile("local")
    cfg = _net("darts")
    insts = [i for i in op_positions("darts", cfg, tuple(SPACE_OPS["darts"])) if i[0] == "sep_conv_3x3"][:4]
    models = {f"op:{k}": (lambda i=i: instance_module(i), instance_shape(i)) for k, i in enumerate(insts)}
    models[build.REFERENCE] = models.pop("op:3")
    real, calls, slowed = build.measure_batch, [], []
    SLOWED = 10

    def slow_first(*a, **kw):
        res = real(*a, **kw)
        calls.append([r["model"] for r in res["batch"]])
        if len(calls) == 1:
            for r in res["batch"]:
                r["p50_ms_rounds"] = [SLOWED * v for v in r["p50_ms_rounds"]]
                if r["model"].startswith(build.REFERENCE.replace(":", "_")):
                    slowed.append(min(r["p50_ms_rounds"]))  # the chunk's reference_ms in its slowed attempt
        return res

    monkeypatch.setattr(build, "measure_batch", slow_first)
    monkeypatch.setattr(build, "CHUNK", 2)
    msgs: list[str] = []
    measured, conditions = build.measure_models(profile, formats_for("onnxruntime", "fp32"), models, tmp_path,
                                                timing=Timing(runs=5, rounds=2, warmup=5, min_seconds=0.02),
                                                reference=build.REFERENCE, progress=msgs.append)
    assert len(calls) >= 3 and calls[0] != calls[1] and calls[2] == calls[0], calls  # chunk 1, chunk 2, chunk 1 again
    # a real slow phase during the test may send either chunk back too (seen once: chunk 1 timed a third time)
    assert all(c in calls[:2] for c in calls[2:]) and len(calls) <= 2 * (1 + build.RETRIES), calls
    assert all(build.REFERENCE.replace(":", "_") + ".onnx" in c for c in calls)  # the reference is in every chunk
    assert any("ran slow" in m for m in msgs), msgs
    first, other = conditions  # in chunk order
    assert 2 <= first["attempts"] <= 1 + build.RETRIES, conditions
    # the slowed attempt was replaced by a real one (faster than it; a retry can itself land in a slow moment of a
    # loaded machine, so the kept figure is not asked to be within 1.5x of the other chunk's: that failed once in CI;
    # and on 2026-12-06 this VM had phases of 2.4x, slower than a 2x-slowed attempt: then every retry was spent)
    assert slowed and (first["reference_ms"] < slowed[0] or first["attempts"] == 1 + build.RETRIES), (slowed, conditions)
    assert build.reference_level(conditions) > 0 and set(measured) == set(models)


@pytest.mark.parametrize("confirm", [0.0, 1e-12, 10.0])
def test_the_runner_times_unsettled_models_again(tmp_path, confirm):
    """The real runner on `local`, three small op models, 2 rounds: with --confirm a model whose two fastest
    rounds differ by more than it gets more rounds, up to --max-rounds, and says whether it settled; without,
    every model gets exactly 2. 1e-12 settles (almost) never, 10 (1000%) always after the first two."""
    import torch

    from dcanas.devices.schema import load_profile
    from dcanas.export.converters import convert
    from dcanas.export.formats import formats_for
    from dcanas.latency.measure import instance_module, instance_shape, op_positions
    from dcanas.profile.remote import measure_batch

    cfg = _net("darts")
    insts = [i for i in op_positions("darts", cfg, tuple(SPACE_OPS["darts"])) if i[0] == "sep_conv_3x3"][:3]
    paths = []
    for k, inst in enumerate(insts):
        paths.append(tmp_path / f"op{k}.onnx")
        convert(instance_module(inst).eval(), torch.randn(instance_shape(inst)), formats_for("onnxruntime", "fp32"), paths[-1])
    res = measure_batch(load_profile("local"), paths, runs=3, warmup=2, rounds=2, min_seconds=0.0, confirm=confirm, max_rounds=4,
                        progress=lambda m: None)

    def settled(r):
        return sorted(r)[1] <= (1 + confirm) * sorted(r)[0]

    for r in res["batch"]:
        rounds = r["p50_ms_rounds"]
        if confirm == 0:
            assert len(rounds) == 2 and "confirmed" not in r, r
            continue
        assert 2 <= len(rounds) <= 4 and r["confirmed"] == settled(rounds), r
        if len(rounds) > 2:  # timed again only while unsettled
            assert not settled(rounds[:-1]), r
        if not r["confirmed"]:
            assert len(rounds) == 4, r
    if confirm == 10.0:
        assert all(len(r["p50_ms_rounds"]) == 2 and r["confirmed"] for r in res["batch"]), res["batch"]
    if confirm == 1e-12:
        assert any(len(r["p50_ms_rounds"]) == 4 for r in res["batch"]), res["batch"]


@pytest.mark.slow
def test_run_searches_on_a_latency_budget(built, tmp_path, fashion_root):
    """A profile with `search_metric: latency`: `dcanas run` builds (here: reuses, the shared build's) the device's
    latency model in its own stage, searches on the latency budget, and the verdict and the report show the
    prediction beside the measurement."""
    import yaml

    from dcanas.costs.latency import load_latency_model
    from dcanas.search.config import SearchConfig, apply_preset, cost_model

    cache = _cache(built, tmp_path)
    prof = tmp_path / "lat.yaml"

    # 1 thread, as the shared build: 2 threads on a 2-vCPU VM time a network 2x slow in phases, which would make the
    # halved model's first derivation below 3x over the budget, past any repair
    def write_profile(budget: float) -> None:  # the budget is not part of the latency model's key
        prof.write_text(yaml.safe_dump({"name": "local-lat", "budget": {"latency_ms": budget, "model_size_kb": 4096},
                                        "search_metric": "latency", "runtime": {"engine": "onnxruntime", "threads": 1},
                                        "connection": {"transport": "local"}}))

    [path] = list(cache.glob(f"{HOST}-darts-*.json"))
    cfg = replace(apply_preset(SearchConfig(dataset="fashion-mnist"), "tiny"), metric="latency_ms", latency_model=str(path))
    lo, hi = cost_model(cfg).feasible_range()
    budget = round(lo + 0.6 * (hi - lo), 4)
    write_profile(budget)
    # a LUG for latency: K' -> the derived network's latency by the same model, two searches; the run finds it by its options
    # and the model's content (its copy in the run folder is the same file)
    lug = dcanas("lug", "build", "--preset", "tiny", "--metric", "latency", "--latency-model", str(path), "--points", "2",
                 "--max-points", "2", "--data-root", str(fashion_root), "--cache-dir", str(cache))
    assert lug.returncode == 0, lug.stderr[-3000:]
    assert " ms |" in lug.stdout  # K' and K_d at the metric's resolution, not rounded to whole milliseconds
    from dcanas.search.lug import LUG

    [lug_path] = [p for p in cache.glob("darts-fashion-mnist-latency_ms-*.json")]
    r = dcanas("run", "--device", str(prof), "--preset", "tiny", "--cache-dir", str(cache), "--latency-calibrate", "4",
               "--runs", "20", "--data-root", str(fashion_root), "--out", str(tmp_path / "run"))
    run = tmp_path / "run"
    stages = json.loads((run / "run.json").read_text())["stages"] if (run / "run.json").is_file() else {}
    verdict = stages.get("verdict", {}).get("summary")
    assert verdict is not None, r.stderr[-3000:]  # the run reached a verdict
    # the exit code is the verdict's (the device's measurement decides whether the budget was met)
    assert r.returncode == (0 if verdict["passed"] else 1), r.stderr[-3000:]
    assert any(row["budget"].startswith("latency_ms") and row["measured"] > 0 for row in verdict["rows"])
    assert "latency model cached" in r.stderr
    s = json.loads((run / "run.json").read_text())["stages"]["search"]["summary"]
    assert s["metric"] == "latency_ms" and s["K_d"] == budget and s["under_budget"]
    assert s["lug"] == str(lug_path) and s["K_prime"] == pytest.approx(LUG.load(lug_path).lookup(budget)), s
    assert f"LUG {lug_path}" in r.stderr
    # the derived network was timed on the device before retraining, the reference network beside it
    checks = s["device_checks"]
    assert checks and all(c["measured_ms"] > 0 and c["reference_ms"] > 0 for c in checks), checks
    assert "before retraining" in r.stderr and checks[-1]["genotype"] == json.loads((run / "search" / "genotype.json").read_text())
    assert load_latency_model(run / "latency" / "model.json").to_json() == load_latency_model(path).to_json()
    v = json.loads((run / "verdict" / "verdict.json").read_text())
    row = next(x for x in v["rows"] if x["budget"].startswith("latency_ms"))
    lm = load_latency_model(path)
    from dcanas.nets.genotype import genotype_from_json

    final = genotype_from_json(json.loads((run / "search" / "genotype.json").read_text()))
    assert "predicted" in row["source"] and (1 + lm.margin) * v["predicted"]["latency_ms"] == pytest.approx(cost_model(cfg).derived(final), abs=1e-3)
    # the verdict timed the profiled graph again beside the model's reference network: judged at the build's speed too
    lc = v["latency_check"]
    assert lc["reference_ms"] > 0 and lc["level"] == pytest.approx(lc["reference_ms"] / lm.device["reference"]["ms"])
    assert lc["again_ms"] > 0 and lc["measured_ms"] == row["measured"]
    assert lc["decided_ms"] == pytest.approx(lc["again_ms"] / lc["level"]) and lc["why"] in row["source"]
    assert row["met"] == (True if row["measured"] <= budget else ("noise" if lc["decision"] != "over" else False))
    assert "latency at the verdict:" in r.stderr
    assert (run / "report" / "latency_model.png").exists()
    assert "Derived network timed on the device before retraining" in (run / "report" / "report.md").read_text()
    # the closed loop: the model's error on what this run measured, and those measurements in the device's store
    from dcanas.latency.store import read

    err = v["latency_model_error"]
    assert len(err["rows"]) == len(checks) + 1 and err["store"] == str(path)
    assert err["rows"][-1]["measured_ms"] == pytest.approx(next(x for x in v["rows"] if x["budget"].startswith("latency_ms"))["measured"], rel=1e-3)
    stored, bad = read(path)
    assert bad == 0 and [r["source"] for r in stored].count("calibration") == 4
    assert [r["source"] for r in stored].count("hold") == len(checks) and [r["source"] for r in stored].count("verdict") == 1
    assert "latency model on the" in r.stderr and "## Latency model on this run's measurements" in (run / "report" / "report.md").read_text()

    # A model that predicts half of every time (one built on a faster day): the derived network measures over
    # the budget on the device, and the same search (its checkpoint) is derived again under a budget shrunk
    # by the overshoot, until one measures within the budget or REPAIRS run out.
    from dcanas.devices.schema import load_profile
    from dcanas.latency.hold import REPAIRS, hold_latency
    from dcanas.nets.config import NetConfig
    from dcanas.search.searcher import rederive

    half = load_latency_model(path)
    half.intercept, half.fixed_ms = 0.5 * half.intercept, 0.5 * half.fixed_ms
    half.table = {k: 0.5 * v for k, v in half.table.items()}
    # the timing noise of a quiet build (build.figure_noise read 1.3-1.6% in fresh builds): what is tested here is the
    # repair of an overshoot. This 2-round tiny build has read 45% on a busy VM (the 90th percentile of the gap between
    # each model's two rounds): a 40% overshoot was then rightly "noise" and nothing was repaired (the decision itself:
    # test_the_hold_decides_at_the_builds_machine_speed_and_says_when_it_is_noise)
    half.device["figure_noise"] = 0.02
    half.save(tmp_path / "half.json")
    hcfg = replace(cfg, latency_model=str(tmp_path / "half.json"))
    lo_h, hi_h = cost_model(hcfg).feasible_range()
    budget_h = lo_h + 0.8 * (hi_h - lo_h)  # what the halved model says fits: the network it derives is ~2x over
    hcfg = replace(hcfg, budget=budget_h)
    first = rederive(hcfg, run / "search" / "seed-0").genotype
    asked: list[float] = []

    def again(K: float):
        asked.append(K)
        return rederive(replace(hcfg, budget=K), run / "search" / "seed-0").genotype

    g, checks = hold_latency(load_profile(str(prof)), budget_h, first, NetConfig.from_json(s["eval_config"]), half, again,
                             lo_h, tmp_path / "check", progress=lambda m: None)
    print(f"repeat CV {lm.device.get('repeat_cv')}, the build's timing noise {lm.device.get('figure_noise')} (the halved model's: 0.02)",
          [(round(c["derivation_budget_ms"], 4), round(c["measured_ms"], 4), c["decision"], c["level"], round(c["decided_ms"], 4)) for c in checks])
    # over at the build's machine speed (what the hold decides on: the raw time moves with the machine's load; a CI run
    # timed this network at 0.243 ms raw, under the 0.26 ms budget, on a machine faster than during the build): repaired
    first_check = checks[0]
    assert first_check["decision"] == "over" and first_check["decided_ms"] > budget_h
    assert first_check["predicted_ms"] < 0.75 * first_check["decided_ms"]
    assert 2 <= len(checks) <= REPAIRS + 1 and asked == [c["derivation_budget_ms"] for c in checks[1:]]
    assert all(b["derivation_budget_ms"] < a["derivation_budget_ms"] for a, b in zip(checks, checks[1:]))
    within = [c for c in checks if c["decision"] != "over"]
    assert g.to_json() == (within[0] if within else min(checks, key=lambda c: c["decided_ms"]))["genotype"]


@pytest.mark.slow
def test_params_and_latency_budgets_hold_together_with_a_model_measured_here(built, tmp_path, fashion_root):
    """Latency beside params, each its own constraint: with a latency model measured on `local` (tiny network),
    150 random (alphas, params budget, latency budget) triples derive networks within both budgets (the counter's
    params, the model's bound that the search holds), and where the params budget alone would have derived a
    network over the latency budget the joint derivation did not; then `dcanas search --metric params --also-budget
    latency_ms=...` end to end."""
    import torch

    from dcanas.nets.cost import network_cost
    from dcanas.nets.genotype import genotype_from_json
    from dcanas.search.config import SearchConfig, apply_preset, constraints, cost_model
    from dcanas.search.derive import derive_within
    from dcanas.nets.spaces import SPACES as SPACE_RECORDS

    cache = _cache(built, tmp_path)
    [path] = list(cache.glob(f"{HOST}-darts-*.json"))
    lm = load_latency_model(path)
    cfg = replace(apply_preset(SearchConfig(dataset="fashion-mnist"), "tiny"), metric="params", latency_model=str(path))
    cm = cost_model(cfg)
    p_lo, p_hi = cm.feasible_range()
    l_lo, l_hi = cost_model(replace(cfg, metric="latency_ms")).feasible_range()
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    found = saved = 0
    for _ in range(150):
        Kp, Kl = p_lo + rng.random() * (p_hi - p_lo), l_lo + rng.random() * (l_hi - l_lo)
        alphas = {k: rng.choice([0.01, 1.0, 3.0]) * torch.randn(len(cm.edges), len(cm.op_names), generator=gen)
                  for k in SPACE_RECORDS["darts"].cell_kinds}
        both = constraints(replace(cfg, budget=Kp, extra_budgets={"latency_ms": Kl}))
        d = derive_within("darts", alphas, cm.op_names, cm.nodes, both.edge_costs(), both.fixed(), both.K_d)
        alone = constraints(replace(cfg, budget=Kp))
        d1 = derive_within("darts", alphas, cm.op_names, cm.nodes, alone.edge_costs(), alone.fixed(), alone.K_d)
        if d is None:
            continue
        found += 1
        assert network_cost(d.genotype, cm.eval_cfg).params <= Kp
        assert lm.bound(d.genotype) <= Kl * (1 + 1e-9), (lm.bound(d.genotype), Kl)
        saved += d1 is not None and lm.bound(d1.genotype) > Kl
    print(f"{found} of 150 feasible, {saved} where params alone went over the latency budget")
    assert found >= 60 and saved >= 10, (found, saved)
    Kp, Kl = p_lo + 0.8 * (p_hi - p_lo), l_lo + 0.3 * (l_hi - l_lo)
    s = dcanas("search", "--preset", "tiny", "--epochs", "1", "--metric", "params", "--budget", f"{Kp:.0f}",
               "--also-budget", f"latency_ms={Kl:.4f}", "--latency-model", str(path), "--data-root", str(fashion_root),
               "--out", str(tmp_path / "s"))
    assert s.returncode == 0, s.stderr[-3000:]
    g = genotype_from_json(json.loads((tmp_path / "s" / "genotype.json").read_text()))
    assert network_cost(g, cm.eval_cfg).params <= float(f"{Kp:.0f}") and lm.bound(g) <= float(f"{Kl:.4f}") + 1e-9
    assert "also latency_ms:" in s.stdout


def test_hold_latency_puts_the_profiles_latency_budget_beside_the_search_metric():
    """`dcanas run --hold-latency`: the profile's latency_ms budget joins the search's budgets beside params (the
    latency stage then builds the device's model); without the flag the search holds what it held; a profile without
    a latency budget is refused in one line."""
    from dcanas.devices.schema import load_profile
    from dcanas.run.stages import RunConfig, Stages

    local = load_profile("local")  # params 200,000, latency_ms 100, model_size_kb 4096
    held = Stages(RunConfig(device="local", preset="tiny", hold_latency=True), local)
    assert held.search_cfg.metric == "params" and held.search_cfg.extra_budgets == {"model_size_kb": 4096.0, "latency_ms": 100.0}
    assert held._needs_latency()
    plain = Stages(RunConfig(device="local", preset="tiny"), local)
    assert "latency_ms" not in plain.search_cfg.extra_budgets and not plain._needs_latency()
    no_latency = replace(local, budget={k: v for k, v in local.budget.items() if k != "latency_ms"})
    with pytest.raises(UserError, match="--hold-latency: device 'local' has no latency_ms budget"):
        Stages(RunConfig(device="local", preset="tiny", hold_latency=True), no_latency)


def test_measurement_store_appends_whole_lines_and_skips_what_it_cannot_read(tmp_path):
    from dcanas.latency.store import append, at_build_level, read, store_path

    model = tmp_path / "m.json"
    g = random_genotype("darts", random.Random(0)).to_json()
    assert append(model, [dict(genotype=g, measured_ms=0.5, source="calibration"),
                          dict(genotype=g, measured_ms=float("inf"), source="hold"),   # not a measurement: skipped
                          dict(genotype=g, measured_ms=0.6, source="guess")]) == 1     # not a source: skipped
    assert append(model, [dict(genotype=g, measured_ms=0.5, source="calibration"),      # the same again: read once
                          dict(genotype=g, measured_ms=0.66, level=1.1, source="hold")]) == 2
    with open(store_path(model), "a") as fh:
        fh.write('{"genotype": {"sp')  # a line cut short (a full disk, a kill mid-write)
    rows, bad = read(model)
    assert [r["source"] for r in rows] == ["calibration", "hold"] and bad == 1
    assert at_build_level(rows[1]) == pytest.approx(0.6) and at_build_level(rows[0]) == 0.5


def test_refit_learns_from_what_runs_measured(tmp_path):
    """A model fitted on 5 calibration networks (fewer than its 8 terms: mostly its prior); runs then measured 15 more
    networks on the device. `latency refit` fits all 20: its error on those 15 falls from what it was to near zero
    (the rows are exact), the model file still counts 5 calibration networks (a later build with --calibrate 5 finds it
    cached), and a model that does not exist is one line."""
    from dcanas.latency.build import calibrate_of
    from dcanas.latency.store import append

    ops, truth, gs, ys = _synthetic("darts", 20, seed=3)
    net = _net("darts")
    lm = LatencyModel("darts", net.to_json(), ops, "work", 0.0, {o: 0.0 for o in ops}).fit(list(zip(gs[:5], ys[:5])))
    model = lm.save(tmp_path / "m.json")
    append(model, [dict(genotype=c["genotype"], measured_ms=c["measured_ms"], source="calibration") for c in lm.calibration])
    idle = dcanas("latency", "refit", "--model", str(model), timeout=60)
    assert idle.returncode == 0 and "no measurements beyond its 5 calibration networks" in idle.stdout, idle.stdout
    append(model, [dict(genotype=g.to_json(), measured_ms=ms, predicted_ms=lm.predict(g), source="hold" if k % 2 else "verdict")
                   for k, (g, ms) in enumerate(zip(gs[5:], ys[5:]))])
    before = max(abs(lm.predict(g) / ms - 1) for g, ms in zip(gs[5:], ys[5:]))
    r = dcanas("latency", "refit", "--model", str(model))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("refit on 20 networks (5 calibration, 7 hold, 8 verdict): before, the model's mean |error| on the 15"), r.stdout
    after = load_latency_model(model)
    assert before > 0.02 and max(abs(after.predict(g) / ms - 1) for g, ms in zip(gs[5:], ys[5:])) < 1e-6
    assert calibrate_of(model) == 5 and len(after.calibration) == 20
    missing = dcanas("latency", "refit", "--model", str(tmp_path / "other.json"), timeout=60)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_the_timing_noise_is_the_kept_figures_not_the_rounds_spread():
    """A few rounds 1.5-1.8x slow (as on this VM at 1 thread) make the rounds' CV large; the kept figure (the fastest
    round) leaves them out, and its noise is the gap to the second-fastest round. Old models fall back to the CV."""
    from dcanas.latency.build import figure_noise, repeat_cv
    from dcanas.latency.hold import timing_noise

    rounds = [[1.0, 1.01, 1.0, 1.6, 1.0], [2.0, 2.02, 3.4, 2.0, 2.0], [1.0, 1.005, 1.002, 1.001, 1.8]] + [[0.5, 0.501]] * 7
    measured = {f"m{i}": {"p50_ms_rounds": r} for i, r in enumerate(rounds)}
    assert figure_noise(measured) == pytest.approx(0.002, abs=1e-9)  # 90th percentile of the gaps (0, 0, 0.001, 0.002 x 7)
    assert repeat_cv(measured) < 0.001 and repeat_cv({k: measured[k] for k in ("m0", "m1", "m2")}) > 0.2
    lm = LatencyModel.unfitted_work("darts", _net("darts").to_json())
    lm.device = {"repeat_cv": 0.107}
    assert timing_noise(lm) == 0.107
    lm.device["figure_noise"] = 0.013
    assert timing_noise(lm) == 0.013


@pytest.mark.parametrize("ms, level, cv, decision", [
    (0.50, None, 0.01, "within"),     # under the budget as measured, no reference timed
    (0.56, 1.20, 0.01, "within"),     # 12% over as measured, but the machine ran 1.2x slow: 0.467 ms at the build's speed
    (0.51, None, 0.015, "noise"),     # 2% over, within 2 x the build's 1.5% timing noise: said, not repaired
    (0.51, None, None, "over"),       # no noise figure: any overshoot is an overshoot
    (0.50, 0.90, 0.01, "over"),       # within as measured, but the machine ran fast: 0.556 ms at the build's speed
    (0.60, None, 0.03, "over"),       # 20% over: beyond the noise
])
def test_the_hold_decides_at_the_builds_machine_speed_and_says_when_it_is_noise(ms, level, cv, decision):
    from dcanas.latency.hold import decide

    got, figure, why = decide(ms, level, 0.5, cv)
    assert got == decision, why
    assert figure == pytest.approx(ms / level if level else ms)
    assert ("within the measurement's noise" in why) == (decision == "noise")


@pytest.mark.parametrize("p50, level, cv, met, passed", [
    (0.49, 1.00, 0.01, True, True),      # within as measured: a pass, whatever the reference says
    (0.51, 1.00, 0.015, "noise", True),  # 2% over, within 2 x the build's 1.5% CV: said, not a failure
    (0.56, 1.20, 0.01, "noise", True),   # 12% over as measured while the machine ran 1.2x slow: 0.467 ms at the build's speed
    (0.60, 1.00, 0.03, False, False),    # 20% over: beyond the noise, a failure
    (0.51, 1.00, None, False, False),    # no noise figure: any overshoot fails
])
def test_the_verdict_judges_latency_at_the_builds_speed_and_within_noise(artifacts, p50, level, cv, met, passed):
    """The verdict's latency row with the reference network's level (``latency.hold.verdict_check`` times it on the
    device; here its result is built by ``decide``): a raw miss within the noise, or within the budget at the build's
    machine speed, is "noise" (≈, "within noise") and the verdict passes saying so; beyond it the verdict fails."""
    from dataclasses import replace as dc_replace

    from dcanas.devices.schema import load_profile
    from dcanas.latency.hold import decide
    from dcanas.profile.verdict import format_table, verdict
    from dcanas.report.tables import met_text

    profile = load_profile("local")
    profile = dc_replace(profile, budget={"latency_ms": 0.5})
    decision, figure, why = decide(p50, level, 0.5, cv)
    check = dict(decision=decision, decided_ms=figure, why=why, level=level, reference_ms=0.7 * level, build_reference_ms=0.7)
    v = verdict(profile, artifacts["onnx"], {"latency_ms": {"p50": p50}}, latency_check=check)
    [row] = [r for r in v["rows"] if r["budget"].startswith("latency_ms")]
    assert row["met"] == met and v["passed"] is passed and why in row["source"]
    table = format_table(v)
    assert ("not beyond the measurement's noise" in table) == (met == "noise")
    assert table.splitlines()[-1].startswith("verdict on local: " + ("PASS" if passed else "FAIL"))
    assert met_text(row["met"]) == {True: "met", False: "MISSED", "noise": "within noise"}[met]


def test_the_runtime_graph_is_not_additive_over_ops(tmp_path):
    """Why the search's per-op sum ranks below the graph model (benchmarks/latency_additivity.py): onnxruntime computes a
    ReLU that two ops read from one input once. Two DARTS cells with the same ops, the two sep_convs of node 2 reading one
    input or two: the same convolutions, but one ReLU fewer per cell where they share their input."""
    import importlib.util

    import torch

    from dcanas.export.converters import convert
    from dcanas.export.formats import formats_for
    from dcanas.nets.build import build_network
    from dcanas.nets.genotype import genotype_from_json

    from pathlib import Path

    spec = importlib.util.spec_from_file_location("latency_additivity", Path(__file__).parents[1] / "benchmarks" / "latency_additivity.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    net = default_config("darts", in_channels=1, input_size=16, num_classes=10, C=8, layers=1)
    rest = [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["max_pool_3x3", 0], ["max_pool_3x3", 1], ["max_pool_3x3", 0], ["max_pool_3x3", 1]]
    counts = {}
    for name, node2 in (("shared", [["sep_conv_3x3", 0], ["sep_conv_5x5", 0]]), ("apart", [["sep_conv_3x3", 0], ["sep_conv_5x5", 1]])):
        cell = node2 + rest
        g = genotype_from_json({"space": "darts", "normal": cell, "normal_concat": [2, 3, 4, 5], "reduce": cell, "reduce_concat": [2, 3, 4, 5]})
        path = tmp_path / f"{name}.onnx"
        with torch.no_grad():
            convert(build_network(g, net).eval(), torch.randn(1, 1, 16, 16), formats_for("onnxruntime", "fp32"), path)
        counts[name], us = bench.profiled_counts(str(path), threads=1, runs=2)
        assert set(us) == set(counts[name]) and sum(us.values()) > 0  # a small node may read 0 us
    assert counts["shared"]["Conv"] == counts["apart"]["Conv"]  # the same ops: convolutions add up
    assert counts["shared"]["Relu"] == counts["apart"]["Relu"] - 1, counts  # the shared input's ReLU runs once


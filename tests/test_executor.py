"""Independent searches on Ray: a LUG built on a real two-node Ray cluster on loopback (a head and a second
node, Ray's own cluster utilities) survives the second node being killed mid-search, and gives the same curve
as the local process pool with the same points, seeds and threads."""
import os
import threading
import time
from dataclasses import replace

import pytest

from conftest import run_dcanas

pytestmark = pytest.mark.slow


def _cfg(fashion_root):
    from dcanas.search.config import SearchConfig, apply_preset

    # 4 epochs: a search lasts long enough to be killed in the middle
    return replace(apply_preset(SearchConfig(dataset="fashion-mnist", data_root=str(fashion_root)), "tiny"), epochs=4)


def test_lug_on_two_ray_nodes_survives_a_node_kill(tmp_path, fashion_root):
    ray = pytest.importorskip("ray", reason="Ray is not installed (make install installs it: pip install 'dcanas[ray]')")
    from ray.cluster_utils import Cluster

    from dcanas.search.lug import Runner, build_lug

    cfg = _cfg(fashion_root)
    local, _ = build_lug(cfg, points=4, max_points=4, runner=Runner(jobs=2), cache_dir=tmp_path / "local", progress=lambda m: None)
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1))
    second = cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        cluster.wait_for_nodes()
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        out: dict = {}
        log: list[str] = []
        t = threading.Thread(target=lambda: out.update(lug=build_lug(cfg, points=4, max_points=4, cache_dir=tmp_path / "ray",
                                                                     runner=Runner(executor="ray"), progress=log.append)[0]))
        t.start()
        runs = tmp_path / "ray" / "runs"
        deadline = time.time() + 300
        # both single-CPU nodes run a search each; once a search has checkpointed an epoch, kill the second node
        while time.time() < deadline and not list(runs.rglob("checkpoint.pt")):
            time.sleep(0.05)
        finished_before = len(list(runs.rglob("search.json")))
        cluster.remove_node(second)
        t.join(600)
        assert not t.is_alive() and "lug" in out, log
        assert finished_before < 4  # the kill came while searches were still running
        assert len([n for n in ray.nodes() if n["Alive"]]) == 1
    finally:
        ray.shutdown()
        cluster.shutdown()
    got = out["lug"]
    assert [(p["K_prime"], p["K_d"]) for p in got.points] == [(p["K_prime"], p["K_d"]) for p in local.points]
    assert [p["val_acc"] for p in got.points] == [p["val_acc"] for p in local.points]


def test_ray_executor_without_ray_names_the_extra(tmp_path):
    """Without Ray the option is one line naming the extra (simulated by hiding the module)."""
    (tmp_path / "noray").mkdir()
    (tmp_path / "noray" / "ray.py").write_text("raise ImportError('hidden for the test')\n")
    r = run_dcanas("lug", "build", "--preset", "tiny", "--executor", "ray", "--points", "2", "--cache-dir", str(tmp_path),
                   env={**os.environ, "PYTHONPATH": str(tmp_path / "noray")})
    assert r.returncode == 2 and "pip install 'dcanas[ray]'" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_run_seeds_as_ray_tasks(tmp_path, fashion_root):
    """`dcanas run --seeds 2 --executor ray` (a local Ray instance): both seeds searched as Ray tasks, the best kept."""
    pytest.importorskip("ray", reason="Ray is not installed (make install installs it: pip install 'dcanas[ray]')")
    import json

    import yaml

    prof = tmp_path / "p.yaml"
    prof.write_text(yaml.safe_dump(dict(name="seeds", description="tiny", budget=dict(params=15000, latency_ms=1000),
                                        runtime=dict(engine="onnxruntime", threads=1, precision="fp32"), connection=dict(transport="local"))))
    out = tmp_path / "run"
    r = run_dcanas("run", "--device", str(prof), "--preset", "tiny", "--seeds", "2", "--executor", "ray", "--runs", "5", "--warmup", "1",
                   "--data-root", str(fashion_root), "--cache-dir", str(tmp_path / "cache"), "--out", str(out), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 seeds, as Ray tasks at a time" in r.stderr and "seed 0: search-val acc" in r.stderr and "seed 1:" in r.stderr
    s = json.loads((out / "run.json").read_text())["stages"]["search"]["summary"]
    assert [x["seed"] for x in s["seeds"]] == [0, 1] and s["val_acc"] == max(x["val_acc"] for x in s["seeds"])


def _beat_or_fail(kind: str, path: str) -> str:
    """A Ray task: "fail" raises after 2 s; "beat" writes the time to ``path`` every 0.1 s for a minute."""
    import pathlib
    import time

    if kind == "fail":
        time.sleep(2)
        raise RuntimeError("task failed on purpose")
    for _ in range(600):
        pathlib.Path(path).write_text(repr(time.time()))
        time.sleep(0.1)
    return "done"


def test_a_failed_task_on_a_joined_cluster_cancels_the_unfinished_ones(tmp_path):
    """On a cluster the command joined (not its own Ray instance, which a shutdown ends), a failed task stops the
    others (executor._cancel_unfinished): the still-running task's heartbeat stops while the driver stays connected;
    left alone it would beat for a minute."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (make install installs it: pip install 'dcanas[ray]')")
    import sys

    from ray.cluster_utils import Cluster

    from dcanas.search.executor import run_all

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import the tests' modules
    beat = tmp_path / "beat"
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=2))
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)  # joined: run_all did not start it
        with pytest.raises(RuntimeError, match="failed on purpose"):
            for _ in run_all(_beat_or_fail, [("beat", str(beat)), ("fail", "")], executor="ray", ray_address=cluster.address):
                pass
        assert beat.exists()  # the other task was running when the first failed
        time.sleep(5)
        last = beat.read_text()
        time.sleep(2)
        assert beat.read_text() == last, "the unfinished task kept running after the failure"
        assert ray.is_initialized()  # stopped by the cancel, not by the driver leaving
    finally:
        ray.shutdown()
        cluster.shutdown()

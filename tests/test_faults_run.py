"""Faults, second round (issue 30): concurrent runs on one folder, distributed faults that must end quickly (a dead
Ray address, a frozen torchrun peer, SIGTERM during a Ray build), fleets (a file listing itself, connection checks
side by side), YAML 1.1 numbers, infinite budgets, and hints that name options the command has."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import run_dcanas
from test_faults import one_line, wait_for

HERE = Path(__file__).parent


def _local_profile(tmp_path, **budget):
    prof = tmp_path / "p.yaml"
    prof.write_text(yaml.safe_dump(dict(name="mine", description="local", budget=budget or dict(params=30000, latency_ms=1000),
                                        runtime=dict(engine="onnxruntime", threads=1, precision="fp32"),
                                        connection=dict(transport="local"))))
    return prof


def test_one_writer_per_run_folder(tmp_path, fashion_root):
    """A second `dcanas run` on a folder in use (with --resume, as the first refusal advised) exits 2 naming the pid;
    it used to proceed and clear the first run's stage folders."""
    out = tmp_path / "run"
    args = ["run", "--device", str(_local_profile(tmp_path)), "--preset", "tiny", "--out", str(out), "--formats", "onnx",
            "--cache-dir", str(tmp_path / "cache"), "--runs", "3", "--warmup", "1"]
    first = subprocess.Popen([sys.executable, "-m", "dcanas", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    try:
        wait_for(lambda: (out / "search").is_dir(), 120, "the first run's search")
        for extra in ([], ["--resume"]):
            line = one_line(run_dcanas(*args, *extra))
            assert f"{out} is in use by another dcanas run (pid {first.pid} holds {out / '.lock'})" in line, line
        assert (out / "search").is_dir()
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    from dcanas.files import exclusive_lock

    with exclusive_lock(out / ".lock", "busy", "fix"):  # the lock went with its holder
        assert (out / ".lock").read_text().strip() == str(os.getpid())


def test_a_dead_ray_address_fails_in_seconds(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (make install installs it: pip install 'dcanas[ray]')")
    t0 = time.time()
    line = one_line(run_dcanas("lug", "build", "--preset", "tiny", "--executor", "ray", "--ray-address", "127.0.0.1:1",
                               "--points", "2", "--cache-dir", str(tmp_path)))
    assert time.time() - t0 < 30 and "--ray-address 127.0.0.1:1: nothing answers at 127.0.0.1:1" in line, line
    line = one_line(run_dcanas("run", "--device", "local", "--preset", "tiny", "--executor", "ray", "--seeds", "2",
                               "--ray-address", "127.0.0.1:1", "--out", str(tmp_path / "r")))
    assert "nothing answers at 127.0.0.1:1" in line and not (tmp_path / "r").exists()


@pytest.mark.slow
@pytest.mark.parametrize("when", ["searching", 1.5, 2.5])
def test_sigterm_during_a_ray_lug_build_is_one_line(tmp_path, fashion_root, when):
    """SIGTERM while a Ray search runs, and at 1.5 s and 2.5 s after the start: here those land before and inside
    ray.init, whose own handler turned SIGTERM into a silent exit 15 (the outcome must not depend on where it lands)."""
    pytest.importorskip("ray", reason="Ray is not installed (make install installs it: pip install 'dcanas[ray]')")
    p = subprocess.Popen([sys.executable, "-m", "dcanas", "lug", "build", "--preset", "tiny", "--executor", "ray", "--points", "2",
                          "--cache-dir", str(tmp_path)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    if when == "searching":
        wait_for(lambda: list(tmp_path.rglob("search.log*")) or list(tmp_path.rglob("checkpoint.pt")) or p.poll() is not None, 240,
                 "a Ray search to start")
    else:
        time.sleep(when)
    assert p.poll() is None, p.communicate()[1][-2000:]
    started = _descendants(p.pid)  # Ray's GCS, raylet and, while searching, the two workers
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=90)
    print(err)  # whole, in the captured output of a failure (the assertion's repr is cut)
    assert p.returncode == 143, (p.returncode, err[-3000:])
    lines = err.strip().splitlines()
    assert lines[-1] == "dcanas lug: terminated (SIGTERM)" and "Traceback" not in err and "Fatal Python" not in err, err[-3000:]
    if when == "searching":
        assert len(started) >= 2, started  # at least the GCS and the raylet
        wait_for(lambda: not [pid for pid in started if _alive(pid)], 30, f"the build's processes {sorted(started)} to end")


def _descendants(pid: int) -> set[int]:
    """The processes below ``pid`` now, from /proc."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, todo = set(), [pid]
    while todo:
        this = todo.pop()
        kids = [c for c, pp in parent.items() if pp == this]
        found.update(kids)
        todo.extend(kids)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("fork", [1, 5])
def test_a_sigterm_lost_in_an_at_fork_hook_still_ends_a_ray_build(tmp_path, fashion_root, fork):
    """The SIGTERM lands in the first and the last of the five at-fork hooks ray.init runs here (it starts Ray's
    processes with a preexec_fn): the build stops before any search result, in one line, and nothing is "ignored"."""
    pytest.importorskip("ray", reason="Ray is not installed (make install installs it: pip install 'dcanas[ray]')")
    r = subprocess.run([sys.executable, str(HERE / "sigterm_in_fork_hook.py"), "lug", "build", "--preset", "tiny", "--executor", "ray",
                        "--points", "2", "--cache-dir", str(tmp_path)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "DCANAS_TEST_SIGTERM_AT_FORK": str(fork)})
    assert r.returncode == 143, (r.returncode, r.stderr[-3000:])
    assert r.stderr.strip().splitlines()[-1] == "dcanas lug: terminated (SIGTERM)", r.stderr[-3000:]
    assert "Exception ignored" not in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert not list(tmp_path.rglob("*.json")), sorted(tmp_path.rglob("*"))


def test_a_frozen_torchrun_peer_ends_the_run_within_the_timeout(tmp_path):
    """Rank 1 sleeps instead of answering (the SIGSTOP variant, DCANAS_TEST_FREEZE=stop, ends rank 0 the same way; torchrun
    then takes about 25 s more to tear the stopped rank down, which is torchrun's)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DCANAS_DIST_TIMEOUT_S": "5"}
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(HERE / "ddp_freeze_worker.py")], capture_output=True, text=True, timeout=170, env=env)
    took = time.time() - t0
    assert r.returncode != 0 and took < 120, (r.returncode, took, r.stderr[-2000:])
    assert "error: rank 0: a peer process stopped answering for 5 s" in r.stderr and "--dist-timeout" in r.stderr, r.stderr[-3000:]


def test_dist_timeout_option_is_checked(tmp_path):
    r = run_dcanas("search", "--preset", "tiny", "--budget", "20k", "--dist-timeout", "0", "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and "--dist-timeout" in r.stderr and "a number > 0" in r.stderr


def test_a_fleet_that_lists_itself_is_named(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(dict(devices=["local", "fleet.yaml"])))
    line = one_line(run_dcanas("run", "--device", str(fleet), "--preset", "tiny", "--out", str(tmp_path / "r")))
    assert "the fleet lists itself in 'devices'" in line, line
    inner = tmp_path / "inner.yaml"
    inner.write_text(yaml.safe_dump(dict(devices=["local"])))
    fleet.write_text(yaml.safe_dump(dict(devices=["local", "inner.yaml"])))
    line = one_line(run_dcanas("run", "--device", str(fleet), "--preset", "tiny", "--out", str(tmp_path / "r")))
    assert "names another fleet file" in line and "fleets do not nest" in line, line


def test_fleet_connection_checks_run_side_by_side(tmp_path):
    """Three black-hole devices (a TEST-NET address, 3 s connect timeout, no retry): checked one after another they
    would take 3 x 3 s before any work; side by side about one timeout."""
    from dcanas.devices.schema import load_profile
    from dcanas.run.fleet import Member, run_fleet

    members = []
    for k in range(3):
        path = tmp_path / f"hole{k}.yaml"
        path.write_text(yaml.safe_dump(dict(name=f"hole{k}", description="unreachable", budget=dict(params=30000),
                                            connection=dict(transport="ssh", host="192.0.2.1", port=22, connect_timeout_s=3,
                                                            retries=0, known_hosts=str(tmp_path / "kh")))))
        members.append(Member(load_profile(str(path)), None, key="k"))
    said: list[str] = []
    t0 = time.time()
    run_fleet(members, tmp_path / "fleet", config={}, resume=False, from_stage=None, say=said.append)
    took = time.time() - t0
    assert all(m.status == "unreachable" for m in members), said
    assert took < 7.5, (took, said)


@pytest.mark.parametrize("text,ok", [("1e-9", True), ("2.5E+3", True), ("1e400", False), ("fast", False)])
def test_yaml11_exponents_read_as_numbers(tmp_path, text, ok):
    prof = tmp_path / "p.yaml"
    prof.write_text(f"name: x\nbudget:\n  params: 30000\n  latency_ms: {text}\nconnection:\n  transport: local\n")
    from dcanas.devices.schema import load_profile
    from dcanas.errors import UserError

    if ok:
        assert load_profile(str(prof)).budget["latency_ms"] == float(text)
    else:
        with pytest.raises(UserError, match="budget.latency_ms"):
            load_profile(str(prof))


def test_an_infinite_also_budget_is_refused(tmp_path):
    r = run_dcanas("search", "--preset", "tiny", "--budget", "20k", "--also-budget", "flops=1e400", "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and "beyond any finite number" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_too_few_images_names_options_the_run_command_has(tmp_path, fashion_root):
    """1-20 images per class in a user's tree: the hint names `run --search-subset` (run has no --batch-size)."""
    from conftest import write_fashion_tree

    tree = write_fashion_tree(tmp_path / "few", fashion_root, per_class=3, size=28, fmt="png", rgb=False)
    line = one_line(run_dcanas("run", "--device", str(_local_profile(tmp_path)), "--dataset", f"folder:{tree}", "--preset", "tiny",
                               "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), timeout=600))
    assert "larger than the search split" in line and "run --search-subset" in line, line


def test_a_termination_wrapped_by_python_is_still_one_line(monkeypatch, capsys, tmp_path):
    """A SIGTERM that lands while a dataclass is created reaches the CLI as a RuntimeError from ``__set_name__`` (Python
    wraps it; seen in CI when a Ray LUG build was terminated 1.5 s after its start, inside an import). The command still
    ends with the one terminated line and 128 + the signal; any other exception is not swallowed."""
    import signal as sig
    from dataclasses import dataclass, field

    import dcanas.search.cli as search_cli
    from dcanas.cli import main
    from dcanas.errors import RECEIVED, Terminated, termination_in

    class Lands:  # the handler's exception, raised where Python wraps it
        def __set_name__(self, owner, name):
            raise Terminated(sig.SIGTERM)

    def import_under_sigterm(args):
        @dataclass
        class Result:
            alphas: dict = field(default_factory=dict)
            landed = Lands()
        return 0

    with pytest.raises(RuntimeError) as info:
        import_under_sigterm(None)
    assert termination_in(info.value) == sig.SIGTERM and termination_in(RuntimeError("x")) is None
    monkeypatch.setattr(search_cli, "cmd_search", import_under_sigterm)
    try:
        argv = ["search", "--preset", "tiny", "--budget", "20k", "--out", str(tmp_path / "s")]
        assert main(argv) == 128 + sig.SIGTERM
        assert capsys.readouterr().err.strip().splitlines() == ["dcanas search: terminated (SIGTERM)"]
        monkeypatch.setattr(search_cli, "cmd_search", lambda args: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            main(argv)
    finally:
        RECEIVED.clear()
        for s in (sig.SIGTERM, sig.SIGHUP):
            sig.signal(s, sig.SIG_DFL)

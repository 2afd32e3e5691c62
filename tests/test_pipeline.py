"""`dcanas run` end to end on the tiny preset with every stage real: local and through the
loopback sshd, resume after a kill mid-stage, --from export, a failing stage, and the report
rendered by headless Chromium."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import run_command, skip_unless_ci
from sshd import SSHD, start_sshd

pytestmark = pytest.mark.slow  # every test here runs (part of) the pipeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FORMATS = "onnx,tflite,tflite-int8"  # every export compared on the device, and the file to ship named


def tiny_profile(path: Path, **connection) -> Path:
    path.write_text(yaml.safe_dump(dict(
        name="tiny-" + connection.get("transport", "local"), description="tiny budget for tests",
        budget=dict(params=15000, latency_ms=1000, peak_memory_mb=4096, model_size_kb=4096),
        runtime=dict(engine="onnxruntime", threads=1, precision="fp32"),
        connection=connection or dict(transport="local"))))
    return path


def run_cmd(profile, out, data_root, *extra):
    return [sys.executable, "-m", "dcanas", "run", "--device", str(profile), "--preset", "tiny", "--runs", "5", "--warmup", "1",
            "--data-root", str(data_root), "--cache-dir", str(out.parent / "no-lug"), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, fashion_root):
    d = tmp_path_factory.mktemp("run")
    out = d / "run"
    r = run_command(run_cmd(tiny_profile(d / "p.yaml"), out, fashion_root, "--formats", FORMATS),
                       capture_output=True, text=True, timeout=900)
    return d, out, r


def test_end_to_end_local(local_run):
    d, out, r = local_run
    assert r.returncode == 0, r.stderr[-3000:]
    assert "verdict: PASS" in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("tiny's search is a smoke run")  # presets.RUN_NOTES
    state = json.loads((out / "run.json").read_text())
    assert [s for s in state["stages"]] == ["latency", "search", "train", "export", "profile", "verdict", "report"]
    assert all(s["status"] == "done" and s["wall_s"] > 0 and len(s["inputs"]) == 64 for s in state["stages"].values())
    from importlib.metadata import version

    assert state["versions"]["torch"] == version("torch") and state["config"]["preset"] == "tiny"
    for f in ("search/genotype.json", "train/searched/model.pt", "export/model.onnx", "export/model.tflite",
              "profile/result.json", "verdict/verdict.json", "report/report.md", "report/report.html"):
        assert (out / f).is_file(), f
    for png in ("genotype", "alphas", "learning", "constraint", "training", "pareto", "latency", "op_time"):
        assert (out / "report" / f"{png}.png").stat().st_size > 5000, png
    v = json.loads((out / "verdict" / "verdict.json").read_text())
    assert v["cross_check"]["params"] == v["cross_check"]["fvcore_params"]
    # the report's comparison of every export on the device, and the per-op chart's data
    cmp = json.loads((out / "profile" / "comparison.json").read_text())
    assert [r["format"] for r in cmp["rows"]] == ["onnxruntime", "tflite", "tflite"] and all(r["p50_ms"] > 0 for r in cmp["rows"])
    assert [r["precision"] for r in cmp["rows"]] == ["fp32", "fp32", "int8"]
    # the file to ship: the fastest that met every budget (every export here passed its accuracy gate), the smallest
    # of those within SHIP_TIE of it; profiled above
    from dcanas.profile.compare import SHIP_TIE

    ship = cmp["ship"]
    passing = [r for r in cmp["rows"] if r["verdict"] == "pass"]
    fastest = min(r["p50_ms"] for r in passing)
    tied = [r for r in passing if r["p50_ms"] <= (1 + SHIP_TIE) * fastest]
    assert ship["file"] == min(tied, key=lambda r: r["size_kb"])["model"], cmp
    assert ship["line"].startswith(f"ship {ship['file']}: ") and ship["line"] in r.stderr + r.stdout
    report = (out / "report" / "report.md").read_text()
    assert "## File to ship" in report and ship["line"] in report
    assert "## Every export on tiny-local" in report and "op_time.png" in report
    assert "## Receipt" in report and "| threads requested / read back | 1 / 1 |" in report  # the latency figure's conditions
    # a tiny search's weights stay near uniform: the summary says the network was chosen by the budget (search/learned.py)
    assert "Search (best seed): the architecture weights did not separate" in report and "learning.png" in report
    ops = json.loads((out / "profile" / "ops.json").read_text())
    assert ops["placed_share"] >= 0.95 and set(ops["per_edge"]) == {"normal", "reduce"}


def test_resume_skips_unchanged_and_from_export_redoes(local_run, fashion_root):
    d, out, _ = local_run
    r = run_command(run_cmd(d / "p.yaml", out, fashion_root, "--formats", FORMATS, "--resume"),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    for stage in ("latency", "search", "train", "export", "profile", "verdict", "report"):
        assert f"== {stage}: unchanged, reused" in r.stderr
    before = (out / "export" / "model.onnx").stat().st_mtime_ns
    r = run_command(run_cmd(d / "p.yaml", out, fashion_root, "--formats", FORMATS, "--from", "export"),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "== search: unchanged" in r.stderr and "== train: unchanged" in r.stderr
    assert "== export\n" in r.stderr and "== profile" in r.stderr
    assert (out / "export" / "model.onnx").stat().st_mtime_ns != before


def test_existing_run_needs_resume(local_run, fashion_root):
    d, out, _ = local_run
    r = run_command(run_cmd(d / "p.yaml", out, fashion_root), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--resume" in r.stderr


def test_report_renders_in_headless_chromium(local_run, tmp_path):
    if not CHROMIUM:
        skip_unless_ci("Debian's chromium is not installed (make test installs it as root)")
    _, out, _ = local_run
    html = out / "report" / "report.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    pngs = len(list((out / "report").glob("*.png")))
    assert pngs == 8 and f'data-images="{pngs}"' in dom.stdout  # every plot (op_time too) decoded by the browser
    assert "PASS" in dom.stdout and "analytic counter" in dom.stdout and "fvcore" in dom.stdout
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,2400", html.as_uri()],
                   capture_output=True, text=True, timeout=120)
    from PIL import Image
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 2400)
    colors = img.getcolors(maxcolors=1 << 20)
    assert colors is None or len(colors) > 50  # not a blank page


def test_failing_stage_names_stage_and_log(tmp_path, fashion_root):
    prof = tmp_path / "p.yaml"
    tiny_profile(prof, transport="local", python=str(tmp_path / "no-such-python"))
    out = tmp_path / "run"
    r = run_command(run_cmd(prof, out, fashion_root), capture_output=True, text=True, timeout=900)
    assert r.returncode == 2, r.stderr[-2000:]  # a missing python is the user's input: one line, exit 2
    last = r.stderr.strip().splitlines()[-1]
    assert "stage 'profile' failed" in last and "profile/log.txt" in last, last
    state = json.loads((out / "run.json").read_text())
    assert state["stages"]["profile"]["status"] == "failed"
    assert all(state["stages"][s]["status"] == "done" for s in ("search", "train", "export"))


def test_kill_mid_stage_then_resume(tmp_path, fashion_root):
    prof = tiny_profile(tmp_path / "p.yaml")
    out = tmp_path / "run"
    cmd = run_cmd(prof, out, fashion_root, "--train-epochs", "3")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not (out / "train" / "searched" / "checkpoint.pt").exists():
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads((out / "run.json").read_text())
    assert state["stages"]["search"]["status"] == "done" and state["stages"]["train"]["status"] == "running"
    r = run_command(cmd + ["--resume"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "== search: unchanged, reused" in r.stderr and "resumed" in r.stderr


@pytest.mark.skipif(not os.path.exists(SSHD), reason="openssh-server not installed (make test installs it as root)")
def test_end_to_end_through_loopback_sshd(tmp_path, fashion_root):
    server = start_sshd(tmp_path / "sshd")
    try:
        prof = tiny_profile(tmp_path / "p.yaml", transport="ssh", host="127.0.0.1", port=server.port, user=server.user,
                            key_file=str(server.key), known_hosts=str(server.known_hosts), python=sys.executable,
                            workdir=str(server.root / "remote"))
        r = run_command(run_cmd(prof, tmp_path / "run", fashion_root), capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "checking the connection" in r.stderr and "[push]" in r.stderr
        assert list((server.root / "remote").iterdir()) == []
    finally:
        server.stop()


def test_unreachable_device_fails_before_search(tmp_path, fashion_root):
    from sshd import free_port
    prof = tiny_profile(tmp_path / "p.yaml", transport="ssh", host="127.0.0.1", port=free_port(), user="pi",
                        retries=0, connect_timeout_s=2)
    t0 = time.time()
    r = run_command(run_cmd(prof, tmp_path / "run", fashion_root), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and time.time() - t0 < 60
    lines = r.stderr.strip().splitlines()
    assert "cannot reach" in lines[-1] and "127.0.0.1" in lines[-1]
    assert not (tmp_path / "run" / "search").exists()


@pytest.mark.skipif(not os.path.exists(SSHD), reason="openssh-server not installed (make test installs it as root)")
def test_fleet_run_one_device_stopped_mid_run(tmp_path, fashion_root):
    """`dcanas run --device local,a,b`: two real loopback sshds (two ports, two host keys) and local. local and
    a share a budget and so one search; b has its own budget and search. b's sshd is stopped while the first
    search runs: b's column fails at its profile stage, local and a pass, the exit code is 1, and the fleet
    report has a column per device."""
    a, b = start_sshd(tmp_path / "sshd-a"), start_sshd(tmp_path / "sshd-b")
    try:
        assert a.port != b.port and a.host_pub != b.host_pub
        profs = [tiny_profile(tmp_path / "local.yaml")]
        for name, server, params in (("dev-a", a, 15000), ("dev-b", b, 12000)):
            p = tiny_profile(tmp_path / f"{name}.yaml", transport="ssh", host="127.0.0.1", port=server.port, user=server.user,
                             key_file=str(server.key), known_hosts=str(server.known_hosts), python=sys.executable,
                             workdir=str(server.root / "remote"), retries=0, connect_timeout_s=3)
            data = yaml.safe_load(p.read_text())
            data.update(name=name)
            data["budget"]["params"] = params
            p.write_text(yaml.safe_dump(data))
            profs.append(p)
        out = tmp_path / "fleet"
        cmd = run_cmd(",".join(map(str, profs)), out, fashion_root)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        err = []
        for line in proc.stderr:
            err.append(line)
            if "[tiny-local] == search" in line:
                b.stop()  # the device goes away while the first search runs
        stdout = proc.stdout.read()
        assert proc.wait(timeout=900) == 1, "".join(err)[-3000:]
        log = "".join(err)
        assert "2 distinct searches" in log
        assert log.count("] == search\n") == 2 and "[dev-a] == search: unchanged, reused" in log  # a shared local's search
        fleet = json.loads((out / "fleet.json").read_text())
        cols = {c["device"]: c for c in fleet["devices"]}
        assert not fleet["passed"]
        assert cols["tiny-local"]["status"] == "passed" and cols["dev-a"]["status"] == "passed", cols
        assert cols["dev-b"]["status"] == "failed" and "stage 'profile' failed" in cols["dev-b"]["error"]
        assert cols["dev-a"]["shares search with"] == "tiny-local" and cols["dev-b"]["shares search with"] == "-"
        assert cols["dev-a"]["derived params"] == cols["tiny-local"]["derived params"] > cols["dev-b"]["derived params"]
        state_b = json.loads((out / "dev-b" / "run.json").read_text())["stages"]
        assert state_b["export"]["status"] == "done" and state_b["profile"]["status"] == "failed"
        report = (out / "report.md").read_text()
        assert "|  | tiny-local | dev-a | dev-b |" in report.splitlines()
        assert "FAIL: dev-b did not pass" in report and (out / "tiny-local" / "report" / "report.html").is_file()
        assert "dev-b: failed" in stdout and "fleet verdict: FAIL" in stdout
    finally:
        a.stop()
        b.stop()

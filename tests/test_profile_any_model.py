"""Profiling models dcanas did not make (issue 31): every input of any model with its own type and shape (two inputs,
int64 token ids, a dynamic batch with and without --input-shape, a TFLite NHWC model), real inputs and expected
outputs from .npz files (a multi-output model), weights kept in an external-data file, and the receipt on each
result. Every model is built here from PyTorch (no download), exported with the real exporters, run by the real
onnxruntime and LiteRT, on `local` and through the loopback sshd."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import run_dcanas


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import torch

    out = tmp_path_factory.mktemp("any-models")
    torch.manual_seed(0)

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l = torch.nn.Linear(8, 4)

        def forward(self, a, b):
            return self.l(a * b)

    class Ids(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.e, self.l = torch.nn.Embedding(100, 16), torch.nn.Linear(16, 5)

        def forward(self, ids):
            return self.l(self.e(ids).mean(1))

    class Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.l = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Linear(8, 10)

        def forward(self, x):
            return self.l(self.c(x).mean((2, 3)))

    class Multi(Conv):
        def forward(self, x):
            f = self.c(x).mean((2, 3))
            return self.l(f), f

    def onnx(module, args, name, **kw):
        torch.onnx.export(module.eval(), args, str(out / name), dynamo=True, external_data=kw.pop("external_data", False), **kw)
        return out / name

    batch, side = torch.export.Dim("batch", max=64), torch.export.Dim("side", min=8, max=64)
    m = {
        "two": onnx(Two(), (torch.randn(1, 8), torch.randn(1, 8)), "two.onnx", input_names=["a", "b"], output_names=["y"]),
        "ids": onnx(Ids(), (torch.randint(0, 100, (1, 12)),), "ids.onnx", input_names=["ids"], output_names=["logits"]),
        "dyn": onnx(Conv(), (torch.randn(2, 3, 16, 16),), "dyn.onnx", input_names=["x"], output_names=["logits"],
                    dynamic_shapes={"x": {0: batch}}),
        "dynhw": onnx(Conv(), (torch.randn(2, 3, 16, 16),), "dynhw.onnx", input_names=["x"], output_names=["logits"],
                      dynamic_shapes={"x": {0: batch, 2: side, 3: side}}),
        "external": onnx(Conv(), (torch.randn(1, 3, 16, 16),), "external.onnx", input_names=["x"], output_names=["logits"],
                         external_data=True),
    }
    multi = Multi().eval()
    m["multi"] = onnx(multi, (torch.randn(1, 3, 16, 16),), "multi.onnx", input_names=["x"], output_names=["logits", "features"])
    x = torch.randn(3, 3, 16, 16)[:1]
    with torch.no_grad():
        logits, feats = multi(x)
    np.savez(out / "multi.in.npz", x=x.numpy())
    np.savez(out / "multi.ref.npz", logits=logits.numpy(), features=feats.numpy())
    wrong = logits.numpy().copy()
    wrong[0, [int(wrong.argmax()), int(wrong.argmin())]] = wrong[0, [int(wrong.argmin()), int(wrong.argmax())]]
    np.savez(out / "multi.wrong.npz", logits=wrong, features=feats.numpy())
    import litert_torch

    nhwc = litert_torch.to_channel_last_io(Conv().eval(), args=[0]).eval()
    litert_torch.convert(nhwc, (torch.randn(1, 16, 16, 3),)).export(str(out / "nhwc.tflite"))
    m["nhwc"] = out / "nhwc.tflite"
    m["dir"] = out
    return m


@pytest.fixture(params=["local", "ssh"])
def device(request, tmp_path):
    if request.param == "local":
        return "local"
    sshd = request.getfixturevalue("sshd")
    (tmp_path / "remote").mkdir()
    return str(sshd.profile_yaml(tmp_path / "p.yaml", connection=dict(workdir=str(tmp_path / "remote"))))


def _profile(device, model, *extra):
    r = run_dcanas("profile", "--device", device, str(model), "--runs", "5", "--warmup", "1", "--any-format", "--json", *extra)
    out = json.loads(r.stdout) if r.returncode in (0, 1) and r.stdout.strip().startswith("{") else None
    return r, out


@pytest.mark.parametrize("name,extra,inputs", [
    ("two", [], [("a", "float32", [1, 8]), ("b", "float32", [1, 8])]),
    ("ids", ["--int-range", "3", "7"], [("ids", "int64", [1, 12])]),
    ("dyn", [], [("x", "float32", [1, 3, 16, 16])]),
    ("dyn", ["--input-shape", "x=4x3x16x16"], [("x", "float32", [4, 3, 16, 16])]),
    ("dyn", ["--batch", "8"], [("x", "float32", [8, 3, 16, 16])]),
    ("dynhw", ["--input-shape", "x=2x3x24x24"], [("x", "float32", [2, 3, 24, 24])]),
    ("nhwc", [], [(None, "float32", [1, 16, 16, 3])]),
    ("external", [], [("x", "float32", [1, 3, 16, 16])]),
])
def test_every_input_of_any_model_ends_in_a_verdict(models, device, name, extra, inputs):
    r, out = _profile(device, models[name], *extra)
    assert r.returncode == 0, r.stderr[-2000:]
    got = [(i["name"], i["dtype"], i["shape"]) for i in out["inputs"]]
    assert [(g[0] if n else None, g[1], g[2]) for g, (n, _, _) in zip(got, inputs)] == inputs
    assert out["verdict"]["passed"] and out["output_checks"] is None
    if name == "dyn" and not extra:
        assert out["input_notes"] == ["input 'x': dynamic dimension 0 (batch) set to 1 (--batch or --input-shape choose it)"]
    if name == "ids":
        assert out["verdict"]["graph"]["params"] == 100 * 16 + 16 * 5 + 5  # the embedding table counts


def test_multi_output_model_checks_every_output_against_the_reference(models, device):
    d = models["dir"]
    r, out = _profile(device, models["multi"], "--inputs", str(d / "multi.in.npz"), "--reference", str(d / "multi.ref.npz"))
    assert r.returncode == 0, r.stderr[-2000:]
    checks = {c["name"]: c for c in out["output_checks"]}
    assert set(checks) == {"logits", "features"} and all(c["max_abs_diff"] < 1e-4 for c in checks.values())
    assert out["input_source"] == "file multi.in.npz" and out["reference_file"] == "multi.ref.npz"
    row = [x for x in out["verdict"]["rows"] if x["budget"] == "outputs match the reference (top-1)"]
    assert row and row[0]["met"] is True
    r, out = _profile(device, models["multi"], "--inputs", str(d / "multi.in.npz"), "--reference", str(d / "multi.wrong.npz"))
    assert r.returncode == 1 and not out["verdict"]["passed"]  # a top-1 that differs fails the verdict
    assert {c["name"]: c["top1_match"] for c in out["output_checks"]}["logits"] is False


@pytest.mark.parametrize("extra,needle", [
    ([], "input 'x' has a dynamic dimension 2 (side) this runner cannot guess; give it: --input-shape x=1x3xNxN"),
    (["--input-shape", "x=2x3x24"], "--input-shape x=2x3x24 does not fit the model's input 'x'"),
    (["--input-shape", "y=2x3x24x24"], "--input-shape names 'y', which is not an input of the model"),
    (["--input-shape", "x=2by3"], "is not a shape like 1x3x224x224"),
])
def test_an_unresolved_or_wrong_shape_is_one_line_before_connecting(models, extra, needle):
    r = run_dcanas("profile", "--device", "local", str(models["dynhw"]), "--any-format", *extra)
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "[connect]" not in r.stderr


def test_inputs_file_that_does_not_fit_is_named(models, tmp_path):
    np.savez(tmp_path / "bad.npz", a=np.zeros((1, 8), np.float32))
    r = run_dcanas("profile", "--device", "local", str(models["two"]), "--any-format", "--inputs", str(tmp_path / "bad.npz"))
    assert r.returncode == 2 and "the inputs file has no array 'b'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_the_receipt(models, device):
    """Every result says what its latency depended on; onnxruntime's threads are read back from the session."""
    r, out = _profile(device, models["dyn"], "--threads", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    rc = out["receipt"]
    for key in ("os", "kernel", "cpu_model", "cores", "runtime", "runtime_version", "providers", "threads_requested",
                "threads_readback", "affinity", "governor", "runs", "cv", "cv_high", "device", "emulated"):
        assert key in rc, key
    assert rc["threads_requested"] == rc["threads_readback"] == 2 and rc["providers"] == ["CPUExecutionProvider"]
    assert rc["runs"] == 5 and rc["cores"] == os.cpu_count() and rc["emulated"] is False and 0 <= rc["cv"] < 10
    assert set(out["before"]) >= {"cpu_freq_mhz", "governor", "temperature_c", "throttled"}
    r, out = _profile(device, models["nhwc"])
    assert r.returncode == 0 and out["receipt"]["runtime"] == "ai_edge_litert" and out["receipt"]["providers"]


def _fake_sysfs(root, mhz: float, temp_c: float) -> None:
    cpu = root / "sys/devices/system/cpu/cpu0/cpufreq"
    cpu.mkdir(parents=True, exist_ok=True)
    (cpu / "scaling_cur_freq").write_text(f"{int(mhz * 1000)}\n")
    (cpu / "scaling_governor").write_text("ondemand\n")
    zone = root / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "temp").write_text(f"{int(temp_c * 1000)}\n")


def test_sustained_load_windows_and_a_falling_frequency_drift_line(models, tmp_path):
    """--duration 6 --window 2: three windows, each with the frequency read at its end. The fake sysfs tree's
    frequency falls from 1500 to 600 MHz (and the temperature rises) midway, as a throttling board's does: the drift
    line says so. The plot is written."""
    import threading
    import time

    import yaml

    root, work = tmp_path / "sysfs", tmp_path / "work"
    work.mkdir()
    _fake_sysfs(root, 1500, 45)
    prof = tmp_path / "p.yaml"
    prof.write_text(yaml.safe_dump(dict(name="board", budget=dict(latency_ms=100), connection=dict(transport="local", workdir=str(work)))))
    stop = threading.Event()

    def throttle_midway() -> None:  # 3 s after the runner starts: windows end at about 2, 4 and 6 s of timed runs
        while not stop.is_set() and not list(work.glob("dcanas-*/runner.pid")):
            time.sleep(0.05)
        if not stop.wait(3.0):
            _fake_sysfs(root, 600, 82)

    t = threading.Thread(target=throttle_midway)
    t.start()
    try:
        r = run_dcanas("profile", "--device", str(prof), str(models["dyn"]), "--any-format", "--duration", "6", "--window", "2s",
                       "--plot", str(tmp_path / "s.png"), env={**os.environ, "DCANAS_SYSFS_ROOT": str(root)})
    finally:
        stop.set()
        t.join()
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ") and line.split("|")[1].strip()[:1].isdigit()]
    assert len(rows) == 3 and "1,500" in rows[0] and "600" in rows[-1], r.stdout
    assert "drift: p50" in r.stdout and "CPU frequency 1500.0 -> 600.0 MHz, temperature 45.0 -> 82.0 C" in r.stdout, r.stdout
    assert (tmp_path / "s.png").stat().st_size > 10_000



@pytest.mark.slow
def test_duration_60_on_local(models, tmp_path):
    r = run_dcanas("profile", "--device", "local", str(models["dyn"]), "--any-format", "--duration", "60", "--json",
                   "--plot", str(tmp_path / "s.png"), timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    w = out["sustained"]["windows"]
    assert len(w) == 2 and abs(w[-1]["t_end_s"] - 60) < 1 and all(x["p50"] <= x["p90"] <= x["p99"] for x in w)
    assert out["timed_runs"] == sum(x["runs"] for x in w) and len(out["latencies_ms"]) <= 10_000
    assert (tmp_path / "s.png").is_file() and out["sustained"]["plot"] == str(tmp_path / "s.png")


def test_plot_without_duration_is_refused(models):
    r = run_dcanas("profile", "--device", "local", str(models["dyn"]), "--any-format", "--plot", "x.png")
    assert r.returncode == 2 and "give --duration too" in r.stderr


def test_the_verdict_judges_the_sustained_tail(models):
    r = run_dcanas("profile", "--device", "local", str(models["dyn"]), "--any-format", "--duration", "3", "--window", "1",
                   "--percentile", "p99", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    [row] = [x for x in out["verdict"]["rows"] if x["budget"] == "latency_ms (p99)"]
    assert row["measured"] == pytest.approx(out["sustained"]["windows"][-1]["p99"], rel=1e-3) and "back to back" in row["source"]

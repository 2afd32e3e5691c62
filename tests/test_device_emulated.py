"""`make test-device`: the profiler against the emulated Raspberry Pi (arm64 Debian bookworm under
qemu-user, Python 3.11, Debian's numpy 1.24, tflite-runtime 2.14 and onnxruntime from PyPI's aarch64
wheels). Opt-in: it needs `make device-emulator` (root, ~6-15 minutes to build)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.environ.get("DCANAS_EMULATED_PI") != "1",
                                reason="the emulated Pi is opt-in: `make test-device` (builds it with `make device-emulator`)")
# `artifacts` (the exported ONNX/TFLite fixture) comes from conftest.py


def profile(model, *extra):
    r = subprocess.run([sys.executable, "-m", "dcanas", "profile", "--device", "rpi4-emulated", str(model), "--runs", "5",
                        "--warmup", "1", "--json", "--any-format", *extra], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.stdout, r.stderr
    return r, json.loads(r.stdout)


@pytest.mark.parametrize("fmt,engine", [("onnx", "onnxruntime"), ("tflite", "tflite_runtime")])
def test_emulated_pi_runs_the_model(artifacts, fmt, engine):
    r, out = profile(artifacts[fmt])
    assert out["machine"] == "aarch64" and out["python"].startswith("3.11") and out["numpy_version"].startswith("1.")
    assert out["engine"] == engine and "Cortex-A72" in out["cpu_model"]
    assert out["reference_max_abs_diff"] < 1e-4 and out["reference_top1_match"]
    assert out["emulated"] and "meaningless" in out["note"]


def test_emulated_pi_builds_a_latency_model(tmp_path):
    """`dcanas latency build` through sshd on the emulated Pi: the per-op models, probes and two
    calibration networks exported to TFLite and timed by tflite-runtime on aarch64 in one runner process
    per chunk. The plumbing only: latencies under qemu are not claimed."""
    r = subprocess.run([sys.executable, "-m", "dcanas", "latency", "build", "--device", "rpi4-emulated", "--preset", "tiny",
                        "--calibrate", "2", "--runs", "2", "--rounds", "1", "--cache-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=3600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    model = json.loads(next(tmp_path.glob("*-darts-*.json")).read_text())
    assert model["basis"] == "table" and model["table"] and len(model["calibration"]) == 2
    cond = model["device"]["conditions"][0]
    assert cond["machine"] == "aarch64" and cond["engine"] == "tflite_runtime"
    # the graph model's features from tflite-runtime 2.14's op list, and the graph model on the two networks
    graphs = [c["graph"] for c in model["calibration"]]
    assert all(g and g.get("CONV_2D", 0) > 0 for g in graphs), graphs
    assert model["graph_stats"]["rows"] == 2 and model["graph_weights"]


def test_emulated_pi_runs_static_int8(tmp_path, fashion_root):
    """A static-int8 export (int8 in and out, every op int8 but the average pool's divisor, which
    tflite-runtime 2.14 has no int8 kernel for) runs on the Pi's tflite-runtime and matches PyTorch's class on
    the shipped reference input."""
    from dcanas.export.exporter import export_model
    from dcanas.nets.genotype import KNOWN
    from dcanas.train.trainer import TrainConfig, apply_preset, train

    from dataclasses import replace

    g = {**KNOWN["DARTS_V2"], "normal": [["avg_pool_3x3", 0]] + KNOWN["DARTS_V2"]["normal"][1:]}  # an average pool in it
    cfg = replace(apply_preset(TrainConfig(genotype=g, data_root=str(fashion_root)), "tiny"), epochs=1, subset=1000)
    train(cfg, tmp_path / "m", progress=lambda m: None)
    [row] = export_model(tmp_path / "m" / "model.pt", ["tflite-int8"], tmp_path / "e", data_root=str(fashion_root),
                         progress=lambda m: None)
    assert row["passed"], row.get("reason")
    r, out = profile(tmp_path / "e" / "model-int8.tflite")
    assert out["engine"] == "tflite_runtime" and out["engine_version"].startswith("2.14"), r.stderr
    assert out["reference_top1_match"], out.get("reference_max_abs_diff")

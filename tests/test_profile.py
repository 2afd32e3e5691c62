"""Device profiles, transports and the on-device profiler, against a REAL sshd on 127.0.0.1."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import run_dcanas, skip_unless_ci

from dcanas.devices.schema import ProfileError, list_profiles, load_profile, parse_profile
from dcanas.devices.transport import DeviceError, SSHTransport, make_transport
from dcanas.files import file_sha256 as sha256_file
from dcanas.nets.ops import SPACE_OPS
from dcanas.costs.metrics import primary

from sshd import SSHD

needs_sshd = pytest.mark.skipif(not os.path.exists(SSHD), reason="openssh-server not installed (make test installs it as root)")


dcanas = run_dcanas


# ---- profiles ----------------------------------------------------------------------

@pytest.mark.parametrize("name", list_profiles())
def test_shipped_profiles_parse(name):
    p = load_profile(name)
    assert p.name == name and p.budget and p.search_metric in primary() and p.search_metric in p.budget
    assert dcanas("devices", "show", name).returncode == 0


BAD_PROFILES = [
    ({"name": "x", "budget": {}}, "budget"),
    ({"name": "x", "budget": {"params": 1}, "runtime": {"engine": "tensorrt"}}, "runtime.engine"),
    ({"name": "x", "budget": {"params": -5}}, "budget.params"),
    ({"name": "x", "budget": {"latency": 5}}, "unknown key 'latency'"),
    ({"name": "x", "budget": {"params": 1}, "connection": {"transport": "telnet"}}, "connection.transport"),
    ({"name": "x", "budget": {"params": 1}, "connection": {"transport": "ssh"}}, "connection.host"),
    ({"name": "x", "budget": {"params": 1}, "runtime": {"engine": "onnxruntime", "precision": "int8"}}, "runtime.precision"),
    # every field typed and in range; booleans are YAML booleans, the name a plain name
    ({"name": "x", "budget": {"params": 1}, "connection": {"transport": "ssh", "host": "h", "trust_on_first_use": "false"}},
     "connection.trust_on_first_use"),
    ({"name": "x", "budget": {"params": 1}, "connection": {"retries": "three"}}, "connection.retries"),
    ({"name": "x", "budget": {"params": 1}, "connection": {"retries": -1}}, "connection.retries"),
    ({"name": "x", "budget": {"params": 1}, "connection": {"connect_timeout_s": "ten"}}, "connection.connect_timeout_s"),
    ({"name": "x", "budget": {"params": 1}, "connection": {"keepalive_s": 0}}, "connection.keepalive_s"),
    ({"name": "x", "budget": {"params": 1}, "connection": {"port": "22"}}, "connection.port"),
    ({"name": "x", "budget": {"params": 1}, "connection": {"host": 5}}, "connection.host"),
    ({"name": "x", "budget": {"params": 1}, "runtime": {"threads": True}}, "runtime.threads"),
    ({"name": "x", "budget": {"params": True}}, "budget.params"),
    ({"name": "x", "budget": {"params": 1}, "emulated": "yes"}, "emulated"),
    ({"name": "../../x", "budget": {"params": 1}}, "'name'"),
    ({"name": "a b", "budget": {"params": 1}}, "'name'"),
    ({"name": "x", "budget": {"params": 1}, "search_metric": "latency"}, "search_metric"),  # no latency budget
    ({"name": "x", "budget": {"params": 1, "peak_memory_mb": 5}, "search_metric": "peak_memory_mb"}, "search_metric"),
]


@pytest.mark.parametrize("raw,needle", BAD_PROFILES)
def test_bad_profile_names_key_value_and_choices(raw, needle):
    with pytest.raises(ProfileError, match="valid") as exc:
        parse_profile(raw, "p.yaml")
    assert needle in str(exc.value)


def test_bad_yaml_and_unknown_device_exit_2(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    for arg in (str(tmp_path / "bad.yaml"), "no-such-device"):
        r = dcanas("devices", "show", arg)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


# ---- local --------------------------------------------------------------------------

def local_profile(tmp_path: Path, engine: str, **budget) -> Path:
    """The shipped `local` profile with another runtime engine (and budget)."""
    base = yaml.safe_load((Path(load_profile("local").source)).read_text())
    base["runtime"]["engine"] = engine
    base["budget"].update(budget)
    path = tmp_path / f"local-{engine}.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_profile_local_json(artifacts, fmt, tmp_path):
    device = "local" if fmt == "onnx" else str(local_profile(tmp_path, "tflite"))
    r = dcanas("profile", "--device", device, str(artifacts[fmt]), "--runs", "10", "--warmup", "2", "--json")
    assert r.returncode == 0, r.stderr  # the local profile's budgets are far above this small network
    out = json.loads(r.stdout)
    for key in ("engine", "engine_version", "python", "machine", "cpu_model", "threads", "model_size_bytes", "load_ms",
                "first_inference_ms", "warmup_runs", "timed_runs", "peak_rss_mb", "rss_increase_mb", "before", "after"):
        assert key in out, key
    assert set(out["latency_ms"]) == {"mean", "std", "min", "p50", "p90", "p99", "max"}
    assert out["timed_runs"] == 10 and out["latency_ms"]["min"] <= out["latency_ms"]["p50"] <= out["latency_ms"]["max"]
    assert out["reference_max_abs_diff"] < 1e-4 and out["reference_top1_match"]
    assert out["engine"] == ("onnxruntime" if fmt == "onnx" else "ai_edge_litert")
    rows = {r["budget"].split()[0]: r for r in out["verdict"]["rows"]}
    # params are counted from the profiled file's graph (batch norm folded by the exporter: at most the
    # analytic count), the analytic counter's figure for the metadata's genotype shown beside it
    analytic = out["verdict"]["analytic"]["params"]
    assert 0 < rows["params"]["measured"] <= analytic and rows["params"]["source"] == f"model graph; analytic {analytic:,}"
    assert (r.returncode == 0) == out["verdict"]["passed"]


@pytest.mark.slow
def test_verdict_gates_with_exit_code(artifacts, tmp_path):
    base = yaml.safe_load((Path(load_profile("local").source)).read_text())
    for latency, params, code in ((1e-6, 10**9, 1), (10_000, 10**9, 0), (10_000, 10, 1)):
        base["budget"] = {"latency_ms": latency, "params": params}
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(base))
        r = dcanas("profile", "--device", str(tmp_path / "p.yaml"), str(artifacts["onnx"]), "--runs", "3", "--warmup", "1")
        assert r.returncode == code, r.stdout + r.stderr
        assert ("PASS" in r.stdout) == (code == 0)


def test_a_model_of_another_format_is_refused(artifacts, tmp_path):
    """`local` runs onnxruntime fp32: its profile of a TFLite file would answer another question."""
    r = dcanas("profile", "--device", "local", str(artifacts["tflite"]), "--runs", "2", "--warmup", "0")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "model.tflite is a tflite fp32 model but local runs onnxruntime fp32 (the onnx export" in r.stderr
    assert "--any-format" in r.stderr
    r = dcanas("profile", "--device", "local", str(artifacts["tflite"]), "--runs", "2", "--warmup", "0", "--any-format")
    assert r.returncode == 0, r.stderr


def test_run_always_exports_and_profiles_the_devices_format():
    from dcanas.run.stages import RunConfig, Stages

    s = Stages(RunConfig(device="local", preset="tiny", formats=["tflite"]), load_profile("local"))
    assert s.formats() == ["tflite", "onnx"] and s.target_format() == "onnx"
    rpi = Stages(RunConfig(device="rpi4", preset="tiny", formats=["onnx", "tflite"]), load_profile("rpi4"))
    assert rpi.formats() == ["onnx", "tflite", "tflite-int8"]


def test_run_baselines_accept_published_cells():
    """--baselines: torchvision networks or a published DARTS-form cell (NASNet, AmoebaNet, DARTS_V1/V2); else exit 2."""
    from dcanas.errors import UserError
    from dcanas.run.stages import RunConfig, Stages

    Stages(RunConfig(device="local", preset="tiny", baselines=["NASNet", "AmoebaNet", "mobilenet_v2"]), load_profile("local"))
    with pytest.raises(UserError, match="unknown baseline 'NASNet-A'.*valid: mobilenet_v2, resnet18, DARTS_V1"):
        Stages(RunConfig(device="local", preset="tiny", baselines=["NASNet-A"]), load_profile("local"))


def test_frequency_drop_and_throttling_are_warned(artifacts, tmp_path):
    """A fake sysfs tree (DCANAS_SYSFS_ROOT: no test can heat a CPU) whose CPU frequency falls and whose
    firmware flags throttling while the runner times the model: the profile says so."""
    import threading

    sysfs = tmp_path / "sysfs"
    freq = sysfs / "sys/devices/system/cpu/cpu0/cpufreq"
    freq.mkdir(parents=True)
    (freq / "scaling_governor").write_text("ondemand\n")
    (freq / "scaling_cur_freq").write_text("1500000\n")
    (sysfs / "sys/class/thermal/thermal_zone0").mkdir(parents=True)
    (sysfs / "sys/class/thermal/thermal_zone0/temp").write_text("61000\n")
    fw = sysfs / "sys/devices/platform/soc/soc:firmware"
    fw.mkdir(parents=True)
    (fw / "get_throttled").write_text("0x0\n")

    def heat() -> None:
        import time
        time.sleep(2.0)
        (freq / "scaling_cur_freq").write_text("600000\n")
        (sysfs / "sys/class/thermal/thermal_zone0/temp").write_text("84000\n")
        (fw / "get_throttled").write_text("0x60006\n")

    t = threading.Thread(target=heat)
    t.start()
    r = subprocess.run([sys.executable, "-m", "dcanas", "profile", "--device", "local", str(artifacts["onnx"]), "--runs", "5",
                        "--warmup", "1", "--min-seconds", "5", "--json"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "DCANAS_SYSFS_ROOT": str(sysfs)})
    t.join()
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["before"] == {"cpu_freq_mhz": 1500.0, "governor": "ondemand", "temperature_c": 61.0, "throttled": 0}
    assert out["after"]["cpu_freq_mhz"] == 600.0 and out["after"]["throttled"] == 0x60006
    text = " ".join(out["warnings"])
    assert "fell from 1500 to 600 MHz" in text and "61.0 -> 84.0 C" in text
    assert "now: frequency capped, throttled" in text and "new during the run: frequency capped, throttled" in text
    assert "WARNING: the CPU frequency fell" in r.stderr


# ---- through a real sshd ---------------------------------------------------------------

@needs_sshd
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_profile_over_ssh(sshd, artifacts, tmp_path, fmt):
    engine = "onnxruntime" if fmt == "onnx" else "tflite"
    prof = sshd.profile_yaml(tmp_path / "p.yaml", runtime=dict(engine=engine, threads=1, precision="fp32"))
    r = dcanas("profile", "--device", str(prof), str(artifacts[fmt]), "--runs", "10", "--warmup", "2", "--json")
    assert r.returncode == 0, r.stderr  # budget: 1,000 ms and 4,096 MB
    out = json.loads(r.stdout)
    assert out["timed_runs"] == 10 and out["reference_max_abs_diff"] < 1e-4
    assert out["orchestration_overhead_s"] > 0 and out["wall_s"] > out["total_s"]
    for phase in ("[connect]", "[push]", "[run]", "[collect]"):
        assert phase in r.stderr
    assert not Path(out["remote_workdir"]).exists(), "remote work directory left behind"
    assert list((sshd.root / "remote").iterdir()) == []


@needs_sshd
def test_devices_check_over_ssh(sshd, tmp_path):
    r = dcanas("devices", "check", str(sshd.profile_yaml(tmp_path / "p.yaml")), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["cores"] >= 1 and "onnxruntime" in info["runtimes"] and info["python"].startswith("3.")


@needs_sshd
def test_unknown_host_key_is_refused(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    prof = sshd.profile_yaml(tmp_path / "p.yaml", connection={"known_hosts": str(empty)})
    r = dcanas("devices", "check", str(prof))
    assert r.returncode == 2 and "unknown host key" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert empty.read_text() == ""


@needs_sshd
def test_changed_host_key_is_refused(sshd, tmp_path):
    from sshd import keygen
    keygen(tmp_path / "other")
    other = (tmp_path / "other.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    prof = sshd.profile_yaml(tmp_path / "p.yaml", connection={"known_hosts": str(known), "trust_on_first_use": True})
    r = dcanas("devices", "check", str(prof))
    assert r.returncode == 2 and "CHANGED" in r.stderr


@needs_sshd
def test_trust_on_first_use_records_the_key(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    prof = sshd.profile_yaml(tmp_path / "p.yaml", connection={"known_hosts": str(known), "trust_on_first_use": True})
    assert dcanas("devices", "check", str(prof)).returncode == 0
    assert sshd.host_pub.split()[1] in known.read_text()


@needs_sshd
def test_bad_key_fails_clearly(sshd, tmp_path):
    from sshd import keygen
    keygen(tmp_path / "stranger")
    prof = sshd.profile_yaml(tmp_path / "p.yaml", connection={"key_file": str(tmp_path / "stranger")})
    r = dcanas("devices", "check", str(prof))
    assert r.returncode == 2 and "authentication failed" in r.stderr and "authorized_keys" in r.stderr


@needs_sshd
def test_connection_cut_during_upload(sshd, tmp_path):
    """A cut mid-upload leaves nothing under the final name; the retry reconnects and succeeds."""
    big = tmp_path / "blob.bin"
    big.write_bytes(os.urandom(3 * 2**20))
    remote = str(sshd.root / "remote" / "blob.bin")
    seen = {"cut": 0, "final_during_cut": None}
    for retries in (0, 2):  # ONE retry policy: the profile's connection.retries, for connect and upload
        profile = load_profile(sshd.profile_yaml(tmp_path / "p.yaml", connection=dict(retries=retries)))
        seen["cut"] = 0
        with make_transport(profile) as t:
            assert isinstance(t, SSHTransport)

            def cut(sent, total):
                if seen["cut"] == 0 and sent > 2**20:
                    seen["cut"] += 1
                    seen["final_during_cut"] = os.path.exists(remote)
                    t.client.get_transport().sock.close()  # the network goes away mid-transfer
            if retries == 0:
                with pytest.raises(DeviceError, match="upload of blob.bin failed"):
                    t.put(big, remote, callback=cut)
                assert not os.path.exists(remote)
            else:
                t.put(big, remote, callback=cut)
    assert seen["final_during_cut"] is False and seen["cut"] == 1
    assert sha256_file(Path(remote)) == sha256_file(big)
    assert not os.path.exists(remote + ".part")


@needs_sshd
def test_device_without_runtime_names_the_package(sshd, artifacts, tmp_path):
    bare = Path(sys.base_prefix) / "bin" / "python3"
    probe = subprocess.run([str(bare), "-c", "import onnxruntime"], capture_output=True)
    if probe.returncode == 0:
        skip_unless_ci(f"{bare} has onnxruntime; no bare interpreter to stand in for a device without it")
    prof = sshd.profile_yaml(tmp_path / "p.yaml", connection={"python": str(bare)})
    r = dcanas("profile", "--device", str(prof), str(artifacts["onnx"]))
    assert r.returncode == 2 and "pip install" in r.stderr and ("onnxruntime" in r.stderr or "numpy" in r.stderr), r.stderr


@needs_sshd
def test_shell_metacharacters_in_paths_are_harmless(sshd, artifacts, tmp_path):
    odd = tmp_path / "we ird;$(touch PWNED)'q`x`.onnx"
    odd.write_bytes(artifacts["onnx"].read_bytes())
    ref = artifacts["onnx"].with_name("model.onnx.ref.npz")
    Path(str(odd) + ".ref.npz").write_bytes(ref.read_bytes())
    prof = sshd.profile_yaml(tmp_path / "p.yaml")
    r = dcanas("profile", "--device", str(prof), str(odd), "--runs", "3", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"] == odd.name
    assert not list(Path("/").glob("PWNED")) and not list(Path.home().glob("PWNED")) and not list(sshd.root.rglob("PWNED"))


@needs_sshd
def test_comparison_table_in_one_connection(sshd, artifacts, tmp_path):
    """ONNX, TFLite fp32 and int8 at 1 and 2 threads through the loopback sshd: one connection, one table,
    the thread check, and a CSV."""
    import csv as csvlib
    import shutil

    import numpy as np

    from dcanas.export.converters import quantize_tflite

    d = tmp_path / "models"
    d.mkdir()
    for f in ("onnx", "tflite"):
        shutil.copy(artifacts[f], d / artifacts[f].name)
        shutil.copy(str(artifacts[f]) + ".ref.npz", d / (artifacts[f].name + ".ref.npz"))
    calib = [np.random.default_rng(k).standard_normal((1, 1, 28, 28)).astype(np.float32) for k in range(4)]
    quantize_tflite(artifacts["tflite"], d / "model-int8.tflite", "static-int8", calib)
    prof = sshd.profile_yaml(tmp_path / "p.yaml")
    models = [str(d / n) for n in ("model.onnx", "model.tflite", "model-int8.tflite")]
    r = dcanas("profile", "--device", str(prof), *models, "--threads", "1,2", "--runs", "5", "--warmup", "1",
               "--csv", str(tmp_path / "cmp.csv"), "--json")
    out = json.loads(r.stdout)
    rows = out["rows"]
    assert r.returncode == (1 if any(x["verdict"] == "FAIL" for x in rows) else 0), r.stderr[-2000:]  # exit 1: a row FAILed
    assert r.stderr.count("[connect]") == 1 and r.stderr.count("[run]") == 6
    assert [(x["model"], x["threads"]) for x in rows] == [(m, t) for m in ("model.onnx", "model.tflite", "model-int8.tflite")
                                                          for t in (1, 2)]
    assert [x["precision"] for x in rows] == ["fp32"] * 4 + ["int8"] * 2
    assert all(x["p50_ms"] > 0 and x["peak_rss_mb"] > 0 and x["verdict"] in ("pass", "FAIL") for x in rows)
    assert rows[0]["threads_readback"] == 1 and rows[1]["threads_readback"] == 2  # onnxruntime reports its setting
    assert rows[0]["top1_match"] is True and rows[4]["max_abs_diff"] is None  # no reference beside the int8 file
    assert sum("threads" in n and "took effect" in n or "did NOT take effect" in n for n in out["thread_check"]) == 3
    with open(tmp_path / "cmp.csv") as fh:
        table = list(csvlib.DictReader(fh))
    assert len(table) == 6 and table[5]["precision"] == "int8"
    assert not list((sshd.root / "remote").glob("dcanas-*"))  # the one work directory was removed
    bad = dcanas("profile", "--device", str(prof), *models[:2], "--threads", "1,zero")
    assert bad.returncode == 2 and "--threads" in bad.stderr


def test_per_operator_profile_maps_to_cells(artifacts, tmp_path):
    """`dcanas profile --ops`: onnxruntime's own profiler, every node placed by the module path the exporter
    recorded (stem, a cell's preprocessing, edge and op of the genotype, additions, head): >= 95% of the node
    time lands in named parts. TFLite has no per-op profiler in its Python interpreters: said, not faked."""
    r = dcanas("profile", "--device", "local", str(artifacts["onnx"]), "--runs", "10", "--warmup", "2", "--ops", "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)["op_map"]
    assert m["available"] and m["placed_share"] >= 0.95, m["placed_share"]
    assert {"cell 0", "cell 1", "cell 2"} <= set(m["per_cell"]) and "sep_conv_3x3" in m["per_op"]  # DARTS_V2's ops
    assert len(m["top"]) == 10 and all(t["us"] >= 0 for t in m["top"])
    # per genotype edge, summed over the cells of each kind (the report colours the genotype with it)
    assert set(m["per_edge"]) == {"normal", "reduce"} and all(len(v) == 8 for v in m["per_edge"].values())
    edge_us = sum(map(sum, m["per_edge"].values()))
    assert 0 < edge_us <= m["total_us"] and abs(edge_us - sum(t for k, t in m["per_op"].items() if k in SPACE_OPS["darts"])) < 1e-6
    r = dcanas("profile", "--device", str(local_profile(tmp_path, "tflite")), str(artifacts["tflite"]), "--runs", "5",
               "--warmup", "1", "--ops")
    assert r.returncode == 0, r.stderr
    assert "per-operator profile: not available" in r.stdout and "benchmark_model" in r.stdout


def test_fleet_file_and_list_parse(tmp_path):
    from dcanas.devices.fleet import parse_devices

    assert parse_devices("local") == ["local"] and parse_devices("local, rpi4") == ["local", "rpi4"]
    own = local_profile(tmp_path, "tflite")
    (tmp_path / "fleet.yaml").write_text(f"devices: [local, {own.name}]\n")
    assert parse_devices(str(tmp_path / "fleet.yaml")) == ["local", str(own.resolve())]
    (tmp_path / "bad.yaml").write_text("devices: []\n")
    r = dcanas("profile", "--device", str(tmp_path / "bad.yaml"), "m.onnx")
    assert r.returncode == 2 and "non-empty list" in r.stderr
    r = dcanas("profile", "--device", "local,", "m.onnx")
    assert r.returncode == 2 and "empty name" in r.stderr


@needs_sshd
def test_fleet_profile_a_column_per_device(sshd, artifacts, tmp_path):
    """`dcanas profile --device a,b,c MODEL`: the sshd device and local pass; an unreachable one fails its own
    column (not the command), and the exit code is 1 because not every device passed."""
    from sshd import free_port

    prof = sshd.profile_yaml(tmp_path / "ssh.yaml", name="loopback-a")
    gone = sshd.profile_yaml(tmp_path / "gone.yaml", name="gone", connection=dict(port=free_port(), retries=0, connect_timeout_s=2))
    r = dcanas("profile", "--device", f"local,{prof},{gone}", str(artifacts["onnx"]), "--runs", "5", "--warmup", "1", "--json")
    assert r.returncode == 1, r.stderr[-2000:]
    cols = {c["device"]: c for c in json.loads(r.stdout)["devices"]}
    assert cols["local"]["status"] == "passed" and cols["loopback-a"]["status"] == "passed", cols
    assert cols["gone"]["status"] == "failed" and "127.0.0.1" in cols["gone"]["error"]
    assert cols["loopback-a"]["p50 (ms)"] > 0 and cols["local"]["latency_ms (p50)"] == "met"


@pytest.mark.parametrize("verdicts, gates, ship", [
    (["pass", "pass", "pass"], {}, "b.tflite"),                                        # the fastest
    (["pass", "FAIL", "pass"], {}, "a.onnx"),                                          # the fastest missed a budget
    (["pass", "pass", "pass"], {"b.tflite": dict(passed=False)}, "a.onnx"),            # ... or its accuracy gate
    (["FAIL", "FAIL", "FAIL"], {}, None),                                              # none qualifies: none named
])
def test_ship_choice_is_the_fastest_file_that_met_every_budget_and_its_gate(verdicts, gates, ship):
    from dcanas.profile.compare import ship_choice

    rows = [dict(model=m, format=f, precision=pr, threads=2, p50_ms=ms, size_kb=kb, verdict=v) for (m, f, pr, ms, kb), v in zip(
        [("a.onnx", "onnxruntime", "fp32", 0.84, 1100), ("b.tflite", "tflite", "fp32", 0.61, 860), ("c.tflite", "tflite", "int8", 6.98, 420)],
        verdicts)]
    got = ship_choice(rows, {"b.tflite": dict(passed=True, top1_agreement=0.998), **gates})
    assert got["file"] == ship
    if ship == "b.tflite":
        assert got["line"] == ("ship b.tflite: 0.610 ms p50 at 2 threads, top-1 agreement with PyTorch 0.998; "
                               "a.onnx (fp32) is 1.4x slower here; c.tflite (int8) is 11.4x slower here")
    elif ship == "a.onnx":
        assert got["line"].startswith("ship a.onnx: 0.840 ms p50")
        assert "b.tflite (fp32) is 1.4x faster here but missed a budget or its accuracy gate" in got["line"]
    else:
        assert got["line"].startswith("ship: no compared file met every budget; the fastest, b.tflite (0.610 ms p50)")


def test_ship_choice_does_not_split_a_tie_by_noise():
    """Two files within 10% of each other (1.148 and 1.238 ms p50, as onnx and tflite fp32 measured in a cpu-demo run,
    ordered the other way in the run before): one comparison cannot order them, so the smaller file is named and the
    line says why."""
    from dcanas.profile.compare import ship_choice

    rows = [dict(model="model.onnx", format="onnxruntime", precision="fp32", threads=2, p50_ms=1.148, size_kb=1106.1, verdict="pass"),
            dict(model="model.tflite", format="tflite", precision="fp32", threads=2, p50_ms=1.238, size_kb=861.9, verdict="pass"),
            dict(model="model-int8.tflite", format="tflite", precision="int8", threads=2, p50_ms=4.568, size_kb=416.6, verdict="pass")]
    got = ship_choice(rows, {})
    assert got["file"] == "model.tflite"
    assert "model.onnx (fp32, 1.148 ms) is within 10%: not separated by this measurement, the smaller file is named" in got["line"]
    assert "model-int8.tflite (int8) is 3.7x slower here" in got["line"]

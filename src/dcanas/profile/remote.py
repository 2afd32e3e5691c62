"""Profile an exported model on a device: connect, push (runner + model + reference), run, collect,
remove the remote work directory. nn-Meter's split: the runner on the device, parsing on the host."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ..devices.schema import DeviceProfile
from ..devices.transport import DeviceError, Transport, make_transport
from ..errors import UserError

RUNNER = Path(__file__).with_name("runner.py")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _parse(stdout: str, where: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise DeviceError(f"{where}: the runner printed no result ({stdout.strip()[-200:]!r})")


def check_device(profile: DeviceProfile, progress: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Connect and report Python, machine, CPU, cores, memory, disk and importable runtimes."""
    with make_transport(profile) as t:
        progress(f"connected to {t.describe()}")
        wd = t.mkdtemp(profile.connection.workdir)
        try:
            t.put(RUNNER, f"{wd}/runner.py")
            r = t.run([t.python, f"{wd}/runner.py", "--check"], timeout=120)
            info = _parse(r.stdout, t.describe())
        finally:
            t.rmtree(wd)
    info["transport"] = t.describe()
    return info


def profile_model(profile: DeviceProfile, model: str | Path, *, runs: int = 50, warmup: int = 10,
                  threads: Optional[int] = None, min_seconds: float = 0.0, affinity: Optional[str] = None,
                  timeout_s: float = 1800, progress: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Run the model on the device and return the runner's JSON plus the host-side timings."""
    model = Path(model)
    if not model.is_file():
        raise UserError(f"model {model} not found; export one with `dcanas export --model model.pt --formats onnx,tflite --out DIR`")
    if model.suffix not in (".onnx", ".tflite"):
        raise UserError(f"{model.name}: unknown model type {model.suffix!r}; valid: .onnx, .tflite")
    ref = model.with_name(model.name + ".ref.npz")
    t_start = time.perf_counter()
    transport: Transport = make_transport(profile)
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    progress(f"[connect] {profile.name} ({transport.describe()})")
    with transport:
        phases["connect_s"] = time.perf_counter() - t0
        wd = transport.mkdtemp(profile.connection.workdir)
        try:
            t0 = time.perf_counter()
            progress(f"[push] {model.name} ({model.stat().st_size / 1024:.1f} KB) + runner{' + reference' if ref.is_file() else ''}")
            transport.put(RUNNER, f"{wd}/runner.py", retries=profile.connection.retries)
            transport.put(model, f"{wd}/{model.name}", retries=profile.connection.retries)
            if ref.is_file():
                transport.put(ref, f"{wd}/{ref.name}", retries=profile.connection.retries)
            phases["push_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            progress(f"[run] {warmup} warm-up + {runs} timed runs, {threads or profile.runtime.threads} threads")
            argv = [transport.python, f"{wd}/runner.py", "--model", f"{wd}/{model.name}", "--threads", str(threads or profile.runtime.threads),
                    "--warmup", str(warmup), "--runs", str(runs), "--min-seconds", str(min_seconds)]
            if ref.is_file():
                argv += ["--ref", f"{wd}/{ref.name}"]
            if affinity:
                argv += ["--affinity", affinity]
            r = transport.run(argv, timeout=timeout_s)
            phases["run_s"] = time.perf_counter() - t0
            progress("[collect] result")
            result = _parse(r.stdout, transport.describe())
        finally:
            transport.rmtree(wd)
    if result.get("error") == "runtime_missing":
        raise DeviceError(f"{profile.name}: {result['package']} is not installed for {profile.connection.python} on the device; "
                          f"fix: {result['fix']}")
    if result.get("error"):
        raise DeviceError(f"{profile.name}: the model failed on the device: {result['detail']}")
    result["device"] = profile.name
    result["emulated"] = profile.emulated
    result["remote_workdir"] = wd
    result["phases"] = phases
    result["wall_s"] = time.perf_counter() - t_start
    result["orchestration_overhead_s"] = result["wall_s"] - result["total_s"]
    if profile.emulated:
        result["note"] = ("EMULATED device: latencies under qemu-user are meaningless as performance numbers, and peak RSS "
                          "includes QEMU itself (~2.5x too high)")
    return result

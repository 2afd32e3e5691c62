"""Profile an exported model on a device: connect, push (runner + model + reference), run, collect,
remove the remote work directory. nn-Meter's split: the runner on the device, parsing on the host.

Everything that can be checked on the host is checked before connecting (the model parses, its
reference input belongs to it, the options are in range). During the run the runner prints
heartbeats and exits when its stdin closes, so a cut or silent link ends within seconds on both
sides; cleanup runs on a fresh connection when the old one died and never hides the first error.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..devices.schema import DeviceProfile
from ..devices.session import RUNNER, Progress, _parse, _stderr, cleanup, fresh_workdir
from ..devices.transport import DeviceError, Transport, make_transport
from ..errors import UserError
from ..export.inspect import recognise
from ..files import file_sha256
from ..runtime import runner as R

def check_reference(model: Path) -> Optional[Path]:
    """``<model>.ref.npz`` when it belongs to this very file (its recorded sha256), else None
    (a reference written for another export is never used to judge this one)."""
    ref = model.with_name(model.name + ".ref.npz")
    if not ref.is_file():
        return None
    import numpy as np

    try:
        with np.load(ref, allow_pickle=False) as z:
            want = str(z["model_sha256"]) if "model_sha256" in z else None
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{ref} is unreadable ({type(exc).__name__}); export the model again") from None
    if want is not None and want != file_sha256(model):
        raise UserError(f"{ref} was written for another version of {model.name} (sha256 differs): the export was "
                        f"interrupted or the files were mixed; export the model again")
    return ref


def check_options(runs: int, warmup: int, threads: Optional[int], min_seconds: float, affinity: Optional[str]) -> None:
    if runs < 1:
        raise UserError(f"--runs must be >= 1, got {runs}")
    if warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {warmup}")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    if min_seconds < 0:
        raise UserError(f"--min-seconds must be >= 0, got {min_seconds}")
    if affinity is not None:
        try:
            cpus = R.parse_affinity(affinity)
        except ValueError:
            cpus = set()
        if not cpus or min(cpus) < 0:
            raise UserError(f"--affinity {affinity!r} is not a CPU set; valid: a hex mask like 0x3 or a list like 0,2-3")


def run_timeout(profile: DeviceProfile, model: Path, runs: int, warmup: int, min_seconds: float) -> float:
    """A generous bound on the runner's time: start-up and load (a slow Python on a Pi under
    emulation takes seconds), then each run at 20x the latency budget (at least 1 s)."""
    per_run = max(1.0, 20 * profile.budget.get("latency_ms", 50) / 1000)
    return 120 + 30 * model.stat().st_size / 2**20 + (runs + warmup + 1) * per_run + min_seconds


THROTTLE_BITS = {0: "under-voltage", 1: "frequency capped", 2: "throttled", 3: "soft temperature limit"}


def condition_warnings(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What in the device's conditions makes a latency untrustworthy: the CPU frequency fell during the run,
    or the firmware reports throttling now or newly since boot (Raspberry Pi ``get_throttled``)."""
    out = []
    f0, f1 = (before or {}).get("cpu_freq_mhz"), (after or {}).get("cpu_freq_mhz")
    if f0 and f1 and f1 < 0.9 * f0:
        out.append(f"the CPU frequency fell from {f0:.0f} to {f1:.0f} MHz during the run (temperature "
                   f"{(before or {}).get('temperature_c')} -> {(after or {}).get('temperature_c')} C): these latencies are "
                   f"not the device's steady state; cool it (--cooldown S between runs) or improve its cooling")
    t0, t1 = (before or {}).get("throttled"), (after or {}).get("throttled")
    if t1:
        now = [name for bit, name in THROTTLE_BITS.items() if t1 & (1 << bit)]
        new = [name for bit, name in THROTTLE_BITS.items() if t1 & (1 << (bit + 16)) and not (t0 or 0) & (1 << (bit + 16))]
        if now or new:
            out.append(f"the device reports throttling (get_throttled {t1:#x}): " + "; ".join(
                ([f"now: {', '.join(now)}"] if now else []) + ([f"new during the run: {', '.join(new)}"] if new else []))
                + "; the latency is not trustworthy")
    gov = (after or {}).get("governor")
    if gov and gov not in ("performance", "schedutil", "ondemand"):
        out.append(f"the CPU governor is {gov!r}: latencies may be low-clocked; 'performance' gives repeatable numbers")
    return out


Job = tuple[Callable[[str], list[str]], str, float]  # (runner arguments given the work dir, what it does, timeout s)


def run_runner_jobs(profile: DeviceProfile, files: list[Path], jobs: list[Job], progress: Progress = _stderr,
                    cooldown_s: float = 0.0) -> tuple[list[dict[str, Any]], dict[str, float], str]:
    """One runner session: connect, push the runner and ``files`` into a fresh work dir, run the runner once
    per job (a fresh process each, ``cooldown_s`` apart; watchdog and heartbeats over SSH), parse each JSON,
    and clean up whatever happens. Returns (the runner's JSON per job, phase timings, the work dir)."""
    from ..export.inspect import external_data

    files = [g for f in files for g in [f, *external_data(f)]]  # an ONNX model's external weights travel with it
    keepalive = profile.connection.keepalive_s
    transport: Transport = make_transport(profile, warn=progress)
    phases: dict[str, float] = {}
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    progress(f"[connect] {profile.name} ({transport.describe()})")
    with transport:
        phases["connect_s"] = time.perf_counter() - t0
        wd = fresh_workdir(transport, profile, progress)
        try:
            t0 = time.perf_counter()
            size = sum(f.stat().st_size for f in files) / 1024
            progress(f"[push] {files[0].name if len(files) == 1 else f'{len(files)} files'} ({size:.1f} KB) + runner")
            for f in [RUNNER] + files:
                transport.put(f, f"{wd}/{f.name}")
            phases["push_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            for n, (args, what, timeout_s) in enumerate(jobs):
                if n and cooldown_s:
                    progress(f"[cooldown] {cooldown_s:g} s")
                    time.sleep(cooldown_s)
                progress(f"[run] {what} (gives up after {timeout_s:.0f} s)")
                argv = [transport.python, f"{wd}/runner.py", *args(wd), "--pidfile", f"{wd}/runner.pid"]
                if profile.connection.transport == "ssh":  # the runner exits when the channel closes, and beats
                    argv += ["--watchdog", "--heartbeat", str(keepalive)]
                r = transport.run(argv, timeout=timeout_s, silence_s=max(10.0, 4 * keepalive))
                results.append(_parse(r.stdout, transport.describe()))
                log = [line.strip() for line in r.stderr.splitlines() if "delegate" in line.lower()]  # e.g. LiteRT's XNNPACK line
                if log and isinstance(results[-1].get("receipt"), dict):
                    results[-1]["receipt"]["runtime_log"] = log[:5]
            phases["run_s"] = time.perf_counter() - t0
            progress("[collect] result")
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                progress(f"[interrupted] stopping the runner and removing {wd}")
            cleanup(transport, profile, wd, progress)
            raise
        cleanup(transport, profile, wd, progress)
    return results, phases, wd


def raise_for(profile: DeviceProfile, result: dict[str, Any]) -> None:
    """The runner's error, as the one line a user acts on."""
    if result.get("error") == R.ERROR_MISSING:
        raise DeviceError(f"{profile.name}: {result['package']} is not installed for {profile.connection.python} on the device; "
                          f"fix: {result['fix']}")
    if result.get("error"):
        raise DeviceError(f"{profile.name}: the model failed on the device: {result['detail']}")


def run_runner(profile: DeviceProfile, files: list[Path], args: Callable[[str], list[str]], timeout_s: float, what: str,
               progress: Progress = _stderr) -> tuple[dict[str, Any], dict[str, float], str]:
    """One runner session with one job (see ``run_runner_jobs``); the runner's error raised."""
    [result], phases, wd = run_runner_jobs(profile, files, [(args, what, timeout_s)], progress)
    raise_for(profile, result)
    return result, phases, wd


def measure_batch(profile: DeviceProfile, models: list[Path], *, runs: int = 20, warmup: int = 5, rounds: int = 3,
                  min_seconds: float = 0.0, graph: bool = False, threads: Optional[int] = None, confirm: float = 0.0,
                  max_rounds: int = 0, progress: Progress = _stderr) -> dict[str, Any]:
    """Time many small models in one runner process on the device (the latency model's measurements):
    p50 per round of ``runs`` runs and at least ``min_seconds``, ``rounds`` interleaved rounds, and up to
    ``max_rounds`` for the models whose two fastest rounds differ by more than ``confirm`` (0: no more); with
    ``graph``, each model's node counts as the runtime runs it. Model names must be distinct."""
    if len({m.name for m in models}) != len(models):
        raise UserError("measure_batch: model file names must be distinct")
    for m in models:
        recognise(m)
    listing = Path(tempfile.mkdtemp(prefix="dcanas-batch-")) / "batch.txt"
    try:
        listing.write_text("\n".join(m.name for m in models) + "\n")
        n_threads = threads or profile.runtime.threads
        per_run = max(1.0, 20 * profile.budget.get("latency_ms", 50) / 1000)
        most = max(rounds, max_rounds if confirm > 0 else 0)
        timeout_s = 120 + sum(30 * m.stat().st_size / 2**20 + (runs + warmup) * most * per_run / 10 + 2 * min_seconds * most
                              for m in models)
        result, _, _ = run_runner(profile, [*models, listing], lambda wd: ["--batch", f"{wd}/batch.txt", "--threads", str(n_threads),
                                  "--runs", str(runs), "--warmup", str(warmup), "--rounds", str(rounds),
                                  "--min-seconds", str(min_seconds), *(["--graph"] if graph else []),
                                  *(["--confirm", str(confirm), "--max-rounds", str(max_rounds)] if confirm > 0 else [])], timeout_s,
                                  f"{len(models)} models x {rounds} rounds x {runs} runs, {n_threads} threads", progress)
    finally:
        listing.unlink(missing_ok=True)
        listing.parent.rmdir()
    result["device"] = profile.name
    result["emulated"] = profile.emulated
    result["warnings"] = condition_warnings(result.get("before", {}), result.get("after", {}))
    for w in result["warnings"]:
        progress(f"WARNING: {w}")
    return result


def check_format(profile: DeviceProfile, model: Path) -> None:
    """The model must be what the profile's runtime runs (engine and precision): a profile of another
    format answers another question."""
    from ..export.formats import formats_for
    from ..export.inspect import precision_of

    engine, precision = precision_of(model)
    want = profile.runtime
    if (engine, precision) != (want.engine, want.precision):
        expected = formats_for(want.engine, want.precision)
        raise UserError(f"{model.name} is a {engine} {precision} model but {profile.name} runs {want.engine} {want.precision} "
                        f"(the {expected.name} export, *{expected.suffix}); profile that file, or pass --any-format to "
                        f"measure this one anyway")


@dataclass(frozen=True)
class ModelInputs:
    """What a model is fed on the device: --inputs FILE.npz, --reference FILE.npz, --input-shape NAME=SHAPE (each),
    --batch N (a dynamic first dimension) and the range random integer inputs are drawn from."""

    inputs: Optional[Path] = None
    reference: Optional[Path] = None
    shapes: tuple[str, ...] = ()
    batch: Optional[int] = None
    int_range: tuple[int, int] = (0, 100)

    def runner_args(self, wd: str) -> list[str]:
        return ([f"--inputs={wd}/{self.inputs.name}"] if self.inputs else []) + \
            ([f"--reference={wd}/{self.reference.name}"] if self.reference else []) + \
            [f"--input-shape={s}" for s in self.shapes] + (["--input-batch", str(self.batch)] if self.batch else []) + \
            ["--int-range", str(self.int_range[0]), str(self.int_range[1])]

    def files(self) -> list[Path]:
        return [f for f in (self.inputs, self.reference) if f is not None]


def check_inputs(model: Path, given: ModelInputs) -> None:
    """Everything about the inputs that the host can know, before connecting: the .npz files load, their arrays are
    named and shaped like the model's inputs, every dynamic dimension is resolved. Read with this machine's runtime
    (the runner's own code); skipped when it has none for the format."""
    import numpy as np

    for what, f in (("--inputs", given.inputs), ("--reference", given.reference)):
        if f is None:
            continue
        try:
            with np.load(f, allow_pickle=False) as z:
                z.files  # noqa: B018 - opening is the check
        except (OSError, ValueError) as exc:
            raise UserError(f"{what} {f}: not a readable .npz of arrays ({type(exc).__name__}); save one with numpy.savez") from None
    try:
        engine = R.Engine(str(model), 1)
    except R.Missing:
        return
    except Exception as exc:  # noqa: BLE001 - the runtime's own refusal of the file, as one line
        raise UserError(f"{model.name}: this machine's runtime cannot load it ({type(exc).__name__}: {str(exc)[:200]})") from None
    try:
        if given.inputs:
            with np.load(given.inputs, allow_pickle=False) as z:
                R.check_feeds(engine.inputs, {k: z[k] for k in z.files}, np)
        else:
            R.resolve_shapes(engine.inputs, {n: R.parse_shape(v) for n, _, v in (x.rpartition("=") for x in given.shapes)},
                             given.batch)
    except ValueError as exc:
        raise UserError(f"{model.name}: {exc}") from None


def profile_model(profile: DeviceProfile, model: str | Path, *, runs: int = 50, warmup: int = 10,
                  threads: Optional[int] = None, min_seconds: float = 0.0, affinity: Optional[str] = None,
                  timeout_s: Optional[float] = None, any_format: bool = False, ops: bool = False,
                  given: ModelInputs = ModelInputs(), duration_s: float = 0.0, window_s: float = 30.0,
                  progress: Progress = _stderr) -> dict[str, Any]:
    """Run the model on the device and return the runner's JSON plus the host-side timings."""
    model = Path(model)
    recognise(model)  # a garbage file never reaches the device
    if not any_format:
        check_format(profile, model)
    check_options(runs, warmup, threads, min_seconds, affinity)
    check_inputs(model, given)
    ref = check_reference(model) if not given.inputs and not given.reference else None
    timeout_s = timeout_s or run_timeout(profile, model, runs, warmup, min_seconds) + duration_s
    t_start = time.perf_counter()
    n_threads = threads or profile.runtime.threads

    def args(wd: str) -> list[str]:
        a = ["--model", f"{wd}/{model.name}", "--threads", str(n_threads), "--warmup", str(warmup), "--runs", str(runs),
             "--min-seconds", str(min_seconds)]
        return (a + (["--ref", f"{wd}/{ref.name}"] if ref else []) + (["--affinity", affinity] if affinity else [])
                + (["--ops"] if ops else []) + given.runner_args(wd)
                + (["--duration", str(duration_s), "--window", str(window_s)] if duration_s else []))

    result, phases, wd = run_runner(profile, [model] + ([ref] if ref else []) + given.files(), args, timeout_s,
                                    f"{warmup} warm-up + " + (f"{duration_s:g} s back to back" if duration_s else f"{runs} timed runs")
                                    + f", {n_threads} threads", progress)
    result["device"] = profile.name
    result["emulated"] = profile.emulated
    result.setdefault("receipt", {}).update(device=profile.name, emulated=profile.emulated)
    result["remote_workdir"] = wd
    result["warnings"] = condition_warnings(result.get("before", {}), result.get("after", {}))
    for w in result["warnings"]:
        progress(f"WARNING: {w}")
    result["phases"] = phases
    result["wall_s"] = time.perf_counter() - t_start
    result["orchestration_overhead_s"] = result["wall_s"] - result["total_s"]
    if profile.emulated:
        result["note"] = ("EMULATED device: latencies under qemu-user are meaningless as performance numbers, and peak RSS "
                          "includes QEMU itself (~2.5x too high)")
    return result

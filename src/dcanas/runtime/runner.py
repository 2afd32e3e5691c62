#!/usr/bin/env python3
"""dcanas on-device runner. SELF-CONTAINED: the standard library, numpy and one runtime
(onnxruntime; for TFLite ai_edge_litert, else tflite_runtime, else tensorflow.lite).
Python >= 3.9, numpy 1.x or 2.x. Pushed next to the model and run on the device; prints ONE
JSON object on stdout.  ``--check`` reports the device instead of timing a model.

Exit codes: 0 ok, 3 a runtime (or numpy) is missing, 4 the model failed to load or run,
5 the host went away (``--watchdog``: stdin closed).  ``--heartbeat S`` prints a line to stderr
every S seconds so the host can tell a slow model from a dead link; ``--pidfile`` lets the host
stop the runner from a fresh connection.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time

# The protocol, defined here once (the host imports it): exit codes and the JSON "error" kinds.
EXIT_OK, EXIT_MISSING, EXIT_FAILED, EXIT_HOST_GONE = 0, 3, 4, 5
ERROR_MISSING, ERROR_FAILED = "runtime_missing", "failed"
HEARTBEAT = "dcanas-runner: alive"

PART_NAMES = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
              "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
              "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0x802": "Kryo 385 Gold", "0x803": "Kryo 385 Silver"}


# Where /sys is read from: a test points this at a fake tree (no test can heat a CPU); /proc stays real.
SYSFS_ROOT = os.environ.get("DCANAS_SYSFS_ROOT", "")


def _read(path):
    if path.startswith("/sys/") and SYSFS_ROOT:
        path = SYSFS_ROOT.rstrip("/") + path
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def status_kb(field):
    text = _read("/proc/self/status") or ""
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def cpu_model():
    text = _read("/proc/cpuinfo") or ""
    fields = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields.setdefault(k.strip(), v.strip())
    if "model name" in fields:  # x86, some Arm kernels
        return fields["model name"]
    parts = sorted({line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("CPU part")})
    board = fields.get("Model") or fields.get("Hardware")
    if parts:  # Arm: name the cores, then the board (Raspberry Pi OS shows "Model")
        cores = ", ".join(PART_NAMES.get(p, p) for p in parts)
        return "%s (%s)" % (cores, board) if board else cores
    return board or platform.processor() or platform.machine()


def cpu_freq_mhz():
    text = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    return round(int(text) / 1000.0, 1) if text and text.strip().isdigit() else None


def temperature_c():
    text = _read("/sys/class/thermal/thermal_zone0/temp")
    if text and text.strip().lstrip("-").isdigit():
        return round(int(text) / 1000.0, 1)
    if not SYSFS_ROOT and shutil.which("vcgencmd"):  # Raspberry Pi firmware
        try:
            out = subprocess.run(["vcgencmd", "measure_temp"], capture_output=True, text=True, timeout=5).stdout
            return float(out.strip().split("=")[1].split("'")[0])
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return None
    return None


def parse_affinity(spec):
    """taskset-style: a hex mask ('0x3') or a CPU list ('0,2-3')."""
    if spec.lower().startswith("0x"):
        mask = int(spec, 16)
        return {i for i in range(mask.bit_length()) if mask >> i & 1}
    cpus = set()
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-")
            cpus.update(range(int(a), int(b) + 1))
        elif part:
            cpus.add(int(part))
    return cpus


def runtimes():
    found = {}
    for mod in ("numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime", "tensorflow"):
        try:
            m = __import__(mod)
            found[mod] = getattr(m, "__version__", "unknown")
        except Exception:  # noqa: BLE001 - any import failure means "not usable here"
            pass
    return found


def device_info():
    mem_kb = None
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    disk = shutil.disk_usage(os.getcwd())
    return {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system(),
            "cpu_model": cpu_model(), "cores": os.cpu_count(), "memory_mb": round(mem_kb / 1024.0) if mem_kb else None,
            "free_disk_mb": round(disk.free / 2 ** 20), "cpu_freq_mhz": cpu_freq_mhz(), "temperature_c": temperature_c(),
            "runtimes": runtimes()}


class Missing(Exception):
    def __init__(self, package, detail):
        Exception.__init__(self, detail)
        self.package = package


def load_tflite(path, threads):
    errors = []
    for mod, attr in (("ai_edge_litert.interpreter", "Interpreter"), ("tflite_runtime.interpreter", "Interpreter"),
                      ("tensorflow", "lite")):
        try:
            m = __import__(mod, fromlist=[attr])
            cls = getattr(m, attr)
            cls = cls.Interpreter if mod == "tensorflow" else cls
            version = getattr(sys.modules[mod.split(".")[0]], "__version__", "unknown")
            return cls(model_path=path, num_threads=threads), mod.split(".")[0], version
        except ImportError as exc:
            errors.append("%s: %s" % (mod, exc))
    raise Missing("ai-edge-litert (or tflite-runtime)", "; ".join(errors))


def to_input(x, detail, np):
    """float -> the tensor's dtype: integer I/O is quantized with the tensor's own (scale, zero point).
    The one definition of TFLite I/O scaling; the host's export validation imports it."""
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def from_output(y, detail, np):
    """The tensor's dtype -> float (dequantized with its own parameters)."""
    if y.dtype == np.float32:
        return y.copy()
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


def representable(y, detail, np):
    """Float values as the output tensor can hold them: an integer output clips at its dtype's limits,
    dequantized (a static-int8 classifier's logits below their floor read as the floor:
    ``export/converters.argmax_range``). Differences to a reference are measured against this."""
    if detail is None or detail["dtype"] == np.float32:
        return y
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(y, (info.min - zero) * scale, (info.max - zero) * scale)


class Engine:
    def __init__(self, path, threads):
        import numpy as np
        self.np = np
        if path.endswith(".onnx"):
            try:
                import onnxruntime as ort
            except ImportError as exc:
                raise Missing("onnxruntime", str(exc)) from None
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            self.sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            i = self.sess.get_inputs()[0]
            self.input_name = i.name
            self.shape = [d if isinstance(d, int) else 1 for d in i.shape]
            self.dtype = np.float32
            self.name, self.version = "onnxruntime", ort.__version__
            self.kind = "onnx"
            self.out = None
            self.threads_readback = self.sess.get_session_options().intra_op_num_threads  # what the session took
        else:
            self.interp, self.name, self.version = load_tflite(path, threads)
            self.interp.allocate_tensors()
            self.inp = self.interp.get_input_details()[0]
            self.out = self.interp.get_output_details()[0]
            self.shape = [int(d) for d in self.inp["shape"]]
            self.dtype = self.inp["dtype"]
            self.kind = "tflite"
            self.threads_readback = None  # the TFLite interpreter has no read-back of its thread count

    def __call__(self, x):
        np = self.np
        if self.kind == "onnx":
            return self.sess.run(None, {self.input_name: x})[0]
        self.interp.set_tensor(self.inp["index"], to_input(x, self.inp, np))
        self.interp.invoke()
        return from_output(self.interp.get_tensor(self.out["index"]), self.out, np)


def governor():
    text = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return text.strip() if text else None


def throttled():
    """The Raspberry Pi firmware's throttling flags as an int (sysfs, else ``vcgencmd get_throttled``),
    else None. Bits 0-3 now (under-voltage, frequency capped, throttled, soft temperature limit),
    bits 16-19 the same since boot."""
    text = _read("/sys/devices/platform/soc/soc:firmware/get_throttled")
    if text and text.strip():
        try:
            return int(text.strip(), 16)
        except ValueError:
            return None
    if SYSFS_ROOT or not shutil.which("vcgencmd"):
        return None
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5).stdout
        return int(out.strip().split("=")[1], 16)
    except (OSError, IndexError, ValueError, subprocess.SubprocessError):
        return None


def conditions():
    """What a latency measurement depends on besides the model."""
    return {"cpu_freq_mhz": cpu_freq_mhz(), "governor": governor(), "temperature_c": temperature_c(), "throttled": throttled()}


def timed_runs(engine, x, runs: int, min_seconds: float) -> list:
    """Milliseconds of each run: at least ``runs`` runs and at least ``min_seconds`` in all."""
    times = []
    t_runs = time.perf_counter()
    while len(times) < runs or (time.perf_counter() - t_runs) < min_seconds:
        t0 = time.perf_counter()
        engine(x)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def profile(args):
    t_start = time.perf_counter()
    if args.affinity:
        os.sched_setaffinity(0, parse_affinity(args.affinity))
    before = conditions()
    try:
        import numpy as np
    except ImportError as exc:
        raise Missing("numpy", str(exc)) from None
    rss_base = status_kb("VmRSS")
    t0 = time.perf_counter()
    engine = Engine(args.model, args.threads)
    load_ms = (time.perf_counter() - t0) * 1000
    ref = None
    if args.ref and os.path.exists(args.ref):
        ref = np.load(args.ref)
        x = ref["input"].astype(np.float32)
    else:
        x = np.random.default_rng(0).standard_normal(engine.shape).astype(np.float32)
    t0 = time.perf_counter()
    y = engine(x)
    first_ms = (time.perf_counter() - t0) * 1000
    for _ in range(args.warmup):
        engine(x)
    times = timed_runs(engine, x, args.runs, args.min_seconds)
    s = sorted(times)
    ops = op_profile(args, x) if args.ops else None
    graph = _graph_or_none(args.model, args.threads)  # the latency model's graph features (its second prediction)
    mean = sum(s) / len(s)
    std = (sum((t - mean) ** 2 for t in s) / len(s)) ** 0.5
    peak_kb = status_kb("VmHWM")
    result = {
        "engine": engine.name, "engine_version": engine.version, "numpy_version": np.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "cpu_model": cpu_model(),
        "threads": args.threads, "threads_readback": engine.threads_readback,
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "model": os.path.basename(args.model), "model_size_bytes": os.path.getsize(args.model),
        "input_shape": [int(d) for d in x.shape], "load_ms": load_ms, "first_inference_ms": first_ms,
        "warmup_runs": args.warmup, "timed_runs": len(times),
        "latency_ms": {"mean": mean, "std": std, "min": s[0], "p50": percentile(s, 50), "p90": percentile(s, 90),
                       "p99": percentile(s, 99), "max": s[-1]},
        "latencies_ms": times,
        "peak_rss_mb": peak_kb / 1024.0 if peak_kb else None,
        "rss_increase_mb": (peak_kb - rss_base) / 1024.0 if peak_kb and rss_base else None,
        "before": before, "after": conditions(),
        "op_profile": ops,
        "graph": graph,
        "reference_max_abs_diff": float(np.abs(y.astype(np.float64) - representable(ref["output"], engine.out, np).astype(np.float64)).max())
        if ref is not None else None,
        "reference_top1_match": bool((y.argmax(-1) == ref["output"].argmax(-1)).all()) if ref is not None else None,
    }
    result["total_s"] = time.perf_counter() - t_start
    return result


def _profiled_session(path, threads, prefix):
    """An onnxruntime session that records its runs with the runtime's own profiler (files under ``prefix``)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(os.path.dirname(os.path.abspath(path)), prefix)
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _kernel_events(sess):
    """End the session's profiling; its node kernel events in execution order (the profile file removed)."""
    path = sess.end_profiling()
    try:
        with open(path) as fh:
            events = json.load(fh)
    finally:
        os.remove(path)
    return sorted((e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")),
                  key=lambda e: e.get("ts", 0))


def runtime_graph(path, threads):
    """Node counts per op type of the graph as the runtime runs it: for onnxruntime after its own graph
    optimisations (fusions, eliminated duplicates, inserted layout reorders), read from one profiled run;
    for TFLite the interpreter's op list (what a delegate fuses is not visible there). The latency model's
    graph features: each node costs a dispatch, which at these sizes is most of a network's time."""
    counts = {}
    if path.endswith(".onnx"):
        import numpy as np
        sess = _profiled_session(path, threads, "ort_graph")
        i = sess.get_inputs()[0]
        sess.run(None, {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], dtype=np.float32)})
        nodes = {e["name"][: -len("_kernel_time")]: e.get("args", {}).get("op_name") for e in _kernel_events(sess)}
        for op in nodes.values():
            counts[op] = counts.get(op, 0) + 1
        return counts
    interp, _, _ = load_tflite(path, threads)
    for d in interp._get_ops_details():
        counts[d["op_name"]] = counts.get(d["op_name"], 0) + 1
    return counts


def _graph_or_none(path, threads):
    """runtime_graph, or None where the runtime cannot list its graph: the timings stand without it."""
    try:
        return runtime_graph(path, threads)
    except Exception:  # noqa: BLE001 - any runtime's failure to list its graph
        return None


def op_profile(args, x):
    """Per-node time from the runtime's own profiler, in a second session after the timed runs (profiling
    slows a run, so the timed latencies never include it): {"nodes": {name: {"op": type, "us": per run}}}."""
    if not args.model.endswith(".onnx"):
        return {"available": False, "why": "the TFLite Python interpreters (ai_edge_litert, tflite_runtime) expose no "
                                           "per-operator profiler; use the TFLite benchmark_model binary on the device"}
    sess = _profiled_session(args.model, args.threads, "ort_profile")
    name = sess.get_inputs()[0].name
    runs = max(1, min(args.runs, 50))
    for _ in range(2):
        sess.run(None, {name: x})
    t0 = time.perf_counter()
    for _ in range(runs):
        sess.run(None, {name: x})
    wall_us = (time.perf_counter() - t0) * 1e6 / runs
    kernels = _kernel_events(sess)
    nodes = {}
    # Layout reorders the runtime inserts (ReorderInput before a node, ReorderOutput after one) are charged
    # to that node, in execution order, and counted apart too.
    pending, last = 0.0, None
    for e in kernels:
        n = e["name"][: -len("_kernel_time")]
        dur = float(e.get("dur", 0))
        if n.startswith("ReorderInput"):
            pending += dur
            continue
        if n.startswith("ReorderOutput") and last is not None:
            nodes[last]["us"] += dur
            nodes[last]["reorder_us"] += dur
            continue
        d = nodes.setdefault(n, {"op": e.get("args", {}).get("op_name"), "us": 0.0, "reorder_us": 0.0})
        d["us"] += dur + pending
        d["reorder_us"] += pending
        pending, last = 0.0, n
    total_runs = runs + 2
    for d in nodes.values():
        d["us"] /= total_runs
        d["reorder_us"] /= total_runs
    return {"available": True, "nodes": nodes, "runs": total_runs, "wall_us_per_run": wall_us}


def batch(args):
    """Latency of many small models in one process (the latency model's measurements): in each of
    ``--rounds`` interleaved rounds every model is loaded alone, warmed up and timed over ``--runs``
    runs and at least ``--min-seconds`` (the median kept), then released, so that no other session's threads (onnxruntime's spin
    after a run) share the cores with the one being timed, as in a single-model profile.
    Interleaving spreads slow drifts (heat, other load) over all models alike."""
    try:
        import numpy as np
    except ImportError as exc:
        raise Missing("numpy", str(exc)) from None
    import gc
    t_start = time.perf_counter()
    before = conditions()
    with open(args.batch) as fh:
        paths = [line.strip() for line in fh if line.strip()]
    base = os.path.dirname(os.path.abspath(args.batch))
    rng = np.random.default_rng(0)
    rounds = [[] for _ in paths]
    n_runs = [[] for _ in paths]
    name = version = None
    for _ in range(args.rounds):
        for i, p in enumerate(paths):
            engine = Engine(os.path.join(base, p), args.threads)
            name, version = engine.name, engine.version
            x = rng.standard_normal(engine.shape).astype(np.float32)
            for _ in range(max(1, args.warmup)):
                engine(x)
            times = timed_runs(engine, x, args.runs, args.min_seconds)
            rounds[i].append(percentile(sorted(times), 50))
            n_runs[i].append(len(times))
            del engine
            gc.collect()
    graphs = [_graph_or_none(os.path.join(base, p), args.threads) for p in paths] if args.graph else [None] * len(paths)
    return {"batch": [{"model": p, "p50_ms_rounds": r, "p50_ms": percentile(sorted(r), 50), "runs_per_round": n, "graph": g}
                      for p, r, n, g in zip(paths, rounds, n_runs, graphs)],
            "engine": name, "engine_version": version, "numpy_version": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_model": cpu_model(), "threads": args.threads, "runs": args.runs, "min_seconds": args.min_seconds,
            "rounds": args.rounds, "before": before, "after": conditions(), "total_s": time.perf_counter() - t_start}


def start_watchdog(heartbeat_s):
    """Exit when the host goes away (stdin closes: the SSH channel ended), and print heartbeats."""
    def watch():
        try:  # os.read, not sys.stdin: a daemon thread inside a buffered read aborts the interpreter's exit
            while os.read(0, 1024):
                pass
        except OSError:
            pass
        os._exit(EXIT_HOST_GONE)

    def beat():
        while True:
            time.sleep(heartbeat_s)
            try:
                sys.stderr.write(HEARTBEAT + "\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                os._exit(EXIT_HOST_GONE)

    threading.Thread(target=watch, daemon=True).start()
    if heartbeat_s:
        threading.Thread(target=beat, daemon=True).start()


def main(argv=None):
    p = argparse.ArgumentParser(description="dcanas on-device runner")
    p.add_argument("--model")
    p.add_argument("--ref", help="<model>.ref.npz: a real input and the PyTorch output")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--min-seconds", type=float, default=0.0)
    p.add_argument("--affinity", help="CPU mask '0x3' or list '0,2-3' (taskset style)")
    p.add_argument("--check", action="store_true", help="report the device and its runtimes")
    p.add_argument("--ops", action="store_true", help="also a per-operator profile (the runtime's own profiler, a second pass)")
    p.add_argument("--batch", help="a file listing model paths (relative to it), one per line: time them all (p50 per round)")
    p.add_argument("--rounds", type=int, default=3, help="with --batch: interleaved rounds")
    p.add_argument("--graph", action="store_true", help="with --batch: also each model's node counts per op type as the runtime runs it")
    p.add_argument("--watchdog", action="store_true", help="exit when stdin closes (the host went away)")
    p.add_argument("--heartbeat", type=float, default=0.0, help="seconds between heartbeat lines on stderr (0: none)")
    p.add_argument("--pidfile", help="write this process's pid here")
    args = p.parse_args(argv)
    if args.pidfile:
        with open(args.pidfile, "w") as fh:
            fh.write(str(os.getpid()))
    if args.watchdog:
        start_watchdog(args.heartbeat)
    try:
        out = device_info() if args.check else batch(args) if args.batch else profile(args)
        code = EXIT_OK
    except Missing as exc:
        out = {"error": ERROR_MISSING, "package": exc.package, "detail": str(exc),
               "fix": "pip install %s (in the Python this profile's connection.python names)" % exc.package.split(" ")[0]}
        code = EXIT_MISSING
    except Exception as exc:  # noqa: BLE001 - reported to the host as JSON
        out = {"error": ERROR_FAILED, "detail": "%s: %s" % (type(exc).__name__, exc)}
        code = EXIT_FAILED
    sys.stdout.write(json.dumps(out) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())

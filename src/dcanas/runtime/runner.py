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
    return {"python": platform.python_version(), "hostname": platform.node(), "machine": platform.machine(), "system": platform.system(),
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


ONNX_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64", "tensor(int8)": "int8",
              "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(uint16)": "uint16", "tensor(int32)": "int32",
              "tensor(int64)": "int64", "tensor(bool)": "bool"}


def _onnx_spec(t):
    dims = list(t.shape or [])
    return {"name": t.name, "dtype": ONNX_TYPES.get(t.type, t.type), "shape": [d if isinstance(d, int) and d > 0 else None for d in dims],
            "dims": [str(d) if not isinstance(d, int) else d for d in dims], "quantization": None}


def _tflite_spec(d, np):
    sig = d.get("shape_signature")
    shape = [int(v) for v in (sig if sig is not None and len(sig) else d["shape"])]
    scale, zero = d.get("quantization", (0.0, 0))
    return {"name": d["name"], "dtype": np.dtype(d["dtype"]).name, "shape": [v if v > 0 else None for v in shape],
            "dims": [v if v > 0 else "?" for v in shape], "index": d["index"],
            "quantization": [float(scale), int(zero)] if scale else None}


class Engine:
    """One model in its runtime: every input and output described (name, dtype, shape with None for a dynamic
    dimension, dimension names, TFLite quantisation), called with a dict of inputs, giving a list of float outputs."""

    def __init__(self, path, threads):
        import numpy as np
        self.np = np
        self.path = path
        self.threads = threads
        if path.endswith(".onnx"):
            try:
                import onnxruntime as ort
            except ImportError as exc:
                raise Missing("onnxruntime", str(exc)) from None
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            self.sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            self.inputs = [_onnx_spec(i) for i in self.sess.get_inputs()]
            self.outputs = [_onnx_spec(o) for o in self.sess.get_outputs()]
            self.name, self.version = "onnxruntime", ort.__version__
            self.kind = "onnx"
            self.providers = self.sess.get_providers()  # what the session actually runs on
            self.threads_readback = self.sess.get_session_options().intra_op_num_threads  # what the session took
        else:
            self.interp, self.name, self.version = load_tflite(path, threads)
            self.interp.allocate_tensors()
            self._describe()
            self.kind = "tflite"
            self.providers = tflite_delegates(self.interp)
            self.threads_readback = None  # the TFLite interpreter has no read-back of its thread count

    def _describe(self):
        np = self.np
        self.inputs = [_tflite_spec(d, np) for d in self.interp.get_input_details()]
        self._out_details = self.interp.get_output_details()  # read once: not in the timed call
        self.outputs = [_tflite_spec(d, np) for d in self._out_details]

    def resize(self, shapes):
        """TFLite: give dynamic inputs their shapes (onnxruntime takes any shape at run time)."""
        if self.kind == "tflite" and any(None in i["shape"] for i in self.inputs):
            for i in self.inputs:
                self.interp.resize_tensor_input(i["index"], shapes[i["name"]])
            self.interp.allocate_tensors()
            self._out_details = self.interp.get_output_details()

    def __call__(self, feeds):
        """feeds: {input name: array in the input's own dtype} -> [float32 (dequantized) array per output]."""
        np = self.np
        if self.kind == "onnx":
            return self.sess.run(None, feeds)
        for i in self.inputs:
            self.interp.set_tensor(i["index"], feeds[i["name"]])
        self.interp.invoke()
        return [from_output(self.interp.get_tensor(d["index"]), d, np) for d in self._out_details]


def tflite_delegates(interp):
    """The delegates a LiteRT interpreter reports it applied (XNNPACK is LiteRT's default CPU delegate), where the
    interpreter says; else a note that it does not."""
    try:
        inner = getattr(interp, "_interpreter", None)
        names = [str(d) for d in (getattr(interp, "_delegates", None) or [])]
        if inner is not None and hasattr(inner, "NumDelegates"):
            return names + ["%d delegate(s) applied" % inner.NumDelegates()]
        return names or ["not reported by this interpreter (XNNPACK is LiteRT's default CPU delegate)"]
    except Exception:  # noqa: BLE001 - a report, never a failure
        return ["not reported by this interpreter"]


def parse_shape(text):
    """'1x3x224x224' (or 1,3,224,224) -> [1, 3, 224, 224]."""
    dims = [d for d in text.replace(",", "x").lower().split("x") if d]
    if not dims or not all(d.isdigit() and int(d) > 0 for d in dims):
        raise ValueError("%r is not a shape like 1x3x224x224" % text)
    return [int(d) for d in dims]


def resolve_shapes(specs, given, batch):
    """Each input's shape: ``given`` (NAME -> shape, from --input-shape) where named, else the model's, a dynamic
    first dimension set to ``batch`` (default 1). Returns (shapes, notes); a dynamic dimension elsewhere, a given
    shape that contradicts the model or names no input, is a ValueError naming it and the option."""
    names = [s["name"] for s in specs]
    unknown = [n for n in given if n not in names]
    if unknown:
        raise ValueError("--input-shape names %r, which is not an input of the model (its inputs: %s)" % (unknown[0], ", ".join(names)))
    shapes, notes = {}, []
    for s in specs:
        want = s["shape"]
        if s["name"] in given:
            got = list(given[s["name"]])
            if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
                raise ValueError("--input-shape %s=%s does not fit the model's input %r of shape %s" % (
                    s["name"], "x".join(map(str, got)), s["name"], "x".join(str(d) for d in s["dims"])))
            shapes[s["name"]] = got
            continue
        shape = []
        for k, d in enumerate(want):
            if d is not None:
                shape.append(d)
            elif k == 0:
                shape.append(batch or 1)
                notes.append("input %r: dynamic dimension 0 (%s) set to %d (--batch or --input-shape choose it)" % (
                    s["name"], s["dims"][0], batch or 1))
            else:
                hint = "x".join(str(v) if v is not None else "N" for v in [batch or 1] + want[1:]) if want[0] is None else \
                    "x".join(str(v) if v is not None else "N" for v in want)
                raise ValueError("input %r has a dynamic dimension %d (%s) this runner cannot guess; give it: --input-shape %s=%s" % (
                    s["name"], k, s["dims"][k], s["name"], hint))
        shapes[s["name"]] = shape
    return shapes, notes


def make_inputs(specs, shapes, np, int_range=(0, 100), seed=0):
    """Random inputs of each input's own type: floats standard normal; a quantized (TFLite) integer input is the
    quantized standard normal; other integers uniform in ``int_range`` (ids, indices); bools fair coins."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for s in specs:
        shape, dtype = shapes[s["name"]], np.dtype(s["dtype"])
        if dtype.kind == "f":
            x = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            x = rng.integers(0, 2, shape).astype(bool)
        elif s.get("quantization"):
            x = to_input(rng.standard_normal(shape).astype(np.float32), {"dtype": dtype.type, "quantization": s["quantization"]}, np)
        else:
            info = np.iinfo(dtype)
            lo, hi = max(int_range[0], info.min), min(int_range[1], info.max)
            x = rng.integers(lo, hi + 1, shape, dtype=dtype)
        feeds[s["name"]] = x
    return feeds


def check_feeds(specs, feeds, np):
    """Arrays given for the inputs (--inputs FILE.npz): one per input, each of its shape where fixed; cast to its
    dtype (a float array for a quantized input is quantized with the input's parameters)."""
    names = [s["name"] for s in specs]
    missing = [n for n in names if n not in feeds]
    if missing:
        raise ValueError("the inputs file has no array %r (it has: %s; the model's inputs: %s)" % (
            missing[0], ", ".join(sorted(feeds)) or "none", ", ".join(names)))
    out = {}
    for s in specs:
        x = np.asarray(feeds[s["name"]])
        if len(x.shape) != len(s["shape"]) or any(w is not None and w != g for w, g in zip(s["shape"], x.shape)):
            raise ValueError("the inputs file's %r has shape %s; the model's input has %s" % (
                s["name"], "x".join(map(str, x.shape)), "x".join(str(d) for d in s["dims"])))
        dtype = np.dtype(s["dtype"])
        if s.get("quantization") and x.dtype.kind == "f":
            x = to_input(x.astype(np.float32), {"dtype": dtype.type, "quantization": s["quantization"]}, np)
        out[s["name"]] = x.astype(dtype, copy=False)
    return out


def output_checks(outputs, specs, reference, np):
    """Each output against its reference array (by name, else by position): max abs diff, and for a score
    vector or matrix whether the arg-max (top-1) agrees."""
    checks = []
    for k, (y, s) in enumerate(zip(outputs, specs)):
        ref = reference.get(s["name"], reference.get("output_%d" % k))
        if ref is None:
            checks.append({"name": s["name"], "shape": list(np.shape(y)), "reference": False})
            continue
        ref = np.asarray(ref)
        if ref.shape != np.shape(y):
            checks.append({"name": s["name"], "shape": list(np.shape(y)), "reference": True, "shape_mismatch": list(ref.shape)})
            continue
        diff = float(np.abs(np.asarray(y, dtype=np.float64) - representable(ref, s if s.get("quantization") else None, np).astype(np.float64)).max()) \
            if ref.size else 0.0
        top1 = bool((np.argmax(y, -1) == np.argmax(ref, -1)).all()) if ref.ndim >= 1 and ref.shape[-1] > 1 and ref.dtype.kind == "f" else None
        checks.append({"name": s["name"], "shape": list(ref.shape), "reference": True, "max_abs_diff": diff, "top1_match": top1})
    return checks


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


def timed_runs(engine, feeds, runs: int, min_seconds: float) -> list:
    """Milliseconds of each run: at least ``runs`` runs and at least ``min_seconds`` in all."""
    times = []
    t_runs = time.perf_counter()
    while len(times) < runs or (time.perf_counter() - t_runs) < min_seconds:
        t0 = time.perf_counter()
        engine(feeds)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


MAX_TIMES = 10000  # run times sent back at most (the percentiles are of every run)
CV_HIGH = 0.10  # a run-to-run coefficient of variation above this is flagged in the receipt


def sustained_runs(engine, feeds, duration_s, window_s, heartbeat=None):
    """Back to back for ``duration_s``: every run's time, and per window of ``window_s`` its runs' p50/p90/p99 and the
    CPU frequency, temperature and throttling read at the window's end."""
    times, windows, window = [], [], []
    t_start = t_win = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        engine(feeds)
        t1 = time.perf_counter()
        window.append((t1 - t0) * 1000)
        if t1 - t_win >= window_s or t1 - t_start >= duration_s:
            w = sorted(window)
            windows.append(dict(conditions(), t_end_s=round(t1 - t_start, 3), runs=len(w), p50=percentile(w, 50),
                                p90=percentile(w, 90), p99=percentile(w, 99), p25=percentile(w, 25), p75=percentile(w, 75)))
            times += window
            window, t_win = [], t1
            if t1 - t_start >= duration_s:
                return times, windows


def _npz(path, np):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def model_feeds(engine, args, np):
    """The inputs the model is timed on, and where they came from: --inputs FILE.npz (by input name), the export's
    .ref.npz (its "input" for a one-input model), else random inputs of each input's type and resolved shape."""
    given = {}
    for item in args.input_shape or []:
        name, sep, shape = item.rpartition("=")
        if not sep:
            raise ValueError("--input-shape %r is not NAME=1x3x224x224" % item)
        given[name] = parse_shape(shape)
    if args.inputs:
        feeds = check_feeds(engine.inputs, _npz(args.inputs, np), np)
        source, notes = "file %s" % os.path.basename(args.inputs), []
    elif args.ref and os.path.exists(args.ref) and "input" in _npz(args.ref, np) and len(engine.inputs) == 1:
        feeds = check_feeds(engine.inputs, {engine.inputs[0]["name"]: _npz(args.ref, np)["input"].astype(np.float32)}, np)
        source, notes = "reference %s" % os.path.basename(args.ref), []
    else:
        shapes, notes = resolve_shapes(engine.inputs, given, args.input_batch)
        engine.resize(shapes)
        feeds = make_inputs(engine.inputs, shapes, np, tuple(args.int_range))
        source = "random (floats N(0,1), integers in [%d, %d], bools fair)" % tuple(args.int_range)
    engine.resize({k: list(v.shape) for k, v in feeds.items()})
    return feeds, source, notes


def reference_outputs(engine, args, np):
    """Expected outputs: --reference FILE.npz (by output name, or output_0, ...), else the export's .ref.npz
    ("output": the first output), else none."""
    if args.reference:
        return _npz(args.reference, np), os.path.basename(args.reference)
    if args.ref and os.path.exists(args.ref) and not args.inputs:
        z = _npz(args.ref, np)
        if "output" in z:
            return {engine.outputs[0]["name"]: z["output"]}, os.path.basename(args.ref)
    return None, None


def receipt(engine, args, times, np):
    """What a latency depends on besides the model, recorded beside it so that two numbers can be compared."""
    mean = sum(times) / len(times)
    std = (sum((t - mean) ** 2 for t in times) / len(times)) ** 0.5
    cv = std / mean if mean else None
    return {"os": platform.platform(), "kernel": platform.release(), "cpu_model": cpu_model(), "cores": os.cpu_count(),
            "runtime": engine.name, "runtime_version": engine.version, "providers": engine.providers,
            "threads_requested": args.threads, "threads_readback": engine.threads_readback,
            "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "governor": governor(), "runs": len(times), "cv": cv, "cv_high": bool(cv is not None and cv > CV_HIGH)}


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
    feeds, source, notes = model_feeds(engine, args, np)
    reference, ref_name = reference_outputs(engine, args, np)
    t0 = time.perf_counter()
    ys = engine(feeds)
    first_ms = (time.perf_counter() - t0) * 1000
    for _ in range(args.warmup):
        engine(feeds)
    windows = None
    if args.duration:
        times, windows = sustained_runs(engine, feeds, args.duration, args.window)
    else:
        times = timed_runs(engine, feeds, args.runs, args.min_seconds)
    s = sorted(times)
    ops = op_profile(args, feeds) if args.ops else None
    graph = _graph_or_none(args.model, args.threads, feeds)  # the latency model's graph features (its second prediction)
    checks = output_checks(ys, engine.outputs, reference, np) if reference is not None else None
    judged = [c for c in checks or [] if c.get("reference") and "max_abs_diff" in c]
    tops = [c["top1_match"] for c in judged if c.get("top1_match") is not None]
    mean = sum(s) / len(s)
    std = (sum((t - mean) ** 2 for t in s) / len(s)) ** 0.5
    peak_kb = status_kb("VmHWM")
    result = {
        "engine": engine.name, "engine_version": engine.version, "numpy_version": np.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "cpu_model": cpu_model(),
        "threads": args.threads, "threads_readback": engine.threads_readback,
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "model": os.path.basename(args.model), "model_size_bytes": os.path.getsize(args.model),
        "inputs": [{"name": i["name"], "dtype": str(feeds[i["name"]].dtype), "shape": list(feeds[i["name"]].shape),
                    "declared": i["dims"], "quantization": i["quantization"]} for i in engine.inputs],
        "input_source": source, "input_notes": notes,
        "outputs": [{"name": o["name"], "dtype": o["dtype"], "shape": list(np.shape(y))} for o, y in zip(engine.outputs, ys)],
        "input_shape": list(feeds[engine.inputs[0]["name"]].shape), "load_ms": load_ms, "first_inference_ms": first_ms,
        "warmup_runs": args.warmup, "timed_runs": len(times),
        "latency_ms": {"mean": mean, "std": std, "min": s[0], "p50": percentile(s, 50), "p90": percentile(s, 90),
                       "p99": percentile(s, 99), "max": s[-1]},
        "latencies_ms": times[::-(-len(times) // MAX_TIMES)],  # every run, or every k-th of a long sustained run
        "latencies_stride": -(-len(times) // MAX_TIMES),
        "peak_rss_mb": peak_kb / 1024.0 if peak_kb else None,
        "rss_increase_mb": (peak_kb - rss_base) / 1024.0 if peak_kb and rss_base else None,
        "before": before, "after": conditions(),
        "receipt": receipt(engine, args, times, np),
        "sustained": {"duration_s": args.duration, "window_s": args.window, "windows": windows} if windows else None,
        "op_profile": ops,
        "graph": graph,
        "output_checks": checks, "reference_file": ref_name,
        "reference_max_abs_diff": max(c["max_abs_diff"] for c in judged) if judged else None,
        "reference_top1_match": all(tops) if tops else None,
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
    except ValueError:
        import shutil
        folder = os.path.dirname(os.path.abspath(path))
        raise RuntimeError("onnxruntime's profile %s is not complete JSON (%d KB free in %s: a full disk?); free space there "
                           "or set connection.workdir to a larger filesystem" % (path, shutil.disk_usage(folder).free // 1024, folder)) from None
    finally:
        os.remove(path)
    return sorted((e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")),
                  key=lambda e: e.get("ts", 0))


def runtime_graph(path, threads, feeds=None):
    """Node counts per op type of the graph as the runtime runs it: for onnxruntime after its own graph
    optimisations (fusions, eliminated duplicates, inserted layout reorders), read from one profiled run;
    for TFLite the interpreter's op list (what a delegate fuses is not visible there). The latency model's
    graph features: each node costs a dispatch, which at these sizes is most of a network's time."""
    counts = {}
    if path.endswith(".onnx"):
        import numpy as np
        sess = _profiled_session(path, threads, "ort_graph")
        if feeds is None:
            specs = [_onnx_spec(i) for i in sess.get_inputs()]
            feeds = make_inputs(specs, resolve_shapes(specs, {}, 1)[0], np)
        sess.run(None, feeds)
        nodes = {e["name"][: -len("_kernel_time")]: e.get("args", {}).get("op_name") for e in _kernel_events(sess)}
        for op in nodes.values():
            counts[op] = counts.get(op, 0) + 1
        return counts
    interp, _, _ = load_tflite(path, threads)
    for d in interp._get_ops_details():
        counts[d["op_name"]] = counts.get(d["op_name"], 0) + 1
    return counts


def _graph_or_none(path, threads, feeds=None):
    """runtime_graph, or None where the runtime cannot list its graph: the timings stand without it."""
    try:
        return runtime_graph(path, threads, feeds)
    except Exception:  # noqa: BLE001 - any runtime's failure to list its graph
        return None


def op_profile(args, feeds):
    """Per-node time from the runtime's own profiler, in a second session after the timed runs (profiling
    slows a run, so the timed latencies never include it): {"nodes": {name: {"op": type, "us": per run}}}."""
    if not args.model.endswith(".onnx"):
        return {"available": False, "why": "the TFLite Python interpreters (ai_edge_litert, tflite_runtime) expose no "
                                           "per-operator profiler; use the TFLite benchmark_model binary on the device"}
    sess = _profiled_session(args.model, args.threads, "ort_profile")
    runs = max(1, min(args.runs, 50))
    for _ in range(2):
        sess.run(None, feeds)
    t0 = time.perf_counter()
    for _ in range(runs):
        sess.run(None, feeds)
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
    Interleaving spreads slow drifts (heat, other load) over all models alike. With ``--confirm``, models
    whose two fastest rounds disagree get more rounds (``--max-rounds`` in all) and say whether they settled."""
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

    def unconfirmed():
        """Models whose two fastest rounds differ by more than --confirm: every round so far may have run in a
        slow phase of the machine (slow phases are long and slow rounds many; a fast outlier is rare)."""
        return [i for i, r in enumerate(rounds) if len(r) < 2 or sorted(r)[1] > (1 + args.confirm) * sorted(r)[0]]

    todo, done = list(range(len(paths))), 0
    while todo:
        for i in todo:
            p = paths[i]
            engine = Engine(os.path.join(base, p), args.threads)
            name, version = engine.name, engine.version
            shapes = resolve_shapes(engine.inputs, {}, 1)[0]
            engine.resize(shapes)
            x = make_inputs(engine.inputs, shapes, np, seed=int(rng.integers(1 << 30)))
            for _ in range(max(1, args.warmup)):
                engine(x)
            times = timed_runs(engine, x, args.runs, args.min_seconds)
            rounds[i].append(percentile(sorted(times), 50))
            n_runs[i].append(len(times))
            del engine
            gc.collect()
        done += 1  # then every model again, or past --rounds the unsettled ones alone, up to --max-rounds
        todo = (list(range(len(paths))) if done < args.rounds else
                unconfirmed() if args.confirm > 0 and done < args.max_rounds else [])
    late = set(unconfirmed()) if args.confirm > 0 else set()
    graphs = [_graph_or_none(os.path.join(base, p), args.threads) for p in paths] if args.graph else [None] * len(paths)
    return {"batch": [{"model": p, "p50_ms_rounds": r, "p50_ms": percentile(sorted(r), 50), "runs_per_round": n, "graph": g,
                       **({"confirmed": i not in late} if args.confirm > 0 else {})}
                      for i, (p, r, n, g) in enumerate(zip(paths, rounds, n_runs, graphs))],
            "engine": name, "engine_version": version, "numpy_version": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_model": cpu_model(), "threads": args.threads, "runs": args.runs, "min_seconds": args.min_seconds,
            "rounds": args.rounds, "confirm": args.confirm, "max_rounds": args.max_rounds,
            "before": before, "after": conditions(), "total_s": time.perf_counter() - t_start}


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
    p.add_argument("--inputs", help="an .npz of arrays named like the model's inputs: timed on these instead of random inputs")
    p.add_argument("--reference", help="an .npz of the expected outputs, named like the model's outputs (or output_0, ...)")
    p.add_argument("--input-shape", action="append", help="NAME=1x3x224x224: the shape of a dynamic input (repeatable)")
    p.add_argument("--duration", type=float, default=0.0, help="run back to back for this many seconds (sustained load)")
    p.add_argument("--window", type=float, default=30.0, help="with --duration: seconds per reported window")
    p.add_argument("--input-batch", type=int, help="the size of a dynamic first dimension (default 1)")
    p.add_argument("--int-range", type=int, nargs=2, default=[0, 100], metavar=("LO", "HI"),
                   help="random integer inputs (token ids, indices) are drawn from [LO, HI]")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--min-seconds", type=float, default=0.0)
    p.add_argument("--affinity", help="CPU mask '0x3' or list '0,2-3' (taskset style)")
    p.add_argument("--check", action="store_true", help="report the device and its runtimes")
    p.add_argument("--ops", action="store_true", help="also a per-operator profile (the runtime's own profiler, a second pass)")
    p.add_argument("--batch", help="a file listing model paths (relative to it), one per line: time them all (p50 per round)")
    p.add_argument("--rounds", type=int, default=3, help="with --batch: interleaved rounds")
    p.add_argument("--confirm", type=float, default=0.0,
                   help="with --batch: more rounds for the models whose two fastest rounds differ by more than this fraction (0: none)")
    p.add_argument("--max-rounds", type=int, default=0, help="with --confirm: rounds per model at most")
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
    if args.pidfile:  # a pid file left behind marks a runner that was killed: the next connection removes its folder
        try:
            os.remove(args.pidfile)
        except OSError:
            pass
    return code


if __name__ == "__main__":
    sys.exit(main())

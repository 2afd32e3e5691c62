"""Does the profiler add anything of its own (issue 31)? For each model, the p50 that `dcanas profile --device local`
reports against a bare timing loop of the same runtime alone in a fresh Python process (same file, threads and input
shape; numpy and the runtime only, as on a device), the two alternating, ``--repeats`` times; the ratio profile / bare
per pair, its median and range. Target: within 3% at p50.

Models, built here without downloads: DARTS_V2 at the cpu-demo evaluation size (C=16, 8 cells, 28 px, 1 channel;
ONNX and TFLite fp32), torchvision's mobilenet_v3_small (ONNX and TFLite fp32) and resnet18 (ONNX), random weights,
224 px.

    python benchmarks/profiler_overhead.py [--repeats 5] [--runs 300] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path



def build(out: Path, progress) -> list[tuple[str, Path]]:
    import torch
    import torchvision

    from dcanas.data.datasets import get_spec
    from dcanas.export.exporter import export_model
    from dcanas.nets.genotype import KNOWN
    from dcanas.train.model_io import save_model
    from dcanas.train.trainer import TrainConfig, build_model

    model, meta = build_model(TrainConfig(genotype=KNOWN["DARTS_V2"], C=16, layers=8), get_spec("fashion-mnist"))
    save_model(out / "demo.pt", model.eval(), meta)
    rows = export_model(out / "demo.pt", ["onnx", "tflite"], out, data_root=str(out / "no-data"), n_validate=4, n_calibration=4,
                        progress=lambda m: None)
    files = [("DARTS_V2 cpu-demo size", out / r["file"]) for r in rows]
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    for name, net in (("mobilenet_v3_small", torchvision.models.mobilenet_v3_small(weights=None)),
                      ("resnet18", torchvision.models.resnet18(weights=None))):
        progress(f"exporting {name}")
        path = out / f"{name}.onnx"
        torch.onnx.export(net.eval(), (x,), str(path), input_names=["input"], output_names=["logits"], dynamo=True,
                          external_data=False)
        files.append((name, path))
        if name == "mobilenet_v3_small":
            import litert_torch

            nhwc = litert_torch.to_channel_last_io(net.eval(), args=[0]).eval()
            litert_torch.convert(nhwc, (x.permute(0, 2, 3, 1).contiguous(),)).export(str(out / f"{name}.tflite"))
            files.append((name, out / f"{name}.tflite"))
    return files


BARE = """
import statistics, sys, time
import numpy as np
path, threads, runs, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if path.endswith(".onnx"):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    i = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
    call = lambda: sess.run(None, {i.name: x})
else:
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    d = interp.get_input_details()[0]
    x = np.random.default_rng(0).standard_normal(d["shape"]).astype(np.float32)
    def call():
        interp.set_tensor(d["index"], x)
        interp.invoke()
for _ in range(warmup):
    call()
times = []
for _ in range(runs):
    t0 = time.perf_counter()
    call()
    times.append((time.perf_counter() - t0) * 1000)
print(statistics.median(times))
"""


def bare_p50(path: Path, threads: int, runs: int, warmup: int) -> float:
    """The runtime's own loop, alone in a fresh Python process (numpy and the runtime only, as the runner's): load,
    warm up, time ``runs`` runs, p50 in ms."""
    r = subprocess.run([sys.executable, "-c", BARE, str(path), str(threads), str(runs), str(warmup)], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"the bare loop failed on {path.name}: {r.stderr.strip().splitlines()[-1]}")
    return float(r.stdout.strip().splitlines()[-1])


def profiled_p50(path: Path, threads: int, runs: int, warmup: int) -> float:
    r = subprocess.run([sys.executable, "-m", "dcanas", "profile", "--device", "local", str(path), "--runs", str(runs), "--warmup",
                        str(warmup), "--threads", str(threads), "--any-format", "--json"], capture_output=True, text=True)
    if r.returncode not in (0, 1):
        raise SystemExit(f"dcanas profile failed on {path.name}: {r.stderr.strip().splitlines()[-1]}")
    return float(json.loads(r.stdout)["latency_ms"]["p50"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    def progress(m: str) -> None:
        print(m, file=sys.stderr, flush=True)

    from dcanas.export.inspect import graph_cost

    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="profiler-overhead-") as d:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)  # the exporters print progress on standard output (some from native code): to stderr with it
        try:
            files = build(Path(d), progress)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        rows = []
        for name, path in files:
            pairs = []
            for k in range(args.repeats):  # alternating: the profile first on even repeats, the bare loop first on odd
                order = (profiled_p50, bare_p50) if k % 2 == 0 else (bare_p50, profiled_p50)
                got = {f.__name__: f(path, args.threads, args.runs, args.warmup) for f in order}
                pairs.append((got["profiled_p50"], got["bare_p50"]))
                progress(f"{name} {path.suffix}: profile {pairs[-1][0]:.3f} ms, bare {pairs[-1][1]:.3f} ms")
            ratios = [a / b for a, b in pairs]
            rows.append((name, path.suffix[1:], graph_cost(path)["params"], statistics.median(b for _, b in pairs),
                         statistics.median(a for a, _ in pairs), statistics.median(ratios), min(ratios), max(ratios)))
    print(f"`dcanas profile --device local` against a bare loop of the same runtime alone in a fresh process: {args.threads} thread(s), "
          f"{args.runs} timed runs after {args.warmup} warm-up runs, {args.repeats} alternating repeats per model; "
          f"{time.time() - t_start:.0f} s in all.\n")
    print("| model | format | params | bare p50 (ms) | profile p50 (ms) | ratio (median) | ratio range | within 3% |")
    print("|---|---|---:|---:|---:|---:|---|---|")
    for name, fmt, params, bare, prof, ratio, lo, hi in rows:
        print(f"| {name} | {fmt} | {params:,} | {bare:.3f} | {prof:.3f} | {ratio:.3f} | {lo:.3f} .. {hi:.3f} | "
              f"{'yes' if abs(ratio - 1) <= 0.03 else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

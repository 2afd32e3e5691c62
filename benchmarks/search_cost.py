"""Search cost per supernet step: vanilla DARTS (1st order) -> +WS -> +WS+CB -> +WS+CB+DC -> DCA-NAS (+RC),
and PC-DARTS (K=4) for reference (paper Fig. 4a), side by side, as ratios to vanilla DARTS; then DCA-NAS with
the fused mixed cells (search/fused_cell.py), the search-time op forms (search/fast_ops.py) and the lean step
(each pass computes only the gradients its optimizer steps: ``search_step(lean=True)``) against its eager step
(``--repeats`` alternating process pairs, medians), and the retraining step of the
evaluation network in NCHW (eager) against channels_last (what the trainer runs).

A step = one w step on search-train + one alpha step on search-val (+ lambda), as in the search loop.
GFLOP/s = fvcore's multiply-adds of the eager network's forward x 2 FLOP x 3 (forward + backward) x the
passes per step (2 for a search step, 1 for a training step) over the median step time, beside a
2048x2048 fp32 GEMM measured in the same run on the same threads.
Same real Fashion-MNIST batches, batch size, supernet size and machine for every variant. Each
variant runs in its own fresh subprocess, one after another, because peak RSS is a per-process
high-water mark; "peak MB" is that peak minus the RSS after the model and data were set up.

    python benchmarks/search_cost.py [--steps 5] [--batch-size 32] [--channels 8] [--cells 5] [--repeats 5]
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

VARIANTS = {
    "vanilla DARTS": dict(weight_sharing=False, bottleneck=1, derived_cells=False, constraint=False),
    "+WS": dict(weight_sharing=True, bottleneck=1, derived_cells=False, constraint=False),
    "+WS+CB": dict(weight_sharing=True, bottleneck=4, derived_cells=False, constraint=False),
    "+WS+CB+DC": dict(weight_sharing=True, bottleneck=4, derived_cells=True, constraint=False),
    "DCA-NAS (+RC)": dict(weight_sharing=True, bottleneck=4, derived_cells=True, constraint=True),
    "PC-DARTS K=4": dict(weight_sharing=False, bottleneck=1, derived_cells=False, constraint=False, partial_channels=4),
}
EAGER = "DCA-NAS (+RC)"
FUSED = "DCA-NAS (+RC), fused"  # the DCA-NAS options; fused mixed cells, search-time op forms, lean step (every other row: eager, every gradient)
TRAIN = {"retrain, NCHW (eager)": False, "retrain, channels_last": True}  # the evaluation network's training step
# The optimised DCA-NAS step at three sizes (issue 32): (channels, cells, batch, input)
SIZES = {"cpu-demo supernet, batch 32, 28x28x1": (8, 5, 32, "fashion"), "cpu-demo supernet, batch 64, 28x28x1": (8, 5, 64, "fashion"),
         "paper supernet, batch 64, 32x32x3": (16, 8, 64, "cifar-shape")}
# Whole `dcanas search` runs timed by phase (search.json's summary.phases) at K_d = 200,000 params
WHOLE = ("cpu-demo",)


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def run_variant(name: str, args: argparse.Namespace) -> dict:
    import torch

    from dcanas.data import datasets as D
    from dcanas.search.config import SearchConfig, cost_models, supernet_config
    from dcanas.search.searcher import autocast_for, optimizers, search_step
    from dcanas.search.supernet import SearchOptions, Supernet

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = args.batch_size * (args.steps + args.warmup)
    if args.input == "cifar-shape":  # the paper's inputs: random tensors of CIFAR-10's shape (no CIFAR-10 here)
        dataset, gen = "cifar10", torch.Generator().manual_seed(0)
        tb, vb = ([(torch.randn(args.batch_size, 3, 32, 32, generator=gen), torch.randint(0, 10, (args.batch_size,), generator=gen))
                   for _ in range(args.steps + args.warmup)] for _ in range(2))
    else:
        dataset, spec = "fashion-mnist", D.get_spec("fashion-mnist")
        s_train, s_val = D.search_split(D.load_split(dataset, args.data_root, train=True), 2 * n, 0)
        tb = list(D.batches(s_train, spec, args.batch_size, shuffle=False, drop_last=True))
        vb = list(D.batches(s_val, spec, args.batch_size, shuffle=False, drop_last=True))
    opts = SearchOptions(**VARIANTS["DCA-NAS (+RC)" if name == FUSED else name])
    # The search loop's own step (searcher.search_step) on the cpu-demo-like supernet; eval network C=16, 8 cells.
    cfg = SearchConfig(dataset=dataset, C=args.channels, cells=args.cells, nodes=4, batch_size=args.batch_size,
                       lr=0.025, eval_C=16, eval_layers=8, budget=150_000.0, options=opts)
    model = Supernet(supernet_config(cfg)).to(device).set_fused(name == FUSED)
    cms = cost_models(cfg)
    w_opt, _, a_opt = optimizers(model, cfg)
    autocast = autocast_for(cfg, device)
    lams = {m: 0.0 for m in cms}
    times = []
    base = _rss_mb("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    for i, ((xt, yt), (xv, yv)) in enumerate(zip(tb, vb)):
        xt, yt, xv, yv = (t.to(device) for t in (xt, yt, xv, yv))
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        lams, _ = search_step(model, cms, cfg, (xt, yt), (xv, yv), w_opt, a_opt, {cfg.metric: cfg.budget}, lams, autocast,
                              lean=name == FUSED)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _rss_mb("VmHWM")) - base
    ms = 1000 * statistics.median(times)
    macs = _macs(Supernet(supernet_config(cfg)).set_fused(False), tb[0][0])  # after the peak: its forward would raise it
    return dict(variant=name, ms_per_step=ms, images_per_s=2 * args.batch_size / (ms / 1000), peak_mb=peak,
                weights=sum(p.numel() for p in model.weight_parameters()), device=str(device),
                threads=torch.get_num_threads(), gflops=macs * 2 * 3 * 2 / (ms / 1000) / 1e9)


def _macs(model, x) -> float:
    from fvcore.nn import FlopCountAnalysis

    fa = FlopCountAnalysis(model, x)
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    return float(fa.total())


def run_train_variant(name: str, args: argparse.Namespace) -> dict:
    """The trainer's step (trainer.train_step: SGD, auxiliary head, drop path, clip) on the cpu-demo evaluation network of DARTS_V2."""
    import torch
    import torch.nn as nn

    from dcanas.data import datasets as D
    from dcanas.nets.genotype import load_genotype
    from dcanas.train.trainer import MEMORY_FORMAT, TrainConfig, apply_preset, build_model, train_step

    torch.manual_seed(0)
    spec = D.get_spec("fashion-mnist")
    cfg = apply_preset(TrainConfig(genotype=load_genotype("DARTS_V2").to_json()), "cpu-demo")
    model, _ = build_model(cfg, spec)
    channels_last = TRAIN[name]
    fmt = MEMORY_FORMAT if channels_last else torch.contiguous_format
    model.to(memory_format=fmt).train()
    model.drop_path_prob = cfg.drop_path / 2
    train = D.load_split("fashion-mnist", args.data_root, train=True).subset(slice(0, cfg.batch_size * (args.steps + args.warmup)))
    batches = list(D.batches(train, spec, cfg.batch_size, shuffle=True, g=torch.Generator().manual_seed(0), train_aug=True, cutout=cfg.cutout))
    opt = torch.optim.SGD(model.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    crit = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    params = list(model.parameters())
    times = []
    base = _rss_mb("VmRSS")
    for i, (x, y) in enumerate(batches):
        x = x.contiguous(memory_format=fmt)
        t0 = time.perf_counter()
        train_step(model, params, opt, crit, x, y, cfg)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    ms = 1000 * statistics.median(times)
    peak = _rss_mb("VmHWM") - base
    macs = _macs(build_model(cfg, spec)[0].eval(), batches[0][0])
    return dict(variant=name, ms_per_step=ms, images_per_s=cfg.batch_size / (ms / 1000), peak_mb=peak,
                weights=sum(p.numel() for p in model.parameters()), device="cpu", threads=torch.get_num_threads(),
                gflops=macs * 2 * 3 / (ms / 1000) / 1e9, batch=cfg.batch_size)


def whole_search(preset: str, data_root: str) -> dict:
    """One ``dcanas search --preset PRESET`` in a fresh process: its wall time (interpreter and imports included)
    split into start-up (before run_search), setup, reading batches, the steps, the epochs' ends and the final
    derivations, from the search's own clock (search.json's summary.phases)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "dcanas", "search", "--preset", preset, "--budget", "200000", "--data-root", data_root,
               "--out", f"{tmp}/search"]
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        wall = time.perf_counter() - t0
        summary = json.loads(Path(tmp, "search", "search.json").read_text())["summary"]
    phases = summary["phases"]
    return dict(preset=preset, wall=wall, start_up=wall - sum(phases.values()), **phases, epochs=summary["epochs_run"])


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--cells", type=int, default=5)
    p.add_argument("--data-root", default="data")
    p.add_argument("--repeats", type=int, default=5, help="alternating process pairs for the eager and optimised DCA-NAS step")
    p.add_argument("--input", default="fashion", choices=["fashion", "cifar-shape"], help=argparse.SUPPRESS)
    p.add_argument("--no-whole", action="store_true", help="leave out the whole-search rows (a cpu-demo search, ~40 s)")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args()
    if args.variant:
        print(json.dumps(run_train_variant(args.variant, args) if args.variant in TRAIN else run_variant(args.variant, args)))
        return 0
    def measure(name: str, size: tuple | None = None) -> dict:
        channels, cells, batch, inp = size or (args.channels, args.cells, args.batch_size, "fashion")
        cmd = [sys.executable, __file__, "--variant", name, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch-size", str(batch), "--channels", str(channels), "--cells", str(cells),
               "--data-root", args.data_root, "--input", inp]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  measured {name}: {row['ms_per_step']:.0f} ms/step", file=sys.stderr)
        return row

    # The eager and optimised DCA-NAS steps: --repeats process pairs, alternating, so that both meet the same
    # phases of a shared machine (this VM's 2 vCPUs swing the same step by ~20% over minutes); the row is each
    # one's median run.
    pairs = [(measure(EAGER), measure(FUSED)) for _ in range(max(1, args.repeats))]
    found = {name: measure(name) for name in [*VARIANTS, *TRAIN] if name != EAGER}
    for k, name in enumerate((EAGER, FUSED)):
        runs = sorted((p[k] for p in pairs), key=lambda r: r["ms_per_step"])
        found[name] = {**runs[len(runs) // 2], "runs": [r["ms_per_step"] for r in runs]}
    rows = [found[name] for name in [*VARIANTS, FUSED, *TRAIN]]
    default = (args.channels, args.cells, args.batch_size, "fashion")
    sizes = {label: found[FUSED] if size == default else measure(FUSED, size) for label, size in SIZES.items()}
    whole = [] if args.no_whole else [whole_search(preset, args.data_root) for preset in WHOLE]
    gemm = gemm_gflops()
    v = rows[0]
    print(f"supernet C={args.channels}, {args.cells} cells, batch {args.batch_size} (28x28x1, real Fashion-MNIST), "
          f"median of {args.steps} steps after {args.warmup} warm-up, {rows[0]['device']}, {rows[0]['threads']} threads; "
          f"one process per row; 2048x2048 fp32 GEMM in this run: {gemm:.0f} GFLOP/s")
    print("| variant | ms/step | images/s | GFLOP/s | share of GEMM rate | peak MB | weights | speed-up vs vanilla | memory ratio (vanilla/variant) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    search = [r for r in rows if r["variant"] not in TRAIN]
    for r in search:
        print(f"| {r['variant']} | {r['ms_per_step']:.0f} | {r['images_per_s']:.0f} | {r['gflops']:.1f} | {100 * r['gflops'] / gemm:.1f}% | "
              f"{r['peak_mb']:.0f} | {r['weights']:,} | {v['ms_per_step'] / r['ms_per_step']:.2f}x | {v['peak_mb'] / max(r['peak_mb'], 1e-9):.2f}x |")
    by = {r["variant"]: r for r in rows}
    ratios = ", ".join(f"{e['ms_per_step'] / f['ms_per_step']:.2f}x" for e, f in pairs)
    print(f"\nDCA-NAS step, optimised vs eager (medians of {len(pairs)} alternating process pairs): "
          f"{by[EAGER]['ms_per_step'] / by[FUSED]['ms_per_step']:.2f}x; eager runs {', '.join(f'{v:.0f}' for v in by[EAGER]['runs'])} ms, "
          f"optimised runs {', '.join(f'{v:.0f}' for v in by[FUSED]['runs'])} ms; pair by pair {ratios}")
    t0, t1 = (by[n] for n in TRAIN)
    print(f"\nretraining step, cpu-demo evaluation network of DARTS_V2 (C=16, 8 cells, auxiliary head), batch {t0['batch']}:")
    print("| step | ms/step | images/s | GFLOP/s | share of GEMM rate | peak MB | speed-up |\n|---|---:|---:|---:|---:|---:|---:|")
    for r in (t0, t1):
        print(f"| {r['variant']} | {r['ms_per_step']:.0f} | {r['images_per_s']:.0f} | {r['gflops']:.1f} | {100 * r['gflops'] / gemm:.1f}% | "
              f"{r['peak_mb']:.0f} | {t0['ms_per_step'] / r['ms_per_step']:.2f}x |")
    print("\nthe optimised DCA-NAS step at three sizes (one process each; the first is the table's row when its size is the table's):")
    print("| size | ms/step | images/s | GFLOP/s | share of GEMM rate | peak MB |\n|---|---:|---:|---:|---:|---:|")
    for label, r in sizes.items():
        print(f"| {label} | {r['ms_per_step']:.0f} | {r['images_per_s']:.0f} | {r['gflops']:.1f} | {100 * r['gflops'] / gemm:.1f}% | {r['peak_mb']:.0f} |")
    if whole:
        print("\nwhole `dcanas search --preset P --budget 200000` (one process; seconds by phase from search.json's summary.phases; "
              "start-up = the interpreter, imports and argument checks before the search's clock starts):")
        print("| preset | epochs | wall s | start-up | setup | reading batches | steps | epochs' ends | final derivations | outside the steps |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for w in whole:
            print(f"| {w['preset']} | {w['epochs']} | {w['wall']:.1f} | {w['start_up']:.1f} | {w['setup']:.1f} | {w['data']:.2f} | {w['steps']:.1f} | "
                  f"{w['epoch_end']:.2f} | {w['finish']:.2f} | {100 * (1 - w['steps'] / w['wall']):.1f}% |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(rows=rows, sizes=sizes, whole=whole), fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

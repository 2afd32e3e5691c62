"""Search cost per supernet step: vanilla DARTS (1st order) -> +WS -> +WS+CB -> +WS+CB+DC -> DCA-NAS (+RC),
and PC-DARTS (K=4) for reference (paper Fig. 4a), side by side, as ratios to vanilla DARTS.

A step = one w step on search-train + one alpha step on search-val (+ lambda), as in the search loop.
Same real Fashion-MNIST batches, batch size, supernet size and machine for every variant. Each
variant runs in its own fresh subprocess, one after another, because peak RSS is a per-process
high-water mark; "peak MB" is that peak minus the RSS after the model and data were set up.

    python benchmarks/search_cost.py [--steps 5] [--batch-size 32] [--channels 8] [--cells 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

VARIANTS = {
    "vanilla DARTS": dict(weight_sharing=False, bottleneck=1, derived_cells=False, constraint=False),
    "+WS": dict(weight_sharing=True, bottleneck=1, derived_cells=False, constraint=False),
    "+WS+CB": dict(weight_sharing=True, bottleneck=4, derived_cells=False, constraint=False),
    "+WS+CB+DC": dict(weight_sharing=True, bottleneck=4, derived_cells=True, constraint=False),
    "DCA-NAS (+RC)": dict(weight_sharing=True, bottleneck=4, derived_cells=True, constraint=True),
    "PC-DARTS K=4": dict(weight_sharing=False, bottleneck=1, derived_cells=False, constraint=False, partial_channels=4),
}


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def run_variant(name: str, args: argparse.Namespace) -> dict:
    import torch

    from dcanas import datasets as D
    from dcanas.search.config import SearchConfig, cost_models, supernet_config
    from dcanas.search.searcher import autocast_for, optimizers, search_step
    from dcanas.search.supernet import SearchOptions, Supernet

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec = D.get_spec("fashion-mnist")
    train = D.load_split("fashion-mnist", args.data_root, train=True)
    s_train, s_val = D.search_split(train, 2 * args.batch_size * (args.steps + args.warmup), 0)
    tb = list(D.batches(s_train, spec, args.batch_size, shuffle=False, drop_last=True))
    vb = list(D.batches(s_val, spec, args.batch_size, shuffle=False, drop_last=True))
    opts = SearchOptions(**VARIANTS[name])
    # The search loop's own step (searcher.search_step) on the cpu-demo-like supernet; eval network C=16, 8 cells.
    cfg = SearchConfig(dataset="fashion-mnist", C=args.channels, cells=args.cells, nodes=4, batch_size=args.batch_size,
                       lr=0.025, eval_C=16, eval_layers=8, budget=150_000.0, options=opts)
    model = Supernet(supernet_config(cfg)).to(device)
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
        lams, _ = search_step(model, cms, cfg, (xt, yt), (xv, yv), w_opt, a_opt, {cfg.metric: cfg.budget}, lams, autocast)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _rss_mb("VmHWM")) - base
    ms = 1000 * statistics.median(times)
    return dict(variant=name, ms_per_step=ms, images_per_s=2 * args.batch_size / (ms / 1000), peak_mb=peak,
                weights=sum(p.numel() for p in model.weight_parameters()), device=str(device),
                threads=torch.get_num_threads())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--cells", type=int, default=5)
    p.add_argument("--data-root", default="data")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args)))
        return 0
    rows = []
    for name in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", name, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch-size", str(args.batch_size), "--channels", str(args.channels), "--cells", str(args.cells),
               "--data-root", args.data_root]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  measured {name}: {rows[-1]['ms_per_step']:.0f} ms/step", file=sys.stderr)
    v = rows[0]
    print(f"supernet C={args.channels}, {args.cells} cells, batch {args.batch_size} (28x28x1, real Fashion-MNIST), "
          f"median of {args.steps} steps after {args.warmup} warm-up, {rows[0]['device']}, {rows[0]['threads']} threads")
    print("| variant | ms/step | images/s | peak MB | weights | speed-up vs vanilla | memory ratio (vanilla/variant) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['ms_per_step']:.0f} | {r['images_per_s']:.0f} | {r['peak_mb']:.0f} | {r['weights']:,} | "
              f"{v['ms_per_step'] / r['ms_per_step']:.2f}x | {v['peak_mb'] / max(r['peak_mb'], 1e-9):.2f}x |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

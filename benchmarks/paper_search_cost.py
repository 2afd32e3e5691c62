"""The paper preset's search cost (issue 18): the supernet of Appendix D (C=16, 8 cells, 4 nodes, batch 512,
CIFAR-10's 32x32x3 inputs) timed per search step on whatever device runs this, and extrapolated to the
paper's 50 epochs beside its reported 1.37 GPU-hours (Table 1, DCA-NAS-3.5M on CIFAR-10).

A step is the search loop's own (searcher.search_step): one w step on a search-train batch, one alpha step
on a search-val batch with the Lagrangian term, and lambda. An epoch of CIFAR-10 search is 25,000 search-train
images (half of the 50,000 training images; the other half is search-val), 49 steps at batch 512. The inputs
are random tensors of CIFAR-10's shape: no CIFAR-10 is installed here, and a step's time does not depend on the
pixel values. On a CPU only a few steps run (say so); on a GPU the default steps give a stable median.

    python benchmarks/paper_search_cost.py [--steps N] [--warmup 1] [--batch-size 512] [--device auto|cpu|cuda]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

PAPER_GPU_HOURS = 1.37       # Table 1: DCA-NAS-3.5 M (CIFAR-10), search cost
SEARCH_TRAIN_IMAGES = 25_000  # CIFAR-10's 50,000 training images, half for w and half for alpha


def main() -> int:
    import torch

    from dcanas.presets import SEARCH_PRESETS
    from dcanas.search.config import SearchConfig, apply_preset, cost_models, supernet_config
    from dcanas.search.searcher import autocast_for, optimizers, search_step
    from dcanas.search.supernet import Supernet

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, help="timed steps (default: 3 on a CPU, 20 on a GPU)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=SEARCH_PRESETS["paper"]["batch_size"])
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the supernet (its first steps compile; the warm-up should cover them)")
    p.add_argument("--eager", action="store_true", help="the step before issue 17: mixed cells and ops through the eager path, every gradient computed "
                   "(default: fused cells, search-time op forms, the lean step)")
    args = p.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    steps = args.steps or (20 if device.type == "cuda" else 3)
    cfg = apply_preset(SearchConfig(dataset="cifar10", budget=3.5e6, amp=args.amp), "paper")
    cfg = SearchConfig.from_json({**cfg.to_json(), "batch_size": args.batch_size})
    torch.manual_seed(0)
    model = Supernet(supernet_config(cfg)).to(device).set_fused(not args.eager)
    if args.compile:
        model = torch.compile(model)  # attributes (alphas, weight_parameters) pass through to the module
    cms = cost_models(cfg)
    w_opt, _, a_opt = optimizers(model, cfg)
    autocast = autocast_for(cfg, device)
    lams = {m: 0.0 for m in cms}
    gen = torch.Generator().manual_seed(0)

    def batch():
        x = torch.randn(args.batch_size, 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (args.batch_size,), generator=gen)
        return x.to(device), y.to(device)

    times = []
    t_all = time.perf_counter()
    for i in range(args.warmup + steps):
        tb, vb = batch(), batch()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        lams, _ = search_step(model, cms, cfg, tb, vb, w_opt, a_opt, {cfg.metric: cfg.budget}, lams, autocast, lean=not args.eager)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        print(f"  step {i + 1}/{args.warmup + steps}{' (warm-up)' if i < args.warmup else ''}: {dt:.2f} s", file=sys.stderr, flush=True)
        if i >= args.warmup:
            times.append(dt)
    step_s = statistics.median(times)
    per_epoch = math.ceil(SEARCH_TRAIN_IMAGES / args.batch_size)
    hours = step_s * per_epoch * cfg.epochs / 3600
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    path = ("eager" if args.eager else "fused") + (", torch.compile" if args.compile else "")
    print(f"paper preset ({path} mixed cells): supernet C={cfg.C}, {cfg.cells} cells, {cfg.nodes} nodes, batch {args.batch_size}, 32x32x3, on {name}"
          f"{' (bf16 autocast)' if args.amp and device.type == 'cuda' else ''}")
    print(f"median of {len(times)} steps after {args.warmup} warm-up: {step_s:.3f} s/step "
          f"({2 * args.batch_size / step_s:.0f} images/s); {per_epoch} steps/epoch -> {step_s * per_epoch:.0f} s/epoch; "
          f"{cfg.epochs} epochs -> {hours:.2f} h (the paper: {PAPER_GPU_HOURS} GPU-hours, {hours / PAPER_GPU_HOURS:.1f}x)"
          + ("; a CPU times only a few steps: the extrapolation is rough" if device.type == "cpu" else "")
          + f"; {time.perf_counter() - t_all:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Own data (issue 16), side by side in one run, each case in its own process (peak RSS is a per-process
high-water mark):

1. the data stage on an ImageFolder tree of real Fashion-MNIST PNGs at 96 px, N and 10 N images: one epoch of
   augmented batches (batch 64) streamed through DataLoader workers; peak RSS above the process's start, and
   images/s. Bounded memory means the 10x tree costs about what the small one does.
2. one search step of the supernet (C=8, 5 cells, batch 8) on 224 px RGB inputs, with the ImageNet stem (the
   rule above 64 px) against the CIFAR stem at full resolution: peak RSS and seconds per step.

    python benchmarks/own_data.py [--per-class 50] [--data-root data]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _rss(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def data_case(tree: str) -> dict:
    import torch

    from dcanas.data import datasets as D
    from dcanas.data.folders import folder_dataset

    name = folder_dataset(tree, val_split=0.1)
    spec = D.get_spec(name)
    train = D.load_split(name, None, train=True)
    base = _rss("VmRSS")
    t0 = time.perf_counter()
    n = 0
    for _, y in D.batches(train, spec, 64, shuffle=True, g=torch.Generator().manual_seed(0), train_aug=True, cutout=8):
        n += len(y)
    dt = time.perf_counter() - t0
    return dict(images=n, seconds=dt, images_per_s=n / dt, peak_mb=_rss("VmHWM") - base, base_mb=base)


def stem_case(stem: str, batch: int) -> dict:
    import torch

    import dcanas.search.supernet as S
    from dcanas.search.config import SearchConfig, cost_models
    from dcanas.search.searcher import autocast_for, optimizers, search_step

    S.stem_for = lambda space, size: stem  # noqa: E731 - the case under test
    torch.manual_seed(0)
    cfg = SearchConfig(dataset="imagenet", C=8, cells=5, nodes=4, batch_size=batch, eval_C=16, eval_layers=8, budget=5e5)
    net_cfg = S.SupernetConfig(C=8, cells=5, nodes=4, num_classes=10, in_channels=3, input_size=224, options=cfg.options)
    model = S.Supernet(net_cfg)
    cms = cost_models(cfg)
    w_opt, _, a_opt = optimizers(model, cfg)
    x = torch.randn(batch, 3, 224, 224)
    y = torch.randint(0, 10, (batch,))
    base = _rss("VmRSS")
    times = []
    lams = {m: 0.0 for m in cms}
    for _ in range(3):
        t0 = time.perf_counter()
        lams, _ = search_step(model, cms, cfg, (x, y), (x, y), w_opt, a_opt, {cfg.metric: cfg.budget}, lams, autocast_for(cfg, x.device))
        times.append(time.perf_counter() - t0)
    return dict(stem=stem, first_cell_side=model.slots[0].size, seconds_per_step=min(times[1:]), peak_mb=_rss("VmHWM") - base)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--batch", type=int, default=8, help="search batch of the stem comparison")
    p.add_argument("--data-root", default="data")
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        kind, arg = args.case.split("=", 1)
        print(json.dumps(data_case(arg) if kind == "data" else stem_case(arg, args.batch)))
        return 0
    from conftest import write_fashion_tree

    def sub(case: str) -> dict:
        out = subprocess.run([sys.executable, __file__, "--case", case, "--batch", str(args.batch)], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        return json.loads(out.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory() as d:
        rows = []
        for k in (1, 10):
            t0 = time.time()
            tree = write_fashion_tree(Path(d) / f"x{k}", Path(args.data_root) / "fashion-mnist", per_class=k * args.per_class, size=96,
                                      fmt="png", rgb=False, val=False)
            made = time.time() - t0
            rows.append(dict(per_class=k * args.per_class, written_s=made, **sub(f"data={tree}")))
    print(f"data stage: real Fashion-MNIST PNGs at 96 px, one epoch of augmented batches of 64, {rows[0]['images']} vs "
          f"{rows[1]['images']} images, DataLoader workers {os.environ.get('DCANAS_LOADER_WORKERS', 2)}")
    print("| images | peak RSS above start (MB) | images/s | epoch (s) |\n|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['images']:,} | {r['peak_mb']:.0f} | {r['images_per_s']:.0f} | {r['seconds']:.1f} |")
    print(f"10x the images: {rows[1]['peak_mb'] / max(rows[0]['peak_mb'], 1e-9):.2f}x the peak RSS")
    stems = [sub(f"stem={s}") for s in ("imagenet", "cifar")]
    print(f"\nsupernet C=8, 5 cells, 4 nodes, batch {args.batch}, 224x224x3, one search step (w + alpha):")
    print("| stem | first cell's side | peak RSS above start (MB) | s/step |\n|---|---:|---:|---:|")
    for r in stems:
        print(f"| {r['stem']} | {r['first_cell_side']} | {r['peak_mb']:.0f} | {r['seconds_per_step']:.2f} |")
    print(f"ImageNet stem vs CIFAR stem at 224 px: {stems[1]['peak_mb'] / stems[0]['peak_mb']:.1f}x less memory, "
          f"{stems[1]['seconds_per_step'] / stems[0]['seconds_per_step']:.1f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`dcanas evaluate` on all 10,000 Fashion-MNIST test images (issue 32): the evaluation before issue 32 (the model
as loaded, channels_last inputs, batch 256, no_grad) against today's (a copy with folded batch norms in the
inputs' layout, batch 64, inference mode; ``trainer.evaluate``), alternating in one process, and the whole
command's wall time in a fresh process (start-up, loading and glibc's kept freed memory included).

The networks are the cpu-demo evaluation network (C=16, 8 cells, auxiliary head) of two genotypes: DARTS_V2
(separable convolutions) and the one the cpu-demo search derives at K_d = 200,000 params (pools and skips),
with the running statistics of a few training batches; an evaluation's time does not depend on what it learned.

    python benchmarks/evaluate_cost.py [--repeats 3] [--data-root data]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

# what `dcanas search --preset cpu-demo --budget 200000` derived (seed 0; make demo's network)
CPU_DEMO_SEARCH = {"space": "darts", "normal": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["avg_pool_3x3", 0], ["avg_pool_3x3", 2],
                                                ["sep_conv_5x5", 0], ["sep_conv_5x5", 3], ["skip_connect", 3], ["dil_conv_5x5", 4]],
                   "normal_concat": [2, 3, 4, 5],
                   "reduce": [["max_pool_3x3", 0], ["avg_pool_3x3", 1], ["max_pool_3x3", 0], ["skip_connect", 2], ["max_pool_3x3", 0],
                              ["dil_conv_3x3", 3], ["max_pool_3x3", 0], ["avg_pool_3x3", 3]],
                   "reduce_concat": [2, 3, 4, 5]}


def previous_evaluate(model, data, spec) -> float:
    """The evaluation loop before issue 32 (top-1 only): the model as loaded, batch 256, no_grad."""
    import torch

    from dcanas.data import datasets as D
    from dcanas.train.trainer import to_layout

    model.eval()
    correct = n = 0
    with torch.no_grad():
        for x, y in D.batches(data, spec, 256, shuffle=False):
            out = model(to_layout(x))
            out = out if torch.is_tensor(out) else out[0]
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
    return correct / n


def main() -> int:
    import torch

    from dcanas.data import datasets as D
    from dcanas.nets.genotype import load_genotype
    from dcanas.train.model_io import load_model, save_model
    from dcanas.train.trainer import EVAL_BATCH, TrainConfig, apply_preset, build_model, evaluate

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds of the previous and today's evaluation")
    p.add_argument("--data-root", default="data")
    args = p.parse_args()
    spec = D.get_spec("fashion-mnist")
    test = D.load_split("fashion-mnist", args.data_root, train=False)
    warm = D.load_split("fashion-mnist", args.data_root, train=True).subset(slice(0, 512))
    print(f"all {len(test):,} Fashion-MNIST test images, {torch.get_num_threads()} threads; previous: the model as loaded, batch 256, "
          f"no_grad; today: folded batch norms, channels_last, batch {EVAL_BATCH}, inference mode; medians of {args.repeats} "
          "alternating rounds in one process; the command: `dcanas evaluate` in a fresh process, wall time")
    print("| network | params | previous s | today s | speed-up | `dcanas evaluate` wall s | top-1 equal |\n|---|---:|---:|---:|---:|---:|---|")
    for name, genotype in (("DARTS_V2", load_genotype("DARTS_V2").to_json()), ("cpu-demo search", CPU_DEMO_SEARCH)):
        torch.manual_seed(0)
        cfg = apply_preset(TrainConfig(genotype=genotype), "cpu-demo")
        model, meta = build_model(cfg, spec)
        model.train()
        with torch.no_grad():  # running statistics of real batches, as a trained model has
            for x, _ in D.batches(warm, spec, 128, shuffle=False):
                model(x)
        with tempfile.TemporaryDirectory() as tmp:
            path = save_model(Path(tmp) / "model.pt", model, meta)
            loaded, _ = load_model(path)
            prev, today, same = [], [], True
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                top1_prev = previous_evaluate(loaded, test, spec)
                prev.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                top1 = evaluate(loaded, test, spec)["top1"]
                today.append(time.perf_counter() - t0)
                same &= abs(top1 - top1_prev) < 0.5 / len(test)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "dcanas", "evaluate", "--model", str(path), "--data-root", args.data_root],
                           check=True, capture_output=True)
            wall = time.perf_counter() - t0
        a, b = statistics.median(prev), statistics.median(today)
        params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("auxiliary_head"))
        print(f"| {name} | {params:,} | {a:.1f} | {b:.1f} | {a / b:.2f}x | {wall:.1f} | {'yes' if same else 'no'} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

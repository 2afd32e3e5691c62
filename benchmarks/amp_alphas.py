"""Does bf16 autocast keep the search's decisions? (issue 32) The same seeded search run twice on one device, in
float32 and under bf16 autocast (``--amp``), compared: the largest and median gap in op probability per cell
type, the two genotypes, their derived cost, and the time of each. On a CPU autocast is off (searcher.autocast_for),
so both runs are float32 and the script says so.

    python benchmarks/amp_alphas.py [--preset cpu-demo] [--budget 200000] [--device auto|cpu|cuda] [--data-root data]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    import torch

    from dcanas.search.config import SearchConfig, apply_preset
    from dcanas.search.searcher import run_search

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu-demo")
    p.add_argument("--budget", type=float, default=200_000)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default="data")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    base = replace(apply_preset(SearchConfig(dataset="fashion-mnist", data_root=args.data_root), args.preset),
                   budget=args.budget, device=device, seed=args.seed)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for amp in (False, True):
            t0 = time.perf_counter()
            res = run_search(replace(base, amp=amp), Path(tmp) / f"amp{int(amp)}", None, progress=lambda m: print(m, file=sys.stderr))
            runs[amp] = (res, time.perf_counter() - t0)
    (f32, t32), (bf, t16) = runs[False], runs[True]
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU, {torch.get_num_threads()} threads (autocast off: both float32)"
    print(f"search preset {args.preset}, K_d={args.budget:,.0f} params, seed {args.seed}, on {name}")
    print("| cell | largest gap in op probability | median gap |\n|---|---:|---:|")
    for t in f32.alphas:
        gap = (torch.softmax(bf.alphas[t], -1) - torch.softmax(f32.alphas[t], -1)).abs().flatten().tolist()
        print(f"| {t} | {max(gap):.4f} | {statistics.median(gap):.4f} |")
    same = f32.genotype.to_json() == bf.genotype.to_json()
    print(f"\ngenotype {'the same' if same else 'different'}; derived params float32 {f32.summary['derived_cost']:,.0f}, "
          f"bf16 {bf.summary['derived_cost']:,.0f}; search time float32 {t32:.1f} s, bf16 {t16:.1f} s ({t32 / t16:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

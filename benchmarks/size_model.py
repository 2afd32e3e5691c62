"""Calibrate the model-size model (``src/dcanas/export/size_model.py``): export random networks of
both spaces on two datasets in every format, fit base / per-layer / per-channel / per-avgpool bytes
per format by least squares (bytes per weight fixed by the precision), and report the fit's relative
errors and the margin that makes it an upper bound of every file. Prints the SIZE_MODELS table.

    python benchmarks/size_model.py [--networks 16] [--out benchmarks/size_model.last.md]
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

# (space, dataset, C, layers): small to CPU-demo sized, both input shapes
SHAPES = [("darts", "fashion-mnist", 8, 5), ("darts", "fashion-mnist", 16, 8), ("darts", "fashion-mnist", 24, 8),
          ("darts", "fashion-mnist", 12, 3), ("darts", "cifar10", 16, 8), ("darts", "cifar10", 10, 5),
          ("darts", "fashion-mnist", 16, 11), ("darts", "cifar10", 20, 6),
          ("nb201", "fashion-mnist", 8, 2), ("nb201", "fashion-mnist", 16, 5), ("nb201", "fashion-mnist", 24, 5),
          ("nb201", "fashion-mnist", 12, 3), ("nb201", "cifar10", 16, 5), ("nb201", "cifar10", 8, 8),
          ("nb201", "fashion-mnist", 8, 8), ("nb201", "cifar10", 12, 2)]


def measure(n: int, seed: int = 0) -> list[dict]:
    import numpy as np
    import torch

    from dcanas.data import datasets as D
    from dcanas.export.converters import export_onnx, export_tflite, quantize_tflite
    from dcanas.export.formats import FORMATS
    from dcanas.nets.build import build_network
    from dcanas.nets.config import default_config
    from dcanas.nets.cost import network_cost
    from dcanas.nets.genotype import dumps, random_genotype

    rng, rows = random.Random(seed), []
    with tempfile.TemporaryDirectory() as d:
        for i, (space, dataset, C, L) in enumerate((SHAPES * 2)[:n]):
            spec = D.get_spec(dataset)
            g = random_genotype(space, rng)
            while "none" in dumps(g):  # a `none` on a path leaves dead branches the TFLite converter prunes:
                g = random_genotype(space, rng)  # the counts (all weights) then over-predict; fit on live networks
            cfg = default_config(space, in_channels=spec.in_channels, input_size=spec.size, num_classes=spec.num_classes, C=C, layers=L)
            model = build_network(g, cfg).eval()
            x = torch.randn(1, spec.in_channels, spec.size, spec.size)
            t0 = time.time()
            base = Path(d) / f"n{i}"
            sizes = {}
            export_tflite(model, x, base.with_suffix(".tflite"))
            export_onnx(model, x, base.with_suffix(".onnx"), {"genotype": "x"})
            calib = [np.random.default_rng(k).standard_normal(x.shape).astype(np.float32) for k in range(8)]
            for f in FORMATS.values():
                path = Path(str(base) + f.suffix)
                if f.quantization:
                    quantize_tflite(base.with_suffix(".tflite"), path, f.quantization, calib if f.quantization == "static-int8" else None)
                sizes[f.name] = path.stat().st_size
            c = network_cost(g, cfg)
            rows.append(dict(space=space, dataset=dataset, C=C, layers_cfg=L, params=c.params, layers=c.layers,
                             channels=c.channels, avgpools=c.avgpools, sizes=sizes, seconds=time.time() - t0))
            print(f"[{i + 1}/{n}] {space} {dataset} C={C} L={L}: {c.params:,} params, {c.layers} layers  "
                  + "  ".join(f"{k}={v / 1024:.0f}KB" for k, v in sizes.items()), file=sys.stderr, flush=True)
    return rows


def fit(rows: list[dict]) -> dict:
    import numpy as np

    from dcanas.export.formats import FORMATS

    bpw = {"fp32": 4, "fp16": 2, "int8": 1}
    X = np.array([[1, r["layers"], r["channels"], r["avgpools"]] for r in rows], float)
    P = np.array([r["params"] for r in rows], float)
    out = {}
    for f in FORMATS.values():
        b = bpw[f.precision]
        Y = np.array([r["sizes"][f.name] for r in rows], float)
        coef, *_ = np.linalg.lstsq(X, Y - b * P, rcond=None)
        pred = X @ coef + b * P
        rel = (pred - Y) / Y
        margin = max(1.0, float((Y / pred).max()))
        out[f.name] = dict(bytes_per_weight=b, coef=[float(v) for v in coef], margin=margin,
                           max_over=float(rel.max()), max_under=float(rel.min()), mean_abs=float(abs(rel).mean()),
                           over_with_margin=float(((margin * pred - Y) / Y).max()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=16)
    ap.add_argument("--out", default=str(Path(__file__).with_name("size_model.last.md")))
    args = ap.parse_args()
    t0 = time.time()
    rows = measure(args.networks)
    res = fit(rows)
    lines = [f"# Model-size model calibration ({len(rows)} networks, {time.time() - t0:.0f} s)", "",
             "| format | bytes/weight | base B | per layer B | per channel B | per avgpool B | fit error min..max | mean abs | margin | max over with margin |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for name, r in res.items():
        c = r["coef"]
        lines.append(f"| {name} | {r['bytes_per_weight']} | {c[0]:,.0f} | {c[1]:,.1f} | {c[2]:,.1f} | {c[3]:,.1f} | "
                     f"{100 * r['max_under']:+.1f}% .. {100 * r['max_over']:+.1f}% | {100 * r['mean_abs']:.1f}% | {r['margin']:.3f} | "
                     f"{100 * r['over_with_margin']:+.1f}% |")
    lines += ["", "SIZE_MODELS = {"]
    lines += [f'    "{n}": SizeModel({r["bytes_per_weight"]}, {r["coef"][0]:.0f}, {r["coef"][1]:.1f}, {r["coef"][2]:.2f}, '
              f'{r["coef"][3]:.1f}, {r["margin"]:.3f}),' for n, r in res.items()]
    lines += ["}", "", "| space | dataset | C | cells | params | layers | channels | avgpools | "
              + " | ".join(res) + " |", "|---" * (8 + len(res)) + "|"]
    lines += [f"| {r['space']} | {r['dataset']} | {r['C']} | {r['layers_cfg']} | {r['params']:,} | {r['layers']} | {r['channels']} | "
              f"{r['avgpools']} | " + " | ".join(f"{r['sizes'][n]:,}" for n in res) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()

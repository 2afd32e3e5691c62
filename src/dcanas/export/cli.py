"""``dcanas export``: argument parsing and the results table."""
from __future__ import annotations

import argparse

from ..argtypes import add_folder_options, nonneg_float, positive_int


def cmd_export(args: argparse.Namespace) -> int:
    from .exporter import export_model

    rows = export_model(args.model, args.formats, args.out, dataset=args.dataset, data_root=args.data_root,
                        layout=args.layout, n_validate=args.n, dynamic_batch=args.dynamic_batch, min_top1=args.min_top1)
    print("| format | file | size (KB) | export (s) | max abs diff | top-1 agreement | ok |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['format']} | {r['file']} | {r.get('size_kb', 0):.1f} | {r['export_s']:.1f} | "
              f"{r.get('max_abs_diff', float('nan')):.2e} | {r.get('top1_agreement', float('nan')):.3f} | "
              f"{'✅' if r['passed'] else '❌ ' + r.get('reason', '')} |")
    print(f"-> {args.out}/export.json")
    return 0 if all(r["passed"] for r in rows) else 1


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="export model.pt to ONNX / TFLite and validate each artifact against PyTorch")
    p.add_argument("--model", required=True, help="model.pt written by `dcanas train`")
    p.add_argument("--formats", default="onnx,tflite", help="comma-separated: onnx, tflite, tflite-fp16, tflite-int8-dynamic, tflite-int8")
    p.add_argument("--dataset", help="validation/calibration data (default: the model's dataset; random inputs if absent)")
    p.add_argument("--data-root")
    add_folder_options(p)
    p.add_argument("--layout", default="nchw", help="TFLite input layout: nchw (default) or nhwc")
    p.add_argument("--n", type=positive_int, default=100, help="validation inputs (default 100)")
    p.add_argument("--min-top1", type=nonneg_float, help="override the quantized formats' top-1 agreement threshold")
    p.add_argument("--dynamic-batch", action="store_true", help="ONNX with a dynamic batch dimension")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export)

"""The ONE formats table: name -> suffix, engine, precision and quantization recipe.
It drives dispatch, argument checks, thresholds and the CLI."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Optional

from ..errors import UserError


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    engine: str                 # runtime that validates it: onnxruntime | tflite
    precision: str              # fp32 | fp16 | int8
    quantization: Optional[str]  # ai-edge-quantizer recipe: fp16 | dynamic-int8 | static-int8 | None
    # Validation: fp32 by max abs difference, quantized formats by top-1 agreement.
    max_abs_diff: Optional[float] = None
    min_top1_agreement: Optional[float] = None
    description: str = ""


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("onnx", ".onnx", "onnxruntime", "fp32", None, max_abs_diff=1e-4,
                 description="ONNX (dynamo exporter, opset 18), fp32"),
    ExportFormat("tflite", ".tflite", "tflite", "fp32", None, max_abs_diff=1e-4,
                 description="TFLite via litert-torch, fp32"),
    ExportFormat("tflite-fp16", "-fp16.tflite", "tflite", "fp16", "fp16", min_top1_agreement=0.99,
                 description="TFLite, fp16 weights (float compute)"),
    ExportFormat("tflite-int8-dynamic", "-int8-dynamic.tflite", "tflite", "int8", "dynamic-int8", min_top1_agreement=0.97,
                 description="TFLite, dynamic-range int8 (int8 weights, activations quantized on the fly)"),
    ExportFormat("tflite-int8", "-int8.tflite", "tflite", "int8", "static-int8", min_top1_agreement=0.97,
                 description="TFLite, full integer int8 calibrated on real training images (float I/O)"),
)}


def resolve_formats(spec: str | list[str]) -> list[ExportFormat]:
    """'onnx,tflite' -> formats; an unknown name gets a "did you mean"."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if not names:
        raise UserError(f"no export format given; valid: {', '.join(FORMATS)}")
    out = []
    for n in names:
        if n not in FORMATS:
            close = difflib.get_close_matches(n, FORMATS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"unknown export format {n!r}; {hint}valid: {', '.join(FORMATS)}")
        out.append(FORMATS[n])
    return out


def formats_for(engine: str, precision: str) -> ExportFormat:
    """The format a device profile's runtime (engine, precision) runs."""
    for f in FORMATS.values():
        if f.engine == engine and f.precision == precision and f.name != "tflite-int8-dynamic":
            return f
    raise UserError(f"no export format for engine={engine!r} precision={precision!r}; valid: "
                    + ", ".join(sorted({f'{f.engine}/{f.precision}' for f in FORMATS.values()})))

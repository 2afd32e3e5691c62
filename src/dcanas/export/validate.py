"""Validation of an exported artifact against the PyTorch model, per output: shape (fatal),
max absolute and relative difference, top-1 agreement (optimum's habit: collect every failure)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .formats import ExportFormat


class ShapeError(RuntimeError):
    """The artifact's output shape differs from PyTorch's: fatal for that artifact."""


@dataclass
class Check:
    format: str
    n_inputs: int
    real_inputs: bool
    max_abs_diff: float
    max_rel_diff: float
    top1_agreement: float
    passed: bool
    reason: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def run_onnx(path: Path, inputs: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    fixed = sess.get_inputs()[0].shape[0]
    if isinstance(fixed, int) and fixed != len(inputs):
        return np.concatenate([sess.run(None, {name: inputs[i:i + fixed]})[0] for i in range(0, len(inputs), fixed)])
    return sess.run(None, {name: inputs})[0]


def run_tflite(path: Path, inputs: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    from ..runtime.runner import from_output, to_input  # the device runner's own I/O scaling

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    batch = inp["shape"][0]
    results = []
    for i in range(0, len(inputs), batch):
        interp.set_tensor(inp["index"], to_input(inputs[i:i + batch], inp, np))
        interp.invoke()
        results.append(from_output(interp.get_tensor(out["index"]), out, np))
    return np.concatenate(results)


RUNNERS = {"onnxruntime": run_onnx, "tflite": run_tflite}


def output_detail(path: Path, fmt: ExportFormat) -> Optional[dict]:
    """A TFLite file's output tensor details (dtype, quantization); None for ONNX."""
    if fmt.engine != "tflite":
        return None
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_output_details()[0]


def compare(fmt: ExportFormat, reference: np.ndarray, got: np.ndarray, real_inputs: bool,
            min_top1: Optional[float] = None, output: Optional[dict] = None) -> Check:
    """``output``: the artifact's output tensor details; differences are measured to the reference as that
    tensor can hold it (``runner.representable``), top-1 agreement to the reference itself."""
    from ..runtime.runner import representable

    if got.shape != reference.shape:
        raise ShapeError(f"{fmt.name}: output shape {got.shape} != PyTorch {reference.shape}")
    diff = np.abs(got.astype(np.float64) - representable(reference, output, np).astype(np.float64))
    max_abs = float(diff.max())
    max_rel = float((diff / np.maximum(np.abs(reference), 1e-6)).max())
    agree = float((got.argmax(1) == reference.argmax(1)).mean())
    reasons = []
    if fmt.max_abs_diff is not None and max_abs > fmt.max_abs_diff:
        reasons.append(f"max abs diff {max_abs:.2e} > {fmt.max_abs_diff:.0e}")
    threshold = min_top1 if min_top1 is not None else fmt.min_top1_agreement
    if threshold is not None and agree < threshold:
        reasons.append(f"top-1 agreement {agree:.3f} < {threshold:.2f}")
    return Check(fmt.name, len(reference), real_inputs, max_abs, max_rel, agree, not reasons, "; ".join(reasons))

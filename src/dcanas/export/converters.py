"""Converters: PyTorch -> ONNX (dynamo exporter) and PyTorch -> TFLite (litert-torch, then
ai-edge-quantizer recipes for fp16 / dynamic int8 / static int8)."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch
import torch.nn as nn

ONNX_OPSET = 18  # the dynamo exporter does not honour 17 (it falls back to 18 with a traceback)


def _quiet() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


@contextlib.contextmanager
def _captured():
    """Keep the converters' console progress (rich, tqdm, prints) out of our output."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        yield buf


def export_onnx(model: nn.Module, sample: torch.Tensor, path: Path, metadata: dict[str, Any],
                dynamic_batch: bool = False) -> None:
    """One self-contained .onnx file (no external data) with the metadata in ``metadata_props``."""
    import onnx

    _quiet()
    kwargs: dict[str, Any] = dict(input_names=["input"], output_names=["logits"], dynamo=True,
                                  opset_version=ONNX_OPSET, external_data=False, verbose=False)
    if dynamic_batch:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    with _captured():
        program = torch.onnx.export(model.eval(), (sample,), **kwargs)
    proto = program.model_proto
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.save_model(proto, str(path))


def tflite_module(model: nn.Module, layout: str) -> nn.Module:
    import litert_torch

    if layout == "nhwc":
        return litert_torch.to_channel_last_io(model.eval(), args=[0]).eval()
    return model.eval()


def export_tflite(model: nn.Module, sample: torch.Tensor, path: Path, layout: str = "nchw") -> None:
    """fp32 conversion with litert-torch (NCHW input, or NHWC through to_channel_last_io)."""
    import litert_torch

    _quiet()
    module = tflite_module(model, layout)
    x = sample.permute(0, 2, 3, 1).contiguous() if layout == "nhwc" else sample
    with _captured():
        litert_torch.convert(module, (x,)).export(str(path))


def quantize_tflite(float_path: Path, path: Path, quantization: str, calibration: Optional[Iterable[np.ndarray]],
                    logits: bool = False) -> None:
    """Apply an ai-edge-quantizer recipe to an fp32 .tflite: fp16 weights (float casting),
    dynamic-range int8, or static int8 calibrated on ``calibration``. ``logits``: the output is a
    classifier's logits, its int8 range set for the class (``argmax_range``)."""
    with _captured():
        _quantize(float_path, path, quantization, calibration, logits)


def argmax_range(logits: np.ndarray) -> tuple[float, float]:
    """The int8 range of a classifier's logits over the calibration images: from the lowest runner-up
    (second-highest logit of an image) to the highest logit. A logit below the runner-up never decides
    the class, so the int8 steps go where the decision is: on the cpu-demo network min/max spans [-12.1,
    16.0] (a step of 0.11, larger than the top-two margin of 4.9% of test images; rounding the float logits
    alone to it kept the class of 0.983 of them) and this spans [0.47, 16.0], which the quantizer widens to
    hold zero: [0, 16.0] (0.063). Logits below the floor read as the floor: the sidecar's
    ``io_quantization.output`` gives it ((-128 - zero_point) * scale)."""
    ranked = np.sort(logits.reshape(len(logits), -1), axis=1)
    return float(ranked[:, -2].min()), float(ranked[:, -1].max())


def _quantize(float_path: Path, path: Path, quantization: str, calibration: Optional[Iterable[np.ndarray]],
              logits: bool = False) -> None:
    from ai_edge_quantizer import quantizer, recipe, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import TFLOperationName

    qt = quantizer.Quantizer(str(float_path))
    if quantization == "fp16":
        rm = recipe_manager.RecipeManager()
        rm.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                  algorithm_key=AlgorithmName.FLOAT_CASTING)
        qt.load_quantization_recipe(rm.get_quantization_recipe())
        result = qt.quantize()
    elif quantization == "dynamic-int8":
        qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        result = qt.quantize()
    elif quantization == "static-int8":
        if calibration is None:
            raise ValueError("static int8 needs a calibration set")
        qt.load_quantization_recipe(_static_int8_recipe())
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(float_path))
        name = interp.get_signature_list()
        sig = next(iter(name))
        input_name = name[sig]["inputs"][0]
        float_run = interp.get_signature_runner(sig)
        # Each tensor's range is its min and max over ALL calibration images. The quantizer, given the images
        # together, keeps a moving average of each image's own range instead: for the logits of a cpu-demo
        # network that gave [-5.4, 8.1] where the images span [-9.9, 16.2], the top logits saturated, and
        # top-1 agreement with PyTorch fell to 0.84 (0.98 with the full range). So one image at a time, widened.
        calib: dict = {}
        outputs = []
        for x in calibration:
            calib = _widen(calib, qt.calibrate({sig: [{input_name: x}]}))
            if logits:
                outputs.append(next(iter(float_run(**{input_name: x}).values())))
        if logits:
            out = interp.get_output_details()[0]["name"]
            lo, hi = argmax_range(np.concatenate(outputs))
            shape = np.shape(calib[out]["min"])
            calib[out] = {**calib[out], "min": np.full(shape, lo, np.float32), "max": np.full(shape, hi, np.float32)}
        result = qt.quantize(calib)
    else:
        raise ValueError(f"unknown quantization {quantization!r}")
    result.export_model(str(path), overwrite=True)


FLOAT_IN_INT8 = ("DIV",)  # tflite-runtime 2.14 (a Pi's usual runtime) has no int8 DIV: "Div only supports FLOAT32, INT32
# and quantized UINT8"; DIV is the average pool's padding-excluding divisor (ops.AvgPool3x3), kept float between a
# DEQUANTIZE and a QUANTIZE. Every other op is int8, the input and output too.


def _static_int8_recipe():
    """int8 weights and activations for every op type but FLOAT_IN_INT8. Built op type by op type: in this
    ai-edge-quantizer a NO_QUANTIZE rule for one op type after an all-ops rule does not take effect."""
    from ai_edge_quantizer import recipe_manager
    from ai_edge_quantizer.qtyping import TFLOperationName

    rm = recipe_manager.RecipeManager()
    for op in TFLOperationName:
        if op.name == "ALL_SUPPORTED" or op.name in FLOAT_IN_INT8:
            continue
        try:
            rm.add_static_config(regex=".*", operation_name=op, activation_num_bits=8, weight_num_bits=8)
        except ValueError:  # an op type the quantizer has no static int8 rule for (CUSTOM_OP, EMBEDDING_LOOKUP)
            continue
    return rm.get_quantization_recipe()


def _widen(ranges: dict, more: dict) -> dict:
    """Per-tensor calibration ranges (quantization statistics {"min", "max"}) widened to cover ``more``."""
    for name, q in more.items():
        have = ranges.get(name)
        if have is None or "min" not in q or "min" not in have:
            ranges[name] = q
        else:
            have["min"], have["max"] = np.minimum(have["min"], q["min"]), np.maximum(have["max"], q["max"])
    return ranges


def tflite_ops(path: Path) -> list[str]:
    """The operator names of a .tflite model, in graph order, deduplicated."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    seen: list[str] = []
    for op in interp._get_ops_details():  # noqa: SLF001 - the interpreter's own op listing
        if op["op_name"] not in seen:
            seen.append(op["op_name"])
    return seen


def convert(model: nn.Module, sample: torch.Tensor, fmt, path: Path, calibration: Optional[Iterable[np.ndarray]] = None) -> Path:
    """``model`` to one file of export format ``fmt`` (an ``ExportFormat``), NCHW, batch 1, no metadata:
    for measuring small models (the latency model's op instances). Quantized TFLite is derived from an
    fp32 conversion; static int8 calibrates on ``calibration`` (default: 8 standard-normal inputs)."""
    path = Path(path)
    if fmt.engine == "onnxruntime":
        export_onnx(model, sample, path, {})
        return path
    if fmt.quantization is None:
        export_tflite(model, sample, path)
        return path
    float_path = path.with_name(f".{path.name}.{os.getpid()}.float.tmp")
    try:
        export_tflite(model, sample, float_path)
        if calibration is None:
            calibration = [np.random.default_rng(k).standard_normal(tuple(sample.shape)).astype(np.float32) for k in range(8)]
        quantize_tflite(float_path, path, fmt.quantization, calibration)
    finally:
        float_path.unlink(missing_ok=True)
    return path

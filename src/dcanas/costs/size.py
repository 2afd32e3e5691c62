"""The model-size model: the bytes of an exported file predicted from the analytic counts, so that
a device's ``model_size_kb`` budget can be a search constraint.

    size = margin x (base + bytes_per_weight x params + per_layer x layers + per_channel x channels
                     + per_avgpool x avgpools)

``params`` and the graph counts come from the ONE cost counter (``nets/cost.py``); bytes_per_weight
is the format's (4 fp32, 2 fp16, 1 int8); base, per_layer, per_channel and per_avgpool are fitted by
least squares to files exported by this version's converters (``benchmarks/size_model.py``, which
prints this table), and ``margin`` is the largest ratio measured / fitted over that set, so the
prediction is at least every calibration file's size. It is linear in the counts, hence additive over
a genotype's (edge, op) choices like params and FLOPs, and the budget-aware derivation can hold it.
The verdict still measures the real file.

Torch-free: the search config and the device-profile checks import it.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError


@dataclass(frozen=True)
class SizeModel:
    bytes_per_weight: int
    base: float
    per_layer: float
    per_channel: float
    per_avgpool: float
    margin: float  # >= 1: max measured / fitted over the calibration files

    def variable_bytes(self, params: int, layers: int, channels: int, avgpools: int) -> float:
        """The part that grows with the network (no base), margin included."""
        return self.margin * (self.bytes_per_weight * params + self.per_layer * layers + self.per_channel * channels
                              + self.per_avgpool * avgpools)

    def base_bytes(self) -> float:
        return self.margin * self.base


# Fitted by benchmarks/size_model.py (its last run: benchmarks/size_model.last.md; 16 random networks of both
# spaces, C 8..24, 2..11 cells, Fashion-MNIST and CIFAR-10 shapes): fit error -3.0% .. +5.3%, and with the
# margin at most +8.4% over a file. litert-torch 0.10.0, ai-edge-quantizer, torch 2.14.1 dynamo ONNX (opset 18).
# An NB201 genotype with `none` on a path has dead branches the TFLite converter prunes: over-predicted.
SIZE_MODELS: dict[str, SizeModel] = {
    "onnx": SizeModel(4, 40941, 3079.9, -6.92, 2929.7, 1.021),
    "tflite": SizeModel(4, 15702, 1018.8, -6.86, 1160.3, 1.008),
    "tflite-fp16": SizeModel(2, 17273, 1432.9, -5.72, 1366.7, 1.024),
    "tflite-int8-dynamic": SizeModel(1, 17672, 1016.9, 8.66, 1230.4, 1.031),
    "tflite-int8": SizeModel(1, 16630, 1140.7, 25.84, 1295.1, 1.030),
}


def size_model(fmt: str) -> SizeModel:
    if fmt not in SIZE_MODELS:
        raise UserError(f"no model-size model for format {fmt!r}; valid: {', '.join(SIZE_MODELS)}")
    return SIZE_MODELS[fmt]


def predicted_kb(fmt: str, params: int, layers: int, channels: int, avgpools: int) -> float:
    m = size_model(fmt)
    return (m.base_bytes() + m.variable_bytes(params, layers, channels, avgpools)) / 1024

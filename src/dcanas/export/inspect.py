"""Model files recognised and measured from the file itself, never from what its metadata claims.

``recognise`` checks a model locally before anything is pushed to a device: an ONNX file must
parse, a TFLite file must carry the flatbuffer identifier ``TFL3``. ``graph_cost`` counts the
weights and the multiply-accumulates of the graph (Conv, Gemm/MatMul, BatchNormalization at 2
per element for ONNX, fvcore's convention; CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED for
TFLite, where batch norm is folded into the convolutions). A graph whose shapes are not all
known gets ``flops=None`` ("not counted") rather than a guess.
"""
from __future__ import annotations

import json
from math import prod
from pathlib import Path
from typing import Any, Optional

from ..errors import UserError

SUFFIXES = (".onnx", ".tflite")


class ModelFileError(UserError):
    pass


def recognise(path: str | Path) -> str:
    """'onnx' or 'tflite' for a file that is one; otherwise one line saying what it is not."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model {path} not found; export one with `dcanas export --model model.pt --formats onnx,tflite --out DIR`")
    if path.suffix not in SUFFIXES:
        raise ModelFileError(f"{path.name}: unknown model type {path.suffix!r}; valid: {', '.join(SUFFIXES)}")
    if path.suffix == ".tflite":
        head = path.open("rb").read(8)
        if len(head) < 8 or head[4:8] != b"TFL3":
            raise ModelFileError(f"{path} is not a TFLite model (no 'TFL3' flatbuffer identifier); export it again with `dcanas export`")
        return "tflite"
    load_onnx(path)
    return "onnx"


def load_onnx(path: Path):
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelFileError(f"{path} is not an ONNX model (it does not parse: {type(exc).__name__}); export it again with `dcanas export`") from None
    if not model.graph.node:
        raise ModelFileError(f"{path} is not an ONNX model (no graph nodes); export it again with `dcanas export`")
    return model


def external_data(path: Path) -> list[Path]:
    """The files an ONNX model keeps its weights in (the dynamo exporter writes ``<model>.onnx.data`` for larger
    models): they travel with the model. A location outside the model's folder is refused."""
    if path.suffix != ".onnx":
        return []
    model = load_onnx(path)
    names = []
    for t in model.graph.initializer:
        if t.data_location == 1:  # onnx.TensorProto.EXTERNAL
            loc = next((e.value for e in t.external_data if e.key == "location"), "")
            if loc and loc not in names:
                names.append(loc)
    for loc in names:
        if Path(loc).name != loc or not (path.parent / loc).is_file():
            raise ModelFileError(f"{path.name} keeps weights in {loc!r}, which is not a file beside it; save the model with its "
                                 f"weights inside (onnx.save(model, path, save_as_external_data=False)) or put {loc} beside it")
    return [path.parent / loc for loc in names]


def metadata(path: Path) -> dict[str, Any]:
    """The export stage's metadata (ONNX metadata_props, or the TFLite sidecar <file>.json);
    a value that is not JSON stays a string, an unreadable sidecar is ignored."""
    if path.suffix == ".onnx":
        out = {}
        for p in load_onnx(path).metadata_props:
            try:
                out[p.key] = json.loads(p.value)
            except ValueError:
                out[p.key] = p.value
        return out
    side = path.with_name(path.name + ".json")
    try:
        data = json.loads(side.read_text()) if side.is_file() else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def graph_cost(path: str | Path) -> dict[str, Optional[int]]:
    path = Path(path)
    return _onnx_cost(path) if recognise(path) == "onnx" else _tflite_cost(path)


def _onnx_cost(path: Path) -> dict[str, Optional[int]]:
    import onnx

    model = onnx.shape_inference.infer_shapes(load_onnx(path))
    g = model.graph
    inits = {t.name: tuple(t.dims) for t in g.initializer}
    shapes: dict[str, Optional[tuple]] = dict(inits)
    for v in list(g.input) + list(g.output) + list(g.value_info):
        dims = v.type.tensor_type.shape.dim
        shapes[v.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims) if dims else None
    for n in g.node:  # Constant nodes carry weights too in some exporters
        if n.op_type == "Constant" and n.attribute and n.attribute[0].t.dims:
            shapes[n.output[0]] = tuple(n.attribute[0].t.dims)
            inits.setdefault(n.output[0], tuple(n.attribute[0].t.dims))
    weight_inputs = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (0, 1), "BatchNormalization": (1, 2),
                     "Gather": (0,)}  # Gather: an embedding table
    counted: set[str] = set()
    params, flops, known = 0, 0, True
    for n in g.node:
        for i in weight_inputs.get(n.op_type, ()):
            if i < len(n.input) and n.input[i] in inits and n.input[i] not in counted:
                counted.add(n.input[i])
                params += prod(inits[n.input[i]])
        out = shapes.get(n.output[0]) if n.output else None
        if n.op_type in ("Conv", "ConvTranspose"):
            w = shapes.get(n.input[1])
            if not out or not w or None in out:
                known = False
                continue
            flops += prod(out) * prod(w[1:]) if n.op_type == "Conv" else prod(shapes.get(n.input[0]) or (0,)) * prod(w[1:])
        elif n.op_type in ("Gemm", "MatMul"):
            a = shapes.get(n.input[0])
            if not out or not a or None in out or None in a:
                known = False
                continue
            flops += prod(out) * a[-1]
        elif n.op_type == "BatchNormalization":
            if not out or None in out:
                known = False
                continue
            flops += 2 * prod(out)
    return {"params": int(params), "flops": int(flops) if known else None}


def _tflite_cost(path: Path) -> dict[str, Optional[int]]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    tensors = {t["index"]: tuple(int(d) for d in t["shape"]) for t in interp.get_tensor_details()}
    counted: set[int] = set()
    params, flops = 0, 0
    for op in interp._get_ops_details():  # noqa: SLF001 - the interpreter's own op listing
        name, ins, outs = op["op_name"], list(op["inputs"]), list(op["outputs"])
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        for i in ins[1:3]:
            if i >= 0 and i not in counted:
                counted.add(i)
                params += prod(tensors[i])
        w, out = tensors[ins[1]], tensors[outs[0]]
        if name == "CONV_2D":          # filter [C_out, kh, kw, C_in]
            flops += prod(out) * prod(w[1:])
        elif name == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, C_out]
            flops += prod(out) * w[1] * w[2]
        else:                          # weights [units, K]
            flops += prod(out) * w[-1]
    return {"params": int(params), "flops": int(flops)}


def precision_of(path: str | Path) -> tuple[str, str]:
    """(engine, precision) of a model file: the export's own record when it has one (ONNX metadata, the
    TFLite sidecar), else read from the file (ONNX: fp32; TFLite: the weights' type of its convolutions)."""
    path = Path(path)
    kind = recognise(path)
    meta = metadata(path)
    if isinstance(meta.get("precision"), str):
        return ("onnxruntime" if kind == "onnx" else "tflite"), meta["precision"]
    if kind == "onnx":
        return "onnxruntime", "fp32"
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    dtypes = {t["index"]: t["dtype"] for t in interp.get_tensor_details()}
    weights = [dtypes[op["inputs"][1]] for op in interp._get_ops_details()  # noqa: SLF001
               if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and op["inputs"][1] >= 0]
    if any(d == np.int8 for d in weights):
        return "tflite", "int8"
    if any(d == np.float16 for d in weights) or any(d == np.float16 for d in dtypes.values()):
        return "tflite", "fp16"
    return "tflite", "fp32"

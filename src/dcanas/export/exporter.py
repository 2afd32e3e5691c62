"""Export a trained ``model.pt`` to every requested format and validate each artifact against
PyTorch on real inputs. An artifact reaches its final name only after it exported AND passed;
one that fails validation is kept as ``<file>.rejected`` for inspection."""
from __future__ import annotations

import io
import os
import traceback
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..errors import UserError
from ..files import atomic_write, clean_stale_tmp, ensure_writable_dir, file_sha256, write_json
from ..data import datasets as D
from ..train.model_io import load_model
from .converters import ONNX_OPSET, export_onnx, export_tflite, quantize_tflite, tflite_ops
from .formats import ExportFormat, resolve_formats
from .validate import RUNNERS, ShapeError, compare, output_detail
from ..progress import stderr_line as _stderr


@dataclass
class Inputs:
    validation: np.ndarray   # N x C x H x W float32, normalized
    calibration: np.ndarray  # M x C x H x W from the TRAINING split (int8 calibration)
    real: bool
    source: str
    labels: Optional[np.ndarray] = None  # the validation images' true classes (real test images only)


def load_inputs(meta: dict[str, Any], dataset: Optional[str], data_root: Optional[str], n: int, n_calib: int,
                seed: int = 0) -> Inputs:
    """Real test images when the dataset is available; random inputs only without one (and said so)."""
    name = dataset or meta["dataset"]
    spec = D.get_spec(name)
    try:
        test = D.load_split(name, data_root, train=False)
        train = D.load_split(name, data_root, train=True)
    except D.DataError:
        if dataset:  # asked for explicitly: its absence is an error
            raise
        g = np.random.default_rng(seed)
        shape = meta["input_shape"]
        return Inputs(g.standard_normal((n, *shape), dtype=np.float32), g.standard_normal((n_calib, *shape), dtype=np.float32),
                      False, f"RANDOM inputs ({name} not found under {data_root or D.DEFAULT_DATA_ROOT})")
    g = torch.Generator().manual_seed(seed)
    vi = torch.randperm(len(test), generator=g)[:n]
    ci = torch.randperm(len(train), generator=g)[:n_calib]
    return Inputs(D.normalize(test.take(vi), spec).numpy(), D.normalize(train.take(ci), spec).numpy(), True,
                  f"{len(vi)} real {name} test images; calibration: {len(ci)} training images", test.labels[vi].numpy())


def _layout(x: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == "nhwc" else x


def artifact_metadata(meta: dict[str, Any], fmt: ExportFormat, layout: str, model_sha: str, batch: Optional[int]) -> dict[str, Any]:
    """What the device stage needs to feed and check the artifact."""
    c, h, w = meta["input_shape"]
    shape = [batch, h, w, c] if layout == "nhwc" else [batch, c, h, w]
    return {"format": fmt.name, "input_name": "input", "input_shape": shape, "layout": layout, "dtype": "float32",
            "mean": meta["mean"], "std": meta["std"], "classes": meta["classes"], "genotype": meta.get("genotype"),
            "arch": meta["arch"], "net_config": meta.get("net_config"), "dataset": meta["dataset"],
            "source_model_sha256": model_sha, "precision": fmt.precision}


def export_model(model_path: str | Path, formats: str | list[str], out_dir: str | Path, *, dataset: Optional[str] = None,
                 data_root: Optional[str] = None, layout: str = "nchw", n_validate: int = 100, n_calibration: int = 100,
                 dynamic_batch: bool = False, min_top1: Optional[float] = None,
                 progress: Callable[[str], None] = _stderr) -> list[dict[str, Any]]:
    if layout not in ("nchw", "nhwc"):
        raise UserError(f"unknown layout {layout!r}; valid: nchw, nhwc")
    if n_validate < 1 or n_calibration < 1:
        raise UserError(f"--n must be >= 1 (validation inputs), got {min(n_validate, n_calibration)}")
    fmts = resolve_formats(formats)
    out = ensure_writable_dir(out_dir, "export --out")
    for stale in clean_stale_tmp(out, recursive=False):
        progress(f"removed {stale.name}, left by an interrupted write")
    model, meta = load_model(model_path)
    model_sha = file_sha256(model_path)
    inputs = load_inputs(meta, dataset, data_root, n_validate, n_calibration)
    progress(f"validating on {inputs.source}")
    with torch.no_grad():
        reference = model(torch.from_numpy(inputs.validation)).numpy()
    stem = Path(model_path).stem if Path(model_path).stem != "model" else "model"
    rows = []
    floats: dict[str, Path] = {}  # layout -> fp32 .tflite, converted once and quantized per format
    for fmt in fmts:
        art_layout = "nchw" if fmt.engine == "onnxruntime" else layout
        final = out / f"{stem}{fmt.suffix}"
        tmp = out / f".{final.name}.{os.getpid()}.export.tmp"  # io.clean_stale_tmp removes it if we die
        row: dict[str, Any] = dict(format=fmt.name, file=final.name, layout=art_layout, passed=False)
        t0 = time.time()
        sample = torch.from_numpy(inputs.validation[:1])
        try:
            if fmt.engine == "onnxruntime":
                export_onnx(model, sample, tmp, artifact_metadata(meta, fmt, art_layout, model_sha, None if dynamic_batch else 1),
                            dynamic_batch=dynamic_batch)
                row["opset"] = ONNX_OPSET
            else:
                if art_layout not in floats:
                    floats[art_layout] = out / f".{stem}.{art_layout}.{os.getpid()}.float.tmp"
                    export_tflite(model, sample, floats[art_layout], art_layout)
                if fmt.quantization is None:
                    shutil.copyfile(floats[art_layout], tmp)
                else:
                    calib = [_layout(inputs.calibration[i:i + 1], art_layout) for i in range(len(inputs.calibration))]
                    quantize_tflite(floats[art_layout], tmp, fmt.quantization, calib, logits=True)
                row["ops"] = tflite_ops(tmp)
                stablehlo = [op for op in row["ops"] if op.startswith("STABLEHLO")]
                if stablehlo:
                    progress(f"WARNING {fmt.name}: contains {', '.join(stablehlo)}; runtimes older than LiteRT "
                             f"(tflite-runtime 2.14) cannot load it ('Op builtin_code out of range')")
            row["export_s"] = time.time() - t0
            got = RUNNERS[fmt.engine](tmp, _layout(inputs.validation, art_layout))
            check = compare(fmt, reference, got, inputs.real, min_top1, output_detail(tmp, fmt))
            row.update(check.to_json())
            if inputs.labels is not None:  # what the format costs in test accuracy, beside the agreement
                row.update(test_top1_pytorch=float((reference.argmax(1) == inputs.labels).mean()),
                           test_top1=float((got.argmax(1) == inputs.labels).mean()))
                row["accuracy_drop"] = row["test_top1_pytorch"] - row["test_top1"]
        except ShapeError as exc:
            row.update(reason=str(exc), export_s=time.time() - t0)
        except Exception as exc:  # noqa: BLE001 - a converter failure is reported, others continue
            row.update(reason=f"export failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                       export_s=time.time() - t0, traceback=traceback.format_exc())  # the whole story, in export.json
            tmp.unlink(missing_ok=True)
        if tmp.exists():
            row["size_kb"] = tmp.stat().st_size / 1024
            if row["passed"]:
                # The sidecars name the artifact's sha256 and are placed first; the model's rename is the
                # last step, so a kill in between leaves an old model beside new sidecars, which every
                # reader detects (profile.remote.check_reference), never a silent mismatch.
                _write_sidecars(final, tmp, fmt, meta, art_layout, model_sha, inputs, reference)
                os.replace(tmp, final)
            else:
                os.replace(tmp, out / f"{final.name}.rejected")
        rows.append(row)
        mark = "✅" if row["passed"] else "❌"
        progress(f"{mark} {fmt.name:20} {row.get('size_kb', 0):9.1f} KB  {row['export_s']:6.1f}s  "
                 f"max abs diff {row.get('max_abs_diff', float('nan')):.2e}  top-1 agreement {row.get('top1_agreement', float('nan')):.3f}"
                 + (f"  test top-1 {100 * row['test_top1']:.1f}% (PyTorch {100 * row['test_top1_pytorch']:.1f}%)"
                    if "accuracy_drop" in row else "")
                 + (f"  ({row['reason']})" if row.get("reason") else ""))
    for f in floats.values():
        f.unlink(missing_ok=True)
    write_json(out / "export.json", dict(model=str(model_path), model_sha256=model_sha, inputs=inputs.source, rows=rows))
    return rows


def tflite_io(path: Path) -> dict[str, Any]:
    """The input's and output's dtype and quantization (scale, zero point) as the file declares them: a
    static-int8 file takes and returns int8 (what NPU and microcontroller runtimes need), and the runner
    and the validation scale with exactly these (``runtime/runner.py`` ``to_input``/``from_output``)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    io_ = {k: dict(dtype=np.dtype(d["dtype"]).name, scale=float(d["quantization"][0]), zero_point=int(d["quantization"][1]))
           for k, d in (("input", i), ("output", o))}
    return {"dtype": io_["input"]["dtype"], "io_quantization": io_}


def _write_sidecars(final: Path, artifact: Path, fmt: ExportFormat, meta: dict[str, Any], layout: str, model_sha: str,
                    inputs: Inputs, reference: np.ndarray) -> None:
    """``<name>.json`` (TFLite; ONNX carries it in metadata_props) and ``<name>.ref.npz``: one real
    input and the PyTorch output, so the device can check its own outputs. ``artifact``: the file that
    will be renamed to ``final``."""
    artifact_sha = file_sha256(artifact)
    if fmt.engine == "tflite":
        write_json(final.with_name(final.name + ".json"), artifact_metadata(meta, fmt, layout, model_sha, 1)
                   | {"artifact_sha256": artifact_sha} | tflite_io(artifact))
    buf = io.BytesIO()
    np.savez(buf, input=_layout(inputs.validation[:1], layout), output=reference[:1], real=np.array(inputs.real),
             model_sha256=np.array(artifact_sha))
    atomic_write(final.with_name(final.name + ".ref.npz"), lambda fh: fh.write(buf.getvalue()))

"""CUDA as a device of its own (issue 32): a short search, its bf16 autocast, retraining and evaluation on a GPU.
Every test here is marked ``gpu`` and skips, with its reason, where torch sees no CUDA device; the float64
equality tests of the search-time forms run on CUDA through the ``torch_device`` fixture (tests/test_search_speed.py).
benchmarks/gpu_check.sh runs ``pytest -m gpu`` on a GPU machine."""
import json
from dataclasses import replace

import pytest
import torch
from conftest import NO_CUDA

from dcanas.data import datasets as D
from dcanas.nets.genotype import load_genotype
from dcanas.presets import SEARCH_PRESETS
from dcanas.search.config import SearchConfig, apply_preset, cost_model
from dcanas.search.searcher import run_search
from dcanas.train.model_io import load_model
from dcanas.train.trainer import TrainConfig, evaluate, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]


def _tiny(root, **kw) -> SearchConfig:
    cfg = apply_preset(SearchConfig(dataset="fashion-mnist", data_root=str(root)), "tiny")
    lo, hi = cost_model(cfg).feasible_range()
    return replace(cfg, budget=lo + 0.5 * (hi - lo), device="cuda", **kw)


@pytest.mark.parametrize("amp", [False, True], ids=["float32", "bf16"])
def test_short_search_on_cuda(tmp_path, fashion_root, amp):
    cfg = _tiny(fashion_root.parent, amp=amp)
    res = run_search(cfg, tmp_path / "s", cfg.budget, progress=lambda m: None)
    assert res.summary["under_budget"] and res.summary["epochs_run"] == SEARCH_PRESETS["tiny"]["epochs"]
    hist = json.loads((tmp_path / "s" / "search.json").read_text())["epochs"]
    assert all(0 < e["val_acc"] <= 1 for e in hist) and hist[-1]["lambda"] >= 0


def test_bf16_search_alphas_stay_near_float32(tmp_path, fashion_root):
    """The same seeded tiny search in float32 and under bf16 autocast: the final op probabilities within 0.02
    (bf16 keeps 8 bits of mantissa; a larger gap means autocast changes what the search decides)."""
    runs = [run_search(_tiny(fashion_root.parent, amp=amp), tmp_path / str(amp), None, progress=lambda m: None) for amp in (False, True)]
    for t in runs[0].alphas:
        gap = (torch.softmax(runs[1].alphas[t], -1) - torch.softmax(runs[0].alphas[t], -1)).abs().max()
        assert gap < 0.02, f"{t} cell: op probabilities differ by {gap:.3f} between float32 and bf16"


def test_retrain_and_evaluate_on_cuda(tmp_path, fashion_root):
    cfg = replace(TrainConfig(genotype=load_genotype("DARTS_V2").to_json()), epochs=1, batch_size=32, C=4, layers=3, subset=256, test_subset=128,
                  data_root=str(fashion_root.parent), device="cuda")
    train(cfg, tmp_path, progress=lambda m: None)
    model, _ = load_model(tmp_path / "model.pt")
    spec = D.get_spec("fashion-mnist")
    data = D.load_split("fashion-mnist", fashion_root.parent, train=False).subset(slice(0, 256))
    on_cpu = evaluate(model, data, spec)
    on_gpu = evaluate(model.cuda(), data, spec, device=torch.device("cuda"))
    assert on_gpu["n"] == on_cpu["n"] == 256
    assert abs(on_gpu["top1"] - on_cpu["top1"]) <= 2 / 256 and on_gpu["loss"] == pytest.approx(on_cpu["loss"], rel=1e-2)

"""Retraining on real Fashion-MNIST (tiny runs): outputs, resume after kill -9, DDP, baselines, evaluate."""
import json
import os
import subprocess
import sys
from pathlib import Path
from dataclasses import replace
from functools import partial

import pytest
import torch

from conftest import run_command, run_dcanas

from dcanas.train.model_io import load_model

HERE = Path(__file__).parent


dcanas = partial(run_dcanas, timeout=600)


@pytest.mark.slow
def test_train_outputs_and_evaluate_matches_log(tmp_path, fashion_root):
    r = dcanas("train", "--genotype", "DARTS_V2", "--preset", "tiny", "--data-root", str(fashion_root), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    log = json.loads((tmp_path / "train.json").read_text())
    assert [e["epoch"] for e in log["epochs"]] == [1, 2]
    for key in ("lr", "train_loss", "train_acc", "test_loss", "test_top1", "test_top5", "seconds"):
        assert key in log["epochs"][-1]
    for name in ("model.pt", "best.pt", "checkpoint.pt"):
        assert (tmp_path / name).is_file()
    # best.pt is chosen on the validation split held out of the training images, never on test
    vals = [e["val_top1"] for e in log["epochs"]]
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["val_top1"] == max(vals) and best["epoch"] == 1 + vals.index(max(vals))
    blob = torch.load(tmp_path / "model.pt", weights_only=True)
    assert blob["genotype"]["space"] == "darts" and blob["classes"][0] == "T-shirt/top" and blob["mean"] == [0.2860]
    model, meta = load_model(tmp_path / "model.pt")
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    ev = dcanas("evaluate", "--model", str(tmp_path / "model.pt"), "--data-root", str(fashion_root), "--subset", "128", "--json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["top1"] == pytest.approx(log["epochs"][-1]["test_top1"], abs=1e-9)


@pytest.mark.slow
def test_resume_after_kill_9_same_final_weights(tmp_path, fashion_root):
    args = ["train", "--genotype", "DARTS_V2", "--preset", "tiny", "--epochs", "3", "--data-root", str(fashion_root)]
    assert dcanas(*args, "--out", str(tmp_path / "full")).returncode == 0
    # the deterministic crash hook: exits like kill -9 after 10 steps, in epoch 2 (8 steps an epoch);
    # a real SIGKILL of the training loop is in test_pipeline.py (kill mid-stage)
    proc = run_command([sys.executable, "-m", "dcanas", *args, "--out", str(tmp_path / "killed")], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "DCANAS_EXIT_AFTER_STEPS": "10"})
    assert proc.returncode == 137, proc.stderr[-2000:]
    assert json.loads((tmp_path / "killed" / "train.json").read_text())["epochs"][-1]["epoch"] == 1
    r = dcanas(*args, "--out", str(tmp_path / "killed"), "--resume")
    assert r.returncode == 0 and "resumed" in r.stderr, r.stderr
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path, fashion_root):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(HERE / "ddp_worker.py"), str(tmp_path / "ddp"), str(fashion_root)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    single = subprocess.run([sys.executable, str(HERE / "ddp_worker.py"), str(tmp_path / "single"), str(fashion_root)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / "ddp" / f"rank{i}.pt", weights_only=True) for i in (0, 1))
    ref = torch.load(tmp_path / "single" / "rank0.pt", weights_only=True)
    weights = [k for k, v in r0.items() if v.is_floating_point() and "running" not in k]
    assert all(torch.equal(r0[k], r1[k]) for k in weights), "ranks diverged"
    # Same global batch, same augmentation: only BN batch statistics (16 vs 32 images) differ.
    diff = max(float((r0[k] - ref[k]).abs().max()) for k in weights)
    assert diff < 2e-2, diff
    log_ddp = json.loads((tmp_path / "ddp" / "train.json").read_text())
    assert log_ddp["world"] == 2


@pytest.mark.parametrize("schedule", ["step", "epoch"])
def test_lr_schedule_cosine_every_step_or_every_epoch(tmp_path, fashion_root, schedule):
    """"step" sets the cosine before every step, so the last step trains near 0 (the checkpoint's optimizer keeps it);
    "epoch" holds each epoch's lr for all its steps. Both start every epoch at the same lr: 64 images at batch 32 are
    2 steps an epoch, 4 in all."""
    import math

    from dcanas.nets.genotype import KNOWN
    from dcanas.train.trainer import TrainConfig, cosine_lr, train

    cfg = TrainConfig(genotype=KNOWN["DARTS_V2"], C=4, layers=3, epochs=2, batch_size=32, lr=0.1, subset=64,
                      val_fraction=0.0, test_subset=64, cutout=0, auxiliary=False, data_root=str(fashion_root), device="cpu",
                      lr_schedule=schedule)
    r = train(cfg, tmp_path, progress=lambda m: None)
    assert [e["lr"] for e in r["history"]] == pytest.approx([0.1, 0.05])
    opt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["opt"]["param_groups"][0]
    if schedule == "step":  # the 4th step's lr, and nothing stepped it after
        assert opt["lr"] == pytest.approx(cosine_lr(0.1, 3, 4)) and cosine_lr(0.1, 3, 4) == pytest.approx(0.05 * (1 + math.cos(0.75 * math.pi)))
    else:  # the scheduler's once an epoch, to 0 after the last
        assert opt["lr"] == pytest.approx(0.0, abs=1e-12)


def test_checkpoint_from_before_lr_schedule_resumes_as_epoch(tmp_path, fashion_root):
    """A checkpoint written before ``lr_schedule`` existed (its config has no such key) annealed once an epoch: it resumes
    under "epoch" and is refused under "step", with the usual one line."""
    from dcanas.errors import UserError
    from dcanas.files import torch_save
    from dcanas.nets.genotype import KNOWN
    from dcanas.train.trainer import TrainConfig, train

    cfg = TrainConfig(genotype=KNOWN["DARTS_V2"], C=4, layers=3, epochs=1, batch_size=32, subset=64, val_fraction=0.0,
                      test_subset=32, cutout=0, auxiliary=False, data_root=str(fashion_root), device="cpu", lr_schedule="epoch")
    train(cfg, tmp_path, progress=lambda m: None)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del state["config"]["lr_schedule"]
    torch_save(tmp_path / "checkpoint.pt", state)
    assert train(cfg, tmp_path, resume=True, progress=lambda m: None)["history"] == state["history"]
    with pytest.raises(UserError, match="other options"):
        train(replace(cfg, lr_schedule="step"), tmp_path, resume=True, progress=lambda m: None)


def test_lr_schedule_not_known_is_one_clear_error(tmp_path):
    from dcanas.errors import UserError
    from dcanas.nets.genotype import KNOWN
    from dcanas.train.trainer import TrainConfig, train

    with pytest.raises(UserError, match="'linear' is not one of step, epoch"):
        train(TrainConfig(genotype=KNOWN["DARTS_V2"], lr_schedule="linear"), tmp_path)


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
def test_baselines_train(tmp_path, fashion_root, arch):
    r = dcanas("train", "--arch", arch, "--width", "0.25", "--preset", "tiny", "--epochs", "1", "--subset", "64",
               "--data-root", str(fashion_root), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    model, meta = load_model(tmp_path / "model.pt")
    assert meta["arch"] == arch and model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


@pytest.mark.parametrize("args,needle", [
    (["evaluate", "--model", "/nonexistent/model.pt"], "not found"),
    (["train", "--genotype", "nope.json", "--out", "/tmp/x"], "is not a file"),
    (["train", "--arch", "vgg", "--preset", "tiny", "--out", "/tmp/dcanas-test-vgg"], "unknown baseline"),
    (["train", "--genotype", "DARTS_V2", "--preset", "huge", "--out", "/tmp/x"], "invalid choice: 'huge'"),
    (["train", "--genotype", "DARTS_V2", "--lr-schedule", "linear", "--out", "/tmp/x"], "invalid choice: 'linear'"),
])
def test_bad_input_one_line_exit_2(args, needle):
    r = dcanas(*args)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr


def test_model_genotype_mismatch_is_reported(tmp_path):
    from dcanas.nets.genotype import KNOWN
    from dcanas.data.datasets import get_spec
    from dcanas.train.model_io import save_model
    from dcanas.train.trainer import TrainConfig, build_model

    model, meta = build_model(TrainConfig(genotype=KNOWN["DARTS_V2"], C=4, layers=3), get_spec("fashion-mnist"))
    meta["genotype"] = KNOWN["DARTS_V1"]
    save_model(tmp_path / "m.pt", model, meta)
    r = dcanas("evaluate", "--model", str(tmp_path / "m.pt"))
    assert r.returncode == 2 and "do not match" in r.stderr


@pytest.mark.parametrize("arch, note", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|none~2|", "cell nor_conv_3x3 0->1, cell nor_conv_3x3 0->2"),
    ("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|none~1|nor_conv_3x3~2|", None),
])
def test_train_says_which_ops_of_a_users_genotype_cannot_change_its_output(tmp_path, fashion_root, arch, note):
    r = dcanas("train", "--genotype", arch, "--preset", "tiny", "--epochs", "1", "--subset", "256", "--data-root", str(fashion_root),
               "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "cannot change its output" in ln]
    assert lines == ([f"note: 2 op(s) of this genotype cannot change its output ({note}): cut off from the cell's input or output, "
                      "their parameters count and buy nothing; dcanas search derives none"] if note else [])

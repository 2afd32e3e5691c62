"""Retraining the derived network from scratch (paper Appendix D), with per-epoch atomic
checkpoints, ``resume``, and DistributedDataParallel under ``torchrun`` (gloo on CPU, NCCL on GPU)."""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .. import distributed
from ..progress import step_bar
from ..errors import UserError
from ..presets import TRAIN_PRESETS
from ..presets import LR_SCHEDULES, apply_preset as _apply_preset
from ..files import clean_stale_tmp, crash_point, ensure_writable_dir, resume_state, torch_save, write_json
from ..data import datasets as D
from ..nets.inference import for_inference
from ..nets.spaces import SPACES
from .model_io import build_baseline, save_model
from ..progress import stderr_line as _stderr


@dataclass
class TrainConfig:
    """The paper's recipe as defaults: SGD 0.9, wd 3e-4, cosine to 0, clip 5, cutout 16,
    drop path 0.2 (linearly increased), auxiliary head weight 0.4. ``lr_schedule`` "step" anneals the cosine at
    every step, to 0 at the end of the last; "epoch" steps it once an epoch (DARTS' form, the only one before
    2026-12-07), so the last epoch of E trains at lr x (1 + cos(pi (E - 1) / E)) / 2: a quarter of lr at E = 3."""

    genotype: Optional[dict] = None      # genotype JSON; None with ``arch`` set for a baseline
    arch: str = "dcanas"                 # dcanas | mobilenet_v2 | resnet18
    width: float = 1.0                   # baselines: MobileNetV2 width multiplier
    dataset: str = "fashion-mnist"
    data_root: Optional[str] = None
    C: Optional[int] = None
    layers: Optional[int] = None
    epochs: int = 600
    batch_size: int = 96
    lr: float = 0.025
    lr_schedule: str = "step"            # step | epoch: where the cosine is annealed (LR_SCHEDULES)
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    cutout: int = 16
    drop_path: float = 0.2
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    label_smoothing: float = 0.0
    subset: Optional[int] = None         # first N training images (quick runs)
    test_subset: Optional[int] = None
    val_fraction: float = 0.1            # held out of the training images to choose best.pt (never the test split)
    test_every: int = 1                  # the test split is scored every N epochs and after the last (0: the last only)
    seed: int = 0
    device: str = "auto"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def upgrade_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint written before ``lr_schedule`` existed (2026-12-07) annealed the cosine once an epoch."""
    return {**state, "config": {"lr_schedule": "epoch", **state["config"]}} if "config" in state else state


def cosine_lr(base: float, step: int, total: int) -> float:
    """The cosine schedule to 0 at step ``step`` of ``total`` (SGDR, Loshchilov & Hutter 2017, without restarts)."""
    return 0.5 * base * (1.0 + math.cos(math.pi * step / total))


def apply_preset(cfg: TrainConfig, name: Optional[str]) -> TrainConfig:
    return _apply_preset(cfg, TRAIN_PRESETS, name, "training")


def build_model(cfg: TrainConfig, spec: D.DatasetSpec) -> tuple[nn.Module, dict[str, Any]]:
    """The network and the metadata ``model.pt`` will carry."""
    meta: dict[str, Any] = dict(arch=cfg.arch, dataset=spec.name, mean=list(spec.mean), std=list(spec.std),
                                classes=spec.classes(), input_shape=[spec.in_channels, spec.size, spec.size])
    if cfg.arch == "dcanas":
        from ..nets.build import build_network
        from ..nets.config import default_config
        from ..nets.genotype import genotype_from_json

        if cfg.genotype is None:
            raise UserError("no genotype given; pass --genotype FILE (or --arch mobilenet_v2|resnet18 for a baseline)")
        g = genotype_from_json(cfg.genotype)
        net_cfg = default_config(g.space, in_channels=spec.in_channels, input_size=spec.size, num_classes=spec.num_classes,
                                 C=cfg.C, layers=cfg.layers, auxiliary=cfg.auxiliary and SPACES[g.space].auxiliary)
        meta.update(genotype=g.to_json(), net_config=net_cfg.to_json())
        return build_network(g, net_cfg), meta
    meta["width"] = cfg.width
    return build_baseline(cfg.arch, spec.in_channels, spec.num_classes, cfg.width), meta


# Training and evaluation run in channels_last: oneDNN's convolutions (depthwise above all) are faster in it at
# the evaluation networks' sizes (benchmarks/search_cost.py measures the retraining step both ways); the
# values are the same up to float rounding, and saved weights are stored contiguous.
MEMORY_FORMAT = torch.channels_last


def to_layout(x: torch.Tensor) -> torch.Tensor:
    """A batch of images in the layout the network is trained and evaluated in."""
    return x.contiguous(memory_format=MEMORY_FORMAT) if x.dim() == 4 else x


def _logits(out):
    return out if torch.is_tensor(out) else out[0]


def train_step(net: nn.Module, params: list, opt: torch.optim.Optimizer, crit: nn.Module, x: torch.Tensor, y: torch.Tensor,
               cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on a batch: the loss (+ the auxiliary head's, weighted), clipping, the update; returns the
    loss and the logits. The training loop and the search-cost benchmark both run exactly this."""
    opt.zero_grad(set_to_none=True)
    outputs = net(x)
    logits = _logits(outputs)
    loss = crit(logits, y)
    if not torch.is_tensor(outputs):
        loss = loss + cfg.auxiliary_weight * crit(outputs[1], y)
    loss.backward()
    nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    opt.step()
    return loss, logits


# Evaluation's batch: at 64 the cpu-demo network's activations stay in cache; 10,000 Fashion-MNIST test images took
# 12.8 s at 32 and 64, 14.0 s at 128 and 17.3 s at 256 on 2 threads (folded batch norms, channels_last).
EVAL_BATCH = 64


@torch.inference_mode()
def evaluate(model: nn.Module, data: D.ArrayData, spec: D.DatasetSpec, batch_size: int = EVAL_BATCH,
             device: Optional[torch.device] = None, rank: int = 0, world: int = 1) -> dict[str, Any]:
    """Loss, top-1, top-5 and the confusion matrix (rows: true class); summed over ranks. Runs a copy of
    ``model`` with its batch norms folded, in the inputs' layout (``nets.inference.for_inference``)."""
    device = device or torch.device("cpu")
    model = for_inference(model, MEMORY_FORMAT)
    n_cls = spec.num_classes
    conf = torch.zeros(n_cls, n_cls, dtype=torch.int64)
    loss_sum = torch.zeros((), dtype=torch.float64)
    top5 = torch.zeros((), dtype=torch.int64)
    shard = data.subset(slice(rank, None, world)) if world > 1 else data
    for x, y in D.batches(shard, spec, batch_size, shuffle=False):
        out = _logits(model(to_layout(x.to(device)))).cpu()
        loss_sum += F.cross_entropy(out, y, reduction="sum").double()
        k = min(5, n_cls)
        top5 += (out.topk(k, 1).indices == y.view(-1, 1)).any(1).sum()
        conf += torch.bincount(y * n_cls + out.argmax(1), minlength=n_cls * n_cls).view(n_cls, n_cls)
    if world > 1:
        for t in (conf, loss_sum, top5):
            dist.all_reduce(t)
    n = int(conf.sum())
    return dict(loss=float(loss_sum) / max(n, 1), top1=float(conf.diag().sum()) / max(n, 1), top5=float(top5) / max(n, 1),
                n=n, confusion=conf.tolist())


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False,
          progress: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Train; writes ``model.pt`` (last epoch), ``best.pt`` (best top-1 on a validation split held out of the
    training images, never the test split), ``checkpoint.pt`` and ``train.json`` under ``out_dir``."""
    rank, world = distributed.world()
    out = Path(out_dir)
    ckpt_path = out / "checkpoint.pt"
    spec = D.get_spec(cfg.dataset)
    if cfg.batch_size % world:
        raise UserError(f"--batch-size {cfg.batch_size} is not divisible by the {world} processes")
    for name in ("epochs", "batch_size"):
        if getattr(cfg, name) < 1:
            raise UserError(f"training option {name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise UserError(f"lr_schedule {cfg.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}; "
                        "step anneals the cosine every step (the default), epoch once an epoch")
    if rank == 0:
        ensure_writable_dir(out, "train --out")
        clean_stale_tmp(out)
    train_data = D.load_split(cfg.dataset, cfg.data_root, train=True)
    test_data = D.load_split(cfg.dataset, cfg.data_root, train=False)
    if cfg.subset:
        train_data = train_data.subset(slice(0, cfg.subset))
    if cfg.test_subset:
        test_data = test_data.subset(slice(0, cfg.test_subset))
    if not 0 <= cfg.val_fraction < 1:
        raise UserError(f"val_fraction must be in [0, 1), got {cfg.val_fraction}")
    train_data, val_data = D.holdout(train_data, cfg.val_fraction, cfg.seed)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if (cfg.device == "auto" and torch.cuda.is_available()) \
        else torch.device("cpu" if cfg.device == "auto" else cfg.device)
    torch.manual_seed(cfg.seed)
    model, meta = build_model(cfg, spec)
    model.to(device, memory_format=MEMORY_FORMAT)
    opt = torch.optim.SGD(model.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs, eta_min=0.0)
    history: list[dict[str, Any]] = []
    best, start = -1.0, 0
    state = resume_state(ckpt_path, resume, {"config": cfg.to_json(), "world": world}, "training run", upgrade=upgrade_checkpoint)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["rng"])
        history, best, start = state["history"], state["best"], state["epoch"]
        if rank == 0:
            progress(f"resumed {out} at epoch {start}/{cfg.epochs}")
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    crit = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    params = list(model.parameters())  # clipped each step
    local_bs = cfg.batch_size // world
    done_steps = 0
    per_epoch = max(len(train_data) // cfg.batch_size if world > 1 else -(-len(train_data) // cfg.batch_size), 1)  # D.batches' count
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        model.drop_path_prob = cfg.drop_path * epoch / cfg.epochs
        net.train()
        # "step": the cosine is set before each step below; "epoch": the scheduler steps after each epoch
        lr = cosine_lr(cfg.lr, epoch * per_epoch, cfg.epochs * per_epoch) if cfg.lr_schedule == "step" else opt.param_groups[0]["lr"]
        done_in_epoch = 0
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.int64)
        seen = torch.zeros((), dtype=torch.int64)
        # Every rank draws the same global batch (same generator) and trains on its slice, so N
        # processes see exactly what one process with the same global batch sees.
        bar = step_bar(len(train_data), f"train epoch {epoch + 1}/{cfg.epochs}")  # rank 0's alone (progress.bars_wanted)
        for x, y in D.batches(train_data, spec, cfg.batch_size, shuffle=True, g=g, train_aug=True, cutout=cfg.cutout,
                              drop_last=world > 1):
            if cfg.lr_schedule == "step":
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(cfg.lr, epoch * per_epoch + done_in_epoch, cfg.epochs * per_epoch)
            done_in_epoch += 1
            x, y = to_layout(x[rank * local_bs:(rank + 1) * local_bs].to(device)), y[rank * local_bs:(rank + 1) * local_bs].to(device)
            loss, logits = train_step(net, params, opt, crit, x, y, cfg)
            done_steps += 1
            bar.update(len(y) * world)
            crash_point(done_steps)
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        bar.close()
        if cfg.lr_schedule == "epoch":
            sched.step()
        if world > 1:
            for t in (loss_sum, correct, seen):
                dist.all_reduce(t)
        last = epoch + 1 == cfg.epochs
        tested = last or (cfg.test_every > 0 and (epoch + 1) % cfg.test_every == 0)
        ev = evaluate(model, test_data, spec, device=device, rank=rank, world=world) if tested else \
            dict(loss=None, top1=None, top5=None)
        val = evaluate(model, val_data, spec, device=device, rank=rank, world=world)["top1"] if len(val_data) else None
        row = dict(epoch=epoch + 1, lr=lr, train_loss=float(loss_sum) / max(int(seen), 1),
                   train_acc=int(correct) / max(int(seen), 1), val_top1=val, test_loss=ev["loss"], test_top1=ev["top1"],
                   test_top5=ev["top5"], seconds=time.time() - t0)
        history.append(row)
        if rank == 0:
            save_model(out / "model.pt", model, {**meta, "epoch": epoch + 1, "test_top1": ev["top1"]})
            if val is not None and val > best:  # model selection on the validation split, never on test
                best = val
                save_model(out / "best.pt", model, {**meta, "epoch": epoch + 1, "val_top1": val, "test_top1": ev["top1"]})
            torch_save(ckpt_path, dict(config=cfg.to_json(), world=world, model=model.state_dict(), opt=opt.state_dict(),
                                       sched=sched.state_dict(), rng=torch.get_rng_state(), history=history, best=best,
                                       epoch=epoch + 1))
            write_json(out / "train.json", dict(config=cfg.to_json(), meta=meta, world=world, epochs=history))
            test = f"test top1={row['test_top1']:.4f} top5={row['test_top5']:.4f}" if tested else f"val top1={val or 0:.4f}"
            progress(f"epoch {epoch + 1}/{cfg.epochs}  lr={lr:.4f}  train loss={row['train_loss']:.3f} acc={row['train_acc']:.3f}  "
                     f"{test}  {row['seconds']:.1f}s")
    if world > 1:
        dist.barrier()
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("auxiliary_head"))
    return dict(history=history, params=params, meta=meta, out=str(out), rank=rank, world=world, model=model)

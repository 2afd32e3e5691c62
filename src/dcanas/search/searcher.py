"""The DCA-NAS bi-level first-order search loop (paper Algorithm 1, Appendix D), with
per-epoch atomic checkpoints and ``resume``."""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from ..errors import UserError
from ..presets import apply_preset as _apply_preset
from ..io import clean_stale_tmp, ensure_writable_dir, load_checkpoint, peak_rss_mb, torch_save, write_json
from ..nets.config import NetConfig, default_config
from ..nets.cost import network_cost
from ..nets.genotype import genotype_from_json
from ..train import data as D
from .constraint import CostModel, constraint_term, update_lambda
from .supernet import SearchOptions, Supernet, SupernetConfig


@dataclass
class SearchConfig:
    """Everything a search run depends on; every hyper-parameter overridable (defaults: Appendix D)."""

    space: str = "darts"
    dataset: str = "fashion-mnist"
    data_root: Optional[str] = None
    metric: str = "params"
    budget: float = 0.0                  # K_d, the device budget
    search_budget: Optional[float] = None  # K' (None: K_d)
    epochs: int = 50
    batch_size: int = 64
    C: int = 16
    cells: int = 8
    nodes: int = 4
    eval_C: Optional[int] = None         # evaluation network the budget refers to (default: the paper's)
    eval_layers: Optional[int] = None
    subset: Optional[int] = None
    seed: int = 0
    lr: Optional[float] = None           # None: 0.2 * batch / 512 (the paper's 0.2 at batch 512)
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 6e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    lambda_lr: float = 0.1
    rederive_every: int = 1
    options: SearchOptions = field(default_factory=SearchOptions)
    device: str = "auto"
    amp: bool = False

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["arch_betas"] = list(self.arch_betas)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "SearchConfig":
        d = dict(d)
        d["options"] = SearchOptions(**d["options"])
        d["arch_betas"] = tuple(d["arch_betas"])
        return cls(**d)


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's supernet (Appendix D): 8 cells, C=16, 50 epochs, batch 512, lr 0.2 -- GPU work.
    "paper": dict(C=16, cells=8, epochs=50, batch_size=512, lr=0.2),
    # Sized for 2 CPU cores in a few minutes on Fashion-MNIST (a 6,000-image subset).
    "cpu-demo": dict(C=8, cells=5, epochs=5, batch_size=64, subset=3000, arch_lr=3e-3, lambda_lr=0.1,
                     eval_C=16, eval_layers=8),
    # The budget-precision benchmark's grid: many searches, so smaller than cpu-demo.
    "cpu-lug": dict(C=8, cells=5, epochs=4, batch_size=64, subset=2000, arch_lr=3e-3, lambda_lr=0.1,
                    eval_C=16, eval_layers=8),
    # Seconds: for tests.
    "tiny": dict(C=4, cells=3, nodes=2, epochs=2, batch_size=32, subset=256, arch_lr=3e-3, lambda_lr=0.5,
                 eval_C=8, eval_layers=3),
}


def apply_preset(cfg: SearchConfig, name: Optional[str]) -> SearchConfig:
    return _apply_preset(cfg, PRESETS, name, "search")


def eval_config(cfg: SearchConfig) -> NetConfig:
    spec = D.get_spec(cfg.dataset)
    return default_config(cfg.space, in_channels=spec.in_channels, input_size=spec.size, num_classes=spec.num_classes,
                          C=cfg.eval_C, layers=cfg.eval_layers)


def supernet_config(cfg: SearchConfig) -> SupernetConfig:
    spec = D.get_spec(cfg.dataset)
    nodes = cfg.nodes if cfg.space == "darts" else 3
    return SupernetConfig(space=cfg.space, C=cfg.C, cells=cfg.cells, nodes=nodes, num_classes=spec.num_classes,
                          in_channels=spec.in_channels, input_size=spec.size, options=cfg.options)


def cost_model(cfg: SearchConfig) -> CostModel:
    from ..nets.ops import SPACE_OPS

    if cfg.space not in SPACE_OPS:
        raise UserError(f"unknown search space {cfg.space!r}; valid: {', '.join(SPACE_OPS)}")
    if cfg.metric not in ("params", "flops"):
        raise UserError(f"unknown metric {cfg.metric!r}; valid: params, flops")
    scfg = supernet_config(cfg)
    return CostModel(cfg.space, eval_config(cfg), SPACE_OPS[cfg.space], scfg.nodes, cfg.metric)


def check_budget(cfg: SearchConfig, cm: CostModel) -> None:
    """An infeasible K_d is refused before any training (one line naming the feasible range)."""
    lo, hi = cm.feasible_range()
    if not lo <= cfg.budget <= hi:
        raise UserError(f"budget {cfg.metric}={cfg.budget:,.0f} is outside what the {cfg.space} space can derive at "
                        f"C={cm.eval_cfg.C}, layers={cm.eval_cfg.layers} on {cfg.dataset}: feasible range "
                        f"{lo:,} .. {hi:,}; choose a budget in it or change --eval-channels/--eval-layers")


def fit_eval_network(cfg: SearchConfig, max_C: int = 256) -> tuple[SearchConfig, Optional[str]]:
    """``cfg`` with an evaluation-network width whose feasible range holds the budget, and a line
    saying what changed (None when the preset's network already fits). The search from the widened
    or narrowed network keeps its layers; the nearest even C that fits wins."""
    cm = cost_model(cfg)
    lo, hi = cm.feasible_range()
    if lo <= cfg.budget <= hi:
        return cfg, None
    C0 = cm.eval_cfg.C
    candidates = range(C0 + 2, max_C + 1, 2) if cfg.budget > hi else range(C0 - 2, 3, -2)
    for C in candidates:
        trial = replace(cfg, eval_C=C)
        tlo, thi = cost_model(trial).feasible_range()
        if tlo <= cfg.budget <= thi:
            return trial, (f"the budget {cfg.metric}={cfg.budget:,.0f} is outside the feasible range {lo:,} .. {hi:,} of the "
                           f"preset's evaluation network (C={C0}, {cm.eval_cfg.layers} cells); using C={C} "
                           f"({tlo:,} .. {thi:,}) instead; --eval-channels/--eval-layers choose it yourself")
    return cfg, None  # nothing fits: check_budget says so with the range


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


ProgressFn = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class SearchResult:
    genotype: Any
    summary: dict[str, Any]
    out_dir: Path


def run_search(cfg: SearchConfig, out_dir: str | Path, resume: bool = False,
               progress: ProgressFn = _stderr, stop_after_steps: Optional[int] = None,
               lug_cache: Optional[str | Path] = None) -> SearchResult:
    """Search, writing ``genotype.json``, ``search.json`` and ``checkpoint.pt`` under ``out_dir``.

    Without ``cfg.search_budget``, K' comes from the matching LUG (else K' = K_d, with a warning),
    looked up after the budget and the data were checked. ``stop_after_steps`` ends the process
    abruptly mid-epoch (for crash tests, like ``kill -9``).
    """
    out = Path(out_dir)
    ckpt_path = out / "checkpoint.pt"
    cm = cost_model(cfg)
    if cfg.budget <= 0:
        raise UserError(f"--budget must be a positive number of {cfg.metric}, got {cfg.budget}")
    for name in ("epochs", "batch_size", "C", "cells", "nodes"):
        if getattr(cfg, name) < 1:
            raise UserError(f"search option {name} must be >= 1, got {getattr(cfg, name)}")
    check_budget(cfg, cm)
    ensure_writable_dir(out, "search --out")  # now, not after the first epoch
    clean_stale_tmp(out)
    spec = D.get_spec(cfg.dataset)
    train_all = D.load_split(cfg.dataset, cfg.data_root, train=True)
    from .lug import resolve_search_budget

    K_prime, _ = resolve_search_budget(cfg, Path(lug_cache) if lug_cache else None, progress)
    s_train, s_val = D.search_split(train_all, cfg.subset, cfg.seed)
    device = _device(cfg.device)

    torch.manual_seed(cfg.seed)
    model = Supernet(supernet_config(cfg)).to(device)
    lr = cfg.lr if cfg.lr is not None else 0.2 * cfg.batch_size / 512
    w_opt = torch.optim.SGD(model.weight_parameters(), lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, cfg.epochs, eta_min=cfg.lr_min)
    a_opt = torch.optim.Adam(model.arch_parameters(), cfg.arch_lr, betas=cfg.arch_betas, weight_decay=cfg.arch_weight_decay)
    lam, start_epoch, history, steps = 0.0, 0, [], []
    if resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, f"delete it to start the search over, or choose another --out")
        if state["config"] != cfg.to_json():
            raise UserError(f"{ckpt_path} was written by a search with other options; use another --out or drop --resume")
        model.load_state_dict(state["model"])
        w_opt.load_state_dict(state["w_opt"])
        a_opt.load_state_dict(state["a_opt"])
        sched.load_state_dict(state["sched"])
        lam, start_epoch, history, steps = state["lambda"], state["epoch"], state["history"], state["steps"]
        torch.set_rng_state(state["rng"])
        model.genotype = genotype_from_json(state["genotype"])
        progress(f"resumed {out} at epoch {start_epoch}/{cfg.epochs}")
    elif ckpt_path.exists():
        raise UserError(f"{out} already holds a search; pass --resume to continue it or choose another --out")
    ce = nn.CrossEntropyLoss()
    n_steps = D.n_batches(min(len(s_train), len(s_val)), cfg.batch_size, drop_last=True)
    if n_steps == 0:
        raise UserError(f"batch size {cfg.batch_size} is larger than the search split ({len(s_train)} images); lower --batch-size or raise --subset")
    done_steps = 0
    # AMP (optional, CUDA only): bf16 autocast needs no loss scaling; on the CPU this is a no-op.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        if cfg.options.derived_cells and epoch % cfg.rederive_every == 0:
            model.rederive()
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        train_it = D.batches(s_train, spec, cfg.batch_size, shuffle=True, g=g, drop_last=True)
        val_it = D.batches(s_val, spec, cfg.batch_size, shuffle=True, g=g, drop_last=True)
        model.train()
        sums = dict(train_loss=0.0, train_correct=0, val_loss=0.0, val_correct=0, seen=0)
        k_s = float(cm.expected(model.alphas).detach())
        for step, ((xt, yt), (xv, yv)) in enumerate(zip(train_it, val_it)):
            xt, yt, xv, yv = xt.to(device), yt.to(device), xv.to(device), yv.to(device)
            # 1. w on search-train (first order)
            w_opt.zero_grad(set_to_none=True)
            with autocast:
                logits = model(xt)
                loss = ce(logits, yt)
            loss.backward()
            nn.utils.clip_grad_norm_(model.weight_parameters(), cfg.grad_clip)
            w_opt.step()
            sums["train_loss"] += float(loss.detach()) * len(yt)
            sums["train_correct"] += int((logits.argmax(1) == yt).sum())
            # 2. alpha on search-val with the Lagrangian term (eq. 4)
            a_opt.zero_grad(set_to_none=True)
            with autocast:
                logits = model(xv)
                val_loss = ce(logits, yv)
            total = val_loss
            if cfg.options.constraint:
                k_s_t = cm.expected(model.alphas)
                term, _ = constraint_term(k_s_t, K_prime, lam)
                total = total + term.to(val_loss.device)
            total.backward()
            a_opt.step()
            # 3. lambda, projected gradient ascent on the new alpha
            k_s = float(cm.expected(model.alphas).detach())
            if cfg.options.constraint:
                lam = update_lambda(lam, k_s, K_prime, cfg.lambda_lr)
            steps.append([round(k_s, 1), round(lam, 6)])
            sums["val_loss"] += float(val_loss.detach()) * len(yv)
            sums["val_correct"] += int((logits.argmax(1) == yv).sum())
            sums["seen"] += len(yv)
            done_steps += 1
            if stop_after_steps is not None and done_steps >= stop_after_steps:
                import os
                os._exit(137)  # abrupt, like kill -9: no cleanup, no checkpoint of this epoch
        sched.step()
        genotype = model.derive()
        seen = max(1, sums["seen"])
        row = dict(epoch=epoch + 1, k_s=k_s, K_prime=K_prime, K_d=cfg.budget, **{"lambda": lam},
                   lr=w_opt.param_groups[0]["lr"],
                   train_loss=sums["train_loss"] / seen, train_acc=sums["train_correct"] / seen,
                   val_loss=sums["val_loss"] / seen, val_acc=sums["val_correct"] / seen,
                   derived_cost=cm.derived(genotype), genotype=genotype.to_json(),
                   alphas={t: torch.softmax(a.detach().cpu(), -1).tolist() for t, a in model.alphas.items()},
                   seconds=time.time() - t0, peak_rss_mb=peak_rss_mb())
        history.append(row)
        torch_save(ckpt_path, dict(config=cfg.to_json(), model=model.state_dict(), w_opt=w_opt.state_dict(),
                                   a_opt=a_opt.state_dict(), sched=sched.state_dict(), epoch=epoch + 1, history=history,
                                   steps=steps, rng=torch.get_rng_state(), genotype=model.genotype.to_json(),
                                   **{"lambda": lam}))
        progress(f"epoch {epoch + 1}/{cfg.epochs}  {n_steps} steps  {row['seconds']:.1f}s  k_s={k_s:,.0f}  K'={K_prime:,.0f}  "
                 f"lambda={lam:.3f}  val_acc={row['val_acc']:.3f}  derived {cfg.metric}={row['derived_cost']:,}")
    return finish(cfg, out, model, cm, history, steps, K_prime)


def finish(cfg: SearchConfig, out: Path, model: Supernet, cm: CostModel, history: list, steps: list, K_prime: float) -> SearchResult:
    genotype = model.derive()
    cost = network_cost(genotype, cm.eval_cfg)
    derived = cost.get(cfg.metric)
    summary = dict(space=cfg.space, dataset=cfg.dataset, metric=cfg.metric, K_d=cfg.budget, K_prime=K_prime,
                   derived_params=cost.params, derived_flops=cost.flops, derived_cost=derived,
                   under_budget=derived <= cfg.budget, rel_error=(derived - cfg.budget) / cfg.budget,
                   val_acc=history[-1]["val_acc"] if history else math.nan,
                   eval_config=cm.eval_cfg.to_json(), genotype=genotype.to_json(),
                   seconds=sum(r["seconds"] for r in history), feasible_range=list(cm.feasible_range()))
    write_json(out / "genotype.json", genotype.to_json())
    write_json(out / "search.json", dict(config=cfg.to_json(), summary=summary, epochs=history, steps=steps))
    return SearchResult(genotype, summary, out)

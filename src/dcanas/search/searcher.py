"""The DCA-NAS bi-level first-order search loop (paper Algorithm 1, Appendix D), with
per-epoch atomic checkpoints and ``resume``."""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn as nn
from torch.profiler import record_function

from ..data import datasets as D
from .. import distributed
from ..errors import UserError
from ..files import clean_stale_tmp, crash_point, ensure_writable_dir, load_checkpoint, peak_rss_mb, resume_state, torch_save, write_json
from ..nets.cost import network_cost
from ..nets.genotype import genotype_from_json
from ..costs.metrics import metric_round, metric_text
from ..progress import step_bar
from .config import SearchConfig, check_budget, constraints, supernet_config
from .constraint import Constraints, CostModel, add_constraint_gradients, update_lambda, violation
from .derive import Derivation, derive_filling, derive_within, genotype_log_prob, log_probs
from .learned import alpha_record, gradient_shares, separated, separation_note
from .supernet import Supernet, gumbel_tau
from ..progress import stderr_line as _stderr


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


ProgressFn = Callable[[str], None]


def _quiet(msg: str) -> None:
    pass


@dataclass
class SearchResult:
    genotype: Any
    summary: dict[str, Any]
    out_dir: Path
    alphas: dict[str, torch.Tensor] = field(default_factory=dict)  # the final architecture parameters (raw, not softmax)


def search_step(model: Supernet, cms: dict[str, CostModel], cfg: SearchConfig, train_batch: tuple[torch.Tensor, torch.Tensor],
                val_batch: tuple[torch.Tensor, torch.Tensor], w_opt: torch.optim.Optimizer, a_opt: torch.optim.Optimizer,
                targets: dict[str, float], lams: dict[str, float], autocast, world: int = 1,
                lean: bool = True, alpha: bool = True) -> tuple[dict[str, float], dict[str, float]]:
    """One bi-level first-order step (Algorithm 1): w on search-train, alpha on search-val with the
    Lagrangian terms (eq. 4, one per budgeted metric), then each lambda by projected gradient ascent.
    Returns the new lambdas and the step's statistics; the search loop and the search-cost benchmark
    both run exactly this. Under torchrun (``world`` > 1) each rank holds its slice of the global batch and
    the w and alpha gradients are averaged over the ranks before each optimizer step, so every rank keeps
    the same w, alpha and lambda (the Lagrangian gradient depends on alpha alone, identical everywhere).
    ``lean``: each pass computes only the gradients its optimizer steps (autograd skips the weights' kernels
    in the alpha pass: their gradients were computed and then discarded by the next step's zero_grad);
    ``lean=False`` computes them all (the eager baseline the benchmarks compare against).
    ``alpha=False`` (the warm-up epochs): w alone steps; the search-val batch is only scored, alpha and lambda
    stay where they are."""
    (xt, yt), (xv, yv) = train_batch, val_batch
    weights, alphas = model.weight_parameters(), model.arch_parameters()  # listed once: a walk over ~800 modules
    # the record_function labels are the phases benchmarks/search_profile.py reports (no cost without a profiler)
    # 1. w on search-train (first order)
    w_opt.zero_grad(set_to_none=True)
    logits, loss = _pass(model, xt, yt, "w", alphas if lean else [], autocast)
    with record_function("w.optimizer"):
        distributed.average_gradients(weights, world)
        nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
        w_opt.step()
    stats = dict(train_loss=float(loss.detach()) * len(yt), train_correct=int((logits.argmax(1) == yt).sum()))
    if not alpha:
        with torch.inference_mode(), autocast:
            logits = model(xv)
            val_loss = nn.functional.cross_entropy(logits, yv)
        k_s = {m: float(cm.expected(model.alphas).detach()) for m, cm in cms.items()}
        stats.update(val_loss=float(val_loss) * len(yv), val_correct=int((logits.argmax(1) == yv).sum()), seen=len(yv), k_s=k_s)
        return lams, stats
    # 2. alpha on search-val with the Lagrangian terms (eq. 4, summed over the budgets)
    a_opt.zero_grad(set_to_none=True)
    logits, val_loss = _pass(model, xv, yv, "alpha", weights if lean else [], autocast)
    with record_function("alpha.backward"):
        distributed.average_gradients(alphas, world)
    with record_function("alpha.cost"):
        if cfg.options.constraint:  # eq. 4: + sum over budgets of lambda * (k_s / K' - 1), as gradients on alpha
            violations = {m: violation(cm.expected(model.alphas), targets[m]) for m, cm in cms.items()}
            stats["scales"], stats["norms"] = add_constraint_gradients(alphas, violations, lams, cfg.lambda_step == "adaptive")
        else:  # the loss's push alone (its norm, for the report)
            stats["norms"] = add_constraint_gradients(alphas, {}, lams, False)[1]
    with record_function("alpha.optimizer"):
        a_opt.step()
    # 3. each lambda, projected gradient ascent on the new alpha
    with record_function("lambda"):
        k_s = {m: float(cm.expected(model.alphas).detach()) for m, cm in cms.items()}
        if cfg.options.constraint:
            lams = {m: update_lambda(lams[m], k_s[m], targets[m], cfg.lambda_lr) for m in cms}
    stats.update(val_loss=float(val_loss.detach()) * len(yv), val_correct=int((logits.argmax(1) == yv).sum()),
                 seen=len(yv), k_s=k_s)
    return lams, stats


def _pass(model: Supernet, x: torch.Tensor, y: torch.Tensor, phase: str, frozen: list[nn.Parameter],
          autocast) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of one pass of the step (``phase``.forward / ``phase``.backward) with ``frozen``
    parameters left out of the graph; returns the logits and the loss."""
    with no_grad_for(frozen):
        with record_function(f"{phase}.forward"), autocast:
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
        with record_function(f"{phase}.backward"):
            if loss.requires_grad:  # sampling "gdas": a draw whose last node has only `none` inputs cuts alpha off
                loss.backward()
    return logits, loss


@contextmanager
def no_grad_for(params: list[nn.Parameter]) -> Iterator[None]:
    """``params`` need no gradient for the duration: autograd records no path to them."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def optimizers(model: Supernet, cfg: SearchConfig):
    """SGD on w with a cosine schedule, Adam on alpha (Appendix D); lr 0.2 x batch / 512 by default."""
    lr = cfg.lr if cfg.lr is not None else 0.2 * cfg.batch_size / 512
    # foreach: one call per step for ~370 small tensors instead of a Python loop (the same arithmetic, bit for bit)
    w_opt = torch.optim.SGD(model.weight_parameters(), lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, cfg.epochs, eta_min=cfg.lr_min)
    a_opt = torch.optim.Adam(model.arch_parameters(), cfg.arch_lr, betas=cfg.arch_betas, weight_decay=cfg.arch_weight_decay)
    return w_opt, sched, a_opt


def autocast_for(cfg: SearchConfig, device: torch.device):
    """AMP (optional, CUDA only): bf16 autocast needs no loss scaling; on the CPU this is a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")


def run_search(cfg: SearchConfig, out_dir: str | Path, K_prime: float | Callable[[], float] | None = None, resume: bool = False,
               progress: ProgressFn = _stderr, stop_after_steps: Optional[int] = None, until: Optional[float] = None) -> SearchResult:
    """Search under the search budget ``K_prime``, writing ``genotype.json``, ``search.json`` and
    ``checkpoint.pt`` under ``out_dir``.

    ``K_prime`` is worked out by the caller (the LUG's lookup, a grid point, --search-budget); a
    callable is called once the budget, the output folder and the data were checked, so that a bad
    input is reported before a LUG warning; None takes the configuration's ``search_budget`` (else K_d). ``stop_after_steps`` ends the process abruptly
    mid-epoch (for crash tests, like ``kill -9``). ``until`` (a ``time.time()``): the search ends after the epoch
    in which that moment passes and derives from the alphas it has (a time-limited machine); the summary
    records the epochs it ran.
    """
    wall0 = time.perf_counter()
    out = Path(out_dir)
    ckpt_path = out / "checkpoint.pt"
    con = constraints(cfg)  # every budget, built once; K' joins below
    cms, cm = con.models, con.models[cfg.metric]
    if cfg.budget <= 0:
        raise UserError(f"--budget must be a positive number of {cfg.metric}, got {cfg.budget}")
    for name in ("epochs", "batch_size", "C", "cells", "nodes"):
        if getattr(cfg, name) < 1:
            raise UserError(f"search option {name} must be >= 1, got {getattr(cfg, name)}")
    check_budget(cfg, cm)
    rank, world = distributed.world()
    if cfg.batch_size % world:
        raise UserError(f"--batch-size {cfg.batch_size} is not divisible by the {world} processes")
    if rank == 0:
        ensure_writable_dir(out, "search --out")  # now, not after the first epoch
        clean_stale_tmp(out)
    else:
        progress = _quiet  # rank 0 reports and writes; the others compute
    spec = D.get_spec(cfg.dataset)
    train_all = D.load_split(cfg.dataset, cfg.data_root, train=True)
    if K_prime is not None:
        K_prime = float(K_prime() if callable(K_prime) else K_prime)
        con = replace(con, K_prime={**con.K_d, cfg.metric: K_prime})  # K' for the primary budget (LUG); K_d for the others
    K_prime = con.K_prime[cfg.metric]
    s_train, s_val = D.search_split(train_all, cfg.subset, cfg.seed)
    device = _device(cfg.device)

    torch.manual_seed(cfg.seed)
    model = Supernet(supernet_config(cfg)).to(device).set_fused(cfg.fused)
    w_opt, sched, a_opt = optimizers(model, cfg)
    lams, start_epoch, history, steps = {m: 0.0 for m in cms}, 0, [], []
    state = resume_state(ckpt_path, resume, {"config": cfg.to_json()}, "search", upgrade=upgrade_checkpoint)
    if state is not None:
        model.load_state_dict(state["model"])
        w_opt.load_state_dict(state["w_opt"])
        a_opt.load_state_dict(state["a_opt"])
        sched.load_state_dict(state["sched"])
        lams, start_epoch, history, steps = state["lambda"], state["epoch"], state["history"], state["steps"]
        torch.set_rng_state(state["rng"])
        model.genotype = genotype_from_json(state["genotype"])
        progress(f"resumed {out} at epoch {start_epoch}/{cfg.epochs}")
    n_steps = D.n_batches(min(len(s_train), len(s_val)), cfg.batch_size, drop_last=True)
    if n_steps == 0:
        raise UserError(f"batch size {cfg.batch_size} is larger than the search split ({len(s_train)} images, half of those searched on); "
                        f"add training images, or search on more of them (search --subset, run --search-subset) or lower the batch "
                        f"size (search --batch-size)")
    done_steps = 0
    autocast = autocast_for(cfg, device)
    local = cfg.batch_size // world
    if world > 1:
        progress(f"data-parallel search: {world} processes, global batch {cfg.batch_size} ({local} per process), "
                 f"w lr {w_opt.param_groups[0]['lr']:g}, alpha lr {cfg.arch_lr:g}, {n_steps} steps per epoch")
    # where this process's time went (benchmarks/search_cost.py's whole-search row): setup before the first
    # epoch, reading batches, the steps, each epoch's end (rederive, derive, checkpoint), the final derivations
    phases = dict(setup=time.perf_counter() - wall0, data=0.0, steps=0.0, epoch_end=0.0, finish=0.0)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        e0, in_loop = time.perf_counter(), phases["data"] + phases["steps"]
        if cfg.options.derived_cells and epoch % cfg.rederive_every == 0:
            model.rederive()
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        train_it = D.batches(s_train, spec, cfg.batch_size, shuffle=True, g=g, drop_last=True)
        val_it = D.batches(s_val, spec, cfg.batch_size, shuffle=True, g=g, drop_last=True)
        model.train()
        model.tau = gumbel_tau(epoch, cfg.epochs)  # sampling "gumbel" and "gdas" only
        sums = dict(train_loss=0.0, train_correct=0, val_loss=0.0, val_correct=0, seen=0)
        k_s_all = {m: float(c.expected(model.alphas).detach()) for m, c in cms.items()}
        targets = con.K_prime
        scales: dict[str, float] = {}
        norms: list[dict[str, float]] = []
        learn_alpha = epoch >= cfg.warmup_epochs  # the warm-up epochs train w alone (PC-DARTS)
        bar = step_bar(2 * n_steps * cfg.batch_size, f"search epoch {epoch + 1}/{cfg.epochs}")
        d0 = time.perf_counter()
        for (xt, yt), (xv, yv) in zip(train_it, val_it):
            # every rank draws the same global batches (same generator) and takes its slice
            part = slice(rank * local, (rank + 1) * local)
            batch_t, batch_v = (xt[part].to(device), yt[part].to(device)), (xv[part].to(device), yv[part].to(device))
            s0 = time.perf_counter()
            phases["data"] += s0 - d0
            lams, st = search_step(model, cms, cfg, batch_t, batch_v, w_opt, a_opt, targets, lams, autocast, world,
                                   alpha=learn_alpha)
            phases["steps"] += time.perf_counter() - s0
            k_s_all = st.pop("k_s")
            scales = st.pop("scales", scales)
            if "norms" in st:
                norms.append(st.pop("norms"))
            for key, v in st.items():
                sums[key] += v
            steps.append([round(k_s_all[cfg.metric], 1), round(lams[cfg.metric], 6)])
            done_steps += 1
            bar.update(len(yt) + len(yv))
            bar.set_postfix_str(f"lambda={lams[cfg.metric]:.3f}")
            crash_point(done_steps, stop_after_steps)
            d0 = time.perf_counter()
        bar.close()
        sched.step()
        genotype = model.derive()
        sums = distributed.sum_over_ranks(sums, world)
        seen = max(1, sums["seen"])
        k_s, lam = k_s_all[cfg.metric], lams[cfg.metric]
        row = dict(epoch=epoch + 1, k_s=k_s, K_prime=K_prime, K_d=cfg.budget, **{"lambda": lam}, k_s_all=k_s_all, lambdas=lams, term_scales=scales,
                   lr=w_opt.param_groups[0]["lr"],
                   train_loss=sums["train_loss"] / seen, train_acc=sums["train_correct"] / seen,
                   val_loss=sums["val_loss"] / seen, val_acc=sums["val_correct"] / seen,
                   derived_cost=cm.derived(genotype), genotype=genotype.to_json(),
                   alphas={t: torch.softmax(a.detach().cpu(), -1).tolist() for t, a in model.alphas.items()},
                   learned=alpha_record(cfg.space, model.alphas, model.op_names), alpha_steps=learn_alpha,
                   gradient_share=gradient_shares(norms) if norms else {},
                   seconds=time.time() - t0, peak_rss_mb=peak_rss_mb())
        history.append(row)
        if not rank:
            torch_save(ckpt_path, dict(config=cfg.to_json(), model=model.state_dict(), w_opt=w_opt.state_dict(),
                                       a_opt=a_opt.state_dict(), sched=sched.state_dict(), epoch=epoch + 1, history=history,
                                       steps=steps, rng=torch.get_rng_state(), genotype=model.genotype.to_json(),
                                       **{"lambda": lams}))
        phases["epoch_end"] += time.perf_counter() - e0 - (phases["data"] + phases["steps"] - in_loop)
        if rank:
            continue
        t = lambda v: metric_text(cfg.metric, v)  # noqa: E731
        progress(f"epoch {epoch + 1}/{cfg.epochs}  {n_steps} steps  {row['seconds']:.1f}s  k_s={t(k_s)}  K'={t(K_prime)}  "
                 f"lambda={lam:.3f}  val_acc={row['val_acc']:.3f}  arg-max network {cfg.metric}={t(row['derived_cost'])}")
        if until is not None and world == 1 and time.time() > until and epoch + 1 < cfg.epochs:  # one process: no rank to agree with
            progress(f"time limit reached: the search ends after epoch {epoch + 1} of {cfg.epochs}")
            break
    return finish(cfg, out, model, con, history, steps, write=rank == 0, phases=phases,
                  x=proxy_batch(cfg, s_train) if cfg.derive == "naswot" else None)


# search options added after checkpoints were written, with the value every older search ran under
LATER_FIELDS = {"proxy_pool": 100, "proxy_rank": 1, "proxy_draw": "alphas"}


def upgrade_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """A search checkpoint written before a field of ``LATER_FIELDS`` existed, read with that field at its value then."""
    return {**state, "config": {**LATER_FIELDS, **state["config"]}}


def proxy_batch(cfg: SearchConfig, s_train: Optional[D.ArrayData] = None) -> torch.Tensor:
    """The images the ``naswot`` derivation scores on: the first ``PROXY_BATCH`` of the search's training half (of
    ``s_train`` if given, else of the split ``cfg`` makes), normalised, in their stored order."""
    from .proxy import PROXY_BATCH

    if s_train is None:
        s_train, _ = D.search_split(D.load_split(cfg.dataset, cfg.data_root, train=True), cfg.subset, cfg.seed)
    spec = D.get_spec(cfg.dataset)
    x, _ = next(iter(D.batches(s_train.subset(slice(0, PROXY_BATCH)), spec, PROXY_BATCH, shuffle=False)))
    return x


def derivations(cfg: SearchConfig, model: Supernet, con: Constraints, x: Optional[torch.Tensor] = None) -> dict[str, Derivation]:
    """The derivations of the final alphas with their exact costs and log-probabilities: the paper's arg-max rule,
    the budget-aware rule (the most probable genotype within every device budget) and the fill rule; with
    ``cfg.derive == "naswot"`` also that rule (``proxy.py``), scored on the images ``x`` (default ``proxy_batch(cfg)``)."""
    alphas = {t: a.detach().cpu() for t, a in model.alphas.items()}
    cm = con.models[cfg.metric]
    argmax = model.derive()
    lp = {t: log_probs(cfg.space, a, cm.op_names) for t, a in alphas.items()}
    out = {"argmax": Derivation(argmax, con.derived(argmax), genotype_log_prob(argmax, lp, cm.op_names, cm.nodes), "argmax")}
    within = _held(con, lambda K: derive_within(cfg.space, alphas, cm.op_names, cm.nodes, con.edge_costs(), con.fixed(), K))
    if within is None:  # check_budget refuses such budgets before training; kept as a guard
        raise UserError(f"no genotype of the space meets every budget ({con.K_d}); raise one of them")
    out["budget"] = within
    filling = _held(con, lambda K: derive_filling(cfg.space, alphas, cm.op_names, cm.nodes, con.edge_costs(), con.fixed(), K,
                                                  cfg.metric, cfg.fill_fraction))
    out["fill"] = filling or within  # no genotype in the window: the budget-aware one
    if cfg.derive == "naswot":
        from .proxy import derive_by_proxy

        x = proxy_batch(cfg) if x is None else x
        out["naswot"] = derive_by_proxy(cfg.space, alphas, cm.op_names, cm.nodes, con, cm.eval_cfg, cfg.fill_fraction,
                                        out["fill"], x.to(next(model.parameters()).device), cfg.proxy_pool, cfg.seed,
                                        rank=cfg.proxy_rank, uniform=cfg.proxy_draw == "uniform")
    return out


HELD_TRIES = 8  # derivations again under a shrunk budget, at most, while a cost that is not a sum over edges is over


def _held(con: Constraints, derive: Callable[[dict[str, float]], Optional[Derivation]]) -> Optional[Derivation]:
    """``derive`` under the device budgets; where a cost model is not additive over edges (a latency model's structure
    model: the knapsacks count its node counts at uniform weights), the derived network's own cost decides: over a
    budget, the derivation is made again under that budget less the overshoot (and 0.2% of it), at most
    ``HELD_TRIES`` times. The derivation's costs are then the cost models' own figures of the derived network."""
    budgets = dict(con.K_d)
    d = derive(budgets)
    if not any(getattr(m.source, "structure", False) for m in con.models.values()):
        return d
    for _ in range(HELD_TRIES):
        if d is None:
            return None
        actual = con.derived(d.genotype)
        over = {m: v for m, v in actual.items() if v > con.K_d[m]}
        if not over:
            break
        budgets.update({m: budgets[m] - (v - con.K_d[m]) - 0.002 * con.K_d[m] for m, v in over.items()})
        d = derive(budgets)
    return None if d is None else replace(d, cost={m: metric_round(m, v) for m, v in con.derived(d.genotype).items()})


def rederive(cfg: SearchConfig, seed_dir: Path) -> Derivation:
    """The derivation of a finished search's final alphas (its ``checkpoint.pt``) under ``cfg``'s budgets:
    the same search, derived again under another budget (``latency.hold`` tightens a latency budget)."""
    return derive_again(cfg, seed_dir)[cfg.derive]


def derive_again(cfg: SearchConfig, seed_dir: Path, *more: Path) -> dict[str, Derivation]:
    """Every derivation of a finished search's final alphas (its ``checkpoint.pt``) by today's rules under ``cfg``'s
    budgets: a derivation is a pure function of the alphas, so a changed rule needs no new search. With ``more``
    searches (seeds of one configuration), of their ensemble: the sum of every search's log-softmax alphas, whose
    softmax is the normalised product of the searches' op distributions on every edge."""
    model = Supernet(supernet_config(cfg))
    states = [load_checkpoint(Path(d) / "checkpoint.pt", "run the search again (--from search)")["model"] for d in (seed_dir, *more)]
    model.load_state_dict(states[0])
    if more:
        with torch.no_grad():
            for t, a in model.alphas.items():
                a.copy_(sum(torch.log_softmax(st[f"alphas.{t}"].double(), dim=-1) for st in states).to(a.dtype))
    return derivations(cfg, model, constraints(cfg))


def final_log_probs(cfg: SearchConfig, seed_dir: Path, genotypes: list) -> list[float]:
    """Each genotype's log-probability under a finished search's final alphas (its ``checkpoint.pt``): the sum over
    its chosen (edge, op) pairs, the objective the derivations maximise. Whether it ranks networks as their trained
    accuracies do says whether the alphas learned anything about this space (``benchmarks/search_vs_random.py``)."""
    cm = constraints(cfg).models[cfg.metric]
    state = load_checkpoint(Path(seed_dir) / "checkpoint.pt", "run the search again (--from search)")["model"]
    lp = {k[len("alphas."):]: log_probs(cfg.space, v, cm.op_names) for k, v in state.items() if k.startswith("alphas.")}
    return [genotype_log_prob(g, lp, cm.op_names, cm.nodes) for g in genotypes]


def finish(cfg: SearchConfig, out: Path, model: Supernet, con: Constraints, history: list, steps: list,
           write: bool = True, phases: Optional[dict[str, float]] = None, x: Optional[torch.Tensor] = None) -> SearchResult:
    """The derivations of the final alphas and the search's summary (written to ``search.json`` when ``write``);
    ``phases``: this process's seconds by phase, the final derivations' joining them as ``finish``."""
    f0 = time.perf_counter()
    cm, K_prime = con.models[cfg.metric], con.K_prime[cfg.metric]
    found = derivations(cfg, model, con, x)
    learned = alpha_record(cfg.space, model.alphas, model.op_names)
    genotype = found[cfg.derive].genotype
    cost = network_cost(genotype, cm.eval_cfg)
    derived = metric_round(cfg.metric, cm.derived(genotype))
    summary = dict(space=cfg.space, dataset=cfg.dataset, metric=cfg.metric, K_d=cfg.budget, K_prime=K_prime,
                   derive=cfg.derive, budgets=con.K_d,
                   derived_params=cost.params, derived_flops=cost.flops, derived_cost=derived,
                   **{f"derived_{m}": metric_round(m, v) for m, v in con.derived(genotype).items() if m not in ("params", "flops")},
                   under_budget=con.within(genotype), rel_error=(derived - cfg.budget) / cfg.budget,
                   val_acc=history[-1]["val_acc"] if history else math.nan,
                   separated=separated(learned), learned=separation_note(learned, cfg.chooser()),
                   eval_config=cm.eval_cfg.to_json(), genotype=genotype.to_json(),
                   derivations={k: d.to_json() for k, d in found.items()},
                   seconds=sum(r["seconds"] for r in history), feasible_range=list(cm.feasible_range()),
                   epochs_run=len(history))
    if phases is not None:
        summary["phases"] = {**phases, "finish": time.perf_counter() - f0}
    if write:
        write_json(out / "genotype.json", genotype.to_json())
        write_json(out / "search.json", dict(config=cfg.to_json(), summary=summary, epochs=history, steps=steps))
    return SearchResult(genotype, summary, out, {t: a.detach().cpu().clone() for t, a in model.alphas.items()})

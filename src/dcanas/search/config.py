"""A search's configuration and what follows from it alone: presets, the evaluation network the
budget refers to, the supernet, the cost model, and the budget checks (feasible range, fitting the
evaluation network to the budget). No training and no LUG here: the LUG and the loop import this."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional

from ..data import datasets as D
from ..errors import UserError
from ..files import file_sha256
from ..nets.config import NetConfig, default_config
from ..nets.spaces import space
from ..costs.metrics import metric, metric_text, primary
from ..presets import DERIVE_RULES, PROXY_DRAWS, SEARCH_PRESETS
from ..presets import apply_preset as _apply_preset
from .constraint import Constraints, CostModel
from .supernet import SearchOptions, SupernetConfig


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
    warmup_epochs: int = 0               # the first epochs train w alone, alpha and lambda held (PC-DARTS: 15 of 50)
    # fixed: eq. 4's term as written (lambda in units of the loss per unit of violation); adaptive: the term's
    # gradient rescaled to the loss gradient's norm (constraint.add_constraint_gradients)
    lambda_step: str = "fixed"
    rederive_every: int = 1
    options: SearchOptions = field(default_factory=SearchOptions)
    device: str = "auto"
    fused: bool = True                   # the fused cells and search-time op forms (equal to the eager path; speed only)
    amp: bool = False
    # fill (default): the most probable genotype with the primary cost in [fill_fraction x K_d, K_d] and within every
    # budget (else the budget rule); budget: the most probable within every budget; argmax: the paper's rule;
    # naswot: of the fill pick and proxy_pool - 1 networks drawn from the alphas in the fill window (proxy_draw
    # "alphas"), or of proxy_pool networks drawn uniformly there ("uniform"), the proxy_rank-th highest NASWOT score at
    # initialisation (search/proxy.py; not the paper's)
    derive: str = "fill"
    fill_fraction: float = 0.95
    proxy_pool: int = 100
    proxy_rank: int = 1
    proxy_draw: str = "alphas"
    extra_budgets: dict[str, float] = field(default_factory=dict)  # more constraints (metric -> K_d), one lambda each
    size_format: str = "tflite"  # the export format a model_size_kb budget refers to (the device profile's runtime)
    latency_model: Optional[str] = None  # a latency model file (dcanas latency build/fit): needed for a latency_ms budget

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

    def chooser(self) -> Optional[str]:
        """What picks the network when its derivation reads no architecture weights (the naswot derivation's uniform
        draw), said as a clause; None when the final alphas choose it."""
        if self.derive == "naswot" and self.proxy_draw == "uniform":
            r = self.proxy_rank
            nth = f"{r}{'th' if 10 <= r % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(r % 10, 'th')}"
            return (f"the network is the {nth} highest NASWOT score at initialisation among "
                    f"{self.proxy_pool} networks drawn uniformly from the budget's window")
        return None


def identity(cfg: SearchConfig) -> dict[str, Any]:
    """The configuration as data that says what a search computes: a latency model by its content (sha256), not by
    the path it was read from (a run folder, a cache), a ``folder:`` dataset by its files. Stage input hashes and LUG
    keys are made from this."""
    d = cfg.to_json()
    d["dataset"] = D.dataset_identity(cfg.dataset)  # a folder: tree by what it holds, not only by its path
    if cfg.latency_model:
        d["latency_model"] = "sha256:" + file_sha256(cfg.latency_model)
    return d


def apply_preset(cfg: SearchConfig, name: Optional[str]) -> SearchConfig:
    """``cfg`` with a search preset's overrides; a preset's ``options`` (a dict, the table being torch-free) are merged
    into the search options."""
    options = SEARCH_PRESETS.get(name or "", {}).get("options")
    table = {k: {f: v for f, v in p.items() if f != "options"} for k, p in SEARCH_PRESETS.items()}
    cfg = _apply_preset(cfg, table, name, "search")
    return replace(cfg, options=replace(cfg.options, **options)) if options else cfg


def eval_config(cfg: SearchConfig) -> NetConfig:
    spec = D.get_spec(cfg.dataset)
    return default_config(cfg.space, in_channels=spec.in_channels, input_size=spec.size, num_classes=spec.num_classes,
                          C=cfg.eval_C, layers=cfg.eval_layers)


def supernet_config(cfg: SearchConfig) -> SupernetConfig:
    spec = D.get_spec(cfg.dataset)
    nodes = space(cfg.space).nodes(cfg.nodes)
    return SupernetConfig(space=cfg.space, C=cfg.C, cells=cfg.cells, nodes=nodes, num_classes=spec.num_classes,
                          in_channels=spec.in_channels, input_size=spec.size, options=cfg.options)


def cost_model(cfg: SearchConfig) -> CostModel:
    sp = space(cfg.space)  # an unknown space is one clear error
    if cfg.metric not in primary():
        raise UserError(f"unknown metric {cfg.metric!r}; valid: {', '.join(primary())}")
    scfg = supernet_config(cfg)
    return CostModel(cfg.space, eval_config(cfg), sp.ops, scfg.nodes, cfg.metric, cfg.size_format,
                     latency_model_of(cfg), cfg.options.edge_weight)


def latency_model_of(cfg: SearchConfig):
    """The search's latency model (loaded once per file), or None when no latency budget needs one."""
    if "latency_ms" not in budgets(cfg):
        return None
    if not cfg.latency_model:
        raise UserError("a latency_ms budget needs a latency model: --latency-model FILE (made by dcanas latency build "
                        "--device D, or dcanas latency fit --csv F)")
    from ..costs.latency import load_latency_model

    return load_latency_model(cfg.latency_model)


LAMBDA_STEPS = ("fixed", "adaptive")


def budgets(cfg: SearchConfig) -> dict[str, float]:
    """Every device budget the search obeys: the primary metric's K_d and the extra ones."""
    return {cfg.metric: cfg.budget, **cfg.extra_budgets}


def cost_models(cfg: SearchConfig) -> dict[str, CostModel]:
    """One cost model per budgeted metric (the primary first)."""
    primary = cost_model(cfg)
    return {m: primary if m == cfg.metric else replace_metric(primary, m) for m in budgets(cfg)}


def constraints(cfg: SearchConfig, K_prime: Optional[float] = None) -> Constraints:
    """Every budget of the search, built once: a cost model per budgeted metric, the device budgets K_d, and eq. 4's
    targets (the primary metric's ``K_prime``, else the config's search budget or K_d; the others' K_d)."""
    K_d = budgets(cfg)
    primary = K_prime if K_prime is not None else (cfg.search_budget or cfg.budget)
    return Constraints(cfg.metric, cost_models(cfg), K_d, {**K_d, cfg.metric: float(primary)})


def replace_metric(cm: CostModel, metric: str) -> CostModel:
    return CostModel(cm.space, cm.eval_cfg, cm.op_names, cm.nodes, metric, cm.size_format, cm.latency, cm.edge_weight)


def check_budget(cfg: SearchConfig, cm: CostModel) -> None:
    """An infeasible budget is refused before any training: one line naming the binding budget and the
    feasible range of the evaluation network (``fit_eval_network`` widens or narrows it in a run), or
    saying that no network of the space meets every budget at once."""
    if cfg.derive not in DERIVE_RULES:
        raise UserError(f"unknown derivation {cfg.derive!r}; valid: {', '.join(DERIVE_RULES)}")
    if cfg.proxy_pool < 1:
        raise UserError(f"--proxy-pool must be >= 1 (the networks the naswot derivation scores), got {cfg.proxy_pool}")
    if not 1 <= cfg.proxy_rank <= cfg.proxy_pool:
        raise UserError(f"--proxy-rank {cfg.proxy_rank} is not a rank in a pool of --proxy-pool {cfg.proxy_pool}; "
                        f"give 1 .. {cfg.proxy_pool}")
    if cfg.proxy_draw not in PROXY_DRAWS:
        raise UserError(f"unknown proxy draw {cfg.proxy_draw!r}; valid: {', '.join(PROXY_DRAWS)}")
    if cfg.lambda_step not in LAMBDA_STEPS:
        raise UserError(f"unknown lambda step {cfg.lambda_step!r}; valid: {', '.join(LAMBDA_STEPS)}")
    where = (f"the {cfg.space} space can derive at C={cm.eval_cfg.C}, layers={cm.eval_cfg.layers} on {cfg.dataset}")
    for m, K in budgets(cfg).items():
        lo, hi = (cm if m == cfg.metric else replace_metric(cm, m)).feasible_range()
        # the primary budget must lie in the range (the search fills it); another budget only bounds from
        # above, so one over the most expensive network simply never binds
        if K < lo or (m == cfg.metric and K > hi):
            raise UserError(f"budget {m}={metric_text(m, K)} is outside what {where}: feasible range {metric_text(m, lo)} .. "
                            f"{metric_text(m, hi)}; choose a budget in it or change --eval-channels/--eval-layers")
    if cfg.extra_budgets:
        import torch

        from .derive import derive_within

        con = constraints(cfg)
        uniform = {k: torch.zeros(len(cm.edges), len(cm.op_names)) for k in space(cfg.space).cell_kinds}
        if derive_within(cfg.space, uniform, cm.op_names, cm.nodes, con.edge_costs(), con.fixed(), con.K_d) is None:
            raise UserError(f"no network {where} meets every budget at once ({', '.join(f'{m}={metric_text(m, K)}' for m, K in budgets(cfg).items())}); "
                            f"raise one of them")


def fit_eval_network(cfg: SearchConfig, max_C: int = 256) -> tuple[SearchConfig, Optional[str]]:
    """``cfg`` with an evaluation-network width whose feasible range holds the budget, and a line
    saying what changed (None when the preset's network already fits). The search from the widened
    or narrowed network keeps its layers; the nearest even C that fits wins."""
    if metric(cfg.metric).per_device:  # its model was measured on the device for this evaluation network: keep it
        return cfg, None
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

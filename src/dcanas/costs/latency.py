"""The latency model: a network's latency on one device as a sum over its op instances, so that it is
additive over a genotype's (edge, op) choices like params and FLOPs (the search's k_s, eq. 3, and the
knapsack derivations take it unchanged).

    latency(net) = theta_0 + sum over op types o of theta_o x sum over the instances of o of base(instance)

``base`` is the instance's time measured alone on the device, less the runtime's per-call cost (a
one-add model of the same input shape; basis "table": ``latency build``), or
its analytic work when only end-to-end measurements exist (basis "work": ``latency fit``; MMACs for
ops with weights, million input elements for pools and skips). theta_0 holds what no instance owns
(stem, preprocessing and head in the table basis; session overhead); theta_o corrects what timing an
op alone misses (fusion, cache effects, per-layer overhead). Fitted by least squares on relative
errors to end-to-end measurements, pulled toward a prior (table basis: theta_0 = the measured fixed
part, theta_o = 1) so that 5-20 networks are enough.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from ..errors import UserError
from ..files import write_json
from ..nets.config import NetConfig
from ..nets.cost import darts_edge_shape, op_cost
from ..nets.darts import genotype_layout
from ..nets.genotype import DartsGenotype, Genotype, NB201Genotype
from ..nets.nb201 import nb201_layout

Instance = tuple[str, int, int, int, int]  # (op, C_in, C_out, stride, input size)
RIDGES = (0.0, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)  # the pull toward the prior, chosen by leave-one-out on the rows


def instance_key(inst: Instance) -> str:
    return ":".join(str(v) for v in inst)


def instances(genotype: Genotype, cfg: NetConfig) -> list[Instance]:
    """Every searched op instance of the evaluation network (none included: it costs nothing)."""
    out: list[Instance] = []
    if isinstance(genotype, DartsGenotype):
        for slot in genotype_layout(genotype, cfg):
            for op, src in (genotype.reduce if slot.reduction else genotype.normal):
                out.append((op, *darts_edge_shape(slot, src)))
        return out
    assert isinstance(genotype, NB201Genotype)
    for s in nb201_layout(cfg):
        if not s.reduction:
            out += [(op, s.C_out, s.C_out, 1, s.size) for node in genotype.nodes for op, _ in node]
    return out


def work(inst: Instance) -> float:
    """The analytic basis: MMACs, or for an op without multiply-accumulates the million elements it reads."""
    op, C_in, C_out, stride, size = inst
    if op == "none":
        return 0.0
    macs = op_cost(op, C_in, C_out, stride, size).flops
    return macs / 1e6 if macs else C_in * size * size / 1e6


@dataclass
class LatencyModel:
    space: str
    eval_config: dict[str, Any]
    op_names: list[str]                      # the theta_o order
    basis: str                               # "table" | "work"
    intercept: float                         # theta_0, ms
    weights: dict[str, float]                # theta_o
    table: dict[str, float] = field(default_factory=dict)  # instance key -> ms alone on the device
    fixed_ms: Optional[float] = None         # measured stem + preprocessing + head (table basis)
    device: dict[str, Any] = field(default_factory=dict)   # what it was measured on, and under which conditions
    calibration: list[dict[str, Any]] = field(default_factory=list)  # [{genotype, measured_ms, predicted_ms}]
    stats: dict[str, Any] = field(default_factory=dict)
    margin: float = 0.0  # the largest leave-one-out under-prediction on the calibration rows (relative): the search's bound
    # The graph model (fit_graph): latency from a network's node counts per op type as the runtime runs it.
    graph_intercept: float = 0.0
    graph_weights: dict[str, float] = field(default_factory=dict)  # op type -> ms per node
    graph_stats: dict[str, Any] = field(default_factory=dict)
    # The structure model (fit_structure): the table's terms plus the runtime graph's node counts that are not a sum over
    # ops (shared ReLUs, fused Adds, layout reorders), counted from the genotype (costs/runtime_graph.py), no export.
    structure_types: list[str] = field(default_factory=list)
    structure_theta: list[float] = field(default_factory=list)  # theta_0, theta_o (op_names order), then ms per node
    structure_stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def unfitted_work(cls, space: str, eval_config: dict[str, Any], **kw: Any) -> "LatencyModel":
        """A model on the analytic-work basis (end-to-end rows only), one weight per derivable op type; fit it."""
        from ..nets.ops import SPACE_OPS

        ops = sorted(o for o in SPACE_OPS[space] if o != "none")
        return cls(space=space, eval_config=eval_config, op_names=ops, basis="work", intercept=0.0,
                   weights={o: 0.0 for o in ops}, **kw)

    @property
    def net(self) -> NetConfig:
        return NetConfig.from_json(self.eval_config)

    def base(self, inst: Instance) -> float:
        if inst[0] == "none":
            return 0.0
        if self.basis == "work":
            return work(inst)
        try:
            return self.table[instance_key(inst)]
        except KeyError:
            raise UserError(f"the latency model has no measurement for {inst[0]} at C={inst[1]}, stride {inst[3]}, size {inst[4]}: "
                            f"it was built for another evaluation network; rebuild it (dcanas latency build)") from None

    def instance_ms(self, inst: Instance) -> float:
        """What one op instance adds to the predicted latency (the per-edge cost the search sums)."""
        return self.weights.get(inst[0], 0.0) * self.base(inst)

    def features(self, genotype: Genotype) -> list[float]:
        phi = {o: 0.0 for o in self.op_names}
        for inst in instances(genotype, self.net):
            if inst[0] in phi:
                phi[inst[0]] += self.base(inst)
        return [1.0] + [phi[o] for o in self.op_names]

    def theta(self) -> list[float]:
        return [self.intercept] + [self.weights[o] for o in self.op_names]

    def predict(self, genotype: Genotype) -> float:
        return sum(t * f for t, f in zip(self.theta(), self.features(genotype)))

    def bound(self, genotype: Genotype) -> float:
        """The prediction raised by its margin: what a search holds under the budget, so that a network
        at the budget by the model is still within it when the model errs as much as it did on a
        calibration network it had not seen. The table model's is ``bound_fixed_ms`` plus each instance's bound; the
        structure model's (where fitted) is not a sum over instances."""
        s = self.predict_structure(genotype)
        return (1.0 + self.margin) * self.predict(genotype) if s is None else self.structure_scale() * s

    def bound_instance_ms(self, inst: Instance) -> float:
        return (1.0 + self.margin) * self.instance_ms(inst)

    def bound_fixed_ms(self) -> float:
        return (1.0 + self.margin) * self.intercept

    def table_only(self, genotype: Genotype) -> float:
        """The per-op table alone: measured fixed part (with one per-call cost) plus each instance's time
        alone less its per-call cost (no fit)."""
        if self.basis != "table" or self.fixed_ms is None:
            raise UserError("this latency model has no per-op table (built by latency fit from end-to-end rows)")
        return self.fixed_ms + sum(self.base(i) for i in instances(genotype, self.net))

    def fit(self, rows: Sequence[tuple[Genotype, float]], ridge: Optional[float] = None) -> "LatencyModel":
        """Least squares on relative errors, pulled toward the prior by ``ridge`` (None: the value of
        ``RIDGES`` with the smallest leave-one-out relative error on these rows); fills
        ``calibration`` and ``stats``."""
        import numpy as np

        if not rows:
            raise UserError("no end-to-end measurements to fit the latency model to")
        Phi = np.array([self.features(g) for g, _ in rows], dtype=np.float64)
        y = np.array([ms for _, ms in rows], dtype=np.float64)
        prior = self._prior(Phi, y)
        if ridge is None:
            ridge, ridge_loo = _choose_ridge(Phi, y, prior)
            self.stats = dict(ridge_loo=ridge_loo)
        theta = _solve(Phi, y, prior, ridge)
        loo = _loo_predictions(Phi, y, prior, ridge) if len(rows) >= 3 else Phi @ theta
        self.margin = float(max(0.0, float(((y - loo) / loo).max())))
        self.intercept = float(theta[0])
        self.weights = {o: float(t) for o, t in zip(self.op_names, theta[1:])}
        pred = Phi @ theta
        self.calibration = [dict(genotype=g.to_json(), measured_ms=float(m), predicted_ms=float(p))
                            for (g, m), p in zip(rows, pred)]
        self.stats = {**self.stats, **agreement(pred, y), "rows": len(rows), "ridge": ridge}
        flags = [f"{len(rows)} networks, fewer than the model's {Phi.shape[1]} terms: the weights are mostly the prior's"
                 ] if len(rows) < Phi.shape[1] else []
        if len(np.unique(y)) < 2 or len(np.unique(Phi, axis=0)) < 2:
            flags.append("every network measured (or built) the same: the fit cannot rank networks")
        if flags:
            self.stats["degenerate"] = "; ".join(flags)
        return self

    def fit_graph(self, rows: Sequence[tuple[dict[str, int], float]], ridge: Optional[float] = None) -> "LatencyModel":
        """The graph model: latency = c_0 + sum over op types t of c_t x (nodes of type t in the graph the
        runtime runs), least squares on relative errors like ``fit``, pulled toward every node costing the
        calibration networks' mean time per node. Not additive over a genotype's edges (the runtime's
        fusions, shared nodes and layout reorders depend on neighbouring ops), so the search cannot sum it;
        it predicts a built network: the verdict's and the benchmark's second prediction (how well it ranks:
        design note 17)."""
        import numpy as np

        rows = [(c, ms) for c, ms in rows if c]
        if len(rows) < 2:
            raise UserError("the graph model needs the node counts of at least 2 measured networks")
        types = sorted({t for c, _ in rows for t in c})
        Phi = np.array([[1.0] + [float(c.get(t, 0)) for t in types] for c, _ in rows])
        y = np.array([ms for _, ms in rows], dtype=np.float64)
        prior = np.array([0.0] + [float(y.mean() / Phi[:, 1:].sum(axis=1).mean())] * len(types))
        ridge_loo: dict[str, float] = {}
        if ridge is None:
            ridge, ridge_loo = _choose_ridge(Phi, y, prior)
        theta = _solve(Phi, y, prior, ridge)
        self.graph_intercept = float(theta[0])
        self.graph_weights = {t: float(w) for t, w in zip(types, theta[1:])}
        loo_pred = _loo_predictions(Phi, y, prior, ridge) if len(rows) >= 3 else Phi @ theta
        self.graph_stats = {**agreement(Phi @ theta, y), "rows": len(rows), "ridge": ridge,
                            "loo": agreement(loo_pred, y), "ridge_loo": ridge_loo}
        return self

    def predict_graph(self, counts: dict[str, int]) -> Optional[float]:
        """The graph model's latency for a network with these node counts (None: no graph model, or an op
        type no calibration network had, whose cost it cannot know)."""
        if not self.graph_weights or any(t not in self.graph_weights for t in counts):
            return None
        return self.graph_intercept + sum(w * counts.get(t, 0) for t, w in self.graph_weights.items())

    def node_counts(self, genotype: Genotype) -> Optional[dict[str, int]]:
        """The runtime graph's node counts per type, counted from the genotype (None: the rules do not cover it)."""
        from .runtime_graph import ort_node_counts

        return ort_node_counts(genotype, self.net)

    def _structure_features(self, genotype: Genotype, counts: dict[str, int], form: str) -> list[float]:
        nodes = [float(counts.get(t, 0)) for t in self.structure_types]
        return self.features(genotype) + nodes if form == "table" else [1.0] + nodes

    def fit_structure(self, rows: Sequence[tuple[Genotype, float, Optional[dict[str, int]]]],
                      ridge: Optional[float] = None) -> "LatencyModel":
        """The structure model: latency from the runtime graph's node counts derived from the genotype
        (``costs/runtime_graph.py``), in the form of the two with the smaller leave-one-out error on these rows:
        "table", the table's terms (as ``fit``) plus c_t x (nodes of type t) for each type whose count varies and is
        not a sum over ops (Conv is the table's), pulled toward the table's prior and 0 ms per node; or "nodes",
        c_0 + c_t x (nodes of type t) over every type (the graph model's form, on derived counts), pulled toward every
        node costing the rows' mean time per node. A node weight's pull is in units of that mean time per node. Least
        squares on relative errors; the ridge by leave-one-out unless given. Fitted only where the derived counts
        equal the runtime's own graph on every row that has one (each row: genotype, measured ms, the runtime's node
        counts or None); ``structure_stats`` says why not otherwise."""
        import numpy as np

        counts = [self.node_counts(g) for g, _, _ in rows]
        checked = [(c, r) for c, (_, _, r) in zip(counts, rows) if r]
        self.structure_types, self.structure_theta = [], []
        self.structure_stats = dict(checked=len(checked), equal=sum(c == r for c, r in checked))
        if any(c is None for c in counts) or len(rows) < 3:
            self.structure_stats["unused"] = "the runtime graph's rules do not cover this space or network"
            return self
        if self.structure_stats["equal"] < len(checked):
            self.structure_stats["unused"] = (f"the counts derived from the genotype differ from the runtime's graph on "
                                              f"{len(checked) - self.structure_stats['equal']} of {len(checked)} networks")
            return self
        y = np.array([ms for _, ms, _ in rows], dtype=np.float64)
        fits = {}
        for form in ("table", "nodes"):
            self.structure_types = sorted(t for t in {t for c in counts for t in c}
                                          if len({c.get(t, 0) for c in counts}) > 1 and (form == "nodes" or t != "Conv"))
            Phi = np.array([self._structure_features(g, c, form) for (g, _, _), c in zip(rows, counts)], dtype=np.float64)
            prior, scale = self._structure_prior(form, counts, rows, y)
            r, ridge_loo = (ridge, {}) if ridge is not None else _choose_ridge(Phi, y, prior, scale)
            loo = _loo_predictions(Phi, y, prior, r, scale)
            theta = _solve(Phi, y, prior, r, scale)
            fits[form] = (float(np.mean(np.abs(loo - y) / y)), list(self.structure_types), theta, loo,
                          dict(agreement(Phi @ theta, y), ridge=r, loo=agreement(loo, y), ridge_loo=ridge_loo))
        form = min(fits, key=lambda f: (fits[f][0], f != "table"))  # a tie: the table's form
        _, self.structure_types, theta, loo, stats = fits[form]
        self.structure_theta = [float(t) for t in theta]
        self.structure_stats.update(stats, form=form, rows=len(rows), loo_mape={f: v[0] for f, v in fits.items()},
                                    margin=float(max(0.0, float(((y - loo) / loo).max()))))  # as ``fit``'s margin
        return self

    def _structure_prior(self, form: str, counts: list[dict[str, int]], rows: Sequence, y) -> tuple[Any, Any]:
        """(prior, scale) of the structure model's form on these rows (``structure_types`` set for that form)."""
        import numpy as np

        per_node = float(y.mean() / max(sum(sum(c.values()) for c in counts) / len(counts), 1.0))
        k, n_table = len(self.structure_types), 1 + len(self.op_names)
        if form == "table":
            Phi = np.array([self.features(g) for g, _, _ in rows], dtype=np.float64)
            prior = np.concatenate([self._prior(Phi, y), np.zeros(k)])
            return prior, np.concatenate([np.maximum(np.abs(prior[:n_table]), 1e-3 * float(y.mean())), np.full(k, per_node)])
        totals = np.array([sum(c.get(t, 0) for t in self.structure_types) for c in counts], dtype=np.float64)
        # the intercept holds what no varying count does (the fixed nodes); its pull is as weak as a node's
        return (np.array([float(y.mean() - per_node * totals.mean())] + [per_node] * k),
                np.array([float(y.mean())] + [per_node] * k))

    # What the search and the derivations use: the structure model where it is fitted and covers the network, else
    # the table model. The structure model splits into a part additive over op instances (the table's terms, or the
    # convolutions' nodes) and node counts the search takes in expectation (costs/runtime_graph.expected_node_counts).
    def predict_used(self, genotype: Genotype) -> float:
        s = self.predict_structure(genotype)
        return self.predict(genotype) if s is None else s

    def structure_scale(self) -> float:
        return 1.0 + float(self.structure_stats.get("margin", 0.0))

    def structure_instance_ms(self, inst: Instance) -> float:
        """The structure model's additive part of one op instance (unscaled): theta_o x its table time (table form), or
        the weight of a Conv node x the instance's convolutions (nodes form)."""
        from .runtime_graph import conv_nodes

        if inst[0] == "none":
            return 0.0
        if self.structure_stats.get("form", "table") == "table":
            return self.structure_theta[1 + self.op_names.index(inst[0])] * self.base(inst) if inst[0] in self.op_names else 0.0
        return self.count_weights().get("Conv", 0.0) * conv_nodes(inst[0], inst[3])

    def count_weights(self) -> dict[str, float]:
        """ms per node of each counted type (Conv included in the nodes form)."""
        off = 1 + len(self.op_names) if self.structure_stats.get("form", "table") == "table" else 1
        return dict(zip(self.structure_types, self.structure_theta[off:]))

    def predict_structure(self, genotype: Genotype) -> Optional[float]:
        """The structure model's latency (None: not fitted, or the rules do not cover this genotype)."""
        counts = self.node_counts(genotype) if self.structure_theta else None
        if counts is None:
            return None
        features = self._structure_features(genotype, counts, self.structure_stats.get("form", "table"))
        return float(sum(t * f for t, f in zip(self.structure_theta, features)))

    def _prior(self, Phi, y):
        import numpy as np

        if self.basis == "table":
            return np.array([self.fixed_ms or 0.0] + [1.0] * len(self.op_names))
        # one slope over all ops' work and an intercept: where the per-op weights start from
        total = Phi[:, 1:].sum(axis=1)
        A = np.stack([np.ones_like(total), total], axis=1) / y[:, None]
        (a, b), *_ = np.linalg.lstsq(A, np.ones_like(y), rcond=None)
        return np.array([max(a, 0.0)] + [max(b, 0.0)] * len(self.op_names))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "LatencyModel":
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        return write_json(Path(path), dict(kind="dcanas-latency-model", version=1, **self.to_json()))


def load_latency_model(path: str | Path) -> LatencyModel:
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(f"latency model {p} does not exist; build one with dcanas latency build or dcanas latency fit") from None
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{p} is not a latency model (not JSON)") from None
    if not isinstance(d, dict) or d.pop("kind", None) != "dcanas-latency-model":
        raise UserError(f"{p} is not a dcanas latency model")
    d.pop("version", None)
    unknown = sorted(set(d) - {f.name for f in fields(LatencyModel)})
    if unknown:
        raise UserError(f"{p}: not a latency model of this dcanas version (unknown field {unknown[0]!r}); rebuild it")
    _check_fields(d, p)
    return LatencyModel.from_json(d)


def _finite(v: Any, lo: float = -math.inf) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= lo


def _check_fields(d: dict[str, Any], p: Path) -> None:
    """Every field of a model file type-checked (a hand-edited or damaged file gets one line naming the field, not a
    KeyError or TypeError in the middle of a search)."""
    from ..nets.ops import SPACE_OPS

    def bad(name: str, want: str) -> UserError:
        return UserError(f"{p}: {name} {want}; the file was edited or damaged: rebuild it (dcanas latency build or fit)")

    space = d.get("space")
    if space not in SPACE_OPS:
        raise bad("space", f"is {space!r}, not one of {', '.join(SPACE_OPS)}")
    if d.get("basis") not in ("table", "work"):
        raise bad("basis", f"is {d.get('basis')!r}, not table or work")
    ec = d.get("eval_config")
    try:
        net = NetConfig.from_json(ec)
    except TypeError:
        raise bad("eval_config", "is not an evaluation network (C, layers, num_classes, ...)") from None
    for name in ("C", "layers", "num_classes", "in_channels", "input_size"):
        v = getattr(net, name)
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise bad(f"eval_config.{name}", f"is {v!r}, not an integer >= 1")
    ops = d.get("op_names")
    if not isinstance(ops, list) or not ops or not all(o in SPACE_OPS[space] for o in ops):
        raise bad("op_names", f"is {ops!r}, not a list of the {space} space's ops")
    weights = d.get("weights")
    if not isinstance(weights, dict):
        raise bad("weights", "is not a table op -> number")
    for o in ops:
        if not _finite(weights.get(o)):
            raise bad(f"weights[{o!r}]", f"is {weights.get(o)!r}, not a finite number" if o in weights else "is missing")
    for name, lo in (("intercept", -math.inf), ("margin", 0.0), ("graph_intercept", -math.inf)):
        if name in d and not _finite(d[name], lo):
            raise bad(name, f"is {d[name]!r}, not a finite number" + (f" >= {lo:g}" if lo > -math.inf else ""))
    if d.get("fixed_ms") is not None and not _finite(d["fixed_ms"], 0.0):
        raise bad("fixed_ms", f"is {d['fixed_ms']!r}, not a finite number of ms >= 0")
    for name in ("table", "graph_weights"):
        table = d.get(name, {})
        if not isinstance(table, dict):
            raise bad(name, "is not a table name -> number")
        k = next((k for k, v in table.items() if not _finite(v, 0.0 if name == "table" else -math.inf)), None)
        if k is not None:
            raise bad(f"{name}[{k!r}]", f"is {table[k]!r}, not a finite number" + (" of ms >= 0" if name == "table" else ""))
    for name, kind in (("device", dict), ("calibration", list), ("stats", dict), ("graph_stats", dict), ("structure_types", list),
                       ("structure_theta", list), ("structure_stats", dict)):
        if not isinstance(d.get(name, kind()), kind):
            raise bad(name, f"is not a {kind.__name__}")


def _solve(Phi, y, prior, ridge: float, scale=None):
    """argmin sum((Phi theta - y) / y)^2 + ridge * sum((theta - prior) / scale)^2; scale: |prior|, at least 1e-3 x the mean
    of y, unless given."""
    import numpy as np

    if scale is None:
        scale = np.maximum(np.abs(prior), 1e-3 * max(float(y.mean()), 1e-9))
    A = np.vstack([Phi / y[:, None], math.sqrt(ridge) * np.diag(1 / scale)])
    b = np.concatenate([np.ones_like(y), math.sqrt(ridge) * prior / scale])
    theta, *_ = np.linalg.lstsq(A, b, rcond=None)
    return theta


def _loo_predictions(Phi, y, prior, ridge: float, scale=None):
    """Each row predicted by the fit to the others."""
    import numpy as np

    out = np.empty_like(y)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        out[i] = float(Phi[i] @ _solve(Phi[keep], y[keep], prior, ridge, scale))
    return out


def _choose_ridge(Phi, y, prior, scale=None) -> tuple[float, dict[str, float]]:
    """The value of ``RIDGES`` with the smallest leave-one-out relative error (ties: the larger pull), and
    each value's error; under 3 rows, no leave-one-out: the second largest."""
    if len(y) < 3:
        return RIDGES[-2], {str(RIDGES[-2]): float("nan")}
    loo = {r: _loo_error(Phi, y, prior, r, scale) for r in RIDGES}
    return min(loo, key=lambda r: (loo[r], -r)), {str(r): e for r, e in loo.items()}


def _loo_error(Phi, y, prior, ridge: float, scale=None) -> float:
    """Mean relative error of each row predicted by the fit to the others."""
    import numpy as np

    return float(np.mean(np.abs(_loo_predictions(Phi, y, prior, ridge, scale) - y) / y))


def _ranks(x):
    import numpy as np

    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x), dtype=np.float64)
    r[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):  # ties share their mean rank
        tied = x == v
        r[tied] = r[tied].mean()
    return r


def agreement(pred: Iterable[float], measured: Iterable[float]) -> dict[str, float]:
    """Spearman, Kendall (tau-b), MAPE and the share within +-10% of predictions against measurements."""
    import numpy as np

    p, m = np.asarray(list(pred), dtype=np.float64), np.asarray(list(measured), dtype=np.float64)
    rel = np.abs(p - m) / m
    out = dict(mape=float(rel.mean()), within_10=float((rel <= 0.10).mean()))
    if len(p) >= 3:
        out["spearman"] = float(np.corrcoef(_ranks(p), _ranks(m))[0, 1])
        dp, dm = np.sign(p[:, None] - p[None, :]), np.sign(m[:, None] - m[None, :])
        iu = np.triu_indices(len(p), 1)
        s, tp, tm = float((dp * dm)[iu].sum()), float((dp != 0)[iu].sum()), float((dm != 0)[iu].sum())
        out["kendall"] = s / math.sqrt(tp * tm) if tp and tm else float("nan")
    return out

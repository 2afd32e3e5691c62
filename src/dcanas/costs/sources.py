"""Cost sources: what predicts a metric for a search, behind one protocol.

A source gives the cost of one op instance (op, C_in, C_out, stride, input size) of the evaluation
network, the part every network of the space adds once (stem, preprocessing, head; an exported
format's base bytes; a latency model's theta_0), and the cost of a whole built genotype. Each is
additive over a genotype's (edge, op) choices, which eq. 3's k_s and the knapsack derivations rely on; a latency
model's structure model adds a part that is not (``PredictedLatency.extra``: k_s takes it in expectation, and a
derivation it puts over a budget is derived again, ``search.searcher.derivations``).

- ``counter``: the analytic counter (``nets/cost.py``), params and FLOPs;
- ``size``: the model-size model (``costs/size.py``) on the counter's graph counts;
- ``latency``: a latency model measured on the device (``costs/latency.py``), its upper bound.

The metric registry (``costs/metrics.py``) names each metric's source; :func:`make_source` builds it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

from ..errors import UserError
from ..nets.config import NetConfig
from ..nets.cost import Cost, network_cost, op_cost
from ..nets.genotype import Genotype, random_genotype
from ..nets.spaces import SPACES
from .latency import LatencyModel, instances
from .runtime_graph import conv_nodes, covers, expected_node_counts, ort_node_counts
from .metrics import METRICS, metric
from .size import size_model


class CostSource(Protocol):
    kind: str  # "analytic" (counted) or "predicted" (a fitted model): how the verdict labels its figure

    def instance(self, op: str, C_in: int, C_out: int, stride: int, size: int) -> float: ...

    def fixed(self) -> float: ...

    def network(self, genotype: Genotype) -> float: ...


def fixed_cost(space: str, eval_cfg: NetConfig, nodes: int) -> Cost:
    """Stem, preprocessing and head of the evaluation network (everything outside the searched edges)."""
    return SPACES[space].fixed_cost(eval_cfg, nodes)


@dataclass
class Counted:
    """params or FLOPs, counted."""

    name: str
    space: str
    eval_cfg: NetConfig
    nodes: int
    kind: str = "analytic"

    def instance(self, op: str, C_in: int, C_out: int, stride: int, size: int) -> float:
        return op_cost(op, C_in, C_out, stride, size).get(self.name)

    def fixed(self) -> float:
        return fixed_cost(self.space, self.eval_cfg, self.nodes).get(self.name)

    def network(self, genotype: Genotype) -> float:
        return network_cost(genotype, self.eval_cfg).get(self.name)


@dataclass
class PredictedSize:
    """The exported file's KB for ``fmt``, predicted from the counted graph."""

    fmt: str
    space: str
    eval_cfg: NetConfig
    nodes: int
    kind: str = "predicted"

    def __post_init__(self) -> None:
        self.model = size_model(self.fmt)

    def _kb(self, c: Cost) -> float:
        return self.model.variable_bytes(c.params, c.layers, c.channels, c.avgpools) / 1024

    def instance(self, op: str, C_in: int, C_out: int, stride: int, size: int) -> float:
        return self._kb(op_cost(op, C_in, C_out, stride, size))

    def fixed(self) -> float:
        return self.model.base_bytes() / 1024 + self._kb(fixed_cost(self.space, self.eval_cfg, self.nodes))

    def network(self, genotype: Genotype) -> float:
        return self.model.base_bytes() / 1024 + self._kb(network_cost(genotype, self.eval_cfg))


@dataclass
class PredictedLatency:
    """The latency model's bound (its prediction raised by its calibration margin), in ms: the structure model where
    the model has one for this network (``LatencyModel.fit_structure``), else the table model. The structure model is
    an additive part (``instance``, ``fixed``) plus node counts that are not a sum over ops, which a search takes in
    expectation (``extra``; the knapsack derivations count them at uniform weights inside ``fixed``)."""

    model: LatencyModel
    space: str
    eval_cfg: NetConfig
    nodes: int = 4
    kind: str = "predicted"

    def __post_init__(self) -> None:
        lm, cfg = self.model, self.eval_cfg
        if lm.space != self.space or NetConfig.from_json(lm.eval_config) != cfg:
            raise UserError(f"the latency model was made for {lm.space}, C={lm.eval_config['C']}, {lm.eval_config['layers']} layers, "
                            f"{lm.eval_config['input_size']}px, not for this search's evaluation network ({self.space}, C={cfg.C}, "
                            f"{cfg.layers} layers, {cfg.input_size}px); build one for it")
        self.structure = bool(lm.structure_theta) and covers(self.space, cfg)
        if self.structure:
            import torch

            from ..nets.ops import DARTS_OPS

            weights = lm.count_weights()
            self._weights = {t: w for t, w in weights.items() if t != "Conv"}
            g = random_genotype(self.space, random.Random(0), steps=self.nodes)
            convs = (ort_node_counts(g, cfg) or {}).get("Conv", 0) - sum(conv_nodes(i[0], i[3]) for i in instances(g, cfg))
            self._fixed = lm.structure_theta[0] + weights.get("Conv", 0.0) * convs
            # The counted part C linearised at uniform op weights P0: C(P) ~ C(P0) + sum g (P - P0), g = dC/dP. The
            # knapsacks take g x j/2 per (edge, op) (a derived edge is kept, where P0's is kept with 2/j) and the rest
            # in ``fixed``; k_s adds what the line misses (``extra``), so that it is C's expectation itself.
            edges = SPACES[self.space].edges(self.nodes)
            P0 = torch.tensor([[0.0 if o == "none" else 1.0 / (len(DARTS_OPS) - 1) for o in DARTS_OPS]] * len(edges),
                              dtype=torch.float64)
            probs = {k: P0.clone().requires_grad_(True) for k in ("normal", "reduce")}
            at_p0 = self._counted(probs, DARTS_OPS)
            at_p0.backward()
            self._P0, self._ops = P0, list(DARTS_OPS)
            self._grad = {k: p.grad.detach() for k, p in probs.items()}
            self._at_p0 = float(at_p0.detach())
            self._line0 = self._at_p0 - sum(float((g * P0).sum()) for g in self._grad.values())
            self._per_edge = torch.tensor([d / 2.0 for _, d in edges], dtype=torch.float64).unsqueeze(1)

    def _counted(self, probs: Mapping[str, Any], op_names: Sequence[str]) -> Any:
        counts = expected_node_counts(probs, op_names, self.eval_cfg, self.nodes)
        return sum(w * counts[t] for t, w in self._weights.items() if t in counts)

    def _cols(self, op_names: Sequence[str]) -> list[int]:
        return [self._ops.index(o) for o in op_names]

    def instance(self, op: str, C_in: int, C_out: int, stride: int, size: int) -> float:
        if self.structure:
            return self.model.structure_scale() * self.model.structure_instance_ms((op, C_in, C_out, stride, size))
        return self.model.bound_instance_ms((op, C_in, C_out, stride, size))

    def fixed(self) -> float:
        if self.structure:
            return self.model.structure_scale() * (self._fixed + self._line0)
        return self.model.bound_fixed_ms()

    def edge_terms(self, op_names: Sequence[str]) -> Optional[dict[str, Any]]:
        """Per cell kind (edges x ``op_names``), the counted part's line as a cost of each (edge, op) of a derived
        network, over every cell of that kind; None without a structure model."""
        if not self.structure:
            return None
        cols = self._cols(op_names)
        return {k: self.model.structure_scale() * self._per_edge * g[:, cols] for k, g in self._grad.items()}

    def extra(self, probs: Mapping[str, Any], op_names: Sequence[str]) -> Optional[Any]:
        """What the line (``fixed`` and ``edge_terms``, eq. 3's sum) misses of the counted part's expectation under
        ``probs`` (per cell kind, edges x ``op_names``); None without a structure model."""
        if not self.structure:
            return None
        cols = self._cols(op_names)
        line = sum(((self._grad[k][:, cols].to(p.device) * (p - self._P0[:, cols].to(p.device))).sum() for k, p in probs.items()))
        return self.model.structure_scale() * (self._counted(probs, op_names) - self._at_p0 - line)

    def network(self, genotype: Genotype) -> float:
        return self.model.bound(genotype)


@dataclass(frozen=True)
class SourceInputs:
    """What building a source may need beyond the network: the export format a size refers to, a latency model."""

    size_format: str = "tflite"
    latency: Optional[LatencyModel] = None


def _latency(name: str, space: str, eval_cfg: NetConfig, nodes: int, inputs: SourceInputs) -> CostSource:
    if inputs.latency is None:
        raise UserError("a latency budget needs a latency model: --latency-model FILE (dcanas latency build --device D, "
                        "or dcanas latency fit --csv F)")
    return PredictedLatency(inputs.latency, space, eval_cfg, nodes)


Factory = Callable[[str, str, NetConfig, int, SourceInputs], CostSource]
SOURCES: dict[str, Factory] = {
    "counter": lambda name, space, cfg, nodes, inputs: Counted(name, space, cfg, nodes),
    "size": lambda name, space, cfg, nodes, inputs: PredictedSize(inputs.size_format, space, cfg, nodes),
    "latency": _latency,
}


def make_source(name: str, space: str, eval_cfg: NetConfig, nodes: int, inputs: SourceInputs = SourceInputs()) -> CostSource:
    """The cost source of metric ``name`` for this evaluation network; a metric no source predicts is a UserError."""
    m = metric(name)
    if m.source is None:
        raise UserError(f"no cost model predicts {name} (it is measured on the device only); a search can hold: "
                        f"{', '.join(n for n, x in METRICS.items() if x.source)}")
    return SOURCES[m.source](name, space, eval_cfg, nodes, inputs)


"""Cost sources: what predicts a metric for a search, behind one protocol.

A source gives the cost of one op instance (op, C_in, C_out, stride, input size) of the evaluation
network, the part every network of the space adds once (stem, preprocessing, head; an exported
format's base bytes; a latency model's theta_0), and the cost of a whole built genotype. Each is
additive over a genotype's (edge, op) choices, which eq. 3's k_s and the knapsack derivations rely on.

- ``counter``: the analytic counter (``nets/cost.py``), params and FLOPs;
- ``size``: the model-size model (``costs/size.py``) on the counter's graph counts;
- ``latency``: a latency model measured on the device (``costs/latency.py``), its upper bound.

The metric registry (``costs/metrics.py``) names each metric's source; :func:`make_source` builds it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol

from ..errors import UserError
from ..nets.config import NetConfig
from ..nets.cost import Cost, network_cost, op_cost
from ..nets.genotype import Genotype
from ..nets.spaces import SPACES
from .latency import LatencyModel
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
    """The latency model's bound (its prediction raised by its calibration margin), in ms."""

    model: LatencyModel
    space: str
    eval_cfg: NetConfig
    kind: str = "predicted"

    def __post_init__(self) -> None:
        lm, cfg = self.model, self.eval_cfg
        if lm.space != self.space or NetConfig.from_json(lm.eval_config) != cfg:
            raise UserError(f"the latency model was made for {lm.space}, C={lm.eval_config['C']}, {lm.eval_config['layers']} layers, "
                            f"{lm.eval_config['input_size']}px, not for this search's evaluation network ({self.space}, C={cfg.C}, "
                            f"{cfg.layers} layers, {cfg.input_size}px); build one for it")

    def instance(self, op: str, C_in: int, C_out: int, stride: int, size: int) -> float:
        return self.model.bound_instance_ms((op, C_in, C_out, stride, size))

    def fixed(self) -> float:
        return self.model.bound_fixed_ms()

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
    return PredictedLatency(inputs.latency, space, eval_cfg)


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


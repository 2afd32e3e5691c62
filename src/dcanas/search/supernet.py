"""DCA-NAS supernets for the DARTS and NB201 spaces (paper Section 3.3, Appendix A).

One search-cell class serves both spaces and every ablation step:
  * weight sharing (eq. 5): op ``o`` on source node ``i`` has ONE module ``w_o^i``; ``o(z_i)`` is
    computed once and reused by every outgoing edge (i, j).  Off: one module per edge (eq. 1).
  * channel bottleneck: a 1x1 conv-BN maps a node's C channels to C/r before the candidate ops,
    and a 1x1 conv-BN maps each node's mixed result back to C.  r = 1: off.
  * derived cells: only the first normal and the first reduction cell mix ops with softmax(alpha);
    the others run only the ops of the genotype currently derived from alpha (all candidate
    weights are kept, so a re-derivation loses no training).
All three off is first-order DARTS through this same code.  ``partial_channels=K`` gives the
PC-DARTS mixed op (1/K of the channels through the ops, channel shuffle) for reference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from ..nets.config import NetConfig
from ..nets.config import stem_for
from ..nets.darts import darts_layout, make_stem, make_stem1, preprocess
from ..nets.genotype import Genotype, cell_edges
from ..nets.nb201 import ResNetBasicBlock, nb201_layout
from ..nets.ops import SPACE_OPS, build_op
from ..nets.spaces import SPACES
from . import fast_ops, fused_cell
from .derive import derive


@dataclass(frozen=True)
class SearchOptions:
    """The ablation switches; the defaults are DCA-NAS."""

    weight_sharing: bool = True
    bottleneck: int = 4           # r; 1 disables the channel bottleneck
    derived_cells: bool = True
    constraint: bool = True
    partial_channels: int = 1     # PC-DARTS' K (reference variant only; needs weight_sharing off)
    edge_weight: str = "2/j"      # how eq. 3 weights a DARTS edge's b(o) in k_s: "2/j" (default) or "literal" (every edge 1)
    sampling: str = "softmax"     # the mixed ops' weights: "softmax" (DARTS, the paper), "gumbel" or "gdas" (one sampled op per edge)

    @classmethod
    def vanilla(cls) -> "SearchOptions":
        return cls(weight_sharing=False, bottleneck=1, derived_cells=False, constraint=False)


# SearchOptions.sampling: "gumbel" draws one op per edge by hard Gumbel-softmax and still computes every op (alpha's
# gradient is the straight-through one over all of them); "gdas" computes only the drawn op, so alpha's gradient comes
# through the drawn op's weight alone (Dong & Yang 2019's estimator) and a step costs about one discrete network.
SAMPLINGS = ("softmax", "gumbel", "gdas")


def gumbel_tau(epoch: int, epochs: int, hi: float = 10.0, lo: float = 0.1) -> float:
    """GDAS' temperature (Dong & Yang 2019): from ``hi`` at the first epoch down to ``lo`` at the last, linearly."""
    return hi - (hi - lo) * epoch / max(1, epochs - 1)


@dataclass(frozen=True)
class SupernetConfig:
    space: str = "darts"
    C: int = 16
    cells: int = 8      # DARTS cells, or NB201 cells per stage
    nodes: int = 4      # intermediate nodes per cell (NB201: 3)
    num_classes: int = 10
    in_channels: int = 3
    input_size: int = 32
    options: SearchOptions = field(default_factory=SearchOptions)

    @property
    def inputs(self) -> int:
        return SPACES[self.space].inputs

    def net_config(self) -> NetConfig:
        return NetConfig(C=self.C, layers=self.cells, num_classes=self.num_classes,
                         in_channels=self.in_channels, input_size=self.input_size, stem=stem_for(self.space, self.input_size))


def _channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class SearchCell(nn.Module):
    """A cell with every candidate op on every edge; mixed (softmax weights) or discrete (a genotype)."""

    def __init__(self, C: int, inputs: int, nodes: int, ops: tuple[str, ...], reduction: bool,
                 options: SearchOptions, concat_all: bool) -> None:
        super().__init__()
        self.inputs, self.nodes, self.op_names, self.reduction = inputs, nodes, ops, reduction
        self.concat_all = concat_all  # DARTS: concat the intermediate nodes; NB201: the last node
        self.edges = cell_edges(inputs, nodes)
        self.edge_index = {e: k for k, e in enumerate(self.edges)}
        self.ws, self.pc = options.weight_sharing, max(1, options.partial_channels)
        r = max(1, options.bottleneck)
        Cb = max(1, C // r)
        sources = inputs + nodes - 1  # the last node has no outgoing edge
        if r > 1:
            self.squeeze = nn.ModuleList(nn.Sequential(nn.ReLU(), nn.Conv2d(C, Cb, 1, bias=False), nn.BatchNorm2d(Cb, affine=False)) for _ in range(sources))
            self.expand = nn.ModuleList(nn.Sequential(nn.Conv2d(Cb, C, 1, bias=False), nn.BatchNorm2d(C, affine=False)) for _ in range(nodes))
        else:
            self.squeeze = self.expand = None
        C_op = Cb // self.pc

        def candidates(src: int) -> nn.ModuleList:
            stride = 2 if reduction and src < inputs else 1
            mods = []
            for name in ops:
                op = build_op(name, C_op, C_op, stride, affine=False)
                if "pool" in name:  # DARTS' search-time BN after parameter-free pooling
                    op = nn.Sequential(op, nn.BatchNorm2d(C_op, affine=False))
                mods.append(op)
            return nn.ModuleList(mods)

        self.fused = fused_cell.supports(self)  # the mixed path in fewer kernels (search/fused_cell.py)
        if self.ws:  # eq. 5: one op module per (source node, op)
            self.ops = nn.ModuleDict({str(i): candidates(i) for i in range(sources)})
        else:        # eq. 1: one op module per (edge, op)
            self.ops = nn.ModuleDict({f"{j}<-{i}": candidates(i) for i, j in self.edges})

    def _op_module(self, i: int, j: int, k: int) -> nn.Module:
        return self.ops[str(i)][k] if self.ws else self.ops[f"{j}<-{i}"][k]

    def forward(self, states: list[torch.Tensor], weights: Optional[torch.Tensor] = None,
                selected: Optional[dict[int, list[tuple[int, int]]]] = None, drawn: Optional[list[int]] = None) -> torch.Tensor:
        """``weights``: softmax(alpha), edges x ops (mixed); ``selected``: node -> [(src, op index)] (derived);
        ``drawn``: with one-hot ``weights``, each edge's op index: only that op is computed (sampling "gdas")."""
        if selected is None and drawn is None and self.fused:
            return fused_cell.mixed_forward(self, states, weights)
        states = list(states)
        squeezed: dict[int, torch.Tensor] = {}
        shared: dict[tuple[int, int], torch.Tensor] = {}  # (source, op) -> o(z_i), reused across edges

        def z(i: int) -> torch.Tensor:
            if i not in squeezed:
                squeezed[i] = self.squeeze[i](states[i]) if self.squeeze is not None else states[i]
            return squeezed[i]

        def apply(i: int, j: int, k: int) -> torch.Tensor:
            if not self.ws:
                return self._op_module(i, j, k)(z(i))
            if (i, k) not in shared:
                shared[(i, k)] = self._op_module(i, j, k)(z(i))
            return shared[(i, k)]

        for j in range(self.inputs, self.inputs + self.nodes):
            terms = []
            if selected is not None:
                for i, k in selected[j]:
                    if self.op_names[k] != "none":
                        terms.append(apply(i, j, k) if self.pc == 1 else self._pc_edge(i, j, z(i), {k: 1.0}))
            else:
                for i in range(j):
                    w = weights[self.edge_index[(i, j)]]
                    if drawn is not None:  # the drawn op alone, times its weight (1, with alpha's gradient)
                        k = drawn[self.edge_index[(i, j)]]
                        if self.op_names[k] != "none":
                            terms.append(w[k] * apply(i, j, k) if self.pc == 1 else self._pc_edge(i, j, z(i), {k: w[k]}))
                        continue
                    if self.pc > 1:
                        terms.append(self._pc_edge(i, j, z(i), {k: w[k] for k in range(len(self.op_names))}))
                        continue
                    for k, name in enumerate(self.op_names):
                        if name != "none":
                            terms.append(w[k] * apply(i, j, k))
            node = sum(terms) if terms else self._zeros(z(0))  # every input edge `none` (NB201; a "gdas" draw)
            states.append(self.expand[j - self.inputs](node) if self.expand is not None else node)
        if self.concat_all:
            return torch.cat(states[self.inputs:], dim=1)
        return states[-1]

    def _zeros(self, z0: torch.Tensor) -> torch.Tensor:
        """A node with no input: zeros of a node's shape (a reduction cell's nodes are at half the inputs' size)."""
        if not self.reduction:
            return torch.zeros_like(z0)
        n, c, h, w = z0.shape
        return z0.new_zeros(n, c, (h + 1) // 2, (w + 1) // 2)

    def _pc_edge(self, i: int, j: int, x: torch.Tensor, weights: dict[int, torch.Tensor | float]) -> torch.Tensor:
        """PC-DARTS: 1/K of the channels through the mixed op, the rest bypass; then channel shuffle."""
        c = x.shape[1] // self.pc
        xa, xb = x[:, :c], x[:, c:]
        mixed = sum(w * self._op_module(i, j, k)(xa) for k, w in weights.items() if self.op_names[k] != "none")
        if isinstance(mixed, int):
            mixed = torch.zeros_like(self._op_module(i, j, 0)(xa))
        if self.reduction and i < self.inputs:
            xb = F.max_pool2d(xb, 2, 2, ceil_mode=True)
        return _channel_shuffle(torch.cat([mixed, xb], dim=1), self.pc)


class Supernet(nn.Module):
    """The search network of either space; ``alphas`` are registered parameters."""

    def __init__(self, cfg: SupernetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.op_names = SPACE_OPS[cfg.space]
        opts = cfg.options
        if opts.sampling not in SAMPLINGS:
            raise UserError(f"unknown sampling {opts.sampling!r} for the mixed ops; valid: {', '.join(SAMPLINGS)}")
        E, K = len(cell_edges(cfg.inputs, cfg.nodes)), len(self.op_names)
        self.cell_types = SPACES[cfg.space].cell_kinds
        self.alphas = nn.ParameterDict({t: nn.Parameter(1e-3 * torch.randn(E, K)) for t in self.cell_types})
        net = cfg.net_config()
        C_last = getattr(self, f"_build_{cfg.space}")(cfg, net, opts)  # the space's macro-structure (_build_darts, _build_nb201)
        self.classifier = nn.Linear(C_last, cfg.num_classes)
        # Derived cells: the first cell of each type carries alpha; the rest copy the derived genotype.
        self.alpha_cells = {t: self.cell_kind.index(t) for t in self.cell_types}
        self.genotype: Genotype = self.derive()
        self._drawn: dict[str, list[int]] = {}  # sampling "gdas": this forward's drawn op per edge, per cell kind
        self.tau = gumbel_tau(0, 1)  # the searcher sets each epoch's (sampling "gumbel", "gdas")
        fast_ops.accelerate(self)  # search-time forms of the table's ops (search/fast_ops.py), on with the fused cells

    def _build_darts(self, cfg: SupernetConfig, net: NetConfig, opts: SearchOptions) -> int:
        """Two-input cells behind the stem(s), reductions at 1/3 and 2/3 of the depth; returns the head's width."""
        self.stem = make_stem(net)  # the ImageNet stem above 64 px (nets.config.stem_for): stem0 here, stem1 below
        self.stem1 = make_stem1(net)
        self.slots = darts_layout(net, cfg.nodes)
        self.pre = nn.ModuleList(nn.ModuleList(preprocess(s, affine=False)) for s in self.slots)
        self.cells = nn.ModuleList(SearchCell(s.C, 2, cfg.nodes, self.op_names, s.reduction, opts, True) for s in self.slots)
        C_last = cfg.nodes * self.slots[-1].C
        self.cell_kind = ["reduce" if s.reduction else "normal" for s in self.slots]
        return C_last

    def _build_nb201(self, cfg: SupernetConfig, net: NetConfig, opts: SearchOptions) -> int:
        """Three stages of cells joined by residual blocks, and a last BN-ReLU; returns the head's width."""
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, cfg.C, 3, padding=1, bias=False), nn.BatchNorm2d(cfg.C))
        self.slots = nb201_layout(net)
        self.pre = None
        self.cells = nn.ModuleList(ResNetBasicBlock(s.C_in, s.C_out) if s.reduction
                                   else SearchCell(s.C_out, 1, cfg.nodes, self.op_names, False, opts, False)
                                   for s in self.slots)
        C_last = 4 * cfg.C
        self.cell_kind = ["block" if s.reduction else "normal" for s in self.slots]
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_last), nn.ReLU())
        return C_last

    # -- parameter groups ------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def set_fused(self, on: bool) -> "Supernet":
        """Run mixed cells through the fused path (default where a cell supports it) and the ops through their
        search-time forms (search/fast_ops.py), or both the eager way (the benchmarks' baseline)."""
        fast_ops.set_fast(self, on)
        for cell in self.cells:
            if isinstance(cell, SearchCell):
                cell.fused = on and fused_cell.supports(cell)
        return self

    # -- derivation -----------------------------------------------------------------
    def derive(self) -> Genotype:
        return derive(self.cfg.space, {t: a.detach() for t, a in self.alphas.items()}, self.op_names, self.cfg.nodes)

    def rederive(self) -> Genotype:
        """Refresh the genotype the derived cells run (paper Fig. 1: green cells)."""
        self.genotype = self.derive()
        return self.genotype

    def _selected(self, kind: str) -> dict[int, list[tuple[int, int]]]:
        index = {n: k for k, n in enumerate(self.op_names)}
        return {j: [(i, index[op]) for op, i in edges] for j, edges in self.genotype.node_inputs(kind).items()}

    def runs_mixed(self, index: int) -> bool:
        kind = self.cell_kind[index]
        return kind != "block" and (not self.cfg.options.derived_cells or self.alpha_cells[kind] == index)

    # -- forward --------------------------------------------------------------------
    def op_weights(self, alpha: torch.Tensor) -> torch.Tensor:
        """Each edge's weights over its ops: softmax(alpha) (eq. 1), or with ``sampling="gumbel"`` one op per edge
        drawn from it (GDAS: hard Gumbel-softmax at temperature ``tau``; the forward runs the drawn op, alpha's
        gradient is the soft sample's) while training, and the arg-max op in evaluation. One draw per forward is
        shared by every mixed cell of a kind, so each step trains and scores one architecture, not a mixture."""
        if self.cfg.options.sampling == "softmax":
            return F.softmax(alpha, dim=-1)  # eq. 1
        if self.training:  # "gumbel" and "gdas" draw alike; "gdas" then computes the drawn op alone (SearchCell.forward)
            return F.gumbel_softmax(alpha, tau=self.tau, hard=True, dim=-1)
        return F.one_hot(alpha.argmax(-1), alpha.shape[-1]).to(alpha.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = {t: self.op_weights(a) for t, a in self.alphas.items()}
        selected = {t: self._selected(t) for t in self.cell_types} if self.cfg.options.derived_cells else {}
        self._drawn = ({t: w.detach().argmax(-1).tolist() for t, w in weights.items()}
                       if self.training and self.cfg.options.sampling == "gdas" else {})
        feat = getattr(self, f"_features_{self.cfg.space}")(x, weights, selected)  # _features_darts, _features_nb201
        return self.classifier(F.adaptive_avg_pool2d(feat, 1).flatten(1))

    def _features_darts(self, x: torch.Tensor, weights: dict[str, torch.Tensor], selected: dict) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        if self.stem1 is not None:
            s1 = self.stem1(s0)
        for i, cell in enumerate(self.cells):
            kind = self.cell_kind[i]
            states = [self.pre[i][0](s0), self.pre[i][1](s1)]
            out = cell(states, weights[kind], drawn=self._drawn.get(kind)) if self.runs_mixed(i) else cell(states, selected=selected[kind])
            s0, s1 = s1, out
        feat = s1
        return feat

    def _features_nb201(self, x: torch.Tensor, weights: dict[str, torch.Tensor], selected: dict) -> torch.Tensor:
        feat = self.stem(x)
        for i, cell in enumerate(self.cells):
            if self.cell_kind[i] == "block":
                feat = cell(feat)
            else:
                feat = (cell([feat], weights["normal"], drawn=self._drawn.get("normal")) if self.runs_mixed(i)
                        else cell([feat], selected=selected["normal"]))
        feat = self.lastact(feat)
        return feat

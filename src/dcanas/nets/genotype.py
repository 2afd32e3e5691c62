"""The ONE genotype format: frozen value objects with JSON and NB201 arch-string round trips.

JSON contract (used by every stage and by outside checks)::

    {"space": "darts", "normal": [["sep_conv_3x3", 0], ...], "normal_concat": [2, 3, 4, 5],
     "reduce": [...], "reduce_concat": [2, 3, 4, 5]}
    {"space": "nb201", "arch": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|...|"}

Genotypes are data: never Python source, never ``eval``.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional, Union

from ..errors import UserError
from .ops import DARTS_EVAL_OPS, DARTS_OPS, NB201_OPS

Edge = tuple[str, int]

# The DARTS cell conventions, defined here once: nodes 0 and 1 are the two previous cells' outputs,
# and each intermediate node keeps two incoming edges (DARTS' rule), stored as consecutive pairs.
DARTS_INPUTS = 2
EDGES_PER_NODE = 2


def darts_edge_node(k: int) -> int:
    """The node the k-th edge of a DARTS genotype cell enters."""
    return DARTS_INPUTS + k // EDGES_PER_NODE


def cell_edges(inputs: int, nodes: int) -> list[tuple[int, int]]:
    """The (source, target) edges of a search cell, in the row order of its alpha: every i < j for each node j."""
    return [(i, j) for j in range(inputs, inputs + nodes) for i in range(j)]


class GenotypeError(UserError, ValueError):
    """A genotype that does not describe a valid cell (one line, names the problem)."""


@dataclass(frozen=True)
class DartsGenotype:
    """DARTS cell pair: per intermediate node two (op, input index) pairs; inputs 0, 1 are the cell inputs."""

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]
    space: ClassVar[str] = "darts"

    @property
    def steps(self) -> int:
        return len(self.normal) // EDGES_PER_NODE

    def validate(self) -> "DartsGenotype":
        for cell, edges, concat in (("normal", self.normal, self.normal_concat),
                                    ("reduce", self.reduce, self.reduce_concat)):
            if not edges or len(edges) % EDGES_PER_NODE:
                raise GenotypeError(f"{cell}: {len(edges)} edges; a DARTS cell needs 2 per intermediate node (e.g. 8 for 4 nodes)")
            if len(edges) != len(self.normal):
                raise GenotypeError(f"{cell}: {len(edges)} edges but normal has {len(self.normal)}; both cells need the same node count")
            for k, (op, src) in enumerate(edges):
                node = darts_edge_node(k)
                if op not in DARTS_EVAL_OPS or op == "none":
                    raise GenotypeError(f"{cell} edge {k}: unknown op {op!r}; valid: {', '.join(o for o in DARTS_EVAL_OPS if o != 'none')}")
                if type(src) is not int or not 0 <= src < node:  # a YAML/JSON true is not node 1
                    raise GenotypeError(f"{cell} edge {k}: input node {src!r} is not in 0..{node - 1} (node {node} can read only earlier nodes)")
            n_nodes = darts_edge_node(len(edges) - 1) + 1
            if not concat or any(type(c) is not int or not 0 <= c < n_nodes for c in concat):
                raise GenotypeError(f"{cell}_concat {list(concat)}: indices must be nodes in 0..{n_nodes - 1}")
        return self

    # A profiled graph's module path of an edge: cells.C.ops.E (the op's own children sit below it)
    EDGE_SCOPE: ClassVar[int] = 0  # which of the matching scopes names the edge: the outermost

    def cells(self) -> list[tuple[str, str, list[Edge], int]]:
        """(title, cell kind, edges (op, source), input nodes) per cell type, for plots and per-edge times."""
        return [("normal cell", "normal", list(self.normal), DARTS_INPUTS), ("reduction cell", "reduce", list(self.reduce), DARTS_INPUTS)]

    def node_inputs(self, kind: str) -> dict[int, list[Edge]]:
        """Per intermediate node of a cell kind, its kept (op, source) edges."""
        out: dict[int, list[Edge]] = {DARTS_INPUTS + n: [] for n in range(self.steps)}
        for k, edge in enumerate(self.reduce if kind == "reduce" else self.normal):
            out[darts_edge_node(k)].append(edge)
        return out

    def dead_edges(self) -> list[tuple[str, str, int, int]]:
        """The (cell kind, op, i, j) edges whose node j reaches no node of its cell's concat: none in a derived or known
        genotype (every intermediate node is concatenated), possible in a hand-written one."""
        return [d for kind, concat in (("normal", self.normal_concat), ("reduce", self.reduce_concat))
                for d in _dead_edges(kind, self.node_inputs(kind), set(range(DARTS_INPUTS)), set(concat))]

    def edge_at(self, kind: str, path: list[str]) -> Optional[tuple[str, int]]:
        """(op, edge index) of module path ``cells.C.ops.E``."""
        edges = self.reduce if kind == "reduce" else self.normal
        e = int(path[3])
        return (edges[e][0], e) if e < len(edges) else None

    def to_json(self) -> dict[str, Any]:
        return {"space": "darts",
                "normal": [[op, i] for op, i in self.normal], "normal_concat": list(self.normal_concat),
                "reduce": [[op, i] for op, i in self.reduce], "reduce_concat": list(self.reduce_concat)}


@dataclass(frozen=True)
class NB201Genotype:
    """NB201 cell: node j (1..) sums one op from every earlier node; ``nodes[j-1] = ((op, i), ...)``."""

    nodes: tuple[tuple[Edge, ...], ...]
    space: ClassVar[str] = "nb201"

    def validate(self) -> "NB201Genotype":
        if not self.nodes:
            raise GenotypeError("nb201: no nodes")
        for j, node in enumerate(self.nodes, start=1):
            if sorted(i for _, i in node) != list(range(j)):
                raise GenotypeError(f"nb201 node {j}: inputs {[i for _, i in node]}; it needs exactly one edge from each of nodes 0..{j - 1}")
            for op, _ in node:
                if op not in NB201_OPS:
                    raise GenotypeError(f"nb201 node {j}: unknown op {op!r}; valid: {', '.join(NB201_OPS)}")
        return self

    def tostr(self) -> str:
        return "+".join("|" + "|".join(f"{op}~{i}" for op, i in node) + "|" for node in self.nodes)

    @classmethod
    def from_str(cls, arch: str) -> "NB201Genotype":
        nodes = []
        for part in arch.strip().split("+"):
            if not (part.startswith("|") and part.endswith("|")) or len(part) < 3:
                raise GenotypeError(f"malformed NB201 arch string near {part!r}; expected e.g. |nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|")
            edges = []
            for token in part[1:-1].split("|"):
                op, sep, src = token.partition("~")
                if not sep or not src.isdigit():
                    raise GenotypeError(f"malformed NB201 edge {token!r}; expected OP~INPUT like nor_conv_3x3~0")
                edges.append((op, int(src)))
            nodes.append(tuple(edges))
        return cls(tuple(nodes)).validate()

    def connected(self) -> bool:
        """Whether the cell's output depends on its input: some path from node 0 to the last node has no ``none``
        edge. A cell that is not connected outputs zeros whatever its input (its network is the ResNet blocks alone,
        and a search's alpha gets no gradient through it): no derivation keeps one and no random draw returns one."""
        reached = {0}
        for j, node in enumerate(self.nodes, start=1):
            if any(op != "none" and i in reached for op, i in node):
                reached.add(j)
        return len(self.nodes) in reached

    def dead_edges(self) -> list[tuple[str, str, int, int]]:
        """The (cell kind, op, i, j) edges other than ``none`` that the cell's output does not depend on: no path of
        ``none``-free edges reaches node i from the input (node i is zeros, so the op adds a constant at most), or none
        leads from node j to the output. Their parameters count in the analytic cost and buy nothing."""
        return _dead_edges("cell", self.node_inputs("cell"), {0}, {len(self.nodes)})

    def live(self) -> bool:
        """Connected, and every op other than ``none`` on a path from the input to the output (no ``dead_edges``): the
        cells a derivation keeps and a random draw returns (9,444 of the 15,625 cells of three nodes)."""
        return self.connected() and not self.dead_edges()

    # cells.C.ops.N.K: an edge sits inside its node's list (cells.C.ops.N), so the deepest matching scope names it
    EDGE_SCOPE: ClassVar[int] = -1

    def cells(self) -> list[tuple[str, str, list[Edge], int]]:
        return [("NB201 cell", "cell", [(op, i) for node in self.nodes for op, i in node], 1)]

    def node_inputs(self, kind: str) -> dict[int, list[Edge]]:
        return {j: list(node) for j, node in enumerate(self.nodes, start=1)}

    def edge_at(self, kind: str, path: list[str]) -> Optional[tuple[str, int]]:
        """(op, flat edge index N(N+1)/2 + K) of module path ``cells.C.ops.N.K``."""
        if len(path) < 5 or not path[4].isdigit():
            return None
        n, k = int(path[3]), int(path[4])
        if n < len(self.nodes) and k < len(self.nodes[n]):
            return self.nodes[n][k][0], n * (n + 1) // 2 + k
        return None

    def to_json(self) -> dict[str, Any]:
        return {"space": "nb201", "arch": self.tostr()}


Genotype = Union[DartsGenotype, NB201Genotype]


def genotype_from_json(data: Any) -> Genotype:
    """Parse the JSON contract; raises :class:`GenotypeError` with one clear line."""
    if not isinstance(data, dict):
        raise GenotypeError(f"a genotype is a JSON object, got {type(data).__name__}")
    space = data.get("space")
    if space == "nb201":
        if not isinstance(data.get("arch"), str):
            raise GenotypeError("nb201 genotype needs an 'arch' string")
        return NB201Genotype.from_str(data["arch"])
    if space == "darts":
        try:
            edges = {k: tuple((str(op), src) for op, src in data[k]) for k in ("normal", "reduce")}
            concat = {k: tuple(data.get(k, range(DARTS_INPUTS, darts_edge_node(len(edges[k[:-7]]) - 1) + 1)))
                      for k in ("normal_concat", "reduce_concat")}
        except (KeyError, TypeError, ValueError) as exc:
            raise GenotypeError(f"darts genotype needs 'normal' and 'reduce' as lists of [op, input] pairs ({exc})") from None
        return DartsGenotype(edges["normal"], concat["normal_concat"], edges["reduce"], concat["reduce_concat"]).validate()
    raise GenotypeError(f"unknown genotype space {space!r}; valid: darts, nb201")


def dumps(genotype: Genotype) -> str:
    return json.dumps(genotype.to_json(), indent=2)


KNOWN: dict[str, dict[str, Any]] = {
    # Liu et al., DARTS (ICLR 2019), the published cells.
    "DARTS_V1": {"space": "darts",
                 "normal": [["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["skip_connect", 0], ["sep_conv_3x3", 1],
                            ["skip_connect", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["skip_connect", 2]],
                 "normal_concat": [2, 3, 4, 5],
                 "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 0],
                            ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["avg_pool_3x3", 0]],
                 "reduce_concat": [2, 3, 4, 5]},
    "DARTS_V2": {"space": "darts",
                 "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
                            ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]],
                 "normal_concat": [2, 3, 4, 5],
                 "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1],
                            ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]],
                 "reduce_concat": [2, 3, 4, 5]},
    # Xu et al., PC-DARTS (ICLR 2020), the published CIFAR-10 cells (its genotypes.py, PC_DARTS_cifar).
    "PC_DARTS": {"space": "darts",
                 "normal": [["sep_conv_3x3", 1], ["skip_connect", 0], ["sep_conv_3x3", 0], ["dil_conv_3x3", 1],
                            ["sep_conv_5x5", 0], ["sep_conv_3x3", 1], ["avg_pool_3x3", 0], ["dil_conv_3x3", 1]],
                 "normal_concat": [2, 3, 4, 5],
                 "reduce": [["sep_conv_5x5", 1], ["max_pool_3x3", 0], ["sep_conv_5x5", 1], ["sep_conv_5x5", 2],
                            ["sep_conv_3x3", 0], ["sep_conv_3x3", 3], ["sep_conv_3x3", 1], ["sep_conv_3x3", 2]],
                 "reduce_concat": [2, 3, 4, 5]},
    # Zoph et al., NASNet-A (CVPR 2018), and Real et al., AmoebaNet-A (AAAI 2019), as DARTS' genotypes.py gives
    # them: 5 intermediate nodes, cells concatenating 5 or 3 of them, and two ops outside the DARTS search space.
    "NASNet": {"space": "darts",
               "normal": [["sep_conv_5x5", 1], ["sep_conv_3x3", 0], ["sep_conv_5x5", 0], ["sep_conv_3x3", 0],
                          ["avg_pool_3x3", 1], ["skip_connect", 0], ["avg_pool_3x3", 0], ["avg_pool_3x3", 0],
                          ["sep_conv_3x3", 1], ["skip_connect", 1]],
               "normal_concat": [2, 3, 4, 5, 6],
               "reduce": [["sep_conv_5x5", 1], ["sep_conv_7x7", 0], ["max_pool_3x3", 1], ["sep_conv_7x7", 0],
                          ["avg_pool_3x3", 1], ["sep_conv_5x5", 0], ["skip_connect", 3], ["avg_pool_3x3", 2],
                          ["sep_conv_3x3", 2], ["max_pool_3x3", 1]],
               "reduce_concat": [4, 5, 6]},
    "AmoebaNet": {"space": "darts",
                  "normal": [["avg_pool_3x3", 0], ["max_pool_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_5x5", 2],
                             ["sep_conv_3x3", 0], ["avg_pool_3x3", 3], ["sep_conv_3x3", 1], ["skip_connect", 1],
                             ["skip_connect", 0], ["avg_pool_3x3", 1]],
                  "normal_concat": [4, 5, 6],
                  "reduce": [["avg_pool_3x3", 0], ["sep_conv_3x3", 1], ["max_pool_3x3", 0], ["sep_conv_7x7", 2],
                             ["sep_conv_7x7", 0], ["avg_pool_3x3", 1], ["max_pool_3x3", 0], ["max_pool_3x3", 1],
                             ["conv_7x1_1x7", 0], ["sep_conv_3x3", 5]],
                  "reduce_concat": [3, 4, 6]},
    # The NB201 arch used by the foundation issue's reference count (1,073,466 params at C=16, N=5).
    "NB201_REF": {"space": "nb201",
                  "arch": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"},
}


def load_genotype(spec: str | Path) -> Genotype:
    """A genotype from a JSON file, an NB201 arch string, or a known name (``DARTS_V2``)."""
    text = str(spec)
    if text in KNOWN:
        return genotype_from_json(KNOWN[text])
    if text.startswith("|"):
        return NB201Genotype.from_str(text)
    path = Path(text)
    if not path.is_file():
        raise GenotypeError(f"genotype {text!r} is not a file, an NB201 arch string (|op~0|+...) or a known name ({', '.join(KNOWN)})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GenotypeError(f"{path}: not valid JSON ({exc})") from None
    return genotype_from_json(data)


def _dead_edges(kind: str, node_inputs: dict[int, list[Edge]], inputs: set[int], outputs: set[int]) -> list[tuple[str, str, int, int]]:
    """The (kind, op, i, j) edges other than ``none`` off every ``none``-free path from the cell's ``inputs`` to its
    ``outputs`` (``node_inputs``: per node in topological order, its (op, source) edges)."""
    forward, backward = set(inputs), set(outputs)
    for j, edges in node_inputs.items():
        if any(op != "none" and i in forward for op, i in edges):
            forward.add(j)
    for j in reversed(node_inputs):
        if j in backward:
            backward.update(i for op, i in node_inputs[j] if op != "none")
    return [(kind, op, i, j) for j, edges in node_inputs.items() for op, i in edges
            if op != "none" and not (i in forward and j in backward)]


def random_genotype(space: str, rng: random.Random, steps: int = 4) -> Genotype:
    """A random valid genotype (for tests and baselines); NB201: a live cell (``NB201Genotype.live``, the set the
    derivations keep), every op uniform otherwise (rejection: 6,181 of the 15,625 cells, 39.6%, are not live)."""
    if space == "nb201":
        while True:
            g = NB201Genotype(tuple(tuple((rng.choice(NB201_OPS), i) for i in range(j)) for j in range(1, 4)))
            if g.live():
                return g
    ops = [o for o in DARTS_OPS if o != "none"]

    def cell() -> tuple[Edge, ...]:
        edges: list[Edge] = []
        for node in range(DARTS_INPUTS, steps + DARTS_INPUTS):
            for src in rng.sample(range(node), EDGES_PER_NODE):
                edges.append((rng.choice(ops), src))
        return tuple(edges)

    concat = tuple(range(DARTS_INPUTS, steps + DARTS_INPUTS))
    return DartsGenotype(cell(), concat, cell(), concat)

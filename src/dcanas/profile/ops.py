"""Per-operator times mapped back to the network: each exported ONNX node carries the PyTorch module
path it came from (the dynamo exporter's ``pkg.torch.onnx.name_scopes``), so a node's time goes exactly
to the stem, a cell's preprocessing, a cell's edge (and through the genotype, its op), the cell's
additions and concatenation, or the head."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, Optional

from ..export.inspect import load_onnx, metadata
from ..report.tables import part_order

EDGE_SCOPE = re.compile(r"^cells\.\d+\.ops\.\d+(\.\d+)?$")  # a DARTS edge, or an NB201 node / node edge


def node_scopes(path: Path) -> dict[str, list[str]]:
    """ONNX node name -> its module scopes ('', 'cells.3', 'cells.3.ops.5', ...); each node's output
    tensor names map too, since onnxruntime's layout optimizer renames a node after its output
    (``getitem_171_nchwc``)."""
    out: dict[str, list[str]] = {}
    for n in load_onnx(path).graph.node:
        props = {p.key: p.value for p in n.metadata_props}
        try:
            scopes = list(ast.literal_eval(props.get("pkg.torch.onnx.name_scopes", "[]")))
        except (ValueError, SyntaxError):
            scopes = []
        out[n.name] = scopes
        for o in n.output:
            out.setdefault(o, scopes)
    return out


def scopes_of(name: str, scopes: dict[str, list[str]]) -> list[str]:
    """The scopes of a profiled node: its own name, or the name onnxruntime derived from the node or its output."""
    base = name.removesuffix("_nchwc")
    for cand in (name, base, base.removesuffix("_bn"), name.split("_token_")[0]):  # _bn: a batch norm fused into its conv
        if cand in scopes:
            return scopes[cand]
    return []


def _genotype(genotype: Optional[dict]):
    from ..nets.genotype import GenotypeError, genotype_from_json  # torch: only when a genotype is there to read

    try:
        return genotype_from_json(genotype) if genotype else None
    except (GenotypeError, KeyError, TypeError, ValueError):
        return None


def _edge(genotype: Optional[dict], net_config: Optional[dict], cell: int, parts: list[str]) -> tuple[Optional[str], Optional[tuple[str, int]]]:
    """(op name, (cell kind, edge index in the genotype)) of module path ``cells.C.ops.E[.K]`` (the genotype's
    ``edge_at``: a DARTS cell's edge E of its kind's list; an NB201 cell's node E, edge K)."""
    g = _genotype(genotype)
    if g is None or not net_config:
        return None, None
    from ..nets.config import NetConfig
    from ..nets.spaces import SPACES

    kind = SPACES[g.space].cell_kind(g, cell, NetConfig.from_json(net_config))
    found = g.edge_at(kind, parts)
    return (found[0], (kind, found[1])) if found else (None, None)


def place(scopes: list[str], genotype: Optional[dict], net_config: Optional[dict]
          ) -> tuple[str, Optional[int], Optional[str], Optional[tuple[str, int]]]:
    """(part, cell index, op type, (cell kind, genotype edge)) of one node from its scopes."""
    top = scopes[1] if len(scopes) > 1 else ""
    if top.startswith("stem"):
        return "stem", None, None, None
    if top in ("classifier", "global_pooling", "lastact", "view", "flatten"):  # view/flatten: the head's reshape
        return "head", None, None, None
    if top.startswith("cells."):
        cell = int(top.split(".")[1])
        edges = [s.split(".") for s in scopes[2:] if EDGE_SCOPE.match(s)]
        if edges:  # an NB201 edge (cells.C.ops.node.k) sits inside its node's list (cells.C.ops.node): the deepest;
            g = _genotype(genotype)
            parts = edges[g.EDGE_SCOPE if g is not None else 0]  # a DARTS op's own children look alike: the outermost
            op, edge = _edge(genotype, net_config, cell, parts)
            return f"cell {cell} edge {'.'.join(parts[3:])}", cell, op or "op", edge
        if any(re.match(r"^cells\.\d+\.preprocess", s) for s in scopes[2:]):
            return f"cell {cell} preprocessing", cell, "preprocessing", None
        return f"cell {cell} add/concat", cell, "add/concat", None
    return "other", None, None, None


def map_ops(model: Path, op_profile: dict[str, Any]) -> dict[str, Any]:
    """Time per cell, per op type and the top-10 nodes, and how much of the measured time was placed."""
    if not op_profile or not op_profile.get("available"):
        return {"available": False, "why": (op_profile or {}).get("why", "no per-operator profile")}
    meta = metadata(model)
    genotype, net_config = meta.get("genotype"), meta.get("net_config")
    scopes = node_scopes(model)
    per_cell: dict[str, float] = {}
    per_op: dict[str, float] = {}
    per_edge: dict[str, dict[int, float]] = {}  # cell kind -> genotype edge -> us, summed over the cells of that kind
    rows = []
    total = placed = reorder = 0.0
    for name, d in op_profile["nodes"].items():
        part, cell, op, edge = place(scopes_of(name, scopes), genotype, net_config)
        reorder += d.get("reorder_us", 0.0)
        total += d["us"]
        if part != "other":
            placed += d["us"]
        key = part if cell is None else f"cell {cell}"
        per_cell[key] = per_cell.get(key, 0.0) + d["us"]
        per_op[op or part] = per_op.get(op or part, 0.0) + d["us"]
        if edge is not None:
            per_edge.setdefault(edge[0], {})[edge[1]] = per_edge.get(edge[0], {}).get(edge[1], 0.0) + d["us"]
        rows.append(dict(node=name, op_type=d["op"], part=part, op=op, us=d["us"]))
    rows.sort(key=lambda r: -r["us"])
    return dict(available=True, total_us=total, placed_share=placed / total if total else 0.0, reorder_us=reorder,
                wall_us_per_run=op_profile.get("wall_us_per_run"), per_cell=per_cell, per_op=per_op, top=rows[:10],
                per_edge={k: [v.get(e, 0.0) for e in range(_edge_count(genotype, k))] for k, v in per_edge.items()})


def _edge_count(genotype: dict[str, Any], kind: str) -> int:
    """Edges of a cell kind (an edge with no node, such as skip_connect, has no time and shows as 0)."""
    return next(len(edges) for _, k, edges, _ in _genotype(genotype).cells() if k == kind)



def format_ops(m: dict[str, Any]) -> str:
    if not m.get("available"):
        return f"per-operator profile: not available ({m.get('why')})"
    lines = [f"per-operator profile: {m['total_us']:.1f} us of node time per run ({100 * m['placed_share']:.1f}% placed in the "
             f"network, including {m['reorder_us']:.1f} us of layout reorders the runtime inserted, charged to the node they "
             f"serve; {m['wall_us_per_run']:.1f} us per run wall clock while profiling)", "", "| part | us per run | share |", "|---|---:|---:|"]
    lines += [f"| {k} | {m['per_cell'][k]:.1f} | {100 * m['per_cell'][k] / m['total_us']:.1f}% |" for k in part_order(m["per_cell"])]
    lines += ["", "| op type | us per run | share |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:.1f} | {100 * v / m['total_us']:.1f}% |" for k, v in sorted(m["per_op"].items(), key=lambda kv: -kv[1])]
    lines += ["", "top 10 nodes:"] + [f"  {r['us']:8.1f} us  {r['op_type']:12} {r['part']}" + (f" ({r['op']})" if r["op"] else "")
                                      + f"  [{r['node']}]" for r in m["top"]]
    return "\n".join(lines)

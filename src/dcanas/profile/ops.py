"""Per-operator times mapped back to the network: each exported ONNX node carries the PyTorch module
path it came from (the dynamo exporter's ``pkg.torch.onnx.name_scopes``), so a node's time goes exactly
to the stem, a cell's preprocessing, a cell's edge (and through the genotype, its op), the cell's
additions and concatenation, or the head."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Optional

from ..export.inspect import load_onnx, metadata


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
    for cand in (name, name.removesuffix("_nchwc"), name.split("_token_")[0]):
        if cand in scopes:
            return scopes[cand]
    return []


def _edge_op(genotype: Optional[dict], net_config: Optional[dict], cell: int, edge: int) -> Optional[str]:
    if not genotype or genotype.get("space") != "darts" or not net_config:
        return None
    from ..nets.config import NetConfig
    from ..nets.darts import darts_layout

    slots = darts_layout(NetConfig.from_json(net_config), len(genotype["normal_concat"]))
    edges = genotype["reduce" if slots[cell].reduction else "normal"]
    return edges[edge][0] if edge < len(edges) else None


def place(scopes: list[str], genotype: Optional[dict], net_config: Optional[dict]) -> tuple[str, Optional[int], Optional[str]]:
    """(part, cell index, op type) of one node from its scopes."""
    top = scopes[1] if len(scopes) > 1 else ""
    if top.startswith("stem"):
        return "stem", None, None
    if top in ("classifier", "global_pooling", "lastact"):
        return "head", None, None
    if top.startswith("cells."):
        cell = int(top.split(".")[1])
        for s in scopes[2:]:
            parts = s.split(".")
            if len(parts) >= 4 and parts[2] == "ops" and parts[3].isdigit():
                edge = int(parts[3])
                op = _edge_op(genotype, net_config, cell, edge)
                return f"cell {cell} edge {edge}", cell, op or "op"
            if len(parts) >= 3 and parts[2].startswith("preprocess"):
                return f"cell {cell} preprocessing", cell, "preprocessing"
        return f"cell {cell} add/concat", cell, "add/concat"
    return "other", None, None


def map_ops(model: Path, op_profile: dict[str, Any]) -> dict[str, Any]:
    """Time per cell, per op type and the top-10 nodes, and how much of the measured time was placed."""
    if not op_profile or not op_profile.get("available"):
        return {"available": False, "why": (op_profile or {}).get("why", "no per-operator profile")}
    meta = metadata(model)
    genotype, net_config = meta.get("genotype"), meta.get("net_config")
    scopes = node_scopes(model)
    per_cell: dict[str, float] = {}
    per_op: dict[str, float] = {}
    rows = []
    total = placed = reorder = 0.0
    for name, d in op_profile["nodes"].items():
        part, cell, op = place(scopes_of(name, scopes), genotype, net_config)
        reorder += d.get("reorder_us", 0.0)
        total += d["us"]
        if part != "other":
            placed += d["us"]
        key = part if cell is None else f"cell {cell}"
        per_cell[key] = per_cell.get(key, 0.0) + d["us"]
        per_op[op or part] = per_op.get(op or part, 0.0) + d["us"]
        rows.append(dict(node=name, op_type=d["op"], part=part, op=op, us=d["us"]))
    rows.sort(key=lambda r: -r["us"])
    return dict(available=True, total_us=total, placed_share=placed / total if total else 0.0, reorder_us=reorder,
                wall_us_per_run=op_profile.get("wall_us_per_run"), per_cell=per_cell, per_op=per_op, top=rows[:10])


def format_ops(m: dict[str, Any]) -> str:
    if not m.get("available"):
        return f"per-operator profile: not available ({m.get('why')})"
    lines = [f"per-operator profile: {m['total_us']:.1f} us of node time per run ({100 * m['placed_share']:.1f}% placed in the "
             f"network, including {m['reorder_us']:.1f} us of layout reorders the runtime inserted, charged to the node they "
             f"serve; {m['wall_us_per_run']:.1f} us per run wall clock while profiling)", "", "| part | us per run | share |", "|---|---:|---:|"]
    rank = {"stem": 0, "cell": 1, "head": 2}
    order = sorted(m["per_cell"].items(), key=lambda kv: (rank.get(kv[0].split()[0], 3),
                                                          int(kv[0].split()[1]) if kv[0].startswith("cell") else 0))
    lines += [f"| {k} | {v:.1f} | {100 * v / m['total_us']:.1f}% |" for k, v in order]
    lines += ["", "| op type | us per run | share |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:.1f} | {100 * v / m['total_us']:.1f}% |" for k, v in sorted(m["per_op"].items(), key=lambda kv: -kv[1])]
    lines += ["", "top 10 nodes:"] + [f"  {r['us']:8.1f} us  {r['op_type']:12} {r['part']}" + (f" ({r['op']})" if r["op"] else "")
                                      + f"  [{r['node']}]" for r in m["top"]]
    return "\n".join(lines)

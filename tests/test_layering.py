"""The import rules between dcanas' packages, read from every module's imports (AST, function-level
imports included), and a check that the rules catch each wrong-way edge they were written against."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dcanas"

# Package -> what it must never import (a root module such as files.py is its own unit).
LOW = ("search", "nets", "costs", "data")
ABOVE_LOW = ("export", "profile", "devices", "run", "report", "latency")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    **{p: ABOVE_LOW for p in LOW},
    "export": ("profile", "devices", "run", "report", "latency"),
    "report": ("run", "profile", "devices", "latency", "export"),
    "devices": ("profile", "run", "report", "latency", "search", "export"),
    "profile": ("run", "latency", "search"),
}
NOTHING_FROM_DCANAS = ("runtime",)  # the file pushed to the device
ONLY_TOP_IMPORTS_RUN = ("run", "cli")  # nothing below run imports run


def unit(module: str) -> str:
    """``dcanas.search.config`` -> ``search``; a root module ``dcanas.files`` -> ``files``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "dcanas"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every dcanas module ``path`` imports, at any depth of the file (absolute names)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "dcanas"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "dcanas":
                continue
            # ``from . import runner``: the names may be modules themselves
            subs = [f"{target}.{a.name}" for a in node.names]
            out |= {s for s in subs if (SRC.parent / (s.replace(".", "/") + ".py")).is_file()} or {target}
    return out


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(SRC.rglob("*.py"))}


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every forbidden edge and every cycle between packages, one line each."""
    bad = []
    units: dict[str, set[str]] = {}
    for mod, targets in graph.items():
        u = unit(mod)
        for t in targets:
            v = unit(t)
            if v == u:
                continue
            units.setdefault(u, set()).add(v)
            if u in NOTHING_FROM_DCANAS:
                bad.append(f"{mod} -> {t}: {u} imports nothing from dcanas")
            if v in FORBIDDEN.get(u, ()):
                bad.append(f"{mod} -> {t}: {u} must not import {v}")
            if v == "run" and u not in ONLY_TOP_IMPORTS_RUN:
                bad.append(f"{mod} -> {t}: only the run package and the command line import run")
    # cycles between units (depth-first search with colours)
    colour: dict[str, int] = {}

    def visit(u: str, path: list[str]) -> None:
        colour[u] = 1
        for v in sorted(units.get(u, ())):
            if colour.get(v) == 1:
                bad.append("import cycle: " + " -> ".join(path[path.index(v):] + [v]) if v in path else f"cycle at {v}")
            elif v not in colour:
                visit(v, path + [v])
        colour[u] = 2

    for u in sorted(units):
        if u not in colour:
            visit(u, [u])
    return bad


def test_the_tree_keeps_the_import_rules():
    graph = import_graph()
    assert len(graph) > 60  # the whole package was read
    assert violations(graph) == []


# The wrong-way edges issue 29 found (and what must stay impossible): each one, added to the real graph, is caught.
WRONG_EDGES = [
    ("dcanas.search.cli", "dcanas.export.formats"),
    ("dcanas.search.constraint", "dcanas.export.formats"),
    ("dcanas.export.validate", "dcanas.profile.remote"),
    ("dcanas.profile.cli", "dcanas.run.fleet"),
    ("dcanas.devices.cli", "dcanas.profile.remote"),
    ("dcanas.search.config", "dcanas.latency.build"),
    ("dcanas.costs.latency", "dcanas.latency.measure"),
    ("dcanas.runtime.runner", "dcanas.files"),
    ("dcanas.nets.cost", "dcanas.report.tables"),
    ("dcanas.data.datasets", "dcanas.devices.schema"),
]


@pytest.mark.parametrize("src,dst", WRONG_EDGES, ids=[f"{a.split('.', 1)[1]}->{b.split('.', 1)[1]}" for a, b in WRONG_EDGES])
def test_a_wrong_way_import_is_caught(src, dst):
    graph = import_graph()
    assert src in graph, f"{src} is not a module any more: update the list"
    graph[src] = graph[src] | {dst}
    found = violations(graph)
    assert any(line.startswith(f"{src} -> {dst}") or "cycle" in line for line in found), found


def module_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules (function-level imports included)."""
    colour: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(u: str, path: list[str]) -> None:
        colour[u] = 1
        for v in sorted(graph.get(u, ())):
            if v not in graph:
                continue
            if colour.get(v) == 1:
                found.append(path[path.index(v):] + [v])
            elif v not in colour:
                visit(v, path + [v])
        colour[u] = 2

    for u in sorted(graph):
        if u not in colour:
            visit(u, [u])
    return found


def test_no_import_cycle_between_modules():
    graph = import_graph()
    assert module_cycles(graph) == []
    graph["dcanas.nets.genotype"] = graph["dcanas.nets.genotype"] | {"dcanas.nets.darts"}  # the one this test was written for
    assert ["dcanas.nets.darts", "dcanas.nets.genotype", "dcanas.nets.darts"] in module_cycles(graph)


def test_a_cycle_between_packages_is_caught():
    graph = import_graph()
    graph["dcanas.latency.cli"] = graph["dcanas.latency.cli"] | {"dcanas.report.tables"}
    graph["dcanas.report.tables"] = graph.get("dcanas.report.tables", set()) | {"dcanas.latency.cli"}
    assert any("cycle" in line or "must not import latency" in line for line in violations(graph))


def test_function_level_and_relative_imports_are_read(tmp_path):
    # the reader resolves "from ..x import y" inside a function body (where most of the wrong edges were)
    graph = import_graph()
    assert "dcanas.search.derive" in graph["dcanas.search.config"]  # a function-level relative import there
    assert "dcanas.runtime.runner" in graph["dcanas.profile.remote"]  # ``from ..runtime import runner as R``


# What `dcanas profile`, `dcanas devices` and the argument parser import must not pull in torch (~1.3 s here): a
# profile's runner starts within a second, and the command line answers --help at once.
TORCH_FREE = ("dcanas.cli", "dcanas.profile.cli", "dcanas.profile.remote", "dcanas.profile.verdict", "dcanas.profile.compare",
              "dcanas.profile.ops", "dcanas.profile.fleet", "dcanas.devices.cli", "dcanas.devices.session", "dcanas.runtime.runner",
              "dcanas.costs.metrics", "dcanas.report.tables", "dcanas.presets")


def test_the_profile_path_does_not_import_torch():
    import subprocess
    import sys

    code = (f"import sys, importlib\nfor m in {TORCH_FREE!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr[-2000:]

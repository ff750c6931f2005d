"""Imports go one way between px_hub.backbones and px_hub.hub: backbones reads ticket folders through hub, hub
never imports backbones (not even inside a function), so no circle remains. Checked on the source (every import
statement, resolved to the px_hub module it names) and by importing each subpackage in a fresh interpreter."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "px_hub"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every px_hub module an import statement in ``path`` names (top-level and inside functions)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("px_hub"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("px_hub"):
                out.add(target)
                out.update(f"{target}.{a.name}" for a in node.names)  # `from . import layouts` names a module
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for target in _imports(path):
            while target and target not in modules:  # `from .x import name`: the module is x
                target = target.rpartition(".")[0]
            if target and target not in (name, "px_hub"):  # px_hub/__init__.py is the facade over everything
                deps.add(target)
        graph[name] = deps
    return graph


def _unit(module: str) -> str:
    """The layer a module belongs to: px_hub.hub, px_hub.backbones, or the module itself."""
    for unit in ("px_hub.hub", "px_hub.backbones"):
        if module == unit or module.startswith(unit + "."):
            return unit
    return module


def _reachable(graph: dict[str, set[str]], start: set[str]) -> dict[str, list[str]]:
    """Module -> one import path from ``start`` to it."""
    seen = {s: [s] for s in start}
    todo = list(start)
    while todo:
        m = todo.pop()
        for d in graph.get(m, ()):
            if d not in seen:
                seen[d] = seen[m] + [d]
                todo.append(d)
    return seen


def test_graph_sees_the_known_edges():
    graph = _graph()  # the checker must see function-level and relative imports, or the next test proves nothing
    assert "px_hub.hub" in graph["px_hub.backbones.local"] and "px_hub.hub.pretrained" in graph["px_hub.hub"]
    assert "px_hub.hub.layouts" in graph["px_hub.backbones.transformers_loader"]
    assert "px_hub.hub.card" in graph["px_hub.hub.ticket"]  # imported inside a function
    assert "px_hub._weights" in graph["px_hub.hub.ticket"]


def test_hub_never_reaches_backbones():
    graph = _graph()
    start = {m for m in graph if _unit(m) == "px_hub.hub"}
    paths = _reachable(graph, start)
    back = {m: p for m, p in paths.items() if _unit(m) == "px_hub.backbones"}
    assert not back, "px_hub.hub imports px_hub.backbones: " + " -> ".join(next(iter(back.values())))


def test_no_cycle_between_hub_and_backbones():
    graph = _graph()
    units: dict[str, set[str]] = {}
    for m, deps in graph.items():
        units.setdefault(_unit(m), set()).update(_unit(d) for d in deps if _unit(d) != _unit(m))
    for a in ("px_hub.hub", "px_hub.backbones"):
        reach = _reachable(units, {a})
        cyc = [p for m, p in reach.items() if m != a and a in units.get(m, ())]
        assert not cyc, f"import circle through {a}: {' -> '.join(cyc[0] + [a])}"


def test_each_subpackage_imports_alone():
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    importlib.import_module(name)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for first in ("px_hub.backbones.local", "px_hub.hub.pretrained"):
        r = subprocess.run([sys.executable, "-c", code, first], cwd=PKG.parent, env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, f"import {first} in a fresh interpreter failed:\n{r.stderr[-2000:]}"

"""Plain imports: no import cycle among ``pipeline/`` modules, no lazy package exports, and the
``embed`` job does not reach into the ``curate`` orchestrator.

The graph is read from the source (AST, nothing imported): every ``import pipeline...`` and
``from pipeline... import`` of a module, at any depth (a function-level import is still a
dependency a reader follows), type-only imports under ``TYPE_CHECKING`` included.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KNOWN_CYCLES: list[list[str]] = []
# Packages whose __init__ re-exports lazily through a module __getattr__ (none: plain imports only).
KNOWN_LAZY: set[str] = set()


def module_names(root: Path, package: str) -> dict[str, Path]:
    out = {}
    for f in (root / package).rglob("*.py"):
        name = ".".join(f.relative_to(root).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = f
    return out


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that ``path`` imports (a ``from pkg import name`` of a submodule counts it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & set(modules)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_cycle_finder_on_a_small_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert cycles(graph) == [["a", "b", "c"], ["e"]]


def test_no_import_cycle_among_pipeline_modules():
    modules = module_names(ROOT, "pipeline")
    graph = {name: imports_of(path, modules) - {name} for name, path in modules.items()}
    assert cycles(graph) == KNOWN_CYCLES


def test_packages_export_by_plain_imports():
    lazy = {
        f.relative_to(ROOT).as_posix()
        for f in (ROOT / "pipeline").rglob("__init__.py")
        if "lazy_exports" in f.read_text() or "__getattr__" in f.read_text()
    }
    assert lazy == KNOWN_LAZY


def test_embed_job_does_not_import_the_orchestrator():
    modules = module_names(ROOT, "pipeline")
    assert "pipeline.curate" not in imports_of(ROOT / "jobs" / "embed.py", modules)


# What the layout module (pipeline/artifacts.py) may import: the run directory, the one atomic
# write and table I/O. Never an algorithm package: their readers live with them (pipeline/kmeans/levels.py).
LAYOUT_MAY_IMPORT = {"pipeline.rundir", "pipeline.atomic", "pipeline.io.tables"}


def test_the_layout_module_knows_no_algorithm_types(tmp_path):
    modules = module_names(ROOT, "pipeline")
    assert imports_of(ROOT / "pipeline" / "artifacts.py", modules) <= LAYOUT_MAY_IMPORT
    # the form it had before (a type-only import of LevelResult) is caught
    old = tmp_path / "artifacts.py"
    old.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pipeline.kmeans.hierarchical import LevelResult\n"
    )
    assert imports_of(old, modules) == {"pipeline.kmeans.hierarchical"}

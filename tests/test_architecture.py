"""The layers, read from the source with ``ast`` (imports inside functions included):

- no import cycles anywhere in ``src/autoresearch``;
- the generic layers (loop, runner, scoring, agents) import no bundled task;
- ``tasks/`` imports nothing from ``loop/``;
- ``cli.py`` holds no decision and no ledger query: it goes through the session.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "autoresearch"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    """Every module of the package; the task templates are research-repository files, not the package."""
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "template" not in p.relative_to(PACKAGE).parts}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            if ".template." in name or name.endswith(".template"):
                continue   # a task template's files: research-repository code the package reads, not a layer
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name.startswith("autoresearch"):
                found.add(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    edges = {}
    for name, path in modules.items():
        targets = _imports(path, known) - {name}
        # ``from autoresearch.x import y`` where y is a submodule also names the package x; keep the
        # submodule only, as Python imports the parent package first anyway.
        edges[name] = {t for t in targets if not any(o != t and o.startswith(t + ".") for o in targets)}
    return edges


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_is_read_from_the_source(graph):
    assert "autoresearch.session" in graph and "autoresearch.loop.engine" in graph["autoresearch.session"]
    assert "autoresearch.tasks.eclip" in graph           # the task packages are modules of the graph
    assert not any("template" in name for name in graph)


def test_no_import_cycles(graph):
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_a_cycle_would_be_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_generic_layers_import_no_bundled_task(graph):
    bundled = {name for name in graph if name.startswith("autoresearch.tasks.") and name != "autoresearch.tasks.base"}
    generic = ("autoresearch.loop", "autoresearch.runner", "autoresearch.scoring", "autoresearch.agents")
    bad = {(m, t) for m, targets in graph.items() if m.startswith(generic) for t in targets if t in bundled}
    assert not bad


def test_tasks_import_nothing_from_the_loop(graph):
    bad = {(m, t) for m, targets in graph.items() if m.startswith("autoresearch.tasks")
           for t in targets if t.startswith("autoresearch.loop")}
    assert not bad


def test_the_cli_goes_through_the_session(graph):
    cli = graph["autoresearch.cli"]
    assert "autoresearch.session" in cli
    assert not cli & {"autoresearch.loop.engine", "autoresearch.loop.ledger", "autoresearch.loop.decide",
                      "autoresearch.loop.trial", "autoresearch.loop.phases"}
    source = (PACKAGE / "cli.py").read_text(encoding="utf-8")
    assert ".ledger." not in source and "decide." not in source and "fingerprints." not in source

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


def _private_names(tree: ast.Module) -> set[str]:
    """The private names a module defines: functions, classes, methods, module-level and class-level names."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                if isinstance(target, ast.Name):
                    out.add(target.id)
                elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                        and target.value.id == "self":
                    out.add(target.attr)
    return {n for n in out if n.startswith("_") and not n.startswith("__")}


def _private_uses(tree: ast.Module) -> list[tuple[int, str, str]]:
    """(line, how, name) for each private name this module takes from another: ``from x import _y``, and
    ``something._y`` where something is not ``self``/``cls``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("autoresearch"):
            out += [(node.lineno, "import", a.name) for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            if not (isinstance(base, ast.Name) and base.id in ("self", "cls")):
                out.append((node.lineno, "attribute", node.attr))
    return out


def test_no_module_imports_or_calls_another_modules_private_names():
    """A module's private names are its own: no ``from autoresearch.x import _y``, and no ``obj._y`` of a
    name that another module defines and this one does not (the scheduler once called seven private
    methods of the engine; that is what this rules out)."""
    trees = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in _modules().items()}
    defined = {name: _private_names(tree) for name, tree in trees.items()}
    bad = []
    for name, tree in trees.items():
        others = set().union(*(d for m, d in defined.items() if m != name)) - defined[name]
        for line, how, attr in _private_uses(tree):
            if how == "import" or attr in others:
                bad.append(f"{name}:{line} {how} {attr}")
    assert not bad, "\n".join(bad)


def test_the_private_name_rule_would_see_a_violation():
    tree = ast.parse("from autoresearch.loop.engine import _x\nengine._start_row()\nself._mine()\n")
    assert [(how, n) for _, how, n in _private_uses(tree)] == [("import", "_x"), ("attribute", "_start_row")]


LOOP_MODULE_LINES = 400


def test_each_loop_module_owns_one_job_states_its_contract_and_stays_small():
    for path in sorted((PACKAGE / "loop").glob("*.py")):
        if path.name == "__init__.py":
            continue
        text = path.read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(text)) or ""
        assert len(doc) >= 120, f"{path.name}: its docstring should say what it owns and its contract"
        assert len(text.splitlines()) <= LOOP_MODULE_LINES, f"{path.name} has {len(text.splitlines())} lines"

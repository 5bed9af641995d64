"""Issue 24: the layers import downward only, and no module imports itself back through others.

The graph is read from the source with `ast` (nothing is imported): every `import` and `from ... import` of a
module of `lstm_core`, `tasks` or `flows`, at the top and inside functions alike (a lazy import still ties the
two modules: moving one means moving the other); `if TYPE_CHECKING:` blocks are left out (they never run: an
annotation is no import). `from pkg import name` counts as importing `pkg.name` when that is a module, else `pkg`.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lstm_core", "tasks", "flows")
OUTSIDE_THE_ENGINE = ("tasks", "flows", "prefect", "prefect_dask")  # what lstm_core never imports


def _modules() -> dict[str, Path]:
    """module name -> its file, for every module of the three packages (packages by their __init__)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imported(module: str, path: Path, known: set[str]) -> set[str]:
    """Every name `module` imports (absolute; relative imports resolved), known modules where they are."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
                   for stmt in node.body for inner in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                names.add(full if full in known else base)
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between the packages' modules, every name each module imports)."""
    modules = _modules()
    known = set(modules)
    everything = {m: _imported(m, p, known) for m, p in modules.items()}
    edges = {m: {n for n in names if n in known and n != m} for m, names in everything.items()}
    return edges, everything


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted: the import loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _is_package_init(name: str) -> bool:
    return name in PACKAGES


def test_the_graph_reader_sees_lazy_relative_and_from_imports(tmp_path):
    """The reader itself: a loop tied only by an import inside a function is found."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from flows.cli import main\n    from . import runners\nimport lstm_core.config\n")
    known = {"flows.cli", "flows.runners", "lstm_core.config"}
    assert _imported("flows.m", mod, known) >= {"flows.cli", "flows.runners", "lstm_core.config"}
    mod.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from flows.cli import main\n")
    assert "flows.cli" not in _imported("flows.m", mod, known)  # an annotation's import never runs


def test_no_import_loops_in_lstm_core_tasks_and_flows():
    edges, _ = _graph()
    # a package's __init__ is imported by each of its modules (Python loads it first): not a loop to break
    edges = {m: {n for n in targets if not _is_package_init(n)} for m, targets in edges.items()}
    assert _cycles(edges) == []


def test_the_engine_never_imports_tasks_flows_or_prefect():
    _, everything = _graph()
    wrong = {m: sorted(n for n in names if n.split(".")[0] in OUTSIDE_THE_ENGINE)
             for m, names in everything.items() if m.split(".")[0] == "lstm_core"}
    assert {m: names for m, names in wrong.items() if names} == {}


def test_tasks_never_import_flows():
    _, everything = _graph()
    wrong = {m: sorted(n for n in names if n.split(".")[0] == "flows")
             for m, names in everything.items() if m.split(".")[0] == "tasks"}
    assert {m: names for m, names in wrong.items() if names} == {}


def test_only_the_entry_point_imports_the_cli():
    """flows/cli.py is a parser and an exit-code map: nothing under flows (nor tasks, nor the engine) needs it."""
    edges, _ = _graph()
    assert sorted(m for m, targets in edges.items() if "flows.cli" in targets) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_product_module_is_over_500_lines(package):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / package).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}, long


def _public_callables(path: Path) -> list[ast.AST]:
    """Module-level functions and classes, and the methods of public classes, whose names are public."""
    found: list[ast.AST] = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            found.append(node)
            if isinstance(node, ast.ClassDef):
                found += [b for b in node.body if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef))
                          and not b.name.startswith("_")]
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_product_callable_has_a_docstring(package):
    """Issue 24: a newcomer reads each public function, class and method's contract where it is defined."""
    bare = [f"{p.relative_to(ROOT)}:{node.lineno} {node.name}" for p in sorted((ROOT / package).rglob("*.py"))
            for node in _public_callables(p) if not ast.get_docstring(node)]
    assert bare == [], bare

"""No import circles in the project's packages: its modules form layers, each importing only
modules below it (issue 17). Read from the source with `ast`, so an import inside a function
counts as much as one at the top: a module that can only import another lazily is still in a
circle with it. And, from the same issue, no module of stage 4 over 500 lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO_ROOT

# Circles that another piece of work removes, each with where. When it lands, the test below
# fails until the circle is taken off this list, so the list never outlives its circles.
KNOWN_CIRCLES: dict[frozenset[str], str] = {}


def project_modules() -> dict[str, Path]:
    """Every module of the project's top-level packages (tests excluded), by dotted name."""
    modules: dict[str, Path] = {}
    for init in sorted(REPO_ROOT.glob("*/__init__.py")):
        if init.parent.name == "tests":
            continue
        for path in sorted(init.parent.rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imported(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The project modules that module `name` imports, anywhere in it. `from a import b` names
    the module a.b when there is one, else a itself; a package's parent is not counted, since
    importing a.b runs a/__init__.py first but that is Python's order, not this module's choice."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t if t in modules else base for t in targets]
        else:
            continue
        yield from (target for target in targets if target in modules and target != name)


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: set(imported(name, path, modules)) for name, path in modules.items()}


def test_the_project_has_no_import_circles_but_the_known_ones() -> None:
    found = set(circles(import_graph()))
    new = [sorted(circle) for circle in found - set(KNOWN_CIRCLES)]
    assert not new, f"import circles: {new}"
    gone = [
        f"{sorted(circle)} ({where})"
        for circle, where in KNOWN_CIRCLES.items()
        if circle not in found
    ]
    assert not gone, f"gone, so take them off KNOWN_CIRCLES: {gone}"


def test_the_check_finds_a_circle_through_a_lazy_import_and_a_relative_one(
    tmp_path: Path,
) -> None:
    # The shape plots had: a imports b at the top, b imports a inside a function.
    (tmp_path / "a.py").write_text("from . import b\n")
    (tmp_path / "b.py").write_text("def later() -> None:\n    from pkg.a import thing\n")
    (tmp_path / "c.py").write_text("import pkg.a\n")
    modules = {f"pkg.{name}": tmp_path / f"{name}.py" for name in "abc"}
    graph = {name: set(imported(name, path, modules)) for name, path in modules.items()}

    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.a"}}
    assert circles(graph) == [frozenset({"pkg.a", "pkg.b"})]


def test_no_module_of_stage_4_is_over_500_lines() -> None:
    # Issue 17: beyond/ is a package whose layout is its architecture, no module over 500 lines.
    # A fix that grows a module past it moves a piece to the layer it belongs in instead.
    sizes = {
        name: len(path.read_text().splitlines())
        for name, path in project_modules().items()
        if name.split(".")[0] == "beyond"
    }
    assert "beyond.backends.child_process_group" in sizes
    assert {name: lines for name, lines in sizes.items() if lines > 500} == {}

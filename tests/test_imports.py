"""The product's imports: every module imports what it needs at its top, and no modules import each other in a
circle.

An import inside a function is allowed only where it must wait: for start-up time (a heavy library that only one
command, page or task needs, kept out of ``stridecare --help`` and the processes that never use it) or for an
optional extra (a library installed with ``pip install 'stridecare[…]'``). A comment says which, with the marker
``deferred:``, on the import's line or in the comment right above it (above a run of imports, it covers the
run). Anything else hides a circle or a cost that belongs at the top.

The circle check reads every import that can run — at the top, in functions, deferred or not; only ``if
TYPE_CHECKING:`` blocks are left out — so deferring an import is no way out of a circle.

The sources are read, not imported: both checks are static.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest import ROOT

PACKAGES = ("stridecare", "stridecare_app", "ingest", "workers", "recommender", "delivery")
MARKER = "deferred:"


@dataclass(frozen=True, slots=True)
class Import:
    line: int
    targets: tuple[str, ...]  # the product modules it names (a package's name stands for its __init__)
    in_function: bool
    marked: bool
    text: str


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _known(name: str) -> str | None:
    """The product module ``name`` stands for: itself, or the nearest package that holds it."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> tuple[str, ...]:
    names: list[str | None] = []
    if isinstance(node, ast.Import):
        names = [_known(alias.name) for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, *([node.module] if node.module else [])])
        for alias in node.names:
            # ``from package import module`` names the module; ``from module import thing`` the module.
            full = f"{base}.{alias.name}"
            names.append(full if full in MODULES else _known(base))
    return tuple(sorted({n for n in names if n is not None and n != module}))


def _comment_start(lines: list[str], node: ast.stmt) -> int:
    """The index of the first line of the comment right above ``node`` (its own first line when none)."""
    first = node.lineno - 1
    while first > 0 and lines[first - 1].lstrip().startswith("#"):
        first -= 1
    return first


def _imports(path: Path, module: str) -> Iterator[Import]:
    """Every import statement of the file at ``path`` (the module ``module``), in order."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    is_package = path.name == "__init__.py"

    def visit(nodes: list[ast.stmt], in_function: bool) -> Iterator[Import]:
        group_start = 0  # first line of the comment above the run of imports this one belongs to
        previous: ast.stmt | None = None
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                if not isinstance(previous, ast.Import | ast.ImportFrom):
                    group_start = _comment_start(lines, node)
                yield Import(
                    line=node.lineno,
                    targets=_targets(node, module, is_package),
                    in_function=in_function,
                    # A reason above a run of imports covers the run; one on a line covers it and those after.
                    marked=any(MARKER in text.partition("#")[2] for text in lines[group_start : node.end_lineno]),
                    text=lines[node.lineno - 1].strip(),
                )
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from visit(node.orelse, in_function)  # the body runs only under a type checker
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield from visit(node.body, True)
            else:
                for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        yield from visit([c for c in children if isinstance(c, ast.stmt)], in_function)
                        for child in children:
                            if isinstance(child, ast.ExceptHandler | ast.match_case):
                                yield from visit(child.body, in_function)
            previous = node

    yield from visit(ast.parse(source, filename=str(path)).body, False)


def _graph() -> dict[str, set[str]]:
    return {
        module: {target for imp in _imports(path, module) for target in imp.targets} for module, path in MODULES.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
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
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _path_through(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One circle inside ``component``, for the failure message: a → b → … → a."""
    members = set(component)
    start = component[0]
    trail = [start]
    seen = {start}
    while True:
        nxt = sorted(graph[trail[-1]] & members)
        back = [n for n in nxt if n == start]
        if back and len(trail) > 1:
            return [*trail, start]
        fresh = [n for n in nxt if n not in seen]
        if not fresh:
            # Every neighbour was visited: close the circle at the first one on the trail.
            loop_to = next(n for n in nxt if n in seen)
            return [*trail[trail.index(loop_to) :], loop_to]
        trail.append(fresh[0])
        seen.add(fresh[0])


def test_imports_inside_functions_say_why() -> None:
    unmarked = [
        f"{path.relative_to(ROOT)}:{imp.line}: {imp.text}"
        for module, path in MODULES.items()
        for imp in _imports(path, module)
        if imp.in_function and not imp.marked
    ]
    assert not unmarked, (
        f"{len(unmarked)} imports inside functions without a reason; move them to the top, or say why they must "
        f"wait with a `# {MARKER} start-up time (…)` or `# {MARKER} optional extra (…)` comment on the line or "
        "right above it:\n" + "\n".join(unmarked)
    )


def test_no_import_cycles() -> None:
    graph = _graph()
    circles = [" → ".join(_path_through(graph, component)) for component in _cycles(graph)]
    assert not circles, "modules that import each other in a circle:\n" + "\n".join(circles)


def test_the_checks_see_what_they_are_meant_to(tmp_path: Path) -> None:
    # The scanner itself, on a module written here: inner imports with and without a reason, a TYPE_CHECKING
    # block, and a cycle of three.
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from ingest import fit\n"
        "def f() -> None:\n"
        "    import json\n"
        "    # deferred: start-up time of the command line, which\n"
        "    # needs no worker\n"
        "    import celery\n"
        "    import celery.beat\n"
        "    x = 1\n"
        "    # an unrelated comment\n"
        "    import os\n"
        "    try:\n"
        "        import apprise  # deferred: optional extra push\n"
        "    except ImportError:\n"
        "        pass\n"
    )
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    found = [(imp.text, imp.in_function, imp.marked) for imp in _imports(probe, "probe")]
    assert found == [
        ("from __future__ import annotations", False, False),
        ("from typing import TYPE_CHECKING", False, False),
        ("import json", True, False),
        ("import celery", True, True),
        ("import celery.beat", True, True),
        ("import os", True, False),
        ("import apprise  # deferred: optional extra push", True, True),
    ]
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _path_through(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]

"""The package's layers, read from its source: no import cycle, and no module importing upward.

The CLI and the console (the two front ends) call the services; the services call the core and
the adapters (store, factory, checks, emulator); nothing below a front end imports one, and
nothing below the services imports them. Imports inside functions count too: a lazy import is
still a dependency, only a later one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from backfill import identity, tokens

PACKAGE = Path(__file__).resolve().parent.parent / "backfill"
FRONT_ENDS = ("backfill.cli", "backfill.console")
ADAPTERS = ("backfill.store", "backfill.factory", "backfill.checks", "backfill.emulator")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield module
            # ``from backfill.store import ledger`` names a module, not a name in a package.
            yield from (f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: {dep for dep in _imports(name, path, known) if dep in known and dep != name}
        for name, path in modules.items()
    }


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative enough here)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph[node]):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    # The check above can fail: a two-module loop is found.
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        # Services never print or parse: they know neither front end.
        (("backfill.services",), FRONT_ENDS),
        # Adapters sit at the edges: no front end, no use case.
        (ADAPTERS, (*FRONT_ENDS, "backfill.services")),
    ],
)
def test_no_upward_import(layer: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    upward = [
        f"{module} -> {dep}"
        for module, deps in sorted(_graph().items())
        if _within(module, layer)
        for dep in sorted(deps)
        if _within(dep, forbidden)
    ]
    assert upward == []


def test_the_core_imports_no_front_end_and_no_service() -> None:
    layered = (*FRONT_ENDS, "backfill.services", *ADAPTERS)
    upward = [
        f"{module} -> {dep}"
        for module, deps in sorted(_graph().items())
        # ``python -m backfill`` is the CLI's entry point, not a layer.
        if not _within(module, layered) and module not in ("backfill", "backfill.__main__")
        for dep in sorted(deps)
        if _within(dep, (*FRONT_ENDS, "backfill.services"))
    ]
    assert upward == []


def test_token_claims_extend_the_display_claims() -> None:
    # tokens.py spells the list out so that it need not import identity (which imports it).
    assert set(identity.PRINCIPAL_CLAIMS) <= set(tokens.TOKEN_PRINCIPAL_CLAIMS)
    assert tokens.TOKEN_PRINCIPAL_CLAIMS[1] == "preferred_username"

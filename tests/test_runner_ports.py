"""The runner depends on its ports, never on a store, the CLI or the use cases (issue 11).

Read from the source (every import, function-level ones included), so a concrete adapter slipped
into ``backfill/runner/`` fails here rather than in a review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import backfill.runner

RUNNER = Path(backfill.runner.__file__).parent
FORBIDDEN = ("backfill.store", "backfill.cli", "backfill.services", "backfill.execution")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_runner_imports_no_adapter_nor_anything_above_it() -> None:
    modules = sorted(RUNNER.glob("*.py"))
    assert {p.name for p in modules} >= {"machine.py", "ports.py", "reconcile.py", "polling.py"}
    offending = {
        f"{path.name}: {name}"
        for path in modules
        for name in _imports(path)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    }
    assert not offending

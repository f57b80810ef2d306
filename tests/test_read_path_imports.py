"""What the read paths import (issue 14): start-up is imports, so each command loads only what it needs.

``status`` and ``ledger verify`` read through Core tables: no SQLModel, no ORM, no Alembic on an
up-to-date ledger, and none of the Azure SDK, pydantic (plans), httpx (webhooks), jinja2 (the
console), cryptography (signed checkpoints) or tabulate (plain tables are drawn without it).
``preview --no-sync`` reads the history cache through Core tables too and never imports the SDK;
``--help`` imports no database at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from plan_samples import plan_toml

from backfill.identity import Actor, IdentitySource
from backfill.store.database import Database
from backfill.store.ledger import Ledger

ORM = ("sqlmodel", "sqlalchemy.orm", "alembic")
NOT_FOR_READS = (*ORM, "azure", "pydantic", "httpx", "jinja2", "cryptography", "tabulate")


def imported_by(args: list[str], url: str, cwd: Path, *, code: int = 0) -> list[str]:
    """The top modules a fresh interpreter holds after ``backfill ARGS`` (exit ``code``)."""
    script = (
        "import sys\n"
        "from backfill.cli.main import run\n"
        f"code = run({args!r})\n"
        f"assert code == {code}, code\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "BACKFILL_LEDGER": url}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, env=env, cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def heavy(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == name or m.startswith(name + ".") for name in names)]


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'reads.db'}"
    db = Database(url)
    Ledger(db).append("note", {"text": "hello"}, actor=Actor("alice", IdentitySource.DECLARED))
    db.dispose()
    return url


@pytest.mark.parametrize("args", [["status"], ["ledger", "verify"], ["ledger", "export", "--format", "jsonl"]])
def test_read_paths_do_not_import_the_orm(tmp_path: Path, ledger: str, args: list[str]) -> None:
    modules = imported_by(args, ledger, tmp_path)
    assert not heavy(modules, ORM)


@pytest.mark.parametrize("args", [["status"], ["ledger", "verify"]])
def test_status_and_verify_import_only_the_database(tmp_path: Path, ledger: str, args: list[str]) -> None:
    modules = imported_by(args, ledger, tmp_path)
    assert not heavy(modules, NOT_FOR_READS)
    assert "sqlalchemy" in modules  # the ledger is read through SQLAlchemy Core


def test_a_preview_from_the_cache_imports_no_sdk_and_no_orm(tmp_path: Path, ledger: str) -> None:
    start = datetime(2026, 11, 3, tzinfo=UTC)
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_toml({"start": start, "end": start + timedelta(hours=1), "every": "15m"}), encoding="utf-8")
    # Never synced: every window is blocked-unknown (exit 4), decided from the cache alone.
    modules = imported_by(["preview", str(plan), "--no-sync"], ledger, tmp_path, code=4)
    assert not heavy(modules, (*ORM, "azure", "httpx", "jinja2", "cryptography", "tabulate"))


def test_help_imports_no_database(tmp_path: Path, ledger: str) -> None:
    modules = imported_by(["--help"], ledger, tmp_path)
    assert not heavy(modules, ("sqlalchemy", *NOT_FOR_READS, "pyodbc"))


# What status and verify load of ours (issue 14): the fold and the chain, not the decision table,
# the sink checks, the factory's run model, the request's seal, or the notices' texts and targets
# (every command installs the notifier; a read path sends nothing).
NOT_OURS_FOR_READS = (
    "backfill.decisions",
    "backfill.checks",
    "backfill.factory",
    "backfill.windows",
    "backfill.seal",
    "backfill.notify.messages",
    "backfill.notify.targets",
    "backfill.plan",
)


@pytest.mark.parametrize("args", [["status"], ["ledger", "verify"]])
def test_status_and_verify_leave_the_decision_table_and_the_notices_alone(
    tmp_path: Path, ledger: str, args: list[str]
) -> None:
    modules = imported_by(args, ledger, tmp_path)
    assert not heavy(modules, NOT_OURS_FOR_READS)
    assert "backfill.approvals" not in modules or args == ["status"]  # status: the approved windows


def test_verify_needs_no_time_range_parser(tmp_path: Path, ledger: str) -> None:
    assert not heavy(imported_by(["ledger", "verify"], ledger, tmp_path), ("backfill.spans", "backfill.relative_time"))


def test_only_the_entry_point_freezes_the_imports(tmp_path: Path, ledger: str) -> None:
    # main() freezes what a command's imports made (the collector then skips it); run(), which
    # tests and the demo call many times in one process, leaves the collector alone.
    script = (
        "import gc, sys\n"
        "from backfill.cli.main import run\n"
        "assert run(['status']) == 0\n"
        "assert gc.get_freeze_count() == 0, gc.get_freeze_count()\n"
        "import backfill.cli.main as m\n"
        "m._FREEZE_IMPORTS = True\n"
        "m.cli.get_command(None, 'ledger')\n"
        "assert gc.get_freeze_count() > 0\n"
    )
    env = {**os.environ, "BACKFILL_LEDGER": ledger}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr

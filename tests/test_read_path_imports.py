"""``status`` and ``ledger verify`` read through Core tables: no SQLModel, no ORM (issue 14)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backfill.identity import Actor, IdentitySource
from backfill.store.database import Database
from backfill.store.ledger import Ledger


@pytest.mark.parametrize("args", [["status"], ["ledger", "verify"], ["ledger", "export", "--format", "jsonl"]])
def test_read_paths_do_not_import_the_orm(tmp_path: Path, args: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'reads.db'}"
    db = Database(url)
    Ledger(db).append("note", {"text": "hello"}, actor=Actor("alice", IdentitySource.DECLARED))
    db.dispose()
    code = (
        "import sys\n"
        "from backfill.cli.main import run\n"
        f"assert run({args!r}) == 0\n"
        "heavy = [m for m in sys.modules if m.startswith(('sqlmodel', 'sqlalchemy.orm', 'alembic'))]\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "BACKFILL_LEDGER": url}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    assert result.returncode == 0, result.stderr

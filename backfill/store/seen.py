"""The newest checkpoint this machine has seen in each ledger: a per-user state file.

A ledger that shrank below what this machine once verified, or whose tables vanished, is
tampering; only a record kept outside the database can tell. ``BACKFILL_STATE_DIR`` (else
``$XDG_STATE_HOME/backfill``, else ``~/.local/state/backfill``) holds ``ledgers.json``:
``{ledger key: {"seq": N, "hash": H}}``. One trust domain: whoever can rewrite the ledger file
as this user can rewrite this file too; signed checkpoints published elsewhere cover that.
A state file that cannot be read or written is ignored (the check is then only as good as the
ledger's own chain), never an error that stops a command.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from backfill.chain import parse_checkpoint

FILE_NAME = "ledgers.json"


def state_dir() -> Path:
    explicit = os.environ.get("BACKFILL_STATE_DIR", "").strip()
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "backfill"


def state_file() -> Path:
    return state_dir() / FILE_NAME


def ledger_key(url: str) -> str:
    """A SQLite ledger by its absolute file, any other by its URL without user and password (one
    ledger, whoever connects to it)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    if parsed.get_backend_name() == "sqlite" and parsed.database and not parsed.database.startswith("file:"):
        return f"sqlite:{Path(parsed.database).resolve()}"
    return parsed.set(username=None, password=None).render_as_string(hide_password=True)


def _load(folder: Path | None = None) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(((folder or state_dir()) / FILE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def seen_checkpoint(url: str) -> tuple[int, str] | None:
    entry = _load().get(ledger_key(url))
    if not isinstance(entry, dict):
        return None
    try:
        return parse_checkpoint(f"{entry.get('seq')}:{entry.get('hash')}")
    except ValueError:
        return None


def remember_checkpoint(url: str, checkpoint: tuple[int, str], folder: Path | None = None) -> None:
    """Keep ``checkpoint`` if it is newer than the one on record (never move backwards).
    ``folder``: the state folder as it was when the head was verified (an exit handler runs
    after the environment may have changed)."""
    key = ledger_key(url)
    folder = folder or state_dir()
    data = _load(folder)
    current = data.get(key)
    held = current.get("seq") if isinstance(current, dict) else None
    if isinstance(held, int) and held >= checkpoint[0]:
        return
    data[key] = {"seq": checkpoint[0], "hash": checkpoint[1]}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Write then rename: a crash leaves the old file, never half a file.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ledgers-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1, sort_keys=True)
        Path(tmp).replace(folder / FILE_NAME)
    except OSError:
        return

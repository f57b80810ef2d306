"""Shared fixtures: isolation from the user's files and Azure, and real database servers.

Every test runs in its own working directory with its own SQLite ledger, and with the factory
endpoint pointed at a closed local port, so no test can touch a user's ledger or Azure by
accident. PostgreSQL and MariaDB tests get a fresh database each; where a server or driver is
missing they skip on a laptop and fail under CI=true.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from database_support import fresh_database, unreachable
from hypothesis import settings

if TYPE_CHECKING:
    from backfill.store.database import Database

# No example database: a test run writes nothing into the repository (issue 9).
settings.register_profile("backfill", database=None)
settings.load_profile("backfill")

IN_CI = os.environ.get("CI", "").lower() == "true"
# The per-user record of ledger heads seen (backfill.store.seen) never lands in the real home,
# not even from module-scoped fixtures; each test gets its own below.
os.environ["BACKFILL_STATE_DIR"] = tempfile.mkdtemp(prefix="backfill-test-state-")
POSTGRES_ADMIN = os.environ.get("BACKFILL_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_ADMIN = os.environ.get("BACKFILL_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")


def missing(what: str) -> None:
    """Skip on a laptop, fail in CI: CI must prove every real driver and server."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true")
    pytest.skip(f"{what} is not available")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BACKFILL_LEDGER", f"sqlite:///{tmp_path / 'ledger.db'}")
    # The per-user record of ledger checkpoints seen (backfill.store.seen), per test.
    monkeypatch.setenv("BACKFILL_STATE_DIR", str(tmp_path / "state"))
    # A closed port: a test that forgot to point at the emulator fails fast instead of
    # reaching Azure's public endpoint.
    monkeypatch.setenv("BACKFILL_ADF_ENDPOINT", "https://127.0.0.1:9")
    monkeypatch.setenv("BACKFILL_ADF_TOKEN", "no-token-in-tests")
    # The debug log goes to a per-user folder: in tests, the test's own.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("BACKFILL_DEBUG_LOG", raising=False)
    for name in (
        "BACKFILL_ADF_CA_BUNDLE",
        "BACKFILL_ACTOR",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "BACKFILL_FACTORY",
        "BACKFILL_RESOURCE_GROUP",
        "AZURE_SUBSCRIPTION_ID",
    ):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _fresh_database(admin_url: str, kind: str) -> Iterator[str]:
    why = unreachable(admin_url)
    if why is not None:
        missing(f"{kind} at {admin_url} ({why})")
    with fresh_database(admin_url) as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a fresh, empty PostgreSQL database, dropped afterwards."""
    yield from _fresh_database(POSTGRES_ADMIN, "PostgreSQL")


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A SQLAlchemy URL of a fresh, empty MariaDB database, dropped afterwards."""
    yield from _fresh_database(MARIADB_ADMIN, "MariaDB")


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The ledger database on SQLite and on PostgreSQL; BACKFILL_LEDGER points at it."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger-param.db'}"
        monkeypatch.setenv("BACKFILL_LEDGER", url)
        yield url
    else:
        for url in _fresh_database(POSTGRES_ADMIN, "PostgreSQL"):
            monkeypatch.setenv("BACKFILL_LEDGER", url)
            yield url


@pytest.fixture
def db(ledger_url: str) -> Iterator[Database]:
    """The ledger database on SQLite and on PostgreSQL (``ledger_url``), disposed afterwards."""
    from backfill.store.database import Database

    database = Database(ledger_url)
    yield database
    database.dispose()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Figures the tests gathered (the crash harness's kills and cycles), after the results: a
    report, not a test that asserts nothing."""
    figures = getattr(sys.modules.get("test_crash_harness"), "FIGURES", None)
    if figures and any(figures.values()):
        terminalreporter.write_sep("-", "figures")
        terminalreporter.write_line("crash harness: " + ", ".join(f"{name} {count}" for name, count in figures.items()))

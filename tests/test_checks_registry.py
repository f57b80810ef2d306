"""Kinds load through the ``backfill.checks`` entry points, built-ins and plugins alike; the example
plugin in checks/plugin-example works directly and through a real entry point."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backfill.checks.base import CheckSpec, CheckStatus
from backfill.checks.command import CommandCheck
from backfill.checks.odbc import OdbcCheck
from backfill.checks.registry import build_check, build_checks, known_kinds
from backfill.checks.runner import GuardedCheck
from backfill.checks.sql import SqlCheck
from backfill.errors import CheckError, ExitCode
from backfill.windows import Window

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "checks" / "plugin-example"
WINDOW = Window(datetime(2026, 11, 3, 2, 0, tzinfo=UTC), datetime(2026, 11, 3, 2, 15, tzinfo=UTC))
ODBC = {"connection": "Driver=SQLite3;Database=${SINK}", "query": "SELECT COUNT(*) FROM t"}


def distribution(root: Path, name: str, entries: dict[str, str]) -> None:
    """A minimal installed distribution: what pip leaves on sys.path, entry points included."""
    info = root / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n", encoding="utf-8")
    lines = "".join(f"{kind} = {target}\n" for kind, target in entries.items())
    (info / "entry_points.txt").write_text(f"[backfill.checks]\n{lines}", encoding="utf-8")


@pytest.fixture
def rowfile_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    distribution(site, "backfill-check-rowfile", {"rowfile": "backfill_check_rowfile:RowFileCheck"})
    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.syspath_prepend(str(site))


def test_builtins_come_from_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACKFILL_CHECKS", raising=False)
    assert {"odbc", "sql", "command"} <= set(known_kinds())
    odbc, sql, command = build_checks(
        [
            CheckSpec("a", "odbc", ODBC),
            CheckSpec("b", "sql", {"url": "sqlite:///x.db", "query": "SELECT COUNT(*) FROM t"}),
            CheckSpec("c", "command", {"command": ["true"]}, timedelta(seconds=7)),
        ]
    )
    assert isinstance(odbc, GuardedCheck) and isinstance(odbc.inner, OdbcCheck)
    assert isinstance(sql, GuardedCheck) and isinstance(sql.inner, SqlCheck)
    assert isinstance(command, GuardedCheck) and isinstance(command.inner, CommandCheck)
    assert command.timeout == timedelta(seconds=7)
    assert command.evaluate(WINDOW).status is CheckStatus.CLEAN


def test_backfill_checks_limits_the_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKFILL_CHECKS", " sql , command,")
    assert known_kinds() == ["command", "sql"]
    with pytest.raises(CheckError) as refused:
        build_check(CheckSpec("sink", "odbc", ODBC))
    assert (
        str(refused.value)
        == "check 'sink': kind 'odbc' is installed but BACKFILL_CHECKS=command,sql does not enable it"
    )
    assert refused.value.exit_code is ExitCode.FAILED
    monkeypatch.setenv("BACKFILL_CHECKS", "")
    assert known_kinds() == []


def test_unknown_kind_names_the_check_and_the_known_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKFILL_CHECKS", "odbc,sql,command")
    with pytest.raises(CheckError) as refused:
        build_checks([CheckSpec("readings-in-sink", "odbcc", ODBC)])
    assert str(refused.value) == "check 'readings-in-sink': unknown kind 'odbcc' (known kinds: command, odbc, sql)"


def test_importing_the_odbc_kind_does_not_load_pyodbc() -> None:
    code = "import sys, backfill.checks.registry, backfill.checks.odbc; print('pyodbc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_plugin_class_directly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGIN))
    from backfill_check_rowfile import RowFileCheck  # type: ignore[import-not-found]

    exports = tmp_path / "exports"
    exports.mkdir()
    spec = CheckSpec(
        "export-file", "rowfile", {"path": "exports/{start:%Y%m%d-%H%M}.csv", "expect": 3}, base_dir=tmp_path
    )
    check = RowFileCheck(spec)
    clean = check.evaluate(WINDOW)
    assert (clean.status, clean.reason) == (CheckStatus.CLEAN, "exports/20261103-0200.csv does not exist")
    (exports / "20261103-0200.csv").write_text("feeder,reading_ts\nnorth,1\nnorth,2\n\n", encoding="utf-8")
    partial = check.evaluate(WINDOW)
    assert (partial.status, partial.reason) == (CheckStatus.PARTIAL, "2 of 3 rows committed")
    assert partial.evidence["path"] == "exports/20261103-0200.csv"
    (exports / "20261103-0200.csv").write_text("feeder\nnorth\nnorth\nnorth\n", encoding="utf-8")
    assert check.evaluate(WINDOW).status is CheckStatus.COMPLETE
    no_folder = RowFileCheck(CheckSpec("export-file", "rowfile", {"path": "gone/{start}.csv"}, base_dir=tmp_path))
    assert no_folder.evaluate(WINDOW).status is CheckStatus.ERROR
    with pytest.raises(CheckError) as refused:
        RowFileCheck(CheckSpec("export-file", "rowfile", {"path": "x.csv", "header": "yes"}))
    assert str(refused.value) == "check 'export-file': option 'header': must be true or false"


def test_plugin_loads_through_a_real_entry_point(
    rowfile_installed: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "rowfile" in known_kinds()
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "20261103.csv").write_text("h\n1\n2\n", encoding="utf-8")
    (check,) = build_checks(
        [CheckSpec("export-file", "rowfile", {"path": "exports/{start:%Y%m%d}.csv", "expect": 2})], base_dir=tmp_path
    )
    assert type(check.inner).__module__ == "backfill_check_rowfile"  # type: ignore[attr-defined]
    assert check.evaluate(WINDOW).reason == "2 of 2 rows committed"
    monkeypatch.setenv("BACKFILL_CHECKS", "odbc,rowfile")
    assert known_kinds() == ["odbc", "rowfile"]
    with pytest.raises(CheckError) as refused:
        build_check(CheckSpec("export-file", "rowfile", {"path": "x.csv", "colour": "red"}))
    assert str(refused.value) == (
        "check 'export-file': unknown option 'colour' for kind 'rowfile' (allowed: expect, header, path)"
    )


def test_a_kind_registered_twice_is_refused(rowfile_installed: None, tmp_path: Path) -> None:
    distribution(tmp_path / "site", "evil-odbc", {"odbc": "backfill_check_rowfile:RowFileCheck"})
    with pytest.raises(CheckError) as refused:
        build_check(CheckSpec("sink", "odbc", ODBC))
    message = str(refused.value)
    assert message.startswith("check 'sink': kind 'odbc' is registered more than once: ")
    assert "evil-odbc (backfill_check_rowfile:RowFileCheck)" in message
    assert "backfill (backfill.checks.odbc:OdbcCheck)" in message


HOSTILE = """
from backfill.checks.base import CheckResult, CheckStatus

class Exploding:
    def __init__(self, spec):
        raise ValueError("no options for you")

class Nameless:
    def __init__(self, spec):
        self.name = "someone-else"
    def evaluate(self, window):
        return CheckResult(self.name, CheckStatus.CLEAN, "")

class Raising:
    def __init__(self, spec):
        self.name = spec.name
    def evaluate(self, window):
        raise ConnectionError("sink closed the connection")
"""


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (
            "missing",
            "check 'h': kind 'missing' from hostile (no_such_module_xyz:Check) failed to load: "
            "ModuleNotFoundError: No module named 'no_such_module_xyz'",
        ),
        ("exploding", "check 'h': kind 'exploding' refused its options: ValueError: no options for you"),
        ("nameless", "check 'h': kind 'nameless' built a check without the name 'h'"),
    ],
)
def test_broken_plugins_give_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, message: str) -> None:
    _install_hostile(tmp_path, monkeypatch)
    with pytest.raises(CheckError) as refused:
        build_check(CheckSpec("h", kind, {}))
    assert str(refused.value) == message


def test_a_plugin_that_raises_is_an_error_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_hostile(tmp_path, monkeypatch)
    result = build_check(CheckSpec("h", "raising", {})).evaluate(WINDOW)
    assert (result.status, result.reason) == (
        CheckStatus.ERROR,
        "check raised ConnectionError: sink closed the connection",
    )


def _install_hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "hostile-site"
    distribution(
        site,
        "hostile",
        {
            "missing": "no_such_module_xyz:Check",
            "exploding": "hostile_checks:Exploding",
            "nameless": "hostile_checks:Nameless",
            "raising": "hostile_checks:Raising",
        },
    )
    (site / "hostile_checks.py").write_text(HOSTILE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "hostile_checks", raising=False)


def test_duplicate_check_names_are_refused() -> None:
    with pytest.raises(CheckError) as refused:
        build_checks(
            [CheckSpec("same", "command", {"command": ["true"]}), CheckSpec("same", "command", {"command": ["true"]})]
        )
    assert str(refused.value) == "check 'same' is defined twice; check names must be unique"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"query": "SELECT 1"}, "option 'connection': is required for kind 'odbc'"),
        (
            {**ODBC, "dsn": "x"},
            "unknown option 'dsn' for kind 'odbc' (allowed: args, connection, expect, query, query_file)",
        ),
        (
            {"connection": "x", "query": "SELECT 1", "query_file": "a.sql"},
            "option 'query': give exactly one of query or query_file",
        ),
        ({"connection": "x"}, "option 'query': give exactly one of query or query_file"),
        (
            {**ODBC, "query": "SELECT ${TABLE}"},
            "option 'query': may not use ${VAR}: only the connection is expanded "
            "(queries, args and commands are recorded as evidence)",
        ),
        ({**ODBC, "args": "north"}, "option 'args': must be a list of templates, bound to the ? placeholders in order"),
        (
            {**ODBC, "args": ["{region}"]},
            "option 'args[0]': unknown field {region} (only {start} and {end} exist; "
            "write {{ and }} for literal braces)",
        ),
        ({**ODBC, "args": [None]}, "option 'args[0]': None is not a string, a number, a boolean or a date-time"),
        ({**ODBC, "expect": -1}, "option 'expect': must be a whole number >= 0 or a table with a query"),
        ({**ODBC, "expect": True}, "option 'expect': must be a whole number >= 0 or a table with a query"),
        (
            {**ODBC, "expect": {"query": "SELECT 1", "url": "x"}},
            "unknown option 'expect.url' (allowed: args, connection, query, query_file)",
        ),
        ({**ODBC, "expect": {"args": []}}, "option 'expect.query': give exactly one of query or query_file"),
        (
            {"connection": "x", "query_file": "missing.sql"},
            "option 'query_file': cannot read {base}/missing.sql: No such file or directory",
        ),
    ],
)
def test_bad_odbc_definitions_name_the_check_and_option(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(CheckError) as refused:
        build_check(CheckSpec("sink", "odbc", options, base_dir=tmp_path))
    assert str(refused.value) == "check 'sink': " + message.replace("{base}", str(tmp_path))


def test_timeout_must_be_positive() -> None:
    with pytest.raises(CheckError) as refused:
        build_check(CheckSpec("sink", "odbc", ODBC, timedelta(0)))
    assert str(refused.value) == "check 'sink': option 'timeout': must be positive"


def test_plain_values_in_args_are_bound_as_they_are() -> None:
    aware = datetime(2026, 11, 3, 3, 0, tzinfo=UTC)
    check = build_check(CheckSpec("sink", "odbc", {**ODBC, "args": ["north", 7, 1.5, True, aware]}))
    assert check.inner._main.args == ["north", 7, 1.5, True, aware]  # type: ignore[attr-defined]
    with pytest.raises(CheckError) as refused:
        build_check(CheckSpec("sink", "odbc", {**ODBC, "args": [datetime(2026, 11, 3)]}))
    assert str(refused.value) == (
        "check 'sink': option 'args[0]': timestamp 2026-11-03T00:00:00 has no UTC offset; write it with Z or +00:00"
    )

"""What the screens tell an operator: status's reasons and estimates, tables that fit a terminal.

Tables fit 120 columns by default (short run IDs, free text cut with an ellipsis), ``--wide``
prints everything whole; ``status`` says why a window needs an operator, fills the status column
of windows in flight, and never gives an estimated finish a failed or silent backfill cannot meet.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import missing
from hypothesis import given
from hypothesis import strategies as st
from runner_support import base_time, cli, emulator, keys, request, scenario, write_plan

from backfill import demo
from backfill import progress as pg
from backfill.backfills import BackfillState, BackfillStatus
from backfill.cli import main
from backfill.cli.output import ELLIPSIS, WIDTH, fit, short_id
from backfill.cli.status import _progress_line, _status_cell
from backfill.emulator import Emulator, OutcomeRule, load_scenario
from backfill.progress import Progress, new_window
from backfill.timeutil import format_utc, utcnow

REPO = Path(__file__).resolve().parent.parent
Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch
GUID = "5292cfaf-79ff-4b9b-ae85-e1c84df06030"

cell = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=200)


@given(st.lists(st.tuples(st.text("abcdef", min_size=1, max_size=30), cell, cell), min_size=1, max_size=6))
def test_fit_cuts_only_the_free_text_and_only_to_fit(rows: list[tuple[str, str, str]]) -> None:
    headers = ["key", "reason", "parameters"]
    fitted = fit(headers, [list(row) for row in rows], shrink=["reason", "parameters"])
    widths = [max(len(h) + 2, *(len(r[i]) for r in fitted)) for i, h in enumerate(headers)]
    assert sum(widths) + 4 <= WIDTH
    for original, cut in zip(rows, fitted, strict=True):
        assert cut[0] == original[0], "columns not named shrink are never cut"
        for before, after in zip(original[1:], cut[1:], strict=True):
            assert after == before or (after.endswith(ELLIPSIS) and before.startswith(after[:-1]))


def test_short_ids() -> None:
    assert (short_id(GUID), short_id("run-1"), short_id("recovery-7")) == ("5292cfaf", "run-1", "recovery-7")


@pytest.fixture
def story(tmp_path: Path, monkeypatch: MP) -> Iterator[Emulator]:
    """The example scenario with the demo plan requested, approved and run to its canary pause."""
    shutil.copy(REPO / "plans" / "emulator-scenario.toml", tmp_path / "scenario.toml")
    with Emulator(load_scenario(tmp_path / "scenario.toml")) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("TELEMETRY_SINK_URL", f"sqlite:///{tmp_path / 'telemetry-sink.db'}")
        try:
            yield emu
        finally:
            from backfill.checks import sql

            sql.dispose_engines()


def _lines(capsys: Cap) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_tables_fit_120_columns_and_wide_shows_all(story: Emulator, monkeypatch: MP, capsys: Cap) -> None:
    plan = str(REPO / "plans" / "demo.toml")
    assert main.run(["preview", plan]) == 4
    narrow = _lines(capsys)
    # The reason column is left to --wide; the reasons that matter follow the table, wrapped.
    assert max(map(len, narrow)) <= WIDTH, max(narrow, key=len)
    assert narrow[0].split()[-1] == "decision"
    partial = f"{format_utc(demo.yesterday() + demo.PARTIAL * demo.EVERY)}/"
    whole = [line for line in narrow if line.startswith(f"  blocked-partial {partial}")]
    assert whole, "a blocked window's whole reason follows the table"
    assert main.run(["preview", plan, "--wide", "--no-sync"]) == 4
    wide = _lines(capsys)
    assert max(map(len, wide)) > WIDTH and any("a supervisor may clear it with" in line for line in wide)
    assert wide[0].split()[-1] == "reason"
    since = format_utc(utcnow() - timedelta(days=3))
    assert main.run(["runs", "list", "--since", since]) == 0
    listed = _lines(capsys)
    assert max(map(len, listed)) <= WIDTH and ELLIPSIS in "".join(listed)
    assert main.run(["runs", "list", "--since", since, "--wide"]) == 0
    assert max(map(len, _lines(capsys))) > WIDTH
    monkeypatch.setenv("BACKFILL_ACTOR", "alice")
    assert main.run(["request", plan]) == 0
    backfill_id = _lines(capsys)[0]
    monkeypatch.setenv("BACKFILL_ACTOR", "bob")
    assert main.run(["approve", backfill_id]) == 0
    assert main.run(["run", backfill_id]) == 3
    capsys.readouterr()
    assert main.run(["status", backfill_id]) == 0
    shown = [line for line in _lines(capsys) if line.startswith(("window", "---", "20"))]
    assert len(shown) == 26 and max(map(len, shown)) <= WIDTH
    assert main.run(["status", backfill_id, "--wide"]) == 0
    full = _lines(capsys)
    ran = [line for line in full if " succeeded " in line]
    assert len(ran) == 1 and len(ran[0].split()[3]) == 36, "--wide shows the whole run ID"


def test_the_readme_preview_fits_120_columns(story: Emulator, tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    """README's "How a backfill goes": plans/telemetry-15m.toml (an ODBC check) on the scenario."""
    import pyodbc

    if "SQLite3" not in pyodbc.drivers():
        missing("ODBC driver 'SQLite3'")
    monkeypatch.setenv("TELEMETRY_SINK_ODBC", f"Driver=SQLite3;Database={tmp_path / 'telemetry-sink.db'}")
    monkeypatch.setenv("SOURCE_API_KEY", "not-a-real-key")
    plan = str(REPO / "plans" / "telemetry-15m.toml")
    assert main.run(["preview", plan]) == 4
    narrow = _lines(capsys)
    assert max(map(len, narrow)) <= WIDTH, max(narrow, key=len)
    assert narrow[0].split() == ["window", "latest", "run", "status", "checks", "decision"]
    assert any(line.startswith("  blocked-partial ") for line in narrow), "the whole reason follows"
    assert main.run(["preview", plan, "--wide", "--no-sync"]) == 4
    wide = _lines(capsys)
    assert wide[0].split()[-1] == "reason" and max(map(len, wide)) > WIDTH


def test_status_says_why_a_window_needs_an_operator(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    scen = scenario(base)
    scen.add_outcome(OutcomeRule("hang", match={"windowStart": format_utc(base)}))
    with emulator(scen, monkeypatch):
        bid = request(write_plan(tmp_path, 1, execution={"run_timeout": "1s"}), monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "run", bid) == 4
        capsys.readouterr()
        assert cli(monkeypatch, "carol", "status", bid) == 0
    out = capsys.readouterr().out
    key = keys(base, 1)[0]
    assert f"needs an operator: {key}: run still InProgress after run_timeout 1.0s; left running" in out
    row = next(line for line in out.splitlines() if line.startswith(key))
    assert row.split()[2:5:2] == ["needs-operator", "InProgress"]


def test_a_failed_backfill_gives_no_estimated_finish(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    scen = scenario(base)
    scen.add_outcome(OutcomeRule("fail", match={"windowStart": format_utc(base)}, activity="CopyReadings"))
    with emulator(scen, monkeypatch):
        bid = request(write_plan(tmp_path, 3), monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "run", bid) == 1
        capsys.readouterr()
        assert cli(monkeypatch, "carol", "status", bid) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == (
        "progress: 0 done, 0 running, 2 left, 1 failed of 3; no estimated finish: it failed "
        "(backfill run ID --resume goes on)"
    )


def test_the_status_column_of_windows_in_flight_is_never_blank() -> None:
    running, intent = new_window("run"), new_window("run")
    running["state"], running["run_id"] = pg.WindowState.RUNNING, GUID
    intent["state"] = pg.WindowState.INTENT
    assert (_status_cell(running), _status_cell(intent)) == ("not read yet", "no run ID yet")


def test_a_runner_not_seen_for_long_gets_no_estimate_in_the_past() -> None:
    now = utcnow()
    state = BackfillState("bf-1", BackfillStatus.RUNNING, 1)
    progress = Progress(
        total=4,
        done=1,
        running=1,
        failed=0,
        left=2,
        average=timedelta(minutes=12),
        estimated_finish=now - timedelta(hours=2),
    )
    seen = now - timedelta(hours=3)
    line = _progress_line(progress, state, now, seen)
    assert line.endswith(
        f"runner not seen since {format_utc(seen)} (3h00m ago): if it died, backfill run ID "
        "resumes (runbooks/after-a-crash.md)"
    )
    assert "estimated finish" not in line
    fresh = _progress_line(progress, state, now, now - timedelta(seconds=5))
    assert "estimated finish " + format_utc(now) in fresh, "an estimate is never in the past"
    # A runner following a long run records nothing for a while, but its claim's lease is live.
    assert "estimated finish " in _progress_line(progress, state, now, seen, alive=True)

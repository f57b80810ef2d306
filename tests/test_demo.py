"""``backfill demo``: the whole story, in-process and as a real subprocess, on the real emulator.

Each run of the demo runs real commands against the in-process emulator over HTTPS with a real
SQLite ledger and sink; the tests assert the exit code and the lines that tell the story.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfill import demo as demo_module
from backfill.cli import main
from backfill.demo import expected_decisions, shifted_plan, yesterday
from backfill.errors import BackfillError
from backfill.plan.loader import plan_from_data
from backfill.timeutil import format_utc, utcnow

REPO = Path(__file__).resolve().parent.parent
DECISIONS = ("skip-succeeded", "skip-in-progress", "skip-complete-in-sink", "blocked-partial", "run", "rerun")


def story_checks(out: str) -> None:
    """The lines every complete demo prints, whatever the run IDs and times."""
    day = yesterday()
    assert f"dates shifted to yesterday ({format_utc(day)}) so the history is within ADF's 45-day retention" in out
    assert "$ backfill preview plan.toml\n" in out
    for key, decision in expected_decisions(day).items():
        row = next(line for line in out.splitlines() if line.startswith(key))
        assert row.split()[-1] == decision, row  # the preview row: decision is its last column
    assert (
        "24 windows: 17 skip-succeeded, 2 run, 2 rerun, 1 skip-in-progress, 1 skip-complete-in-sink, "
        "1 blocked-partial\n(exit 4: a blocked window remains: the partial one at 02:00, as expected)" in out
    )
    backfill_id = re.search(
        r"^\$ BACKFILL_ACTOR=alice@contoso\.com backfill request plan\.toml --note "
        r"'INC-4821: replay the windows lost to the sink lock'\n(bf-\S+)$",
        out,
        re.MULTILINE,
    )
    assert backfill_id is not None, out
    bid = backfill_id.group(1)
    assert f"$ BACKFILL_ACTOR=bob@contoso.com backfill approve {bid}\napproved {bid} (1 of 1)" in out
    assert (
        f"\n{bid} paused after its first canary window succeeded, as the plan asks; check it, then: "
        f"backfill approve {bid} and backfill run {bid}\n"
        "(exit 3: paused after the canary window, as expected)"
    ) in out
    assert f"canary approved for {bid}: the remaining windows may run" in out
    assert f"{bid} completed: 4 succeeded\n" in out
    verified = r"^\$ backfill ledger verify\nledger: \d+ events verified, head \d+:[0-9a-f]{64}$"
    assert re.search(verified, out, re.MULTILINE)
    assert "createRun calls seen by the emulator: 4, exactly one per run window" in out
    assert (
        "24 windows: 4 run (2 reruns of failed runs, 2 never run), 19 skipped (17 succeeded, 1 complete in "
        "the sink, 1 in progress), 1 blocked (partial in the sink: left alone)" in out
    )


def test_demo_in_process_tells_the_whole_story_and_cleans_up(
    capsys: pytest.CaptureFixture[str], isolated: Path
) -> None:
    before = dict(os.environ)
    assert main.run(["demo", "--fast"]) == 0
    captured = capsys.readouterr()
    story_checks(captured.out)
    assert captured.err == ""  # progress lines and notes join the transcript on stdout
    folder = re.search(r"^# backfill demo, in (\S+)$", captured.out, re.MULTILINE)
    assert folder is not None and not Path(folder.group(1)).exists()
    assert dict(os.environ) == before
    assert Path.cwd() == isolated


def test_demo_as_a_subprocess_keeps_its_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    keep = tmp_path / "kept"
    done = subprocess.run(
        [sys.executable, "-m", "backfill", "demo", "--fast", "--keep", str(keep)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    story_checks(done.stdout)
    assert sorted(p.name for p in keep.iterdir()) == ["backfill-ledger.db", "plan.toml", "telemetry-sink.db"]
    ledger_url = f"sqlite:///{keep / 'backfill-ledger.db'}"
    assert f"export BACKFILL_LEDGER={ledger_url}\n" in done.stdout
    assert f"export TELEMETRY_SINK_URL=sqlite:///{keep / 'telemetry-sink.db'}\n" in done.stdout
    # The kept ledger holds one created run per run window, and still verifies afterwards.
    from backfill.store.database import Database
    from backfill.store.ledger import Ledger

    db = Database(ledger_url)
    try:
        created = Counter(e.window_key for e in Ledger(db).events(kinds=["window.created"]))
    finally:
        db.dispose()
    runnable = {k for k, d in expected_decisions(yesterday()).items() if d in ("run", "rerun")}
    assert created == Counter(runnable)
    monkeypatch.setenv("BACKFILL_LEDGER", ledger_url)
    assert main.run(["ledger", "verify"]) == 0
    assert capsys.readouterr().out.startswith("ledger: ")


def test_step_preview_stops_after_the_preview(capsys: pytest.CaptureFixture[str]) -> None:
    assert main.run(["demo", "--fast", "--step", "preview"]) == 0
    out = capsys.readouterr().out
    assert "(exit 4: a blocked window remains: the partial one at 02:00, as expected)" in out
    assert out.rstrip().endswith(
        "# Stopped after the preview (--step preview). Run `backfill demo` for the whole story."
    )
    assert "backfill request" not in out


def test_a_step_that_goes_wrong_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real way for the story to go wrong: the installation allows no `sql` checks.
    monkeypatch.setenv("BACKFILL_CHECKS", "command")
    assert main.run(["demo", "--fast"]) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        "error: demo: `backfill preview plan.toml` exited 1, expected 4 "
        "(a blocked window remains: the partial one at 02:00)\n"
    )
    assert (
        "error: check 'readings-in-sink': kind 'sql' is installed but BACKFILL_CHECKS=command does not "
        "enable it" in captured.out
    )
    assert "backfill request" not in captured.out


def test_keep_refuses_a_folder_with_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    assert main.run(["demo", "--keep", str(tmp_path / "kept")]) == 2
    assert capsys.readouterr().err == f"error: --keep {tmp_path / 'kept'}: must be a new or empty folder\n"
    assert (tmp_path / "kept" / "notes.txt").read_text() == "mine"


def test_unknown_step_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main.run(["demo", "--step", "run"]) == 2
    assert "Invalid value for '--step': 'run' is not one of 'preview', 'request', 'all'." in capsys.readouterr().err


def test_packaged_plan_is_plans_demo_toml() -> None:
    # `pip install .` ships backfill/data/demo.toml; the repository's plans/demo.toml is the one
    # people read. They must not drift apart.
    assert demo_module.demo_plan_text() == (REPO / "plans" / "demo.toml").read_text(encoding="utf-8")


def test_yesterday_is_midnight_utc_within_retention() -> None:
    day = yesterday()
    assert day.tzinfo is not None and day.utcoffset() == timedelta(0)
    assert (day.hour, day.minute, day.second, day.microsecond) == (0, 0, 0, 0)
    assert timedelta(days=1) <= utcnow() - day < timedelta(days=2)


@settings(max_examples=40, deadline=None)
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_shifted_plan_moves_only_the_window_bounds(moment: datetime) -> None:
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=UTC)
    original = demo_module.demo_plan_text()
    text = shifted_plan(original, day, day + timedelta(hours=6))
    loaded = plan_from_data(tomllib.loads(text))
    assert [w.start for w in loaded.windows] == [day + i * timedelta(minutes=15) for i in range(24)]
    assert loaded.windows[-1].end == day + timedelta(hours=6)
    changed = [(a, b) for a, b in zip(original.splitlines(), text.splitlines(), strict=True) if a != b]
    assert [b.split("#")[0].split() for _, b in changed] == [
        ["start", "=", format_utc(day)],
        ["end", "=", format_utc(day + timedelta(hours=6))],
    ]
    assert expected_decisions(day).keys() == {w.key for w in loaded.windows}


def test_shifting_a_plan_without_windows_bounds_is_refused() -> None:
    with pytest.raises(BackfillError, match=r"^demo: the demo plan's \[windows\] has no end to shift$"):
        shifted_plan("[windows]\nstart = 2026-11-03T00:00:00Z\nlist = []\n[match]\nend = 1\n", yesterday(), utcnow())
    with pytest.raises(BackfillError, match=r"^demo: the demo plan has no \[windows\] table to shift$"):
        shifted_plan("title = 'x'\n", yesterday(), utcnow())

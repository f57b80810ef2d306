"""Times relative to now: the example scenario and the example plans meet on any day.

A scenario places history at ``yesterday 02:00Z``; a plan names ``yesterday 00:00Z`` to
``yesterday 06:00Z``. The plan's windows resolve against one instant, its hash is of the text (the
same on any day), ``plan check`` shows what they resolved to and ``request`` records it."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill import demo
from backfill.backfills import draft_request
from backfill.cli import main
from backfill.emulator import Emulator, load_scenario
from backfill.errors import PlanError, ScenarioError
from backfill.identity import Actor, IdentitySource
from backfill.plan.loader import load_plan
from backfill.preview import compute_preview
from backfill.relative_time import DAY_FORM_PATTERN, RelativeTimeError, parse_relative
from backfill.timeutil import format_utc

REPO = Path(__file__).resolve().parent.parent
NOWS = st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC))


@given(NOWS, st.integers(-40, 40), st.integers(0, 23), st.integers(0, 59), st.booleans())
def test_day_forms_are_that_days_midnight_plus_the_time(
    now: datetime, days: int, hour: int, minute: int, spaced: bool
) -> None:
    word = {0: "today", -1: "yesterday", 1: "tomorrow"}.get(days, f"{days:+d}d")
    text = f"{word}{'  ' if spaced else ' '}{hour:02d}:{minute:02d}Z"
    point = parse_relative(text)
    assert point is not None and point.day_aligned
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC)
    assert point.resolve(now) == midnight + timedelta(days=days, hours=hour, minutes=minute)


@given(NOWS, st.integers(1, 500), st.sampled_from(["s", "m", "h", "d"]), st.sampled_from("+-"))
def test_offsets_are_from_the_instant(now: datetime, amount: int, unit: str, sign: str) -> None:
    point = parse_relative(f"{sign}{amount}{unit}")
    assert point is not None and not point.day_aligned
    step = {"s": timedelta(seconds=1), "m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
    assert point.resolve(now) == now + (1 if sign == "+" else -1) * amount * step[unit]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("yesterday 02:00", "no UTC offset"),
        ("today 25:00Z", "not a time of day"),
    ],
)
def test_malformed_relative_times_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_relative(text)


@given(
    st.sampled_from(["today", "yesterday", "tomorrow", "-2d", "+10d", "-d", "2d", "now", "Yesterday"]),
    st.sampled_from([" ", "  ", "\t", ""]),
    st.integers(0, 99),
    st.integers(0, 99),
    st.sampled_from(["", ":00", ":59", ":60", ":5"]),
    st.sampled_from(["Z", "+00:00", "", "z", "+01:00"]),
    st.sampled_from(["", "0"]),
)
def test_the_schema_pattern_is_the_day_forms_the_loader_reads(
    word: str, space: str, hour: int, minute: int, seconds: str, zone: str, pad: str
) -> None:
    # `plan schema` offers DAY_FORM_PATTERN to editors for [windows] start/end: it must accept
    # exactly the day forms the loader reads, so an editor flags neither more nor less.
    text = f"{word}{space}{pad}{hour}:{minute:02d}{seconds}{zone}"
    try:
        point = parse_relative(text)
    except RelativeTimeError:
        point = None
    loads = point is not None and point.day_aligned
    assert (re.match(DAY_FORM_PATTERN, text) is not None) is loads, text


def test_absolute_times_and_other_text_are_not_relative() -> None:
    assert [parse_relative(text) for text in ("2026-11-03T02:00:00Z", "yesterday", "yesterday at noon")] == [None] * 3


def test_scenario_day_forms_are_exact_and_a_local_time_of_day_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[[pipelines]]\nname = "P"\n[[series]]\nstart = "yesterday 02:05Z"\nend = "yesterday 02:35Z"\n'
        'every = "15m"\nparameters = { windowStart = "{start}" }\n',
        encoding="utf-8",
    )
    scenario = load_scenario(path)
    origin = datetime(2026, 11, 4, 13, 7, tzinfo=UTC)
    assert scenario.series[0].bounds(origin) == (
        datetime(2026, 11, 3, 2, 5, tzinfo=UTC),
        datetime(2026, 11, 3, 2, 35, tzinfo=UTC),
    )
    path.write_text(path.read_text(encoding="utf-8").replace("02:05Z", "02:05"), encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"series\[0\]\.start: .*no UTC offset"):
        load_scenario(path)


def _relative_plan(tmp_path: Path, start: str = "yesterday 00:00Z", end: str = "yesterday 06:00Z") -> Path:
    text = (REPO / "plans" / "demo.toml").read_text(encoding="utf-8")
    text = re.sub(r'^start = "[^"]*"', f'start = "{start}"', text, count=1, flags=re.MULTILINE)
    text = re.sub(r'^end = "[^"]*"', f'end = "{end}"', text, count=1, flags=re.MULTILINE)
    path = tmp_path / "plan.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_plan_windows_resolve_against_now_and_the_hash_is_of_the_text(tmp_path: Path) -> None:
    path = _relative_plan(tmp_path)
    monday = load_plan(path, now=datetime(2026, 11, 2, 23, 59, tzinfo=UTC))
    tuesday = load_plan(path, now=datetime(2026, 11, 3, 0, 1, tzinfo=UTC))
    assert monday.windows[0].key == "2026-11-01T00:00:00Z/2026-11-01T00:15:00Z" and len(monday.windows) == 24
    assert tuesday.windows[-1].key == "2026-11-02T05:45:00Z/2026-11-02T06:00:00Z"
    assert monday.hash == tuesday.hash, "the same text hashes the same on any day"
    assert monday.relative == {"windows.start": "yesterday 00:00Z", "windows.end": "yesterday 06:00Z"}
    assert _relative_plan(tmp_path, end="yesterday 05:00Z") and load_plan(path).hash != monday.hash
    absolute = _relative_plan(tmp_path, start="x", end="y")
    absolute.write_text(
        absolute.read_text(encoding="utf-8")
        .replace('"x"', "2026-11-01T00:00:00Z")
        .replace('"y"', "2026-11-01T06:00:00Z"),
        encoding="utf-8",
    )
    assert load_plan(absolute).hash != monday.hash, "relative and absolute windows are different plans"


@pytest.mark.parametrize(
    ("start", "problem"),
    [
        ("-6h", "an offset from now would move the windows"),
        ("yesterday 00:00", "no UTC offset"),
    ],
)
def test_plan_refuses_relative_bounds_that_move(tmp_path: Path, start: str, problem: str) -> None:
    with pytest.raises(PlanError, match=rf"windows\.start: .*{problem}"):
        load_plan(_relative_plan(tmp_path, start=start))


def test_plan_check_shows_the_resolved_windows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _relative_plan(tmp_path)
    assert main.run(["plan", "check", str(path)]) == 0
    out = capsys.readouterr().out
    day = demo.yesterday()
    assert (
        f'start "yesterday 00:00Z", end "yesterday 06:00Z", resolved to {format_utc(day)} to '
        f"{format_utc(day + timedelta(hours=6))}"
    ) in out
    assert main.run(["plan", "check", str(path), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["relative"] == {"windows.start": "yesterday 00:00Z", "windows.end": "yesterday 06:00Z"}
    assert document["windows"][0]["start"] == format_utc(day)


def test_the_example_plans_meet_the_example_scenario(tmp_path: Path) -> None:
    """plans/demo.toml against plans/emulator-scenario.toml: the demo's story, on whatever day it is."""
    shutil.copy(REPO / "plans" / "emulator-scenario.toml", tmp_path / "scenario.toml")
    with Emulator(load_scenario(tmp_path / "scenario.toml")) as emu:
        import os

        from backfill.checks.registry import build_checks
        from backfill.history import sync_history
        from backfill.store.database import Database
        from backfill.store.history import load_history

        os.environ.update(emu.env())
        os.environ["TELEMETRY_SINK_URL"] = f"sqlite:///{tmp_path / 'telemetry-sink.db'}"
        loaded = load_plan(REPO / "plans" / "demo.toml")
        db = Database()
        try:
            sync_history(db, emu.client(), loaded.pipeline)
            history = load_history(db, loaded.ref, loaded.pipeline)
            preview = compute_preview(loaded, history, build_checks(loaded.check_specs, base_dir=REPO / "plans"))
        finally:
            db.dispose()
            from backfill.checks import sql

            sql.dispose_engines()
    decided = {wd.window.key: str(wd.decision) for wd in preview.decisions}
    assert decided == demo.expected_decisions(demo.yesterday())
    record, payload = draft_request(
        loaded, preview, Actor("alice", IdentitySource.DECLARED), None, loaded.resolved_at or datetime.now(UTC)
    )
    day = demo.yesterday()
    assert payload["windows"] == {
        "written": {"windows.start": "yesterday 00:00Z", "windows.end": "yesterday 06:00Z"},
        "resolved_at": format_utc(record.requested_at),
        "start": format_utc(day),
        "end": format_utc(day + timedelta(hours=6)),
    }
    assert all("yesterday" not in key for key in record.decisions), "the frozen windows are absolute"

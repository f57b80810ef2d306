"""The world of ``backfill demo``: a smart-meter telemetry factory built in Python (yesterday's
six hours of 15-minute windows, with every kind of trouble a backfill meets), the demo plan
shifted to those dates, and what the story expects of each window. The story itself, which runs
the real commands on it, is ``backfill.cli.demo_story``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from importlib import resources

from backfill.decisions import Decision
from backfill.emulator import Activity, Emulator, PastRun, Pipeline, Scenario, Sink
from backfill.errors import BackfillError
from backfill.timeutil import format_utc, utcnow
from backfill.windows import window_key

ENGINEER = "alice@contoso.com"
SUPERVISOR = "bob@contoso.com"
PIPELINE = "LoadMeterTelemetry"
EVERY = timedelta(minutes=15)
WINDOW_COUNT = 24
ROWS = 900  # a complete window, as the demo plan's check expects
PLAN_FILE = "plan.toml"
LEDGER_FILE = "backfill-ledger.db"
SINK_FILE = "telemetry-sink.db"
# A 12-minute run takes 0.6 s at the normal speed, 36 ms with --fast.
SPEED, FAST_SPEED = 1200.0, 20000.0
STEPS = ("preview", "request", "all")

LOCK_MESSAGE = "Failure happened on 'Sink' side. ErrorCode=SqlOperationFailed,'Lock request time out period exceeded.'"

# What happened to yesterday's windows, by index (00:00 is 0); every other window succeeded.
# The sink was locked from 02:00: one copy died after 300 rows, two timed out before writing,
# one copied everything and then failed to advance its watermark; the trigger was paused for
# 03:00 and 03:15 while the lock was investigated; the 05:45 run hangs to this day.
PARTIAL, LOCKED, COMPLETE, NEVER, HUNG = 8, (9, 10), 11, (12, 13), 23
EXPECTED_DECISIONS: dict[int, Decision] = {
    PARTIAL: Decision.BLOCKED_PARTIAL,
    **dict.fromkeys(LOCKED, Decision.RERUN),
    COMPLETE: Decision.SKIP_COMPLETE_IN_SINK,
    **dict.fromkeys(NEVER, Decision.RUN),
    HUNG: Decision.SKIP_IN_PROGRESS,
}


def yesterday() -> datetime:
    """00:00 UTC yesterday: the demo's windows are always well inside ADF's 45-day retention."""
    return utcnow().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)


def _window(day: datetime, index: int) -> tuple[datetime, datetime]:
    return day + index * EVERY, day + (index + 1) * EVERY


def expected_decisions(day: datetime) -> dict[str, str]:
    """Each window's key and the decision the story expects for it."""
    return {
        window_key(*_window(day, i)): str(EXPECTED_DECISIONS.get(i, Decision.SKIP_SUCCEEDED))
        for i in range(WINDOW_COUNT)
    }


def _history(day: datetime) -> Iterator[PastRun]:
    for index in range(WINDOW_COUNT):
        start, end = _window(day, index)
        run = PastRun(
            pipeline=PIPELINE,
            start=end + timedelta(minutes=2),  # the trigger fires two minutes after a window closes
            parameters={"windowStart": format_utc(start), "windowEnd": format_utc(end), "feederRegion": "north"},
            duration=timedelta(minutes=11),
            rows=ROWS,
            invoked_by="Every15Minutes",
            invoked_by_type="ScheduleTrigger",
        )
        if index in NEVER:
            continue
        if index in (PARTIAL, *LOCKED):
            run.status, run.activity, run.message = "Failed", "CopyReadings", LOCK_MESSAGE
            run.rows_before_failure = ROWS // 3 if index == PARTIAL else 0
        elif index == COMPLETE:
            run.status, run.activity, run.error_code = "Failed", "AdvanceWatermark", "2402"
            run.message = (
                "Execution fail against sql server. Sql error number: 1222. "
                "Error Message: Lock request time out period exceeded."
            )
            run.rows_before_failure = ROWS
        elif index == HUNG:
            run.status, run.activity = "InProgress", "CopyReadings"
        yield run


def demo_scenario(day: datetime, sink_url: str, *, speed: float = SPEED) -> Scenario:
    """The demo's factory: the telemetry pipeline, yesterday's history from ``day``, a real sink.

    Future runs succeed with the pipeline's duration and rows (no outcome rules)."""
    scenario = Scenario(speed=speed, source="<backfill demo scenario>")
    scenario.add_pipeline(
        Pipeline(
            name=PIPELINE,
            activities=(
                Activity("LookupWatermark", "Lookup"),
                Activity("CopyReadings", "Copy"),
                Activity("AdvanceWatermark", "SqlServerStoredProcedure"),
            ),
            parameters={"windowStart": "String", "windowEnd": "String", "feederRegion": "String"},
            duration=timedelta(minutes=12),
            rows=ROWS,
            sink=Sink(url=sink_url, table="meter_readings", columns={"feeder": "{feederRegion}"}),
        )
    )
    scenario.add_history(_history(day))
    return scenario


def shifted_plan(text: str, start: datetime, end: datetime) -> str:
    """The plan text with its ``[windows]`` start and end replaced; comments and the rest kept."""
    section = re.search(r"^\[windows\][^\n]*\n(?:(?!\[)[^\n]*\n?)*", text, re.MULTILINE)
    if section is None:
        raise BackfillError("demo: the demo plan has no [windows] table to shift")
    body = section.group(0)
    for key, value in (("start", start), ("end", end)):
        body, count = re.subn(
            rf"^({key}\s*=\s*)(?:\"[^\"\n]*\"|\S+)", rf"\g<1>{format_utc(value)}", body, count=1, flags=re.MULTILINE
        )
        if count != 1:
            raise BackfillError(f"demo: the demo plan's [windows] has no {key} to shift")
    return text[: section.start()] + body + text[section.end() :]


def demo_plan_text() -> str:
    """The demo plan shipped with the package (a copy of plans/demo.toml)."""
    return resources.files("backfill").joinpath("data", "demo.toml").read_text(encoding="utf-8")


def create_runs_per_window(emulator: Emulator) -> Counter[str]:
    """createRun requests the emulator saw, by the window key of their parameters."""
    from backfill.timeutil import parse_utc

    seen: Counter[str] = Counter()
    for call in emulator.create_run_calls():
        body = call.body if isinstance(call.body, Mapping) else {}
        try:
            seen[window_key(parse_utc(str(body["windowStart"])), parse_utc(str(body["windowEnd"])))] += 1
        except (KeyError, ValueError):
            seen["(unreadable parameters)"] += 1
    return seen

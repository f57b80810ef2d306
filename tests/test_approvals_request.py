"""``backfill request`` end to end: a real plan, the emulator over HTTPS, a real SQLite sink."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from plan_samples import SINK_CHECK, plan_toml

from backfill import events as ev
from backfill.cli import main
from backfill.emulator import Emulator
from backfill.emulator.scenario import PastRun, Scenario
from backfill.plan.loader import load_plan
from backfill.store.backfills import get_backfill
from backfill.store.database import Database
from backfill.store.ledger import Ledger
from backfill.timeutil import format_utc, utcnow
from backfill.windows import window_key

EVERY = timedelta(minutes=15)


def plan_text(start: datetime, end: datetime) -> str:
    return plan_toml(
        {"start": start, "end": end, "every": "15m"}, checks=SINK_CHECK, approval={"required": 1, "expires": "1h"}
    )


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[datetime]:
    """Four windows three hours ago: succeeded, failed, partly in the sink, never run."""
    base = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    starts = [base + i * EVERY for i in range(4)]
    sink = tmp_path / "sink.db"
    with sqlite3.connect(sink) as conn:
        conn.execute("CREATE TABLE readings (ts TEXT)")
        conn.executemany(
            "INSERT INTO readings VALUES (?)", [(format_utc(starts[2] + timedelta(seconds=i)),) for i in range(4)]
        )
    scenario = Scenario.default()
    for start, status in ((starts[0], "Succeeded"), (starts[1], "Failed")):
        params = {"windowStart": format_utc(start), "windowEnd": format_utc(start + EVERY), "feederRegion": "north"}
        scenario.add_history(PastRun("LoadMeterTelemetry", start + EVERY, params, status=status))
    monkeypatch.setenv("SINK_URL", f"sqlite:///{sink}")
    with Emulator(scenario) as emulator:
        for name, value in emulator.env().items():
            monkeypatch.setenv(name, value)
        yield base


def test_request_freezes_the_plan_and_its_preview(
    factory: datetime, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [window_key(factory + i * EVERY, factory + (i + 1) * EVERY) for i in range(4)]
    plan = tmp_path / "north.toml"
    plan.write_text(plan_text(factory, factory + 4 * EVERY))
    monkeypatch.setenv("BACKFILL_ACTOR", "alice")
    monkeypatch.setenv("SOURCE_API_KEY", "hunter2")
    assert main.run(["request", str(plan), "--note", "after the sink lock"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert err == ""
    assert re.fullmatch(r"bf-\d{8}-[0-9a-f]{6}", lines[0])
    assert lines[1:4] == [
        "Replay north (INC-4821)",
        f"pipeline LoadMeterTelemetry in 00000000-0000-0000-0000-000000000000/rg-energy-analytics/"
        f"adf-grid-telemetry; plan {load_plan(plan).hash[:12]}",
        "windows: 4 in plan, 2 to run, 1 skipped, 1 blocked",
    ]
    assert lines[-1] == f"next: backfill approve {lines[0]}"
    db = Database()
    try:
        record = get_backfill(db, lines[0])
        (event,) = Ledger(db).events(backfill_id=record.id)
    finally:
        db.dispose()
    assert record.plan_hash == load_plan(plan).hash
    assert record.plan_path == str(plan.resolve())
    assert dict(record.decisions) == dict(zip(keys, ["skip-succeeded", "rerun", "blocked-partial", "run"], strict=True))
    assert (record.requester, record.requester_source, record.note) == ("alice", "declared", "after the sink lock")
    assert (event.kind, event.actor) == (ev.REQUESTED, "alice")
    assert event.payload["runnable"] == [keys[1], keys[3]]
    assert list(event.payload["blocked"]) == [keys[2]]
    assert event.payload["blocked"][keys[2]]["decision"] == "blocked-partial"
    assert (event.payload["plan_hash"], event.payload["note"]) == (record.plan_hash, "after the sink lock")
    assert "hunter2" not in str(record.preview) + str(event.payload) + out

    monkeypatch.setenv("BACKFILL_ACTOR", "bob")
    assert main.run(["approve", record.id]) == 0
    assert capsys.readouterr().out == f"approved {record.id} (1 of 1): backfill run {record.id}\n"


def test_nothing_to_request(factory: datetime, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "done.toml"
    plan.write_text(plan_text(factory, factory + EVERY))
    assert main.run(["request", str(plan)]) == 1
    assert capsys.readouterr().err == (
        f"error: {plan}: nothing to request: its window needs no run (backfill preview shows why)\n"
    )


def test_missing_plan_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main.run(["request", "nope.toml"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: nope.toml") and err.count("\n") == 1

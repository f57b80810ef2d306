"""History sync against the real emulator over HTTPS, on SQLite and PostgreSQL (SPEC §2)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from plan_samples import plan_toml

from backfill import history
from backfill.cli import main
from backfill.emulator import Emulator, HistorySeries, OutcomeRule, PastRun, Pipeline, Scenario
from backfill.factory.run import RunStatus
from backfill.history import RETENTION, sync_history
from backfill.matching import latest_runs
from backfill.store import history_tables as tables
from backfill.store.database import Database
from backfill.store.history import load_history
from backfill.timeutil import format_utc, parse_adf_time, utcnow
from backfill.windows import Window

PIPELINE = "LoadMeterTelemetry"
EVERY = timedelta(minutes=15)


def scenario(series_hours: int = 75) -> Scenario:
    scen = Scenario(speed=6000.0)
    scen.add_pipeline(Pipeline(PIPELINE, parameters={"windowStart": "String", "feederRegion": "String"}))
    scen.series.append(
        HistorySeries(
            PIPELINE,
            timedelta(hours=-series_hours - 1),
            timedelta(hours=-1),
            EVERY,
            {"windowStart": "{start}", "feederRegion": "north"},
        )
    )
    # Older than ADF's retention: the service no longer shows it.
    scen.add_history(PastRun(PIPELINE, timedelta(days=-50), {"windowStart": "2000-01-01T00:00:00Z"}, run_id="too-old"))
    return scen


def wait_final(emu: Emulator, run_id: str) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = str(emu.run(run_id)["status"])
        if RunStatus.parse(status).is_final:
            return status
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish")


def cached(db: Database, emu: Emulator) -> int:
    with db.writing() as conn:
        return tables.count_runs(conn, emu.ref.key, PIPELINE)


def test_first_sync_then_repeat_syncs_are_cheap(db: Database) -> None:
    with Emulator(scenario()) as emu:
        client = emu.client()
        now = utcnow()
        first = sync_history(db, client, PIPELINE, now=now)
        visible = [r for r in emu.runs() if r["runId"] != "too-old"]
        assert len(visible) == 300
        assert first.first_sync
        assert first.fetched == 300
        assert first.api_calls == 3  # pages of 100
        assert first.horizon == now - RETENTION
        assert first.watermark == max(filter(None, (parse_adf_time(r["lastUpdated"]) for r in visible)))
        assert cached(db, emu) == 300

        query = emu.requests("queryPipelineRuns")[0]
        assert query.body["lastUpdatedAfter"].startswith(format_utc(now - RETENTION)[:19])
        assert query.body["lastUpdatedBefore"].startswith(format_utc(now + timedelta(days=1))[:19])
        assert query.body["filters"][0]["values"] == [PIPELINE]

        emu.clear_log()
        again = sync_history(db, client, PIPELINE)
        assert not again.first_sync
        assert again.api_calls <= 3
        assert len(emu.request_log) == again.api_calls
        # Only the 5-minute overlap before the watermark is read again.
        assert again.fetched <= 1
        assert again.horizon == first.horizon
        assert again.watermark == first.watermark
        assert cached(db, emu) == 300


def test_status_changes_and_recovery_groups_are_picked_up(db: Database) -> None:
    scen = scenario(series_hours=2)
    scen.add_outcome(OutcomeRule(result="fail", match={"windowStart": "2026-01-01T00:00:00Z"}, times=1))
    with Emulator(scen) as emu:
        client = emu.client()
        sync_history(db, client, PIPELINE)
        failed = client.create_run(PIPELINE, {"windowStart": "2026-01-01T00:00:00Z", "feederRegion": "north"})
        assert wait_final(emu, failed) == "Failed"
        assert sync_history(db, client, PIPELINE).fetched >= 1
        recovery = client.create_run(PIPELINE, reference_run_id=failed, is_recovery=True, start_from_failure=True)
        sync_history(db, client, PIPELINE)  # caught while queued or running
        assert wait_final(emu, recovery) == "Succeeded"
        result = sync_history(db, client, PIPELINE)
        assert result.api_calls <= 3

        view = load_history(db, emu.ref, PIPELINE)
        runs = {r.run_id: r for r in view.runs}
        assert runs[failed].status == RunStatus.FAILED
        assert runs[failed].is_latest is False
        assert runs[recovery].status == RunStatus.SUCCEEDED
        assert runs[recovery].is_latest is True
        assert runs[recovery].run_group_id == runs[failed].run_group_id
        start = datetime(2026, 1, 1, tzinfo=UTC)
        window = Window(start, start + EVERY, {"windowStart": "2026-01-01T00:00:00Z", "feederRegion": "north"})
        [latest] = latest_runs([window], view.records, ("windowStart", "feederRegion"))
        assert latest is not None and latest.run_id == recovery


def test_history_outlives_retention_and_a_gap_restarts_the_horizon(tmp_path: Path) -> None:
    db = Database()
    try:
        with Emulator(scenario(series_hours=2)) as emu:
            client = emu.client()
            now = utcnow()
            first = sync_history(db, client, PIPELINE, now=now)
            assert first.fetched == 8
        # Later, the factory no longer shows those runs (here: a one-hour retention).
        later = scenario(series_hours=0)
        later.retention = timedelta(hours=1)
        with Emulator(later) as emu:
            client = emu.client()
            second = sync_history(db, client, PIPELINE, now=now + timedelta(hours=1))
            assert second.horizon == first.horizon  # kept: the earliest time covered
            assert cached(db, emu) == 8
            assert len(load_history(db, emu.ref, PIPELINE)) == 8
            # A sync after more than 45 days without one may have missed runs: coverage restarts.
            gap_now = now + RETENTION + timedelta(days=1)
            third = sync_history(db, client, PIPELINE, now=gap_now)
            assert third.horizon == gap_now - RETENTION
            assert load_history(db, emu.ref, PIPELINE).horizon == gap_now - RETENTION
    finally:
        db.dispose()


def test_sync_refuses_a_naive_now() -> None:
    db = Database()
    try:
        with Emulator(scenario(series_hours=0)) as emu, pytest.raises(ValueError, match="no UTC offset"):
            sync_history(db, emu.client(), PIPELINE, now=datetime(2026, 11, 3))
    finally:
        db.dispose()


PLAN = plan_toml(
    {"start": datetime(2026, 11, 3, tzinfo=UTC), "end": datetime(2026, 11, 3, 1, tzinfo=UTC), "every": "15m"},
    title="History sync",
    ticket="INC-1",
    parameters={"windowStart": "{start}", "feederRegion": "north"},
    match=None,
)


def test_cli_history_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN, encoding="utf-8")
    with Emulator(scenario(series_hours=2)) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        assert main.run(["history", "sync", str(plan)]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"history of {PIPELINE}: first sync, 8 runs fetched in 1 API call; covered since ")
        watermark = max(r["lastUpdated"] for r in emu.runs() if r["runId"] != "too-old")
        assert out.rstrip().endswith(f"last update seen {format_utc(parse_adf_time(watermark))}")
        assert main.run(["history", "sync", str(plan)]) == 0
        assert capsys.readouterr().out.startswith(f"history of {PIPELINE}: sync, ")


def test_cli_history_sync_bad_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.replace('every = "15m"', 'every = "7m"'), encoding="utf-8")
    assert main.run(["history", "sync", str(plan)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {plan}: windows")
    assert len(err.strip().splitlines()) == 1


def test_cli_history_sync_unreachable_factory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN, encoding="utf-8")
    # conftest points the factory at a closed port.
    assert main.run(["history", "sync", str(plan)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: factory: ")
    assert len(err.strip().splitlines()) == 1


def test_batches_committed_without_fsync_leave_every_run_cached_and_the_pool_durable(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches go through the writer thread, whose commits skip the fsync (issue 14); the
    # connection must go back to the pool as durable as it came, for the ledger's appends.
    monkeypatch.setattr(history, "BATCH", 40)
    with Emulator(scenario()) as emu:
        result = sync_history(db, emu.client(), PIPELINE)
        assert result.fetched == 300
        assert cached(db, emu) == 300
    if db.dialect == "sqlite":
        with db.engine.connect() as conn:
            driver = conn.connection.dbapi_connection
            assert driver is not None
            assert driver.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL

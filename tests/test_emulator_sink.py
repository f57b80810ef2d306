"""Rows emulated runs write to a real sink table: partial writes, timing, replace mode, databases."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from backfill.emulator import Emulator, OutcomeRule, PastRun, Pipeline, Scenario, Sink
from backfill.emulator.scenario import Activity

PIPELINE = "LoadMeterTelemetry"
WINDOW = {"windowStart": "2026-11-03T02:00:00Z", "windowEnd": "2026-11-03T02:15:00Z", "feederRegion": "north"}


def scenario(url: str, *, write: str = "append", speed: float = 6000.0) -> Scenario:
    scen = Scenario(speed=speed)
    sink = Sink(
        url=url,
        table="meter_readings",
        columns={"feeder": "{feederRegion}", "meters": 3},
        run_id_column="adf_run_id",
        write=write,
    )
    scen.add_pipeline(
        Pipeline(PIPELINE, activities=(Activity("Lookup", "Lookup"), Activity("CopyReadings")), rows=900, sink=sink)
    )
    return scen


def counts(url: str, window: dict[str, str] = WINDOW) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT COUNT(*) FROM meter_readings WHERE feeder = :f AND reading_ts >= :s AND reading_ts < :e"
                    ),
                    {
                        "f": window["feederRegion"],
                        "s": _bound(url, window["windowStart"]),
                        "e": _bound(url, window["windowEnd"]),
                    },
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _bound(url: str, value: str) -> object:
    if url.startswith("sqlite"):
        return value
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.replace(tzinfo=None) if url.startswith("mysql") else moment


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'sink.db'}"


def test_history_leaves_complete_and_partial_windows(sqlite_url: str) -> None:
    scen = scenario(sqlite_url)
    scen.add_history(PastRun(PIPELINE, timedelta(hours=-3), WINDOW))
    later = {**WINDOW, "windowStart": "2026-11-03T02:15:00Z", "windowEnd": "2026-11-03T02:30:00Z"}
    scen.add_history(PastRun(PIPELINE, timedelta(hours=-2), later, status="Failed", rows_before_failure=300))
    with Emulator(scen):
        assert counts(sqlite_url) == 900
        assert counts(sqlite_url, later) == 300
        engine = create_engine(sqlite_url)
        with engine.connect() as conn:
            first, last, meters = conn.execute(
                text(
                    "SELECT MIN(reading_ts), MAX(reading_ts), MIN(meters) FROM meter_readings "
                    "WHERE reading_ts >= '2026-11-03T02:15:00Z'"
                )
            ).one()
        engine.dispose()
        # The partial write is the first third of the window, one reading a second.
        assert (first, last, meters) == ("2026-11-03T02:15:00Z", "2026-11-03T02:19:59Z", 3)


def test_rows_land_before_the_run_shows_past_them(sqlite_url: str) -> None:
    scen = scenario(sqlite_url, speed=1500.0)  # 15 min: 0.6 s
    scen.add_outcome(OutcomeRule("fail", activity="CopyReadings", rows_before_failure=300, times=1))
    with Emulator(scen) as emu:
        client = emu.client()
        run_id = client.create_run(PIPELINE, WINDOW)
        deadline = time.monotonic() + 10
        while (status := client.get_run(run_id).status.value) != "Failed" and time.monotonic() < deadline:
            if status == "InProgress":
                assert counts(sqlite_url) == 300
            time.sleep(0.02)
        assert counts(sqlite_url) == 300
        rerun = client.create_run(PIPELINE, reference_run_id=run_id, is_recovery=True, start_from_failure=True)
        # Nobody polls the API: the emulator's clock writes the rows when the run ends.
        deadline = time.monotonic() + 5
        while counts(sqlite_url) < 1200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert counts(sqlite_url) == 1200  # append: the rerun writes the window again
        assert emu.run(rerun)["status"] == "Succeeded"
        assert emu.sink_errors == []


def test_replace_mode_rewrites_the_window(sqlite_url: str) -> None:
    scen = scenario(sqlite_url, write="replace")
    scen.add_history(PastRun(PIPELINE, timedelta(hours=-2), WINDOW, status="Failed", rows_before_failure=450))
    other = {**WINDOW, "feederRegion": "south"}
    scen.add_history(PastRun(PIPELINE, timedelta(hours=-2), other))
    with Emulator(scen) as emu:
        assert counts(sqlite_url) == 450
        run_id = emu.client().create_run(PIPELINE, WINDOW)
        deadline = time.monotonic() + 5
        while emu.run(run_id)["status"] != "Succeeded" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert counts(sqlite_url) == 900 and counts(sqlite_url, other) == 900


def test_a_run_without_window_parameters_writes_nothing_and_says_why(sqlite_url: str) -> None:
    scen = scenario(sqlite_url)
    scen.add_history(PastRun(PIPELINE, timedelta(hours=-1), {"feederRegion": "north"}, run_id="no-window"))
    with Emulator(scen) as emu:
        assert emu.sink_errors == [
            f"{PIPELINE} no-window: ValueError: run no-window: parameter windowStart is missing; no rows written"
        ]


def test_an_unreachable_sink_is_a_scenario_error() -> None:
    scen = scenario("postgresql+psycopg://nobody@127.0.0.1:9/none")
    with pytest.raises(
        Exception,
        match=r"^<scenario>: pipelines\.LoadMeterTelemetry\.sink: cannot prepare table "
        r"meter_readings: OperationalError",
    ):
        Emulator(scen).start()


@pytest.mark.postgres
def test_postgres_sink(postgres_url: str) -> None:
    scen = scenario(postgres_url)
    scen.add_history(PastRun(PIPELINE, timedelta(hours=-1), WINDOW, status="Failed", rows_before_failure=300))
    with Emulator(scen):
        assert counts(postgres_url) == 300
        engine = create_engine(postgres_url)
        with engine.connect() as conn:
            first = conn.execute(text("SELECT MIN(reading_ts) FROM meter_readings")).scalar_one()
        engine.dispose()
        assert first == datetime(2026, 11, 3, 2, 0, tzinfo=UTC)


@pytest.mark.mariadb
def test_mariadb_sink(mariadb_url: str) -> None:
    scen = scenario(mariadb_url)
    scen.add_history(PastRun(PIPELINE, timedelta(hours=-1), WINDOW))
    with Emulator(scen):
        assert counts(mariadb_url) == 900

"""Each business date's status from the runs that carried it (spec §13), on plain values."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest

from backfill.errors import ExitCode
from backfill.factory.run import Run, RunStatus
from backfill.sla.days import DayStatus
from backfill.sla.model import LoadedSla, sla_from_data
from backfill.sla.report import SlaReport, build_report
from backfill.sla.text import to_csv

_ids = itertools.count(1)
# Mon 2 November 2026 to Fri 6 November, New York (EST: deadline 06:00 = 11:00Z).
SINCE = datetime(2026, 11, 2, 5, tzinfo=UTC)
UNTIL = datetime(2026, 11, 9, 5, tzinfo=UTC)


def sla(**extra: object) -> LoadedSla:
    section = {"business_date": "businessDate", "deadline": "06:00", "timezone": "America/New_York", **extra}
    target = {"subscription_id": "s", "resource_group": "rg", "factory": "f", "pipeline": "p"}
    return sla_from_data({"target": target, "sla": section}, path="t.toml")


def run(day: str, start: str, minutes: float | None, status: RunStatus = RunStatus.SUCCEEDED) -> Run:
    began = datetime.fromisoformat(f"{day}T{start}:00+00:00")
    duration = timedelta(minutes=minutes) if minutes is not None else None
    ended = began + duration if duration is not None and status.is_final else None
    return Run(
        run_id=f"run-{next(_ids)}",
        pipeline="p",
        status=status,
        parameters={"businessDate": day},
        start=began,
        end=ended,
        duration=duration if ended else None,
    )


def report(
    runs: list[Run], *, now: datetime = UNTIL, horizon: datetime | None = SINCE - timedelta(days=60)
) -> SlaReport:
    return build_report(sla(), runs, since=SINCE, until=UNTIL, now=now, horizon=horizon)


def statuses(result: SlaReport) -> dict[str, str]:
    return {row.day.isoformat(): row.status.value for row in result.days}


def test_every_status_on_its_own_date() -> None:
    runs = [
        run("2026-11-02", "09:00", 60),  # ends 10:00Z: an hour early, met
        run("2026-11-03", "09:00", 110),  # ends 10:50Z: ten minutes early, close
        run("2026-11-04", "09:00", 150),  # ends 11:30Z: missed by 30 minutes
        run("2026-11-05", "09:00", 20, RunStatus.FAILED),
        run("2026-11-05", "09:30", 20, RunStatus.FAILED),
        # 2026-11-06: no run at all
    ]
    result = report(runs)
    assert statuses(result) == {
        "2026-11-02": "met",
        "2026-11-03": "close",
        "2026-11-04": "missed",
        "2026-11-05": "failed",
        "2026-11-06": "not-run",
    }
    rows = {row.day.isoformat(): row for row in result.days}
    assert rows["2026-11-04"].margin == timedelta(minutes=-30)
    assert rows["2026-11-05"].attempts == 2 and rows["2026-11-05"].run is None
    assert result.exit_code is ExitCode.SLA_AT_RISK
    document = result.to_json()
    assert document["schema"] == 1 and set(document) >= {"sla", "days", "outside_days", "drift"}
    assert set(document["drift"]) >= {
        "detected",
        "baseline_median_ms",
        "recent_median_ms",
        "slope_ms_per_day",
        "projected_miss",
    }
    missed = document["days"][2]
    assert missed == {
        "date": "2026-11-04",
        "weekday": "Wed",
        "status": "missed",
        "attempts": 1,
        "run_id": runs[2].run_id,
        "start": "2026-11-04T09:00:00Z",
        "end": "2026-11-04T11:30:00Z",
        "end_local": "2026-11-04T06:30:00-05:00",
        "deadline": "2026-11-04T11:00:00Z",
        "deadline_local": "2026-11-04T06:00:00-05:00",
        "margin_ms": -1_800_000,
        "duration_ms": 9_000_000,
        "longest_activity": None,
    }


def test_a_retry_that_succeeds_in_time_meets_it_and_the_first_success_decides() -> None:
    runs = [
        run("2026-11-02", "08:00", 15, RunStatus.FAILED),
        run("2026-11-02", "08:30", 60),  # ends 09:30Z: met by the retry
        run("2026-11-02", "11:30", 10),  # a later rerun changes nothing
    ]
    (row, *_) = report(runs).days
    assert (row.status, row.attempts, row.run) == (DayStatus.MET, 3, runs[1])


def test_all_met_exits_0_and_close_is_no_breach() -> None:
    runs = [run(f"2026-11-0{d}", "09:00", 60 if d != 4 else 115) for d in range(2, 7)]
    result = report(runs)
    assert result.counts[DayStatus.CLOSE] == 1 and result.exit_code is ExitCode.OK


def test_before_the_deadline_a_date_is_pending_whatever_ran() -> None:
    now = datetime(2026, 11, 6, 10, 0, tzinfo=UTC)  # Friday 05:00 in New York
    runs = [run("2026-11-06", "08:00", 20, RunStatus.FAILED), *[run(f"2026-11-0{d}", "09:00", 60) for d in range(2, 6)]]
    result = report(runs, now=now)
    assert statuses(result)["2026-11-06"] == "pending"
    assert result.exit_code is ExitCode.OK


def test_a_run_still_in_flight_when_the_deadline_passed_has_missed() -> None:
    flying = run("2026-11-06", "09:00", None, RunStatus.IN_PROGRESS)
    runs = [flying, *[run(f"2026-11-0{d}", "09:00", 60) for d in range(2, 6)]]
    row = report(runs).days[-1]
    assert (row.status, row.run, row.end) == (DayStatus.MISSED, flying, None)


def test_dates_before_the_cache_horizon_without_runs_have_no_history() -> None:
    runs = [run(f"2026-11-0{d}", "09:00", 60) for d in (5, 6)]
    result = report(runs, horizon=datetime(2026, 11, 5, 0, tzinfo=UTC))
    assert statuses(result) == {
        "2026-11-02": "no-history",
        "2026-11-03": "no-history",
        "2026-11-04": "no-history",
        "2026-11-05": "met",
        "2026-11-06": "met",
    }
    assert result.exit_code is ExitCode.OK, "dates we know nothing about are not claimed missed"
    assert result.to_json()["history"]["no_history"] == ["2026-11-02", "2026-11-03", "2026-11-04"]


def test_weekend_runs_are_listed_apart_and_never_count() -> None:
    runs = [run(f"2026-11-0{d}", "09:00", 60) for d in range(2, 7)]
    runs.append(run("2026-11-07", "09:00", 600))  # a Saturday, far past 06:00
    result = report(runs)
    assert [row.day for row in result.days][-1] == date(2026, 11, 6)
    assert [(o.day, o.run.run_id) for o in result.outside_days] == [(date(2026, 11, 7), runs[-1].run_id)]
    assert result.exit_code is ExitCode.OK
    lines = to_csv(result).splitlines()
    assert lines[0].startswith("date,weekday,scheduled,status,attempts,run_id")
    assert len(lines) == 1 + 5 + 1 and lines[-1].startswith("2026-11-07,Sat,false,Succeeded,1,")


def test_runs_of_other_parameters_or_unreadable_dates_are_left_out() -> None:
    stray = run("2026-11-02", "09:00", 60)
    unreadable = Run("x", "p", RunStatus.SUCCEEDED, {"businessDate": "yesterday"}, start=stray.start, end=stray.end)
    other = Run("y", "p", RunStatus.SUCCEEDED, {"region": "north"}, start=stray.start, end=stray.end)
    assert statuses(report([unreadable, other]))["2026-11-02"] == "not-run"


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "Australia/Adelaide"])
def test_a_half_hour_zone_decides_by_its_own_deadline(zone: str) -> None:
    # Kolkata 06:00 is 00:30Z; Adelaide 06:00 (summer, +10:30) is 19:30Z the day before.
    deadline = {"Asia/Kolkata": "2026-11-04T00:30:00Z", "Australia/Adelaide": "2026-11-03T19:30:00Z"}[zone]
    loaded = sla(timezone=zone)
    cutoff = datetime.fromisoformat(deadline.replace("Z", "+00:00"))
    early = Run(
        "a",
        "p",
        RunStatus.SUCCEEDED,
        {"businessDate": "2026-11-04"},
        start=cutoff - timedelta(hours=1),
        end=cutoff - timedelta(minutes=1),
        duration=timedelta(minutes=59),
    )
    result = build_report(loaded, [early], since=SINCE, until=UNTIL, now=UNTIL, horizon=SINCE - timedelta(days=60))
    row = next(r for r in result.days if r.day == date(2026, 11, 4))
    assert (row.status, row.deadline) == (DayStatus.CLOSE, cutoff)


def test_a_range_across_the_autumn_change_gives_each_date_its_own_deadline() -> None:
    from backfill.sla.text import header_lines

    since, until = datetime(2026, 10, 29, 4, tzinfo=UTC), datetime(2026, 11, 4, 5, tzinfo=UTC)  # midnights EDT, EST
    result = build_report(sla(), [], since=since, until=until, now=until, horizon=since - timedelta(days=60))
    deadlines = {row.day.isoformat(): row.deadline.strftime("%H:%MZ") for row in result.days}
    assert deadlines == {
        "2026-10-29": "10:00Z",
        "2026-10-30": "10:00Z",
        "2026-11-02": "11:00Z",
        "2026-11-03": "11:00Z",
    }
    assert any("offset changes in this range (UTC-04:00, UTC-05:00)" in line for line in header_lines(result))

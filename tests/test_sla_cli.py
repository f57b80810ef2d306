"""``backfill sla report`` on the example: the emulator of slas/emulator-scenario.toml over HTTPS,
the history cache synced first, the story a new user is promised (issue 13's "done means")."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from backfill.cli import main
from backfill.emulator import Emulator, load_scenario
from backfill.factory.run import Run, RunStatus
from backfill.timeutil import format_utc, utcnow

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "slas" / "claims-severity.toml"
SCENARIO = REPO / "slas" / "emulator-scenario.toml"
Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch


@pytest.fixture(scope="module")
def claims_factory() -> Iterator[Emulator]:
    with Emulator(load_scenario(SCENARIO)) as emu:
        yield emu


@pytest.fixture
def factory(claims_factory: Emulator, monkeypatch: MP) -> Emulator:
    for name, value in claims_factory.env().items():
        monkeypatch.setenv(name, value)
    return claims_factory


def _report(capsys: Cap, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main.run(["sla", "report", str(EXAMPLE), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _weekday_back(weekday: int, week: int) -> date:
    """The date of ``weekday`` (0: Monday) in the scenario's ``week`` (1: the seven dates before today)."""
    today = utcnow().date()
    for back in range(7 * (week - 1) + 1, 7 * week + 1):
        day = today - timedelta(days=back)
        if day.weekday() == weekday:
            return day
    raise AssertionError("unreachable")


def test_the_example_tells_its_story(factory: Emulator, capsys: Cap) -> None:
    code, out, err = _report(capsys, "--json")
    assert code == 6, err
    assert "history of RefreshClaimsSeverity: first sync" in err
    document = json.loads(out)
    assert document["schema"] == 1
    rows = {row["date"]: row for row in document["days"]}
    status = {day: row["status"] for day, row in rows.items()}
    # Week 2's Wednesday took almost four hours: missed whatever the season.
    missed = rows[_weekday_back(2, 2).isoformat()]
    assert missed["status"] == "missed" and missed["margin_ms"] < 0
    assert missed["end"] > missed["deadline"] and missed["deadline"].endswith(("T10:00:00Z", "T11:00:00Z"))
    # Close: week 1's Thursday in winter (EST), week 2's Friday in summer (EDT); in the weeks
    # after the spring change (Friday still EST, Thursday EDT) neither is.
    thursday, friday = rows[_weekday_back(3, 1).isoformat()], rows[_weekday_back(4, 2).isoformat()]
    spring = thursday["deadline"].endswith("T10:00:00Z") and friday["deadline"].endswith("T11:00:00Z")
    assert "close" in status.values() or spring
    # Week 1's Tuesday failed, then its retry met the deadline.
    retried = rows[_weekday_back(1, 1).isoformat()]
    assert (retried["status"], retried["attempts"]) == ("met", 2)
    assert retried["longest_activity"]["name"] in ("LoadClaims", "ScoreSeverity", "PublishScores")
    assert status[_weekday_back(3, 3).isoformat()] == "failed"
    assert status[_weekday_back(0, 3).isoformat()] == "not-run"
    assert all(row["weekday"] not in ("Sat", "Sun") for row in document["days"])
    assert document["outside_days"] and all(row["weekday"] in ("Sat", "Sun") for row in document["outside_days"])
    drift = document["drift"]
    assert drift["detected"] is True and drift["slope_ms_per_day"] > 0
    assert drift["recent_median_ms"] > drift["baseline_median_ms"] * 1.15
    assert date.fromisoformat(drift["projected_miss"]) > utcnow().date()
    assert document["sla"]["timezone"] == "America/New_York" and document["exit_code"] == 6


def test_the_text_report_and_its_summary(factory: Emulator, capsys: Cap) -> None:
    code, out, _ = _report(capsys)
    assert code == 6
    lines = out.splitlines()
    assert lines[0] == "SLA: Claims severity refreshed before the actuaries' day"
    assert any(line.startswith("date ") and "deadline" in line and "margin" in line for line in lines)
    assert max(len(line) for line in lines) <= 120
    assert f"retried {_weekday_back(1, 1).isoformat()}: 2 runs, met by attempt 2" in lines
    unwrapped = out.replace("\n  ", " ").splitlines()
    drift = next(line for line in unwrapped if line.startswith("drift: "))
    assert drift.startswith("drift: DETECTED: recent median ") and "at this trend the first miss is 20" in drift
    assert lines[-1].startswith("20 business dates: ") or " business dates: " in lines[-1]
    assert "1 failed, 1 not-run" in lines[-1] and "retried" in lines[-1]


def test_csv_has_a_line_per_date_and_html_is_written(factory: Emulator, capsys: Cap, tmp_path: Path) -> None:
    page = tmp_path / "sla.html"
    code, out, _ = _report(capsys, "--csv", "--html", str(page))
    assert code == 6
    table = list(csv.DictReader(io.StringIO(out)))
    scheduled = [row for row in table if row["scheduled"] == "true"]
    assert scheduled and {row["status"] for row in scheduled} >= {"met", "close", "missed", "failed", "not-run"}
    assert all(row["weekday"] in ("Sat", "Sun") for row in table if row["scheduled"] == "false")
    html = page.read_text(encoding="utf-8")
    assert (
        html.startswith("<!DOCTYPE html>")
        and "<script" not in html
        and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )
    assert html.count('class="mark"') == len(scheduled)


def test_a_range_in_the_past_and_bad_options(factory: Emulator, capsys: Cap) -> None:
    until = _weekday_back(0, 2)  # a Monday: the range is the week before it
    code, out, _ = _report(
        capsys, "--since", (until - timedelta(days=7)).isoformat(), "--until", until.isoformat(), "--json"
    )
    document = json.loads(out)
    assert len(document["days"]) == 5 and document["sla"]["until"] == f"{until.isoformat()}T00:00:00Z"
    assert code == (
        6
        if document["drift"]["detected"]
        or any(r["status"] in ("missed", "failed", "not-run") for r in document["days"])
        else 0
    )
    code, _, err = _report(capsys, "--since", "2026-11-03T00:00:00")
    assert code == 2 and err.strip().endswith("has no UTC offset; write it with Z or +00:00")
    code, _, err = _report(capsys, "--since", "2d", "--until", "3d")
    assert (code, err.strip()) == (2, "error: --until must be later than --since")
    code, _, err = _report(capsys, "--json", "--csv")
    assert (code, err.strip()) == (2, "error: --json and --csv: choose one")


def test_a_business_date_the_pipeline_does_not_declare_is_refused(
    factory: Emulator, capsys: Cap, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(EXAMPLE.read_text().replace('business_date = "businessDate"', 'business_date = "asOfDate"'))
    capsys.readouterr()
    assert main.run(["sla", "report", str(wrong)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: {wrong}: sla.business_date: pipeline 'RefreshClaimsSeverity' declares no parameter 'asOfDate' "
        "(it declares: businessDate)"
    )


def test_the_cache_reaches_past_adf_retention_and_says_what_it_lacks(capsys: Cap) -> None:
    """A pipeline synced for months: dates past 45 days come from the cache; dates before its
    horizon are ``no-history``, not missed."""
    from backfill.sla.model import load_sla
    from backfill.store.database import Database
    from backfill.store.history_tables import SyncState
    from backfill.store.history_writes import upsert_runs, write_state

    loaded = load_sla(EXAMPLE)
    now = utcnow()
    # Late on the day before the oldest cached run's date: after that date's deadline, before the run.
    horizon = (now - timedelta(days=76)).replace(hour=23, minute=0, second=0, microsecond=0)
    runs = []
    for back in range(0, 76):
        day = (now - timedelta(days=back)).date()
        start = now.replace(year=day.year, month=day.month, day=day.day, hour=7, minute=30, second=0, microsecond=0)
        runs.append(
            Run(
                f"old-{back}",
                loaded.pipeline,
                RunStatus.SUCCEEDED,
                {"businessDate": day.isoformat()},
                start=start,
                end=start + timedelta(minutes=45),
                last_updated=start + timedelta(minutes=45),
                duration=timedelta(minutes=45),
            )
        )
    db = Database()
    try:
        with db.writing() as conn:
            upsert_runs(conn, loaded.ref.key, loaded.pipeline, runs)
            # The state a sync that has run since ``horizon`` leaves.
            state = SyncState(watermark=now, horizon=horizon, synced_at=now)
            write_state(conn, loaded.ref.key, loaded.pipeline, state, exists=False)
    finally:
        db.dispose()
    code, out, _ = _report(capsys, "--no-sync", "--since", "100d", "--json")
    document = json.loads(out)
    status = {row["date"]: row["status"] for row in document["days"]}
    old = [day for day in status if date.fromisoformat(day) < (now - timedelta(days=50)).date()]
    assert old and all(
        status[day] == "met" for day in old if date.fromisoformat(day) > (now - timedelta(days=75)).date()
    )
    assert document["history"]["no_history"], "dates before the horizon without runs are named"
    assert all(status[d] == "no-history" for d in document["history"]["no_history"])
    assert document["history"]["horizon"] == format_utc(horizon)
    assert code == 0, [(d, s) for d, s in status.items() if s not in ("met", "no-history")]

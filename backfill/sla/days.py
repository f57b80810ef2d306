"""One row per business date: its status from the runs that carried the date (spec §13).

The completing run is the first succeeded run to end. ``met``: it ended before the deadline,
``close``: less than ``warn_before`` before it, ``missed``: after it. Without a succeeded run a
date is ``pending`` while its deadline has not passed, then ``failed`` (runs, none succeeded) or
``not-run``. Two cases the spec leaves open, decided as an operator reads them: a run still in
flight when the deadline passed is ``missed`` already (nothing can make it on time);
a date with no run from before the history cache's horizon is ``no-history`` — we cannot tell
whether it ran, so it is neither claimed missed nor met.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from backfill.factory.run import Run, RunStatus
from backfill.sla.calendar import business_date_of, deadline_utc, is_business_day, local_text
from backfill.timeutil import format_utc

_LATEST = datetime.max.replace(tzinfo=UTC)


class DayStatus(StrEnum):
    MET = "met"
    CLOSE = "close"
    MISSED = "missed"
    FAILED = "failed"
    NOT_RUN = "not-run"
    PENDING = "pending"
    NO_HISTORY = "no-history"

    @property
    def breaks_sla(self) -> bool:
        """Counts against the SLA (exit 6)."""
        return self in (DayStatus.MISSED, DayStatus.FAILED, DayStatus.NOT_RUN)

    @property
    def completed(self) -> bool:
        return self in (DayStatus.MET, DayStatus.CLOSE, DayStatus.MISSED)


@dataclass(frozen=True)
class Activity:
    name: str
    duration: timedelta


@dataclass(frozen=True)
class DayRow:
    day: date
    status: DayStatus
    attempts: int
    deadline: datetime
    run: Run | None  # the completing run; for a missed date still in flight, that run
    longest_activity: Activity | None = None

    @property
    def end(self) -> datetime | None:
        return self.run.end if self.run is not None and self.run.status is RunStatus.SUCCEEDED else None

    @property
    def margin(self) -> timedelta | None:
        return self.deadline - self.end if self.end is not None else None

    @property
    def duration(self) -> timedelta | None:
        return self.run.duration if self.run is not None and self.end is not None else None

    def with_activity(self, activity: Activity | None) -> DayRow:
        return DayRow(self.day, self.status, self.attempts, self.deadline, self.run, activity)

    def to_json(self, zone: ZoneInfo) -> dict[str, object]:
        activity = self.longest_activity
        return {
            "date": self.day.isoformat(),
            "weekday": self.day.strftime("%a"),
            "status": self.status.value,
            "attempts": self.attempts,
            "run_id": self.run.run_id if self.run is not None else None,
            "start": format_utc(self.run.start) or None if self.run is not None else None,
            "end": format_utc(self.end) or None,
            "end_local": self.end.astimezone(zone).isoformat() if self.end is not None else None,
            "deadline": format_utc(self.deadline),
            "deadline_local": self.deadline.astimezone(zone).isoformat(),
            "margin_ms": _ms(self.margin),
            "duration_ms": _ms(self.duration),
            "longest_activity": {"name": activity.name, "duration_ms": _ms(activity.duration)} if activity else None,
        }

    def end_local_text(self, zone: ZoneInfo) -> str:
        return local_text(self.end, zone, self.day)


@dataclass(frozen=True)
class OutsideRow:
    """A date outside the SLA's days that runs carried: shown, never counted."""

    day: date
    attempts: int
    run: Run  # the completing run, else the latest attempt

    def to_json(self, zone: ZoneInfo) -> dict[str, object]:
        run = self.run
        return {
            "date": self.day.isoformat(),
            "weekday": self.day.strftime("%a"),
            "attempts": self.attempts,
            "run_id": run.run_id,
            "run_status": run.status_label,
            "end": format_utc(run.end) or None,
            "end_local": run.end.astimezone(zone).isoformat() if run.end is not None else None,
            "duration_ms": _ms(run.duration),
        }


def _ms(value: timedelta | None) -> int | None:
    return None if value is None else int(value / timedelta(milliseconds=1))


def runs_by_date(runs: Iterable[Run], parameter: str) -> dict[date, list[Run]]:
    """The runs that carried each business date, oldest start first; others are left out."""
    found: dict[date, list[Run]] = {}
    for run in runs:
        day = business_date_of(run.parameters.get(parameter))
        if day is not None:
            found.setdefault(day, []).append(run)
    for attempts in found.values():
        attempts.sort(key=lambda r: (r.start is None, r.start or _LATEST, r.run_id))
    return found


def completing_run(attempts: Sequence[Run]) -> Run | None:
    done = [r for r in attempts if r.status is RunStatus.SUCCEEDED and r.end is not None]
    return min(done, key=lambda r: (r.end, r.run_id)) if done else None


def day_row(
    day: date,
    attempts: Sequence[Run],
    *,
    deadline: datetime,
    warn_before: timedelta,
    now: datetime,
    horizon: datetime | None,
) -> DayRow:
    done = completing_run(attempts)
    if done is not None:
        assert done.end is not None
        margin = deadline - done.end
        status = (
            DayStatus.MISSED if margin < timedelta(0) else DayStatus.CLOSE if margin < warn_before else DayStatus.MET
        )
        return DayRow(day, status, len(attempts), deadline, done)
    if deadline > now:
        return DayRow(day, DayStatus.PENDING, len(attempts), deadline, None)
    flying = [r for r in attempts if r.status.is_active]
    if flying:
        return DayRow(day, DayStatus.MISSED, len(attempts), deadline, flying[-1])
    if attempts:
        return DayRow(day, DayStatus.FAILED, len(attempts), deadline, None)
    # Without a run: the cache must have covered the time a run for this date would have ended.
    if horizon is None or horizon > deadline:
        return DayRow(day, DayStatus.NO_HISTORY, 0, deadline, None)
    return DayRow(day, DayStatus.NOT_RUN, 0, deadline, None)


def build_days(
    dates: Iterable[date],
    by_date: Mapping[date, Sequence[Run]],
    *,
    days: frozenset[str],
    deadline: time,
    zone: ZoneInfo,
    warn_before: timedelta,
    now: datetime,
    horizon: datetime | None,
) -> tuple[list[DayRow], list[OutsideRow]]:
    """Rows for the business dates among ``dates``, and the other dates that runs carried."""
    rows: list[DayRow] = []
    outside: list[OutsideRow] = []
    for day in dates:
        attempts = by_date.get(day, ())
        if is_business_day(day, days):
            rows.append(
                day_row(
                    day,
                    attempts,
                    deadline=deadline_utc(day, deadline, zone),
                    warn_before=warn_before,
                    now=now,
                    horizon=horizon,
                )
            )
        elif attempts:
            outside.append(OutsideRow(day, len(attempts), completing_run(attempts) or attempts[-1]))
    return rows, outside


def start_offset(run: Run, day: date, zone: ZoneInfo) -> timedelta | None:
    """How long after the date's local midnight (wall clock) the run started."""
    if run.start is None:
        return None
    local = run.start.astimezone(zone).replace(tzinfo=None)
    return local - datetime.combine(day, datetime.min.time())

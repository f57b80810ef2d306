"""The SLA report: rows per business date, the other dates runs carried, drift, exit code.

Pure: it takes the pipeline's runs (from the history cache, see ``service``) and the times, and
returns values; ``to_json`` is the stable ``sla report --json`` document (spec §13, ``schema`` 1).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from backfill.errors import ExitCode
from backfill.factory.run import Run
from backfill.sla.calendar import business_dates_before, dates_in, deadline_utc
from backfill.sla.days import Activity, DayRow, DayStatus, OutsideRow, build_days, day_row, runs_by_date, start_offset
from backfill.sla.drift import Drift, Point, assess
from backfill.sla.model import LoadedSla
from backfill.timeutil import format_utc

DEFAULT_SPAN = timedelta(days=28)
SCHEMA = 1
ORDER = [s for s in DayStatus]


@dataclass(frozen=True)
class SlaReport:
    sla: LoadedSla
    since: datetime
    until: datetime
    now: datetime
    days: list[DayRow]
    outside_days: list[OutsideRow]
    drift: Drift
    horizon: datetime | None
    synced_at: datetime | None
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> Counter[DayStatus]:
        return Counter(row.status for row in self.days)

    @property
    def retried(self) -> list[DayRow]:
        return [row for row in self.days if row.attempts > 1]

    @property
    def no_history(self) -> list[date]:
        return [row.day for row in self.days if row.status is DayStatus.NO_HISTORY]

    @property
    def exit_code(self) -> ExitCode:
        broken = any(row.status.breaks_sla for row in self.days)
        return ExitCode.SLA_AT_RISK if broken or self.drift.detected else ExitCode.OK

    def summary_line(self) -> str:
        counts = self.counts
        parts = [f"{counts[s]} {s.value}" for s in ORDER if counts[s]]
        retried = len(self.retried)
        text = f"{len(self.days)} business dates: {', '.join(parts) or 'none'}"
        if retried:
            text += f"; {retried} retried"
        if self.outside_days:
            text += f"; {len(self.outside_days)} dates outside the SLA's days ran"
        return text

    def drift_line(self) -> str:
        drift = self.drift
        if drift.reason is not None:
            return f"drift: {drift.reason}"
        assert drift.recent_median_ms is not None and drift.baseline_median_ms is not None
        change = drift.change or 0.0
        text = (
            f"drift: {'DETECTED' if drift.detected else 'none'}: recent median {_clock(drift.recent_median_ms)} "
            f"against baseline {_clock(drift.baseline_median_ms)} ({change:+.0%}, threshold "
            f"{self.sla.file.drift.threshold:.0%}); trend {_signed(drift.slope_ms_per_day or 0.0)} per day"
        )
        if drift.projected_miss is not None:
            text += f"; at this trend the first miss is {drift.projected_miss.isoformat()}"
        elif (drift.slope_ms_per_day or 0) > 0:
            text += "; no miss projected within 92 days"
        return text

    def to_json(self) -> dict[str, Any]:
        zone = self.sla.zone
        return {
            "schema": SCHEMA,
            "sla": {
                **self.sla.to_json(),
                "since": format_utc(self.since),
                "until": format_utc(self.until),
                "now": format_utc(self.now),
            },
            "history": {
                "horizon": format_utc(self.horizon) or None,
                "synced_at": format_utc(self.synced_at) or None,
                "no_history": [d.isoformat() for d in self.no_history],
            },
            "summary": {s.value: self.counts[s] for s in ORDER} | {"retried": len(self.retried)},
            "days": [row.to_json(zone) for row in self.days],
            "outside_days": [row.to_json(zone) for row in self.outside_days],
            "drift": self.drift.to_json(),
            "exit_code": int(self.exit_code),
        }


def _clock(ms: float) -> str:
    from backfill.timeutil import format_duration

    return format_duration(timedelta(milliseconds=ms))


def _signed(ms: float) -> str:
    sign = "+" if ms >= 0 else "-"
    return sign + _clock(abs(ms))


# The longest activity of each of some runs, by run ID (those it cannot tell are left out).
ActivityLookup = Callable[[Sequence[Run]], Mapping[str, Activity]]


def build_report(
    sla: LoadedSla,
    runs: Iterable[Run],
    *,
    since: datetime,
    until: datetime,
    now: datetime,
    horizon: datetime | None,
    synced_at: datetime | None = None,
    longest_activity: ActivityLookup | None = None,
) -> SlaReport:
    """The report over ``[since, until)`` and the drift before ``until``, from a pipeline's runs."""
    spec, zone = sla.spec, sla.zone
    days = frozenset(spec.days)
    by_date = runs_by_date(runs, spec.business_date)
    rows, outside = build_days(
        dates_in(since, until, zone),
        by_date,
        days=days,
        deadline=spec.deadline,
        zone=zone,
        warn_before=spec.warn_before,
        now=now,
        horizon=horizon,
    )
    if longest_activity is not None:
        found = longest_activity([row.run for row in rows if row.end is not None and row.run is not None])
        rows = [row.with_activity(found.get(row.run.run_id)) if row.run is not None else row for row in rows]
    drift = _drift(sla, by_date, until=until, now=now, horizon=horizon, days=days)
    notes = []
    if horizon is None:
        notes.append(f"the history of {sla.pipeline} was never synced")
    return SlaReport(sla, since, until, now, rows, outside, drift, horizon, synced_at, notes)


def _drift(
    sla: LoadedSla,
    by_date: dict[date, list[Run]],
    *,
    until: datetime,
    now: datetime,
    horizon: datetime | None,
    days: frozenset[str],
) -> Drift:
    """Drift over the business dates before ``until`` whose outcome is known: a pending date (its
    deadline ahead) is no evidence yet, so the windows reach back past it."""
    spec, drift_spec, zone = sla.spec, sla.file.drift, sla.zone
    wanted = drift_spec.recent + drift_spec.baseline
    # Enough dates to skip the pending ones (at most a few: deadlines are within their day).
    candidates = business_dates_before(until, zone, days, wanted + 7)
    known: list[DayRow] = []
    for day in reversed(candidates):
        row = day_row(
            day,
            by_date.get(day, ()),
            deadline=deadline_utc(day, spec.deadline, zone),
            warn_before=spec.warn_before,
            now=now,
            horizon=horizon,
        )
        if row.status is not DayStatus.PENDING:
            known.append(row)
        if len(known) == wanted:
            break
    known.reverse()
    recent_rows = known[-drift_spec.recent :]
    baseline_rows = known[: max(0, len(known) - drift_spec.recent)]
    points = [
        Point(row.day, row.duration / timedelta(milliseconds=1), start_offset(row.run, row.day, zone))
        for row in known
        if row.duration is not None and row.run is not None and row.end is not None
    ]
    return assess(
        [r.day for r in recent_rows],
        [r.day for r in baseline_rows],
        points,
        threshold=drift_spec.threshold,
        until=until,
        deadline=spec.deadline,
        zone=zone,
        days=days,
    )


def default_range(now: datetime, since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """``[since, until)``; by default the last 28 days up to now."""
    end = until or now
    return since or end - DEFAULT_SPAN, end

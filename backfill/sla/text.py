"""The SLA report as a terminal table (tabulate) and as CSV.

The table fits 120 columns: times of day print as ``10:41Z`` when they fall on the business date
(the date column says which), whole timestamps otherwise; UTC first, the local end beside it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta

from backfill.sla.days import DayRow, DayStatus
from backfill.sla.report import SlaReport
from backfill.timeutil import format_duration, format_utc

OUTSIDE_HEADERS = ["date", "day", "run status", "tries", "run", "end", "duration"]
HEADERS = ["date", "day", "status", "tries", "run", "end", "end local", "deadline", "margin", "duration", "longest"]


def utc_clock(instant: datetime | None, day: date) -> str:
    """``10:41Z`` on the business date itself, the whole UTC timestamp otherwise."""
    if instant is None:
        return ""
    text = format_utc(instant)
    return text[11:16] + "Z" if instant.date() == day else text


def signed(value: timedelta | None) -> str:
    if value is None:
        return ""
    return ("-" if value < timedelta(0) else "+") + format_duration(abs(value))


def _whole(run_id: str) -> str:
    return run_id


def table_rows(report: SlaReport, id_text: Callable[[str], str] = _whole) -> list[list[str]]:
    """The table's cells; ``id_text`` shortens run IDs (the CLI's ``short_id``)."""
    zone = report.sla.zone
    rows = []
    for row in report.days:
        run_id = row.run.run_id if row.run is not None else ""
        activity = row.longest_activity
        rows.append(
            [
                row.day.isoformat(),
                row.day.strftime("%a"),
                _status_text(row),
                str(row.attempts),
                id_text(run_id) if run_id else "-",
                utc_clock(row.end, row.day),
                row.end_local_text(zone),
                utc_clock(row.deadline, row.day),
                signed(row.margin),
                format_duration(row.duration),
                f"{activity.name} {format_duration(activity.duration)}" if activity else "",
            ]
        )
    return rows


def _status_text(row: DayRow) -> str:
    if row.status is DayStatus.MISSED and row.end is None:
        return "missed (running)"
    return row.status.value


def header_lines(report: SlaReport) -> Iterator[str]:
    sla = report.sla
    spec, target = sla.spec, sla.file.target
    yield f"SLA: {sla.file.title or sla.path}"
    yield f"target: {target.factory}/{target.pipeline} (resource group {target.resource_group})"
    days = ", ".join(spec.days)
    clock = spec.deadline.strftime("%H:%M")
    yield (
        f"deadline: {clock} {spec.timezone} on {days} (business date in {spec.business_date}); "
        f"close within {format_duration(spec.warn_before)}"
    )
    yield f"range: {format_utc(report.since)} to {format_utc(report.until)}"
    # In date order: the offset before the change, then after it.
    offsets = list(dict.fromkeys(row.deadline.astimezone(sla.zone).strftime("%z") for row in report.days))
    if len(offsets) > 1:
        shown = ", ".join(_offset(o) for o in offsets)
        yield f"note: the zone's offset changes in this range ({shown}): each date's deadline is in its own offset"


def _offset(text: str) -> str:
    return f"UTC{text[:3]}:{text[3:]}"


def outside_rows(report: SlaReport, id_text: Callable[[str], str] = _whole) -> list[list[str]]:
    return [
        [
            row.day.isoformat(),
            row.day.strftime("%a"),
            row.run.status_label,
            str(row.attempts),
            id_text(row.run.run_id),
            utc_clock(row.run.end, row.day),
            format_duration(row.run.duration),
        ]
        for row in report.outside_days
    ]


def footer_lines(report: SlaReport) -> Iterator[str]:
    retried = report.retried
    for row in retried:
        verb = f"met by attempt {row.attempts}" if row.status in (DayStatus.MET, DayStatus.CLOSE) else row.status.value
        yield f"retried {row.day.isoformat()}: {row.attempts} runs, {verb}"
    missing = report.no_history
    if missing:
        covered = format_utc(report.horizon) if report.horizon else "never synced"
        yield (
            f"no history for {len(missing)} dates ({missing[0].isoformat()} to {missing[-1].isoformat()}): "
            f"the history cache covers since {covered}"
        )
    yield from (f"note: {note}" for note in report.notes)
    yield report.drift_line()
    yield report.summary_line()


CSV_FIELDS = [
    "date",
    "weekday",
    "scheduled",
    "status",
    "attempts",
    "run_id",
    "start",
    "end",
    "end_local",
    "deadline",
    "margin_ms",
    "duration_ms",
    "longest_activity",
    "longest_activity_ms",
]


def to_csv(report: SlaReport) -> str:
    """One line per business date, then the other dates runs carried (``scheduled`` false)."""
    zone = report.sla.zone
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in report.days:
        data = row.to_json(zone)
        activity = data.pop("longest_activity")
        writer.writerow(
            data
            | {
                "scheduled": "true",
                "longest_activity": activity["name"] if isinstance(activity, dict) else "",
                "longest_activity_ms": activity["duration_ms"] if isinstance(activity, dict) else "",
            }
        )
    for outside in report.outside_days:
        data = outside.to_json(zone)
        writer.writerow(data | {"scheduled": "false", "status": data["run_status"]})
    return out.getvalue()


def to_json_text(report: SlaReport) -> str:
    return json.dumps(report.to_json(), indent=2, sort_keys=True)

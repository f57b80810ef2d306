"""The SLA report as one self-contained HTML page for a supervisor with 30 seconds.

First the outcome in one sentence, then two inline-SVG charts: each business date's end time
(local wall clock, as the downstream team reads it) against the deadline line, one mark per date
coloured by status, dates without a success in a lane above; then the duration trend: the dates'
durations, the baseline and recent medians, the Theil–Sen line and the projected miss. Then the
tables. No script, no external asset; every value escaped (run IDs and titles are free text).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from backfill.pages import escaped as _e
from backfill.pages import table as _table
from backfill.sla.days import DayRow, DayStatus
from backfill.sla.report import SlaReport
from backfill.sla.text import HEADERS, OUTSIDE_HEADERS, signed, table_rows, utc_clock
from backfill.timeutil import format_duration, format_utc

COLOURS = {
    DayStatus.MET: "#2da44e",
    DayStatus.CLOSE: "#bf8700",
    DayStatus.MISSED: "#cf222e",
    DayStatus.FAILED: "#82071e",
    DayStatus.NOT_RUN: "#6e7781",
    DayStatus.PENDING: "#0969da",
    DayStatus.NO_HISTORY: "#afb8c1",
}
DEADLINE = "#8250df"  # the deadline line: a colour no mark uses
TREND = "#fb8500"
WARN = "#d4a72c"  # the "close" line: not a mark's colour either
WIDTH, PLOT_H, LEFT, RIGHT, TOP = 960, 240, 70, 20, 56
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1b1f23;max-width:70rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.8rem}
.outcome{font-size:1.2rem;font-weight:600;padding:.6rem .9rem;border-radius:6px;margin:1rem 0}
.outcome.good{background:#dafbe1;color:#116329}.outcome.poor{background:#ffebe9;color:#a40e26}
svg{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px;max-width:100%;height:auto}
.legend span{display:inline-block;margin-right:1rem}.legend i{display:inline-block;width:.8rem;height:.8rem;
border-radius:50%;margin-right:.3rem;vertical-align:middle}
"""


def outcome_text(report: SlaReport) -> str:
    counts = report.counts
    broken = [s for s in (DayStatus.MISSED, DayStatus.FAILED, DayStatus.NOT_RUN) if counts[s]]
    parts = []
    if broken:
        total = sum(counts[s] for s in broken)
        detail = ", ".join(f"{counts[s]} {s.value}" for s in broken)
        parts.append(f"{total} of {len(report.days)} business dates broke the SLA ({detail})")
    else:
        parts.append(
            f"All {len(report.days) - counts[DayStatus.PENDING] - counts[DayStatus.NO_HISTORY]} "
            "business dates met the SLA"
        )
    if counts[DayStatus.CLOSE]:
        parts.append(f"{counts[DayStatus.CLOSE]} close")
    drift = report.drift
    if drift.detected:
        text = f"drift detected: durations {drift.change or 0:+.0%}"
        if drift.projected_miss is not None:
            text += f", first miss projected {drift.projected_miss.isoformat()}"
        parts.append(text)
    elif drift.projected_miss is not None:
        parts.append(f"no drift over the threshold, but the trend misses on {drift.projected_miss.isoformat()}")
    return "; ".join(parts) + "."


def _wall_hours(instant: datetime, day: date, report: SlaReport) -> float:
    """Hours after the business date's local midnight, on the wall clock."""
    local = instant.astimezone(report.sla.zone).replace(tzinfo=None)
    return (local - datetime.combine(day, datetime.min.time())) / timedelta(hours=1)


def _x(index: int, count: int) -> float:
    span = WIDTH - LEFT - RIGHT
    return LEFT + span * (index + 0.5) / max(count, 1)


def end_chart(report: SlaReport) -> str:
    """Each date's end (wall clock) against the deadline; no-success dates in the lane on top."""
    rows = report.days
    spec = report.sla.spec
    deadline_h = spec.deadline.hour + spec.deadline.minute / 60 + spec.deadline.second / 3600
    warn_h = deadline_h - spec.warn_before / timedelta(hours=1)
    ends = [_wall_hours(r.end, r.day, report) for r in rows if r.end is not None]
    low = max(0.0, min([*ends, warn_h - 1]) - 0.5)
    high = min(36.0, max([*ends, deadline_h + 1]) + 0.5)
    height = TOP + PLOT_H + 40

    def y(hours: float) -> float:
        clamped = min(max(hours, low), high)
        return TOP + PLOT_H - (clamped - low) / (high - low) * PLOT_H

    parts = [
        f'<svg class="sla-ends" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="end time of each business date against the deadline">',
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{PLOT_H}" fill="#f6f8fa"/>',
        f'<text x="{LEFT}" y="{TOP - 30}">no success by the deadline (failed, not run, pending, no history):</text>',
    ]
    step = 1 if high - low <= 8 else 2 if high - low <= 16 else 4
    hour = int(low) + 1
    while hour < high:
        if hour % step == 0:
            parts.append(
                f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(hour):.1f}" y2="{y(hour):.1f}" stroke="#d0d7de"/>'
                f'<text x="{LEFT - 6}" y="{y(hour) + 4:.1f}" text-anchor="end">{hour % 24:02d}:00</text>'
            )
        hour += 1
    clock = spec.deadline.strftime("%H:%M")
    parts.append(
        f'<line class="warn" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(warn_h):.1f}" y2="{y(warn_h):.1f}" '
        f'stroke="{WARN}" stroke-dasharray="4 4"/>'
        f'<line class="deadline" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(deadline_h):.1f}" y2="{y(deadline_h):.1f}" '
        f'stroke="{DEADLINE}" stroke-width="3"><title>deadline {_e(clock)} {_e(spec.timezone)}</title></line>'
        f'<text x="{WIDTH - RIGHT}" y="{y(deadline_h) - 6:.1f}" text-anchor="end" fill="{DEADLINE}">'
        f"deadline {_e(clock)} {_e(spec.timezone)}</text>"
    )
    for index, row in enumerate(rows):
        cx = _x(index, len(rows))
        colour = COLOURS[row.status]
        tip = _e(_tip(row, report))
        common = f'class="mark" data-date="{row.day.isoformat()}" data-status="{row.status.value}" fill="{colour}"'
        if row.end is not None:
            cy = y(_wall_hours(row.end, row.day, report))
            parts.append(f'<circle {common} cx="{cx:.1f}" cy="{cy:.1f}" r="6"><title>{tip}</title></circle>')
        else:
            cy = TOP - 20
            parts.append(
                f'<rect {common} x="{cx - 6:.1f}" y="{TOP - 26}" width="12" height="12"><title>{tip}</title></rect>'
            )
        if row.attempts > 1:
            # A retried date says so beside its mark: "met by its retry" at a glance.
            parts.append(f'<text class="attempts" x="{cx + 9:.1f}" y="{cy + 4:.1f}">×{row.attempts}</text>')
        if index % max(1, len(rows) // 10) == 0:
            parts.append(
                f'<text x="{cx:.1f}" y="{TOP + PLOT_H + 16}" text-anchor="middle">{row.day.strftime("%m-%d")}</text>'
            )
    parts.append(
        f'<text x="{LEFT}" y="{TOP + PLOT_H + 34}">end time on the wall clock of {_e(spec.timezone)}, '
        "one mark per business date; ×2: retried</text></svg>"
    )
    return "".join(parts)


def _tip(row: DayRow, report: SlaReport) -> str:
    text = f"{row.day.isoformat()} {row.status.value}"
    if row.end is not None:
        ended = f"{row.end_local_text(report.sla.zone)} ({utc_clock(row.end, row.day)})"
        text += f": ended {ended}, margin {signed(row.margin)}"
    if row.attempts > 1:
        text += f", {row.attempts} attempts"
    return text


def trend_chart(report: SlaReport) -> str:
    """Durations of the drift windows' dates, the medians, the trend line and the projected miss."""
    drift = report.drift
    points = drift.points
    if not points:
        return '<p class="none">No completing runs to draw a trend from.</p>'
    first = points[0].day
    last_day = drift.projected_miss or (report.until.date() + timedelta(days=14))
    last_day = max(last_day, points[-1].day + timedelta(days=1))
    total_days = (last_day - first).days or 1
    budget_ms = None
    spec = report.sla.spec
    if drift.usual_start is not None:
        deadline = timedelta(hours=spec.deadline.hour, minutes=spec.deadline.minute)
        budget_ms = (deadline - drift.usual_start) / timedelta(milliseconds=1)
    values = [p.duration_ms for p in points]
    trend_end = drift.trend_ms(last_day)
    high = max([*values, *(v for v in (budget_ms, trend_end) if v is not None)]) * 1.1
    height = TOP + PLOT_H + 40

    def x(day: date) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * (day - first).days / total_days

    def y(ms: float) -> float:
        return TOP + PLOT_H - max(0.0, min(ms, high)) / high * PLOT_H

    parts = [
        f'<svg class="sla-trend" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="duration trend">',
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{PLOT_H}" fill="#f6f8fa"/>',
    ]
    for ms in _ticks(high):
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(ms):.1f}" y2="{y(ms):.1f}" stroke="#d0d7de"/>'
            f'<text x="{LEFT - 6}" y="{y(ms) + 4:.1f}" text-anchor="end">'
            f"{_e(format_duration(timedelta(milliseconds=ms)))}</text>"
        )
    if budget_ms is not None:
        parts.append(
            f'<line class="budget" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(budget_ms):.1f}" y2="{y(budget_ms):.1f}" '
            f'stroke="{DEADLINE}" stroke-width="2" stroke-dasharray="6 3"/>'
            f'<text x="{WIDTH - RIGHT}" y="{y(budget_ms) - 6:.1f}" text-anchor="end" fill="{DEADLINE}">longest run '
            f"that meets the deadline from the usual start</text>"
        )
    for label, dates, median in (
        ("baseline median", drift.baseline_dates, drift.baseline_median_ms),
        ("recent median", drift.recent_dates, drift.recent_median_ms),
    ):
        if dates and median is not None:
            parts.append(
                f'<line class="median" x1="{x(dates[0]):.1f}" x2="{x(dates[-1]):.1f}" y1="{y(median):.1f}" '
                f'y2="{y(median):.1f}" stroke="#57606a" stroke-width="2"><title>{label} '
                f"{_e(format_duration(timedelta(milliseconds=median)))}</title></line>"
            )
    recent = set(drift.recent_dates)
    for point in points:
        colour = "#0969da" if point.day in recent else "#8c959f"
        parts.append(
            f'<circle class="duration" data-date="{point.day.isoformat()}" cx="{x(point.day):.1f}" '
            f'cy="{y(point.duration_ms):.1f}" r="4" fill="{colour}"><title>{point.day.isoformat()} '
            f"{_e(format_duration(timedelta(milliseconds=point.duration_ms)))}</title></circle>"
        )
    if drift.recent_dates and drift.slope_ms_per_day is not None:
        start = drift.recent_dates[0]
        a, b = drift.trend_ms(start), trend_end
        assert a is not None and b is not None
        parts.append(
            f'<line class="trend" x1="{x(start):.1f}" y1="{y(a):.1f}" x2="{x(last_day):.1f}" y2="{y(b):.1f}" '
            f'stroke="{TREND}" stroke-width="2" stroke-dasharray="8 4"><title>Theil–Sen trend '
            f"{_e(signed(timedelta(milliseconds=drift.slope_ms_per_day)))} per day</title></line>"
        )
    if drift.projected_miss is not None:
        px = x(drift.projected_miss)
        parts.append(
            f'<line class="projected-miss" x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{TOP + PLOT_H}" '
            f'stroke="{COLOURS[DayStatus.MISSED]}" stroke-width="2"/>'
            f'<text x="{px - 4:.1f}" y="{TOP - 8}" text-anchor="end" fill="{COLOURS[DayStatus.MISSED]}">'
            f"projected miss {drift.projected_miss.isoformat()}</text>"
        )
    parts.append(
        f'<text x="{LEFT}" y="{TOP + PLOT_H + 16}">{first.isoformat()}</text>'
        f'<text x="{WIDTH - RIGHT}" y="{TOP + PLOT_H + 16}" text-anchor="end">{last_day.isoformat()}</text>'
        f'<text x="{LEFT}" y="{TOP + PLOT_H + 34}">duration of each completing run: grey baseline, blue recent; '
        "dashed orange: the trend</text></svg>"
    )
    return "".join(parts)


def _ticks(high: float) -> list[float]:
    """Round durations for the axis: at most six, 15 minutes to 4 hours apart."""
    minute = 60_000.0
    step = next((s * minute for s in (5, 15, 30, 60, 120, 240) if high / (s * minute) <= 6), high / 4)
    return [step * n for n in range(1, int(high // step) + 1)]


def render_html(report: SlaReport) -> str:
    """The whole page as an HTML5 document."""
    sla = report.sla
    target = sla.file.target
    broken = any(row.status.breaks_sla for row in report.days) or report.drift.detected
    rows = []
    for row, cells in zip(report.days, table_rows(report), strict=True):
        escaped = [_e(c) for c in cells]
        escaped[2] = f'<b style="color:{COLOURS[row.status]}">{escaped[2]}</b>'
        escaped[4] = f'<span class="mono">{_e(row.run.run_id if row.run else "-")}</span>'
        rows.append(escaped)
    outside = [
        [
            _e(o.day.isoformat()),
            _e(o.day.strftime("%a")),
            _e(o.run.status_label),
            str(o.attempts),
            f'<span class="mono">{_e(o.run.run_id)}</span>',
            _e(format_utc(o.run.end)),
            _e(format_duration(o.run.duration)),
        ]
        for o in report.outside_days
    ]
    legend = "".join(f'<span><i style="background:{c}"></i>{_e(s.value)}</span>' for s, c in COLOURS.items())
    from backfill.sla.text import footer_lines

    notes = "".join(f"<li>{_e(line)}</li>" for line in footer_lines(report))
    title = sla.file.title or str(sla.path)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_e(title)}</h1>"
        f'<p class="outcome {"poor" if broken else "good"}" id="outcome">{_e(outcome_text(report))}</p>'
        f"<p>{_e(target.factory)}/{_e(target.pipeline)}: deadline {_e(sla.spec.deadline.strftime('%H:%M'))} "
        f"{_e(sla.spec.timezone)} on {_e(', '.join(sla.spec.days))}; business dates from "
        f"{_e(format_utc(report.since))} to {_e(format_utc(report.until))}.</p>"
        f"<h2>End time against the deadline</h2>{end_chart(report)}"
        f'<p class="legend">{legend}</p>'
        f"<h2>Duration trend</h2><p>{_e(report.drift_line())}</p>{trend_chart(report)}"
        f"<h2>Business dates</h2>{_table(HEADERS, rows)}"
        f"<h2>Outside the SLA's days (never counted)</h2>{_table(OUTSIDE_HEADERS, outside)}"
        f"<h2>Notes</h2><ul>{notes}</ul>"
        f'<p class="none">Generated {_e(format_utc(report.now))} by backfill sla report.</p>'
        "</body></html>\n"
    )

"""The SLA page in a real browser: headless Chromium (Debian's package) renders it, the test
takes a screenshot (kept under tmp_path) and finds on it, within the first screen, the deadline
line and one mark per business date in its status colour."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from browser_support import pixels, screenshot

from backfill.factory.run import Run, RunStatus
from backfill.sla.days import DayStatus
from backfill.sla.html import COLOURS, DEADLINE, LEFT, render_html
from backfill.sla.model import sla_from_data
from backfill.sla.report import SlaReport, build_report

SIZE = (1280, 900)
SINCE = datetime(2026, 11, 2, 5, tzinfo=UTC)  # Monday; 20 business dates to Friday 27th
UNTIL = datetime(2026, 11, 30, 5, tzinfo=UTC)
WHITE = (255, 255, 255)


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _run(day: datetime, minutes: float, status: RunStatus = RunStatus.SUCCEEDED, at: int = 8) -> Run:
    start = day.replace(hour=at, minute=0)
    duration = timedelta(minutes=minutes)
    return Run(
        f"run-{day:%m%d}-{at}-{status.value}",
        "p",
        status,
        {"businessDate": f"{day:%Y-%m-%d}"},
        start=start,
        end=start + duration if status.is_final else None,
        duration=duration if status.is_final else None,
    )


def _report() -> SlaReport:
    target = {"subscription_id": "s", "resource_group": "rg", "factory": "adf-claims", "pipeline": "p"}
    section = {"business_date": "businessDate", "deadline": "06:00", "timezone": "America/New_York"}
    sla = sla_from_data({"title": "Claims <severity> & co", "target": target, "sla": section}, path="t.toml")
    # Six weeks before the range of plain 45-minute runs: the drift's baseline.
    runs = [_run(SINCE.replace(hour=0) - timedelta(days=back), 45) for back in range(1, 43)]
    day = SINCE.replace(hour=0)
    index = 0
    while day < UNTIL:
        if day.weekday() < 5:
            kind = index % 7
            if kind == 2:
                runs.append(_run(day, 200))  # missed: 08:00Z + 3h20 = 11:20Z
            elif kind == 3:
                runs.append(_run(day, 160))  # close: 10:40Z
            elif kind == 4:
                runs.append(_run(day, 20, RunStatus.FAILED))
            elif kind != 5:  # 5: not run
                runs.append(_run(day, 45 + index * 2))
            index += 1
        day += timedelta(days=1)
    now = datetime(2026, 11, 27, 10, tzinfo=UTC)  # Friday the 27th still pending
    return build_report(sla, runs, since=SINCE, until=UNTIL, now=now, horizon=SINCE - timedelta(days=90))


def test_the_page_is_self_contained_and_escaped() -> None:
    page = render_html(_report())
    assert "<script" not in page and "src=" not in page and "href=" not in page
    assert "Claims &lt;severity&gt; &amp; co" in page and "<severity>" not in page
    body = page[page.index("<body>") :]
    assert body.index('id="outcome"') < body.index('<svg class="sla-ends"') < body.index("<table")
    assert len(re.findall(r'class="mark"', page)) == 20
    assert page.count('class="deadline"') == 1 and 'class="trend"' in page


def _components(rows: list[bytes], colour: tuple[int, int, int], top: int, bottom: int) -> int:
    """4-connected regions of exactly ``colour`` in rows [top, bottom)."""
    wanted = bytes(colour)
    seen: set[tuple[int, int]] = set()
    count = 0
    width = len(rows[0]) // 3
    for y in range(top, bottom):
        for x in range(width):
            if (x, y) in seen or rows[y][3 * x : 3 * x + 3] != wanted:
                continue
            count += 1
            stack = [(x, y)]
            seen.add((x, y))
            while stack:
                cx, cy = stack.pop()
                for nx, ny in ((cx + 1, cy), (cx - 1, cy), (cx, cy + 1), (cx, cy - 1)):
                    inside = top <= ny < bottom and 0 <= nx < width and (nx, ny) not in seen
                    if inside and rows[ny][3 * nx : 3 * nx + 3] == wanted:
                        seen.add((nx, ny))
                        stack.append((nx, ny))
    return count


def test_chromium_shows_the_deadline_line_and_a_mark_per_date(tmp_path: Path) -> None:
    report = _report()
    page = tmp_path / "sla.html"
    page.write_text(render_html(report), encoding="utf-8")
    shot = tmp_path / "sla.png"  # kept as the test's artefact
    screenshot(page, shot, SIZE, tmp_path)
    width, height, rows = pixels(shot.read_bytes(), limit=SIZE[1])
    assert (width, height) == SIZE
    line = bytes(rgb(DEADLINE))
    # The deadline: a row of the first screen holding a long unbroken run of its colour.
    deadline_rows = [y for y, row in enumerate(rows) if line * 600 in row]
    assert deadline_rows, "the deadline line is visible on the first screen"
    y_deadline = deadline_rows[0]
    # The plot area around it ends where the page's white starts (just inside its left edge).
    column = 32 + LEFT + 2
    top = bottom = y_deadline
    while top > 0 and rows[top - 1][3 * column : 3 * column + 3] != bytes(WHITE):
        top -= 1
    while bottom < height and rows[bottom][3 * column : 3 * column + 3] != bytes(WHITE):
        bottom += 1
    assert bottom - top > 200, (top, bottom)
    region = (top - 40, bottom)  # the "no success" lane sits above the plot
    expected = Counter(row.status for row in report.days)
    assert set(expected) >= {DayStatus.MET, DayStatus.CLOSE, DayStatus.MISSED, DayStatus.FAILED, DayStatus.NOT_RUN}
    seen = {status: _components(rows, rgb(COLOURS[status]), *region) for status in DayStatus}
    assert seen == {status: expected.get(status, 0) for status in DayStatus}, "one visible mark per business date"

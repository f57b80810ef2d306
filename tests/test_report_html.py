"""The HTML report opens with the outcome and a timeline, checked in a headless Chromium.

The demo's backfill is reported as HTML; the page must say first what came of it, then draw an
inline-SVG timeline (one bar per run, coloured by status, the canary pause and the approvals
marked), then the tables. Chromium renders it to a PNG kept under the test's tmp_path; the test
decodes it and finds the outcome band and the run bars at the top of the page.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from browser_support import pixels, screenshot
from runner_support import base_time, cli, emulator, request, scenario, write_plan

from backfill.cli import main
from backfill.emulator import OutcomeRule
from backfill.timeutil import format_utc

Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch
SIZE = (1280, 900)
OUTCOME_GREEN = (0xDA, 0xFB, 0xE1)  # .outcome.good background
BAR_GREEN = (0x2D, 0xA4, 0x4E)  # a Succeeded run's bar
OUTCOME = "Completed: 4 ran and succeeded, 1 partial window left blocked, 19 skipped"


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo kept in a folder, and its backfill's HTML report."""
    folder = tmp_path_factory.mktemp("demo") / "kept"
    saved = dict(os.environ)
    try:
        assert main.run(["demo", "--fast", "--keep", str(folder)]) == 0
        os.environ["BACKFILL_LEDGER"] = f"sqlite:///{folder / 'backfill-ledger.db'}"
        from backfill.store.backfills import list_backfills
        from backfill.store.database import Database

        db = Database()
        try:
            (record,) = list_backfills(db)
        finally:
            db.dispose()
        report = folder / "report.html"
        assert main.run(["report", record.id, "--html", str(report)]) == 0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return report


def test_the_report_opens_with_the_outcome_then_the_timeline(demo_report: Path) -> None:
    page = demo_report.read_text(encoding="utf-8")
    body = page[page.index("<body>") :]
    outcome, svg, table = body.index('id="outcome"'), body.index("<svg"), body.index("<table")
    assert outcome < svg < table, "outcome first, then the timeline, then the tables"
    assert re.search(r'<p class="outcome good" id="outcome">([^<]*)</p>', body).group(1) == OUTCOME  # type: ignore[union-attr]
    drawn = body[svg : body.index("</svg>")]
    assert re.findall(r'<rect class="run"[^>]*data-status="(\w+)"', drawn) == ["Succeeded"] * 4
    marks = re.findall(r'<line class="mark"[^>]*><title>([^<]*?) at ', drawn)
    assert sorted(marks) == ["approved by bob@contoso.com", "canary approved by bob@contoso.com", "canary pause"]


def _count(rows: list[bytes], colour: tuple[int, int, int]) -> int:
    wanted = bytes(colour)
    return sum(1 for row in rows for i in range(0, len(row), 3) if row[i : i + 3] == wanted)


def test_chromium_shows_the_outcome_and_the_timeline_at_the_top(demo_report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"  # kept as the test's artefact
    screenshot(demo_report, shot, SIZE, tmp_path)
    width, height, rows = pixels(shot.read_bytes(), limit=320)
    assert (width, height) == SIZE
    assert _count(rows[:160], OUTCOME_GREEN) > 20000, "the outcome band is the first thing on the page"
    assert _count(rows, BAR_GREEN) > 4 * 9 * 12, "four run bars (at least 10 by 13 pixels each) right below it"


def test_a_failed_backfill_says_why_and_who_cancelled(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    scen = scenario(base)
    scen.add_outcome(
        OutcomeRule(
            "fail", match={"windowStart": format_utc(base)}, activity="CopyReadings", message="Sink table locked"
        )
    )
    plan = write_plan(tmp_path, 2, base=base, name="north.toml")
    with emulator(scen, monkeypatch):
        bid = request(plan, monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "run", bid) == 1
        capsys.readouterr()
        assert cli(monkeypatch, "carol", "report", bid, "--json") == 0
        outcome = json.loads(capsys.readouterr().out)["backfill"]["outcome"]
        assert cli(monkeypatch, "carol", "report", bid, "--html", str(tmp_path / "r.html")) == 0
    assert outcome.startswith(f"Failed: window {format_utc(base)}/")
    assert outcome.endswith("Failed in activity CopyReadings: Sink table locked. 1 failed, 1 not run")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert '<p class="outcome poor" id="outcome">Failed: window ' in page

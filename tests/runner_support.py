"""Shared set-up of the runner tests: a fast emulator scenario, a plan, a requested and approved
backfill, and readers of what the ledger and the emulator recorded."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from plan_samples import plan_toml

from backfill.chain import LedgerEvent
from backfill.cli import main
from backfill.emulator import Emulator
from backfill.emulator.scenario import HistorySeries, OutcomeRule, Scenario
from backfill.store.database import Database
from backfill.store.ledger import Ledger
from backfill.timeutil import format_utc, utcnow
from backfill.windows import window_key

PIPELINE = "LoadMeterTelemetry"
EVERY = timedelta(minutes=15)
# A 15-minute emulated run takes 0.15 s of real time.
SPEED = 6000.0
# Settings every runner test uses: reconciliation settles fast against the in-process emulator.
FAST_ENV = {"BACKFILL_RECONCILE_SETTLE": "300ms", "BACKFILL_CLAIM_LEASE": "30s", "SOURCE_API_KEY": "hunter2"}


def base_time() -> datetime:
    """Windows start three hours ago, on the quarter hour: inside the history horizon."""
    return utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


def keys(base: datetime, count: int) -> list[str]:
    return [window_key(base + i * EVERY, base + (i + 1) * EVERY) for i in range(count)]


def scenario(base: datetime, **options: Any) -> Scenario:
    """The pipeline, with a day of succeeded history before ``base`` (the usual duration)."""
    scen = Scenario(speed=SPEED, **options)
    # The pipeline `backfill emulator serve` offers by default: LookupWatermark, then CopyReadings.
    (pipeline,) = Scenario.default().pipelines
    scen.add_pipeline(pipeline)
    scen.series.append(
        HistorySeries(
            PIPELINE,
            base - timedelta(hours=6),
            base - timedelta(hours=1),
            EVERY,
            {"windowStart": "{start}", "windowEnd": "{end}", "feederRegion": "north"},
        )
    )
    return scen


def plan_text(
    base: datetime,
    count: int,
    *,
    execution: Mapping[str, Any] | None = None,
    approval: Mapping[str, Any] | None = None,
    checks: str = "",
) -> str:
    """The north plan of ``count`` windows from ``base``: one approval, expiring in an hour."""
    return plan_toml(
        {"start": base, "end": base + count * EVERY, "every": "15m"},
        checks=checks,
        approval={"required": 1, "expires": "1h", **(approval or {})},
        execution={"poll": "auto", **(execution or {})},
    )


def write_plan(
    folder: Path,
    count: int,
    *,
    base: datetime | None = None,
    name: str = "p.toml",
    execution: Mapping[str, Any] | None = None,
    approval: Mapping[str, Any] | None = None,
    checks: str = "",
) -> Path:
    """``plan_text`` of ``count`` windows from ``base`` (``base_time()`` if not given), written to
    ``folder / name``."""
    plan = folder / name
    start = base_time() if base is None else base
    plan.write_text(plan_text(start, count, execution=execution, approval=approval, checks=checks))
    return plan


def fail_in_copy(scen: Scenario, start: datetime, message: str) -> None:
    """The window starting at ``start`` fails in its CopyReadings activity with ``message``."""
    scen.add_outcome(
        OutcomeRule(
            "fail",
            match={"windowStart": format_utc(start)},
            activity="CopyReadings",
            error_code="2200",
            message=message,
        )
    )


@contextmanager
def emulator(scen: Scenario, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(scen) as emu:
        for name, value in {**emu.env(), **FAST_ENV}.items():
            monkeypatch.setenv(name, value)
        yield emu


def cli(monkeypatch: pytest.MonkeyPatch, actor: str, *args: str) -> int:
    monkeypatch.setenv("BACKFILL_ACTOR", actor)
    return main.run(list(args))


def request(
    plan: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *, approve: bool = True
) -> str:
    """``request`` as alice and, unless told otherwise, ``approve`` as bob; the backfill ID."""
    capsys.readouterr()
    assert cli(monkeypatch, "alice", "request", str(plan)) == 0, capsys.readouterr()
    backfill_id = capsys.readouterr().out.splitlines()[0]
    if approve:
        assert cli(monkeypatch, "bob", "approve", backfill_id) == 0, capsys.readouterr()
        capsys.readouterr()
    return backfill_id


def events(backfill_id: str, url: str | None = None) -> list[LedgerEvent]:
    db = Database(url)
    try:
        return Ledger(db).events(backfill_id=backfill_id)
    finally:
        db.dispose()


def run_in_background(
    monkeypatch: pytest.MonkeyPatch, backfill_id: str, *, until: str
) -> tuple[threading.Thread, list[int], list[LedgerEvent]]:
    """``run`` as carol in a thread, back once the ledger holds an ``until`` event (at most 20 s
    later): the thread, the list its exit code lands in, and the ``until`` events seen."""
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(cli(monkeypatch, "carol", "run", backfill_id)))
    runner.start()
    deadline = time.monotonic() + 20
    while not (seen := [e for e in events(backfill_id) if e.kind == until]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return runner, codes, seen


def window_kinds(backfill_id: str, url: str | None = None) -> dict[str, list[str]]:
    """Each window's event kinds in ledger order, ``window.`` dropped, and without the
    ``window.status`` events (how many a run gets depends on when the polls fall)."""
    per: dict[str, list[str]] = defaultdict(list)
    for event in events(backfill_id, url):
        if event.window_key and event.kind.startswith("window.") and event.kind != "window.status":
            per[event.window_key].append(event.kind.removeprefix("window."))
    return dict(per)


def creates_per_window(emu: Emulator) -> Counter[str]:
    """Runs created while the test ran (the emulator's own state, not its request log), by window
    start parameter. Declared history started hours ago and is left out."""
    recent = format_utc(utcnow() - timedelta(minutes=10))
    return Counter(
        str(run["parameters"].get("windowStart")) for run in emu.runs() if str(run.get("runStart") or "9") >= recent
    )

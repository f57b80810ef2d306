"""What a fresh preview would change now: windows that dropped out since the request (one was
rerun by hand in ADF meanwhile), and a plan edited after the request."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from console_support import client_for, demo_factory

from backfill.cli import main
from backfill.console.settings import load_settings
from backfill.demo import EVERY, LOCKED, yesterday
from backfill.factory.client import connect
from backfill.plan.loader import load_plan
from backfill.timeutil import format_utc
from backfill.windows import window_key

__all__ = ["client_for", "demo_factory"]


def test_a_window_rerun_by_hand_since_the_request_drops_out(
    demo_factory: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], client_for: Any
) -> None:
    monkeypatch.setenv("BACKFILL_ACTOR", "alice")
    assert main.run(["request", str(demo_factory)]) == 0
    bid = capsys.readouterr().out.splitlines()[0]
    client = client_for(load_settings("dev", dev_users="bob"))
    assert "decides every window as the frozen one did" in client.get(f"/backfills/{bid}/fresh").text

    # Someone reruns one of the failed windows by hand in ADF Studio; it succeeds.
    start = yesterday() + LOCKED[0] * EVERY
    factory = connect(load_plan(demo_factory).ref)
    params = {"windowStart": format_utc(start), "windowEnd": format_utc(start + EVERY), "feederRegion": "north"}
    run_id = factory.create_run("LoadMeterTelemetry", params)
    deadline = time.monotonic() + 30
    while factory.get_run(run_id).status.value != "Succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    page = client.get(f"/backfills/{bid}/fresh").text
    assert "Dropped out since the request (1)" in page
    assert window_key(start, start + EVERY) in page and "skip-succeeded" in page

    demo_factory.write_text(demo_factory.read_text(encoding="utf-8").replace("INC-4821", "INC-9999"))
    changed = client.get(f"/backfills/{bid}/fresh").text
    assert "plan changed since request; make a new request" in changed

"""compute_preview over plain values: every decision, check fan-out, the JSON form."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from plan_samples import TARGET, plan_toml

from backfill.checks.base import CheckResult, CheckStatus
from backfill.decisions import Decision
from backfill.factory.run import Run, RunStatus
from backfill.plan.loader import LoadedPlan, load_plan
from backfill.preview import compute_preview
from backfill.store.history import HistoryView
from backfill.windows import Window

T0 = datetime(2026, 11, 3, 0, 0, tzinfo=UTC)
PLAN = plan_toml(
    {"start": T0, "end": T0 + timedelta(hours=2), "every": "15m"},
    title="Preview test",
    ticket="INC-1",
    target={**TARGET, "resource_group": "rg", "factory": "adf"},
    parameters={
        "windowStart": "{start:%Y-%m-%dT%H:%M:%SZ}",
        "feederRegion": "north",
        "sourceKey": {"secret": "${SOURCE_API_KEY}"},
    },
)


class Answers:
    """A check whose answer per window is given up front; it records what it was asked."""

    def __init__(self, name: str, answers: Mapping[int, CheckStatus], delay: float = 0.0) -> None:
        self.name = name
        self.answers = answers
        self.delay = delay
        self.asked: list[str] = []
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def evaluate(self, window: Window) -> CheckResult:
        with self.lock:
            self.asked.append(window.key)
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1
        index = int((window.start - T0) / timedelta(minutes=15))
        status = self.answers.get(index, CheckStatus.CLEAN)
        if status == CheckStatus.ERROR and index == 7:
            raise RuntimeError("sink unreachable")
        return CheckResult(self.name, status, f"{status.value} here", {"committed": index})


def plan(tmp_path: Path) -> LoadedPlan:
    path = tmp_path / "plan.toml"
    path.write_text(PLAN, encoding="utf-8")
    return load_plan(path)


def run(index: int, status: RunStatus, *, minutes: int = 20, run_id: str | None = None) -> Run:
    start = T0 + index * timedelta(minutes=15)
    return Run(
        run_id=run_id or f"run-{index}-{status.value}",
        pipeline="LoadMeterTelemetry",
        status=status,
        # As ADF returns them: 7 fractional digits; the secure parameter echoed back.
        parameters={
            "windowStart": start.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
            "feederRegion": "north",
            "sourceKey": "s3cret",
        },
        run_group_id=run_id or f"g{index}",
        start=start + timedelta(minutes=minutes),
        message="Failure happened on 'Sink' side." if status == RunStatus.FAILED else "",
    )


def history(horizon: datetime) -> HistoryView:
    return HistoryView(
        [
            run(0, RunStatus.SUCCEEDED),
            run(1, RunStatus.FAILED, minutes=5),
            run(1, RunStatus.IN_PROGRESS, minutes=40),  # newer: the window is in progress
            run(2, RunStatus.FAILED),  # sink clean: rerun
            run(3, RunStatus.CANCELLED),  # sink complete
            run(4, RunStatus.FAILED),  # sink partial
            # 5: no run, sink clean: run
            # 6: no run, sink partial
            # 7: no run, check raises
        ],
        horizon=horizon,
        synced_at=T0 + timedelta(days=1),
    )


def test_every_decision_with_checks(tmp_path: Path) -> None:
    check = Answers(
        "sink", {3: CheckStatus.COMPLETE, 4: CheckStatus.PARTIAL, 6: CheckStatus.PARTIAL, 7: CheckStatus.ERROR}
    )
    preview = compute_preview(plan(tmp_path), history(T0 - timedelta(days=45)), [check])
    decisions = [d.decision for d in preview.decisions]
    assert decisions == [
        Decision.SKIP_SUCCEEDED,
        Decision.SKIP_IN_PROGRESS,
        Decision.RERUN,
        Decision.SKIP_COMPLETE_IN_SINK,
        Decision.BLOCKED_PARTIAL,
        Decision.RUN,
        Decision.BLOCKED_PARTIAL,
        Decision.BLOCKED_CHECK_ERROR,
    ]
    # Checks ran only where history leaves the decision to them, each window once.
    keys = [w.key for w in preview.decisions[2:]]
    assert sorted(check.asked) == sorted(
        d.key for d in preview.decisions if d.decision not in (Decision.SKIP_SUCCEEDED, Decision.SKIP_IN_PROGRESS)
    )
    assert len(check.asked) == len(keys)
    assert preview.decisions[1].latest_run is not None
    assert preview.decisions[1].latest_run.status == RunStatus.IN_PROGRESS
    assert preview.decisions[7].reason == (
        "no run in history; check error (sink: check raised RuntimeError: sink unreachable)"
    )
    assert preview.runnable_keys == (preview.decisions[2].key, preview.decisions[5].key)
    assert preview.summary_line() == (
        "8 windows: 2 blocked-partial, 1 run, 1 rerun, 1 skip-succeeded, 1 skip-in-progress, "
        "1 skip-complete-in-sink, 1 blocked-check-error"
    )
    assert preview.summary() == {
        "run": 1,
        "rerun": 1,
        "skip-succeeded": 1,
        "skip-in-progress": 1,
        "skip-complete-in-sink": 1,
        "blocked-partial": 2,
        "blocked-check-error": 1,
        "blocked-unknown": 0,
    }


def test_without_checks_history_decides(tmp_path: Path) -> None:
    # The horizon sits inside the plan: windows before it without a run are unknown.
    preview = compute_preview(plan(tmp_path), history(T0 + timedelta(minutes=90)), [])
    assert [d.decision.value for d in preview.decisions] == [
        "skip-succeeded",
        "skip-in-progress",
        "rerun",
        "rerun",
        "rerun",
        "blocked-unknown",
        "run",
        "run",
    ]
    assert preview.blocked_keys == (preview.decisions[5].key,)


def test_checks_run_concurrently_within_the_bound(tmp_path: Path) -> None:
    check = Answers("slow", {}, delay=0.05)
    compute_preview(plan(tmp_path), HistoryView([], T0 - timedelta(days=1)), [check], check_concurrency=3)
    assert len(check.asked) == 8
    assert 2 <= check.most <= 3


def test_json_form(tmp_path: Path) -> None:
    check = Answers("sink", {4: CheckStatus.PARTIAL})
    loaded = plan(tmp_path)
    data = json.loads(json.dumps(compute_preview(loaded, history(T0 - timedelta(days=45)), [check]).to_json()))
    assert set(data) == {"version", "plan", "plan_hash", "pipeline", "factory", "history", "summary", "windows"}
    assert data["plan"] == str(loaded.path)
    assert data["plan_hash"] == loaded.hash
    assert data["pipeline"] == "LoadMeterTelemetry"
    assert data["factory"] == {
        "subscription_id": "00000000-0000-0000-0000-000000000000",
        "resource_group": "rg",
        "factory": "adf",
    }
    assert data["history"] == {"horizon": "2026-09-19T00:00:00Z", "synced_at": "2026-11-04T00:00:00Z", "runs": 6}
    assert data["summary"]["blocked-partial"] == 1
    first, fifth = data["windows"][0], data["windows"][4]
    assert first["key"] == "2026-11-03T00:00:00Z/2026-11-03T00:15:00Z"
    assert first["start"] == "2026-11-03T00:00:00Z"
    assert first["end"] == "2026-11-03T00:15:00Z"
    assert first["parameters"] == {"windowStart": "2026-11-03T00:00:00Z", "feederRegion": "north", "sourceKey": "***"}
    assert first["decision"] == "skip-succeeded"
    assert first["checks"] == []
    assert first["latest_run"]["run_id"] == "run-0-Succeeded"
    assert first["latest_run"]["start"] == "2026-11-03T00:20:00Z"
    assert first["latest_run"]["parameters"]["sourceKey"] == "***"
    assert fifth["decision"] == "blocked-partial"
    assert fifth["checks"] == [
        {
            "check": "sink",
            "status": "partial",
            "reason": "partial here",
            "evidence": {"committed": 4, "duration_ms": fifth["checks"][0]["evidence"]["duration_ms"]},
        }
    ]
    assert "s3cret" not in json.dumps(data)
    assert data["windows"][5]["latest_run"] is None


def test_windows_without_runs_are_decided_as_decide_decides_each(tmp_path: Path) -> None:
    # compute_preview decides the windows without a run once per side of the horizon (issue 14):
    # the same decision and reason as deciding each window alone, the horizon anywhere.
    from backfill.decisions import decide

    loaded = plan(tmp_path)
    for horizon in (None, T0 - timedelta(days=1), T0 + timedelta(minutes=45), T0 + timedelta(days=1)):
        view = HistoryView([], horizon=horizon)
        preview = compute_preview(loaded, view, [])
        expected = [decide(window, None, (), horizon=horizon) for window in loaded.windows]
        assert [(d.decision, d.reason) for d in preview.decisions] == expected

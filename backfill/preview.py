"""The preview: one decision per window of a plan, with its evidence (SPEC §2, §4).

``compute_preview`` matches the cached history to the plan's windows, runs the sink checks only
for the windows whose decision depends on them (no run, or the latest failed or was cancelled)
through ``evaluate_all`` (bounded concurrency, each check's timeout guarded), and applies the
decision table. Its JSON form is stable and documented in docs/preview-json.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from backfill.checks.base import Check, CheckResult
from backfill.checks.runner import evaluate_all
from backfill.decisions import BLOCKED, RUNNABLE, Decision, decide, needs_checks
from backfill.factory.protocol import FactoryRef
from backfill.factory.run import Run
from backfill.gcpause import paused_gc
from backfill.secrets import REDACTED, Secret
from backfill.timeutil import format_utc
from backfill.windows import Window

if TYPE_CHECKING:
    from backfill.store.history import HistoryView

JSON_VERSION = 1


class PreviewPlan(Protocol):
    """What a preview reads from a loaded plan (``backfill.plan.loader.LoadedPlan`` provides it)."""

    @property
    def path(self) -> Path: ...

    @property
    def hash(self) -> str: ...

    @property
    def windows(self) -> tuple[Window, ...]: ...

    @property
    def match_on(self) -> tuple[str, ...]: ...

    @property
    def ref(self) -> FactoryRef: ...

    @property
    def pipeline(self) -> str: ...


def _time(value: datetime | None) -> str | None:
    return format_utc(value) if value is not None else None


# Slots: one per window of the plan (35,040 for a year of 15-minute windows).
@dataclass(frozen=True, slots=True)
class WindowDecision:
    window: Window
    decision: Decision
    reason: str
    latest_run: Run | None = None
    checks: tuple[CheckResult, ...] = ()
    # Another run of the window still in flight besides the latest (SPEC §14), if any.
    active_run: Run | None = None

    @property
    def key(self) -> str:
        return self.window.key

    def check_summary(self) -> str:
        """``readings-in-sink: partial`` per check, or ``-`` when no check ran for the window."""
        if not self.checks:
            return "-"  # most windows of a large plan: no check needed to decide them
        return ", ".join(f"{r.check}: {r.status.value}" for r in self.checks) or "-"

    def to_json(self) -> dict[str, Any]:
        latest: dict[str, Any] | None = None
        if self.latest_run is not None:
            latest = self.latest_run.to_json()
            # ADF may echo a secure parameter back; the plan says which ones are secret.
            latest["parameters"] = {
                name: REDACTED if isinstance(self.window.parameters.get(name), Secret) else value
                for name, value in latest["parameters"].items()
            }
        key = self.window.key
        start, _, end = key.partition("/")  # the key is the two bounds in format_utc form
        return {
            "key": key,
            "start": start,
            "end": end,
            "parameters": self.window.public_parameters(),
            "decision": self.decision.value,
            "reason": self.reason,
            "latest_run": latest,
            "checks": [result.to_json() for result in self.checks],
        }


@dataclass(frozen=True)
class Preview:
    plan_hash: str
    decisions: tuple[WindowDecision, ...]
    history_horizon: datetime | None
    plan: str = ""
    pipeline: str = ""
    factory: FactoryRef | None = None
    synced_at: datetime | None = None
    history_runs: int = 0

    def summary(self) -> dict[str, int]:
        """Windows per decision: every decision, in table order, zeros included."""
        tally = Counter(item.decision for item in self.decisions)
        return {decision.value: tally[decision] for decision in Decision}

    def summary_line(self) -> str:
        """``24 windows: 18 skip-succeeded, 4 blocked-partial, 2 rerun``: most frequent first."""
        counts = [(name, count) for name, count in self.summary().items() if count]
        # sorted() is stable: equal counts keep the table's order.
        parts = [f"{count} {name}" for name, count in sorted(counts, key=lambda item: -item[1])]
        noun = "window" if len(self.decisions) == 1 else "windows"
        return f"{len(self.decisions)} {noun}: " + (", ".join(parts) if parts else "nothing to do")

    @property
    def runnable_keys(self) -> tuple[str, ...]:
        return tuple(item.window.key for item in self.decisions if item.decision in RUNNABLE)

    @property
    def blocked_keys(self) -> tuple[str, ...]:
        return tuple(item.window.key for item in self.decisions if item.decision in BLOCKED)

    def to_json(self) -> dict[str, Any]:
        factory = None
        if self.factory is not None:
            factory = {
                "subscription_id": self.factory.subscription_id,
                "resource_group": self.factory.resource_group,
                "factory": self.factory.factory,
            }
        return {
            "version": JSON_VERSION,
            "plan": self.plan,
            "plan_hash": self.plan_hash,
            "pipeline": self.pipeline,
            "factory": factory,
            "history": {
                "horizon": _time(self.history_horizon),
                "synced_at": _time(self.synced_at),
                "runs": self.history_runs,
            },
            "summary": self.summary(),
            "windows": [item.to_json() for item in self.decisions],
        }


def compute_preview(
    loaded: PreviewPlan, history: HistoryView, checks: Sequence[Check], *, check_concurrency: int = 8
) -> Preview:
    """Decide every window of the plan from the cached history and, where needed, the checks."""
    windows = loaded.windows
    pairs = history.window_runs(windows, loaded.match_on)
    results: dict[str, tuple[CheckResult, ...]] = {}
    if checks:
        pending = [
            window for window, (run, active) in zip(windows, pairs, strict=True) if active is None and needs_checks(run)
        ]
        results = evaluate_all(checks, pending, concurrency=check_concurrency)
    decisions = []
    horizon = history.horizon
    # A window with no run and no check result is decided by whether it starts before the
    # history we hold, nothing else: decided once for each side (most windows of a long plan:
    # 30,721 of a year's 35,040 in the bench), and they share the reason's text.
    unrun: dict[bool, tuple[Decision, str]] = {}
    with paused_gc():
        for window, (run, active) in zip(windows, pairs, strict=True):
            found = results.get(window.key, ()) if results and active is None and needs_checks(run) else ()
            if run is None and active is None and not found:
                before = horizon is None or window.start < horizon
                made = unrun.get(before)
                if made is None:
                    made = unrun[before] = decide(window, None, (), horizon=horizon)
                decision, reason = made
            else:
                decision, reason = decide(window, run, found, horizon=horizon, active=active)
            decisions.append(WindowDecision(window, decision, reason, run, found, active))
    return Preview(
        plan_hash=loaded.hash,
        decisions=tuple(decisions),
        history_horizon=history.horizon,
        plan=str(loaded.path),
        pipeline=loaded.pipeline,
        factory=loaded.ref,
        synced_at=history.synced_at,
        history_runs=len(history),
    )

"""Guarded cancel of one pipeline run (SPEC §12): refuse what should not be cancelled, record
the evidence, send the cancel once, and wait for ADF to confirm ``Cancelled``.

Refusals (exit 1, one line, nothing sent, nothing recorded): the run is not queued or in
progress; its elapsed time is within its usual duration (unless forced); with a plan, no window
of the plan holds the run, or the plan's sink checks find rows of its window already committed
(``partial``/``complete``, or a check that could not answer; unless forced).

The request is recorded (``run.cancel-requested``) before the cancel is sent, so that no cancel
ever goes unrecorded; ``run.cancelled`` follows only when ADF says ``Cancelled``. A request
without that outcome (ADF still ``Canceling`` after the wait, or the run ended first) is shown as
such by ``incident``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backfill import events as ev
from backfill.errors import BackfillError, FactoryError, UsageError
from backfill.factory.run import Run, RunStatus
from backfill.runs_query import Mask, UsualDurations, open_cache
from backfill.timeutil import format_duration, format_utc, parse_duration, utcnow
from backfill.usual import Verdict

if TYPE_CHECKING:
    from backfill.checks.base import CheckResult
    from backfill.factory.protocol import Factory
    from backfill.identity import Actor
    from backfill.plan.loader import LoadedPlan
    from backfill.store.ledger import Ledger
    from backfill.windows import Window

# How long to wait for ADF's Cancelled (spec: up to a minute); BACKFILL_CANCEL_WAIT changes it.
WAIT = timedelta(minutes=1)
POLL = 1.0


class CancelRefused(BackfillError):
    """The guard said no: nothing was sent, nothing recorded."""


@dataclass(frozen=True)
class CancelRequest:
    run_id: str
    reason: str
    plan: str | None = None  # a plan file; None with no_check
    no_check: bool = False
    force: bool = False
    recursive: bool = False


@dataclass(frozen=True)
class Guarded:
    """What the guard found: the run, its verdict, the plan's window and its check results."""

    run: Run
    verdict: Verdict
    window: Window | None = None
    checks: tuple[CheckResult, ...] = ()
    plan: LoadedPlan | None = None
    forced: tuple[str, ...] = ()  # the refusals --force overrode

    def evidence(self, request: CancelRequest, factory_key: str) -> dict[str, Any]:
        from backfill.terminal import strip_controls

        usual = self.verdict.usual
        return {
            "run_id": self.run.run_id,
            "pipeline": self.run.pipeline,
            "factory": factory_key,
            "status": self.run.status.value,
            "parameters": dict(self.run.parameters),
            "start": format_utc(self.run.start) or None,
            "elapsed_ms": self.verdict.elapsed_ms,
            "usual_ms": self.verdict.usual_ms,
            "usual_longest_ms": usual.longest_ms if usual else None,
            "usual_runs": usual.runs if usual else 0,
            "usual_scope": dict(usual.scope) if usual else {},
            "outlier": self.verdict.outlier,
            "plan": str(self.plan.path) if self.plan else None,
            "plan_hash": self.plan.hash if self.plan else None,
            "match_on": list(self.plan.match_on) if self.plan else None,
            "window": self.window.key if self.window else None,
            "checks": [c.to_json() for c in self.checks],
            "no_check": request.no_check,
            "force": request.force,
            "forced": list(self.forced),
            # Recorded and printed later: no escape sequence reaches a reader's terminal (issue 9 #9).
            "reason": strip_controls(request.reason),
            "recursive": request.recursive,
        }


def _wait() -> timedelta:
    raw = os.environ.get("BACKFILL_CANCEL_WAIT", "").strip()
    if not raw:
        return WAIT
    try:
        return parse_duration(raw, "BACKFILL_CANCEL_WAIT")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def guard(factory: Factory, request: CancelRequest, now: datetime, mask: Mask) -> Guarded:
    """Every refusal of the spec, before anything is sent or recorded."""
    if request.plan is None and not request.no_check:
        raise UsageError("runs cancel needs --plan PLAN (to check the sink) or --no-check (to say you did not)")
    if request.plan is not None and request.no_check:
        raise UsageError("--plan and --no-check exclude each other")
    if not request.reason.strip():
        raise UsageError("--reason must say why")
    plan = _load(request.plan, factory) if request.plan else None
    run = factory.get_run(request.run_id)
    not_cancelled = f"run {run.run_id} not cancelled"
    if run.status not in (RunStatus.QUEUED, RunStatus.IN_PROGRESS):
        raise CancelRefused(f"{not_cancelled}: it is {run.status_label}, not queued or in progress")
    with open_cache() as db:
        verdict = UsualDurations(factory, db, now, plan.match_on if plan else None).judge(run)
    forced: list[str] = []
    if not verdict.outlier:
        took = format_duration(timedelta(milliseconds=verdict.elapsed_ms or 0))
        if verdict.usual is None:
            why = f"running for {took} and its pipeline has no usual duration to compare with"
        else:
            why = f"running for {took}, within its usual duration ({verdict.usual.describe()})"
        if not request.force:
            raise CancelRefused(f"{not_cancelled}: {why}; --force to cancel it anyway")
        forced.append(why)
    window: Window | None = None
    results: tuple[CheckResult, ...] = ()
    if plan is not None:
        if run.pipeline != plan.pipeline:
            raise CancelRefused(
                f"{not_cancelled}: it is a run of {run.pipeline}, the plan's pipeline is {plan.pipeline}"
            )
        window = _window_of(plan, run)
        if window is None:
            on = ", ".join(plan.match_on)
            raise CancelRefused(f"{not_cancelled}: its parameters ({on}) match no window of {plan.path.name}")
        results = _check(plan, window)
        committed = [r for r in results if r.status.value != "clean"]
        if committed:
            found = "; ".join(f"{r.check} {r.status.value}: {r.reason}" for r in committed)
            why = f"the sink holds rows of window {window.key} ({found})"
            if not request.force:
                raise CancelRefused(f"{not_cancelled}: {why}; --force to cancel it anyway")
            forced.append(why)
    return Guarded(mask(run), verdict, window, results, plan, tuple(forced))


def _load(path: str, factory: Factory) -> LoadedPlan:
    from backfill.plan.loader import load_plan

    loaded = load_plan(path)
    if loaded.ref.key != factory.ref.key:
        theirs = f"{loaded.ref.resource_group}/{loaded.ref.factory}"
        ours = f"{factory.ref.resource_group}/{factory.ref.factory}"
        raise CancelRefused(f"{Path(path).name} targets factory {theirs}, not {ours}: wrong plan for this run")
    return loaded


def _window_of(plan: LoadedPlan, run: Run) -> Window | None:
    from backfill.matching import group_by_window

    for window, bucket in zip(plan.windows, group_by_window(plan.windows, [run], plan.match_on), strict=True):
        if bucket:
            return window
    return None


def _check(plan: LoadedPlan, window: Window) -> tuple[CheckResult, ...]:
    from backfill.checks.registry import build_checks
    from backfill.checks.runner import evaluate_all

    checks = build_checks(plan.check_specs, base_dir=plan.path.parent)
    return evaluate_all(checks, [window])[window.key]


@dataclass(frozen=True)
class CancelOutcome:
    run_id: str
    status: str
    waited: timedelta
    backfill_id: str | None = None
    window_key: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def cancel_run(
    factory: Factory,
    ledger: Ledger,
    guarded: Guarded,
    request: CancelRequest,
    actor: Actor,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], datetime] = utcnow,
) -> CancelOutcome:
    """Record the request, send the cancel once, wait for ``Cancelled`` and record it."""
    run_id = guarded.run.run_id
    payload = guarded.evidence(request, factory.ref.key)
    # A run of a backfill's window: the events name the backfill and window, so its report and
    # status say who cancelled it and why, not just "Cancelled".
    backfill_id, window_key = _owner(ledger, run_id)
    ledger.append(ev.RUN_CANCEL_REQUESTED, payload, actor=actor, backfill_id=backfill_id, window_key=window_key)
    if backfill_id and window_key:
        # Before the cancel is sent: the backfill's runner then sees who asked and why first.
        ledger.append(
            ev.WINDOW_CANCELLED,
            {"run_id": run_id, "reason": payload["reason"], "by": "runs cancel"},
            actor=actor,
            backfill_id=backfill_id,
            window_key=window_key,
        )
    wait = _wait()
    try:
        factory.cancel_run(run_id, recursive=request.recursive)
    except FactoryError as exc:
        if exc.code == "PipelineRunNotRunning":
            ended = _status(factory, run_id)
            raise BackfillError(
                f"run {run_id} not cancelled: it ended ({ended}) before the cancel reached it; "
                "the ledger records the request without an outcome"
            ) from None
        raise
    started = clock()
    status = RunStatus.CANCELING.value
    while True:
        current = factory.get_run(run_id)
        status = current.status_label
        if current.status is RunStatus.CANCELLED:
            break
        if current.status.is_final:
            raise BackfillError(
                f"run {run_id}: cancel sent, but the run ended {status} first; "
                "the ledger records the request without an outcome"
            )
        if clock() - started >= wait:
            raise BackfillError(
                f"run {run_id}: cancel sent, ADF still says {status} after {format_duration(wait)}; not confirmed "
                f"(the ledger records the request without an outcome); look again: backfill runs show {run_id}"
            )
        sleep(POLL)
    waited = clock() - started
    done: Mapping[str, Any] = {
        "run_id": run_id,
        "pipeline": guarded.run.pipeline,
        "factory": factory.ref.key,
        "status": status,
        "waited_ms": int(waited.total_seconds() * 1000),
    }
    ledger.append(ev.RUN_CANCELLED, done, actor=actor, backfill_id=backfill_id, window_key=window_key)
    return CancelOutcome(run_id, status, waited, backfill_id, window_key)


def _status(factory: Factory, run_id: str) -> str:
    try:
        return factory.get_run(run_id).status_label
    except FactoryError:
        return "status unknown"


def _owner(ledger: Ledger, run_id: str) -> tuple[str | None, str | None]:
    """The backfill and window whose run ``run_id`` is, if a backfill created or adopted it."""
    for event in ledger.iter_events(kinds=(ev.WINDOW_CREATED, ev.WINDOW_ADOPTED)):
        if event.payload.get("run_id") == run_id and event.backfill_id and event.window_key:
            return event.backfill_id, event.window_key
    return None, None

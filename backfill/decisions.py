"""The decision table of SPEC §4: what to do with one window, and a sentence saying why.

Pure: it takes the window's latest run (or None), the results of the sink checks (empty when the
plan configures none) and the history horizon, and returns a Decision and its reason.

Where the spec's table leaves a combination open:

- Several checks: ``error`` wins over everything (we cannot tell what is committed), then
  ``partial``; checks that disagree (one ``complete``, another ``clean``) mean the window is half
  done across sinks, which is ``blocked-partial``: neither a rerun nor a skip is safe.
- No history at all (the horizon is None: never synced) counts as "older than the history we
  hold" for every window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from functools import lru_cache

from backfill.checks.base import CheckResult, CheckStatus
from backfill.factory.run import Run, RunStatus
from backfill.timeutil import format_utc
from backfill.windows import Window

MESSAGE_LIMIT = 160


class Decision(StrEnum):
    RUN = "run"
    RERUN = "rerun"
    SKIP_SUCCEEDED = "skip-succeeded"
    SKIP_IN_PROGRESS = "skip-in-progress"
    SKIP_COMPLETE_IN_SINK = "skip-complete-in-sink"
    BLOCKED_PARTIAL = "blocked-partial"
    BLOCKED_CHECK_ERROR = "blocked-check-error"
    BLOCKED_UNKNOWN = "blocked-unknown"

    @property
    def runnable(self) -> bool:
        return self in (Decision.RUN, Decision.RERUN)

    @property
    def blocked(self) -> bool:
        return self.value.startswith("blocked-")


@lru_cache(maxsize=64)
def _utc(value: datetime) -> str:
    # The same horizon is formatted for every unknown window of a long plan.
    return format_utc(value)


def needs_checks(latest: Run | None) -> bool:
    """Whether the sink checks decide this window: no run, or the latest one failed or was
    cancelled. Succeeded and active runs decide on history alone, so checks are not run."""
    return latest is None or latest.status in (RunStatus.FAILED, RunStatus.CANCELLED)


def describe_run(run: Run) -> str:
    """``run 6f1e… Failed (started 2026-11-03T02:00:05Z): message``, on one line."""
    started = f"started {format_utc(run.start)}" if run.start else "not started"
    text = f"latest run {run.run_id} {run.status.value} ({started})"
    message = " ".join(run.message.split())
    if message:
        if len(message) > MESSAGE_LIMIT:
            message = message[: MESSAGE_LIMIT - 1] + "…"
        text += f": {message}"
    return text


def _results(results: Sequence[CheckResult], status: CheckStatus) -> str:
    return "; ".join(f"{r.check}: {r.reason}" for r in results if r.status == status)


def _combine(results: Sequence[CheckResult]) -> tuple[CheckStatus, str]:
    statuses = {r.status for r in results}
    if CheckStatus.ERROR in statuses:
        return CheckStatus.ERROR, f"check error ({_results(results, CheckStatus.ERROR)})"
    if CheckStatus.PARTIAL in statuses:
        return CheckStatus.PARTIAL, f"sink partial ({_results(results, CheckStatus.PARTIAL)})"
    if statuses == {CheckStatus.COMPLETE}:
        return CheckStatus.COMPLETE, f"sink complete ({_results(results, CheckStatus.COMPLETE)})"
    if CheckStatus.COMPLETE in statuses:
        complete = ", ".join(r.check for r in results if r.status == CheckStatus.COMPLETE)
        clean = ", ".join(r.check for r in results if r.status == CheckStatus.CLEAN)
        return CheckStatus.PARTIAL, f"checks disagree (complete: {complete}; clean: {clean})"
    return CheckStatus.CLEAN, f"sink clean ({_results(results, CheckStatus.CLEAN)})"


def decide(
    window: Window, latest: Run | None, results: Sequence[CheckResult], *, horizon: datetime | None
) -> tuple[Decision, str]:
    """The decision for one window and its reason sentence (SPEC §4).

    ``results`` are the checks' results when ``needs_checks(latest)``; empty means the plan has
    no checks. ``horizon`` is the earliest last-updated time the history cache covers.
    """
    if latest is not None and latest.status == RunStatus.SUCCEEDED:
        return Decision.SKIP_SUCCEEDED, describe_run(latest)
    if latest is not None and latest.status.is_active:
        return Decision.SKIP_IN_PROGRESS, f"{describe_run(latest)}; never start a second run"
    history = describe_run(latest) if latest is not None else "no run in history"
    fresh = Decision.RUN if latest is None else Decision.RERUN
    if not results:
        if latest is None and (horizon is None or window.start < horizon):
            held = f"history held from {_utc(horizon)}" if horizon else "no history synced"
            return (
                Decision.BLOCKED_UNKNOWN,
                f"no run in history, but the window starts before the history we hold ({held}) "
                "and the plan has no sink check",
            )
        return fresh, f"{history}; no sink check configured"
    status, because = _combine(results)
    if status == CheckStatus.ERROR:
        return Decision.BLOCKED_CHECK_ERROR, f"{history}; {because}"
    if status == CheckStatus.PARTIAL:
        return (
            Decision.BLOCKED_PARTIAL,
            f"{history}; {because}; a supervisor may clear it with approve --window {window.key} "
            "--accept partial",
        )
    if status == CheckStatus.COMPLETE:
        return Decision.SKIP_COMPLETE_IN_SINK, f"{history}; {because}"
    return fresh, f"{history}; {because}"

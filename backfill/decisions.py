"""The decision table of SPEC §4: what to do with one window, and a sentence saying why.

Pure: it takes the window's latest run (or None), the results of the sink checks (empty when the
plan configures none) and the history horizon, and returns a Decision and its reason.

Where the spec's table leaves a combination open:

- Several checks: ``error`` wins over everything (we cannot tell what is committed), then
  ``partial``; checks that disagree (one ``complete``, another ``clean``) mean the window is half
  done across sinks, which is ``blocked-partial``: neither a rerun nor a skip is safe.
- No history at all (the horizon is None: never synced) counts as "older than the history we
  hold" for every window.
- Of several runs of a window, one still queued, in progress, cancelling, or in a status this tool
  does not know (``active``) makes the window ``skip-in-progress`` whatever the latest one says
  (spec §14): a second run while one is in flight is the one thing never done.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache

from backfill.checks.base import CheckResult, CheckStatus

# Re-exported: the decisions are named here too, beside the table that makes them.
from backfill.decision_kinds import BLOCKED as BLOCKED
from backfill.decision_kinds import RUNNABLE as RUNNABLE
from backfill.decision_kinds import Decision as Decision
from backfill.factory.run import Run, RunStatus
from backfill.timeutil import format_utc
from backfill.windows import Window

MESSAGE_LIMIT = 160


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
    return _describe(run, "latest run")


def _describe(run: Run, what: str) -> str:
    started = f"started {format_utc(run.start)}" if run.start else "not started"
    status = run.status_label
    if run.status is RunStatus.UNKNOWN:
        status += " (a status this tool does not know, counted as in progress)"
    text = f"{what} {run.run_id} {status} ({started})"
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


def active_of(runs: Sequence[Run]) -> Run | None:
    """The newest run of ``runs`` that is still in flight (or in an unknown status), or None."""
    flying = [run for run in runs if run.status.is_active]
    if not flying:
        return None
    return max(flying, key=lambda r: (r.start is None, r.start or datetime.min.replace(tzinfo=UTC), r.run_id))


def decide(
    window: Window,
    latest: Run | None,
    results: Sequence[CheckResult],
    *,
    horizon: datetime | None,
    active: Run | None = None,
) -> tuple[Decision, str]:
    """The decision for one window and its reason sentence (SPEC §4, §14).

    ``results`` are the checks' results when ``needs_checks(latest)``; empty means the plan has
    no checks. ``horizon`` is the earliest last-updated time the history cache covers. ``active``
    is a run of the window still in flight other than ``latest`` (``active_of``), if any.
    """
    if active is not None and active.status.is_active and (latest is None or active.run_id != latest.run_id):
        newest = f"; the latest is {describe_run(latest).removeprefix('latest ')}" if latest is not None else ""
        return (
            Decision.SKIP_IN_PROGRESS,
            f"{_describe(active, 'run')} is still in flight{newest}; never start a second run",
        )
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
            f"{history}; {because}; a supervisor may clear it with approve --window {window.key} --accept partial",
        )
    if status == CheckStatus.COMPLETE:
        return Decision.SKIP_COMPLETE_IN_SINK, f"{history}; {because}"
    return fresh, f"{history}; {because}"

"""The kinds of ledger events a backfill writes, shared by approvals, the runner and reports.

A backfill's state is never stored: it is derived from these events (``backfill.approvals``).
Window events carry ``window_key``; the payload keys the state derivation reads are:

- ``window.created`` / ``window.adopted``: ``run_id``, optionally ``status``, ``attempt``.
- ``window.status``: ``run_id``, ``status`` (ADF's: Queued, InProgress, Succeeded...).
- ``window.finished``: ``run_id``, ``status``, optionally ``duration_ms`` (ADF's durationInMs),
  ``message``.
- ``window.skipped`` / ``window.checked``: ``decision``, ``reason``.
- ``window.create-failed`` / ``window.needs-operator``: ``reason`` (or ``message``).
- ``backfill.started``: optionally ``concurrency`` (used for the estimated finish).
"""

from __future__ import annotations

from typing import Final

REQUESTED: Final = "backfill.requested"
APPROVED: Final = "backfill.approved"
REJECTED: Final = "backfill.rejected"
EXPIRED: Final = "backfill.expired"
STARTED: Final = "backfill.started"
CANARY_PAUSED: Final = "gate.canary-paused"
CANARY_APPROVED: Final = "gate.canary-approved"
WINDOW_ACCEPTED: Final = "gate.window-accepted"
STOP_REQUESTED: Final = "backfill.stop-requested"
COMPLETED: Final = "backfill.completed"
FAILED: Final = "backfill.failed"
STOPPED: Final = "backfill.stopped"
RESUMED: Final = "backfill.resumed"  # run --resume of a stopped backfill: who let it go on

WINDOW_SKIPPED: Final = "window.skipped"
WINDOW_CHECKED: Final = "window.checked"
WINDOW_INTENT: Final = "window.intent"
WINDOW_CREATED: Final = "window.created"
WINDOW_ADOPTED: Final = "window.adopted"
WINDOW_CREATE_FAILED: Final = "window.create-failed"
WINDOW_STATUS: Final = "window.status"
WINDOW_FINISHED: Final = "window.finished"
WINDOW_NEEDS_OPERATOR: Final = "window.needs-operator"
WINDOW_CANCELLED: Final = "window.cancel-requested"

BACKFILL_KINDS: Final = (
    REQUESTED,
    APPROVED,
    REJECTED,
    EXPIRED,
    STARTED,
    CANARY_PAUSED,
    CANARY_APPROVED,
    WINDOW_ACCEPTED,
    STOP_REQUESTED,
    COMPLETED,
    FAILED,
    STOPPED,
    RESUMED,
)
WINDOW_KINDS: Final = (
    WINDOW_SKIPPED,
    WINDOW_CHECKED,
    WINDOW_INTENT,
    WINDOW_CREATED,
    WINDOW_ADOPTED,
    WINDOW_CREATE_FAILED,
    WINDOW_STATUS,
    WINDOW_FINISHED,
    WINDOW_NEEDS_OPERATOR,
    WINDOW_CANCELLED,
)
ALL_KINDS: Final = BACKFILL_KINDS + WINDOW_KINDS

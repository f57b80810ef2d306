"""The decisions a window may get (SPEC §4), without the table that decides them.

Its own module so that the ledger's fold (``backfill.backfills``, which ``status`` and
``ledger verify`` load) names the decisions without importing the sink checks, the factory's run
model and the window generator that ``backfill.decisions`` needs to decide (issue 14: start-up).
"""

from __future__ import annotations

from enum import StrEnum


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


# The blocked decisions, for loops over every window of a plan (a set lookup, not a property).
BLOCKED = frozenset(decision for decision in Decision if decision.blocked)
RUNNABLE = frozenset(decision for decision in Decision if decision.runnable)

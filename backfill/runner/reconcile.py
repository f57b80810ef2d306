"""After any doubt about a createRun, find out from ADF's history whether the run exists (spec §7).

Doubt arises when the ledger holds an intent without a created/adopted event (the runner died
between the two), or when createRun failed in a way that may have taken effect (5xx, timeout,
dropped connection). ADF has no idempotency key and no filter by parameter value, so the only
way to know is to list the pipeline's runs updated since shortly before the intent and match
their parameters against the window's, exactly as the preview matches history.

- one or more matches that started after the intent (minus clock skew) and are not the window's
  previous run: adopt the earliest (several would be duplicates: they are all named in evidence);
- none, once the query covers ``intent + settle``: definitive, the window may be created again.
  ADF may apply a createRun well after it answered (or after the client gave up), so ``settle``
  is 10 minutes by default (spec §14, ``[execution] settle``); history is asked again and again
  meanwhile (every ``POLL_FIRST`` doubling up to ``POLL_MAX``), so a late run is adopted soon
  after it appears;
- the query itself fails: ambiguous, the caller marks the window for an operator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from backfill.errors import FactoryError
from backfill.factory.protocol import Factory
from backfill.factory.run import Run
from backfill.matching import match_key
from backfill.runner.ports import Clock, Sleep
from backfill.timeutil import format_utc, utcnow
from backfill.windows import Window

# Runs are listed from this long before the intent: lastUpdated of a just-created run is after
# the intent, but our clock and ADF's may disagree a little.
LOOKBACK = timedelta(minutes=5)
DEFAULT_SKEW = timedelta(minutes=1)
DEFAULT_SETTLE = timedelta(minutes=10)
POLL_FIRST = timedelta(seconds=1)
POLL_MAX = timedelta(seconds=30)


@dataclass(frozen=True)
class Reconciliation:
    run: Run | None
    definitive: bool
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def ambiguous(self) -> bool:
        return self.run is None and not self.definitive


def candidates(
    runs: Sequence[Run],
    window: Window,
    fields: Sequence[str],
    intent_at: datetime,
    *,
    exclude: frozenset[str] = frozenset(),
    skew: timedelta = DEFAULT_SKEW,
) -> list[Run]:
    """Runs of ``window`` that may stem from the intent at ``intent_at``, earliest first."""
    want = match_key(window.parameters, fields)
    if want is None:
        return []
    found = [
        run
        for run in runs
        if run.run_id not in exclude
        and (run.start is None or run.start >= intent_at - skew)
        and match_key(run.parameters, fields) == want
    ]
    # A run without runStart is still queued: it started after every run that has one.
    return sorted(found, key=lambda r: (r.start is None, r.start or intent_at, r.run_id))


def reconcile(
    factory: Factory,
    pipeline: str,
    window: Window,
    fields: Sequence[str],
    intent_at: datetime,
    *,
    exclude: frozenset[str] = frozenset(),
    settle: timedelta = DEFAULT_SETTLE,
    skew: timedelta = DEFAULT_SKEW,
    clock: Clock = utcnow,
    sleep: Sleep,
) -> Reconciliation:
    """Look for the run an intent may have created; see the module docstring for the rules."""
    after = intent_at - LOOKBACK
    settled_at = intent_at + settle
    queries = 0
    while True:
        asked_at = clock()
        try:
            runs = list(factory.query_runs(updated_after=after, updated_before=asked_at + skew, pipeline=pipeline))
        except FactoryError as exc:
            return Reconciliation(None, False, _evidence(after, asked_at, queries + 1, [], error=str(exc)))
        queries += 1
        found = candidates(runs, window, fields, intent_at, exclude=exclude, skew=skew)
        if found:
            return Reconciliation(found[0], True, _evidence(after, asked_at, queries, found, considered=len(runs)))
        if asked_at >= settled_at:
            return Reconciliation(None, True, _evidence(after, asked_at, queries, [], considered=len(runs)))
        pause = min(POLL_FIRST * 2 ** min(queries - 1, 10), POLL_MAX)
        sleep(max(0.0, min(pause, settled_at - asked_at).total_seconds()))


def _evidence(
    after: datetime, until: datetime, queries: int, found: list[Run], *, considered: int = 0, error: str = ""
) -> dict[str, Any]:
    evidence: dict[str, Any] = {
        "query": {
            "pipeline_runs_updated_after": format_utc(after, precise=True),
            "updated_before": format_utc(until, precise=True),
            "queries": queries,
            "runs_considered": considered,
        },
        "matching_runs": [{"run_id": r.run_id, "status": r.status.value, "start": format_utc(r.start)} for r in found],
    }
    if error:
        evidence["error"] = error
    return evidence

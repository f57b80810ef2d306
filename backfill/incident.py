"""The incident record of one run (SPEC §12, seed case study 1): the run, its activities and the
stuck or failing one, its usual duration, every ledger event naming it or its follow-ups, and the
follow-up runs of the same window, the last of which proves the incident resolved (or not).

The window is the run's values of the matched parameters: those a guarded cancel recorded with
its plan's ``[match] on``; without one, all the run's parameters (masked ones left out: their
value is not known).
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from backfill import events as ev
from backfill.factory.run import ActivityRun, Run, RunStatus
from backfill.matching import normalise
from backfill.runs_query import (
    FUTURE,
    JudgedRun,
    Mask,
    UsualDurations,
    activity_json,
    in_progress_activity,
    open_cache,
)
from backfill.secrets import REDACTED
from backfill.timeutil import format_utc

if TYPE_CHECKING:
    from backfill.chain import LedgerEvent
    from backfill.factory.protocol import Factory


@dataclass(frozen=True)
class CancelStory:
    """A cancel request of the run and its outcome (None: none recorded)."""

    requested: LedgerEvent
    confirmed: LedgerEvent | None


@dataclass(frozen=True)
class Incident:
    subject: JudgedRun
    activities: tuple[ActivityRun, ...]
    stuck: ActivityRun | None  # the failing activity, or the one still in progress
    match_fields: tuple[str, ...]
    ledger_events: tuple[LedgerEvent, ...]
    follow_up: tuple[JudgedRun, ...]
    cancels: tuple[CancelStory, ...]
    now: datetime

    @property
    def run(self) -> Run:
        return self.subject.run

    @property
    def replacement(self) -> JudgedRun | None:
        return self.follow_up[-1] if self.follow_up else None

    @property
    def resolved(self) -> bool:
        last = self.replacement
        return last is not None and last.run.status is RunStatus.SUCCEEDED

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.subject.to_json(),
            "activities": [activity_json(a) for a in self.activities],
            "stuck_activity": activity_json(self.stuck) if self.stuck else None,
            "usual_ms": self.subject.verdict.usual_ms,
            "match_on": list(self.match_fields),
            "ledger_events": [_event_json(e) for e in self.ledger_events],
            "cancels": [
                {
                    "requested_seq": c.requested.seq,
                    "by": c.requested.actor,
                    "at": format_utc(c.requested.at),
                    "reason": c.requested.payload.get("reason"),
                    "confirmed": c.confirmed is not None,
                    "outcome": c.confirmed.payload.get("status") if c.confirmed else None,
                }
                for c in self.cancels
            ],
            "follow_up": [j.to_json() for j in self.follow_up],
            "resolved": self.resolved,
        }


def _event_json(event: LedgerEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": format_utc(event.at, precise=True),
        "kind": event.kind,
        "actor": event.actor,
        "identity_source": event.identity_source,
        "backfill_id": event.backfill_id,
        "window_key": event.window_key,
        "payload": dict(event.payload),
    }


def _window_key(parameters: Mapping[str, Any], fields: Sequence[str]) -> tuple[Hashable, ...] | None:
    try:
        return tuple(normalise(parameters[f]) for f in fields)
    except KeyError:
        return None


def _events_naming(run_ids: set[str]) -> list[LedgerEvent]:
    """Every ledger event whose payload names one of the runs (none when there is no ledger)."""
    from backfill.store.ledger import Ledger

    found: list[LedgerEvent] = []
    with open_cache() as db:
        if db is None:
            return found
        for event in Ledger(db).iter_events():
            text = json.dumps(event.payload, default=str)
            if any(run_id in text for run_id in run_ids):
                found.append(event)
    return found


def _is(event: LedgerEvent, kind: type[ev.RunEvent], run_id: str) -> bool:
    """``event`` is of that kind and about this run."""
    typed = ev.decode(event.kind, event.payload)
    return isinstance(typed, kind) and typed.run_id == run_id


def build_incident(factory: Factory, run_id: str, now: datetime, mask: Mask) -> Incident:
    run = mask(factory.get_run(run_id))
    activities = tuple(factory.query_activity_runs(run_id))
    # The failing activity; else the one still running; else, once cancelled, the one the cancel stopped.
    stuck = (
        next((a for a in activities if a.failed), None)
        or in_progress_activity(activities)
        or next((a for a in reversed(activities) if a.status in ("Cancelled", "Canceled")), None)
    )
    own = _events_naming({run_id})
    requests = [e for e in own if _is(e, ev.RunCancelRequested, run_id)]
    recorded = next((e.payload.get("match_on") for e in reversed(requests) if e.payload.get("match_on")), None)
    if recorded:
        fields = tuple(str(f) for f in recorded)
    else:
        fields = tuple(sorted(name for name, value in run.parameters.items() if value != REDACTED))
    with open_cache() as db:
        usual = UsualDurations(factory, db, now, fields or None)
        subject = JudgedRun(run, usual.judge(run))
        follow: list[JudgedRun] = []
        key = _window_key(run.parameters, fields)
        if run.start is not None and key is not None:
            for later in factory.query_runs(
                updated_after=run.start, updated_before=now + FUTURE, pipeline=run.pipeline
            ):
                if later.run_id == run_id or later.start is None or later.start <= run.start:
                    continue
                if _window_key(later.parameters, fields) == key:
                    follow.append(JudgedRun(mask(later), usual.judge(later)))
    follow.sort(key=lambda j: (j.run.start, j.run.run_id))
    events = own
    if follow:
        events = _events_naming({run_id, *(j.run.run_id for j in follow)})
    cancels = []
    for request in requests:
        confirmed = next(
            (e for e in events if e.seq > request.seq and _is(e, ev.RunCancelled, run_id)),
            None,
        )
        cancels.append(CancelStory(request, confirmed))
    return Incident(subject, activities, stuck, fields, tuple(events), tuple(follow), tuple(cancels), now)

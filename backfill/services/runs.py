"""A factory's pipeline runs: list and show them (secrets masked), cancel one (recorded)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from backfill import events as ev
from backfill.errors import FactoryError
from backfill.identity import Actor
from backfill.services.common import connect_factory, database_for
from backfill.terminal import strip_controls
from backfill.timeutil import utcnow

if TYPE_CHECKING:
    from backfill.factory.client import FactoryClient
    from backfill.factory.protocol import FactoryRef
    from backfill.factory.run import ActivityRun, Run
    from backfill.store.database import Database
    from backfill.store.ledger import Ledger


class _Masker:
    """Masks secret parameter values before a run is shown: the pipeline's SecureString
    parameters (one pipeline get per pipeline shown) and those any plan marked secret (kept in
    the history cache)."""

    def __init__(self, client: FactoryClient) -> None:
        self._client = client
        self._names: dict[str, frozenset[str]] = {}

    def __call__(self, run: Run) -> Run:
        from backfill.masking import mask_run

        names = self._names.get(run.pipeline)
        if names is None:
            names = self._names[run.pipeline] = self._secret_names(run.pipeline)
        return mask_run(run, names)

    def _secret_names(self, pipeline: str) -> frozenset[str]:
        from backfill.masking import declared_secrets
        from backfill.store.history import known_secrets

        try:
            declared = declared_secrets(self._client.get_pipeline(pipeline))
        except FactoryError:
            # A deleted pipeline keeps its runs; what plans marked secret still applies.
            declared = frozenset()
        if not _ledger_exists():
            return declared
        from backfill.store.database import opened

        with opened() as db, db.reading() as conn:
            remembered = known_secrets(conn, self._client.ref.key, pipeline)
        return declared | remembered


def _ledger_exists() -> bool:
    """False for a SQLite ledger file that is not there: reading runs must not create one."""
    from sqlalchemy.engine import make_url

    from backfill.store.database import ledger_url

    url = make_url(ledger_url())
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return True
    return Path(url.database).exists()


def list_runs(
    ref: FactoryRef,
    *,
    start_from: datetime,
    start_until: datetime | None = None,
    pipeline: str | None = None,
    statuses: Sequence[str] = (),
    now: datetime | None = None,
) -> list[Run]:
    """Runs that started in [start_from, start_until), newest first, secrets masked.

    ADF filters on a run's last-updated time, so the query asks for runs updated since
    ``start_from`` and keeps those that started in the range."""
    from backfill.factory.run import RunStatus

    now = now or utcnow()
    client = connect_factory(ref)
    wanted = [RunStatus.parse(s).value for s in statuses] or None
    found = [
        run
        for run in client.query_runs(
            updated_after=start_from,
            updated_before=now + timedelta(days=1),
            pipeline=pipeline,
            statuses=wanted,
            newest_first=True,
        )
        if run.start is not None and run.start >= start_from and (start_until is None or run.start < start_until)
    ]
    found.sort(key=lambda r: r.start or start_from, reverse=True)
    mask = _Masker(client)
    return [mask(run) for run in found]


def _usual_durations(client: FactoryClient, pipeline: str) -> list[timedelta]:
    from backfill.factory.run import RunStatus

    now = utcnow()
    durations = [
        run.duration
        for run in client.query_runs(
            updated_after=now - timedelta(days=7),
            updated_before=now + timedelta(days=1),
            pipeline=pipeline,
            statuses=[RunStatus.SUCCEEDED.value],
        )
        if run.duration is not None
    ]
    return durations[-200:]


@dataclass(frozen=True)
class RunDetail:
    run: Run  # secrets masked
    activities: Sequence[ActivityRun]
    usual: Sequence[timedelta]  # durations of the pipeline's succeeded runs of the last 7 days

    @property
    def failing(self) -> ActivityRun | None:
        return next((a for a in self.activities if a.failed), None)


def show_run(ref: FactoryRef, run_id: str) -> RunDetail:
    """A run with its activity runs and how long its pipeline's runs usually take."""
    client = connect_factory(ref)
    run = _Masker(client)(client.get_run(run_id))
    activities = client.query_activity_runs(run_id)
    return RunDetail(run, activities, _usual_durations(client, run.pipeline))


@dataclass(frozen=True)
class RunToCancel:
    """A run read before it is cancelled (to show and confirm), with the client to cancel it."""

    client: FactoryClient
    run_id: str
    run: Run
    usual: Sequence[timedelta]


def run_to_cancel(ref: FactoryRef, run_id: str) -> RunToCancel:
    """The run ``cancel_run`` would cancel and its pipeline's usual durations, to confirm."""
    client = connect_factory(ref)
    run = client.get_run(run_id)
    return RunToCancel(client, run_id, run, _usual_durations(client, run.pipeline))


def cancel_run(
    target: RunToCancel, *, reason: str, recursive: bool, actor: Actor, db: Database | None = None
) -> tuple[str | None, str | None]:
    """Cancel the run, recording who and why; the backfill and window whose run it is, if any."""
    from backfill.store.ledger import Ledger

    run_id, run, client = target.run_id, target.run, target.client
    # Recorded and printed later: no escape sequence reaches a reader's terminal (issue 9 #9).
    payload = {
        "run_id": run_id,
        "pipeline": run.pipeline,
        "status": run.status.value,
        "reason": strip_controls(reason),
        "factory": client.ref.key,
        "recursive": recursive,
    }
    with database_for(db) as database:
        ledger = Ledger(database)
        # A run of a backfill's window: the events name the backfill and window, so its report and
        # status say who cancelled it and why, not just "Cancelled".
        backfill_id, window_key = _owner(ledger, run_id)
        ledger.append("run.cancel-requested", payload, actor=actor, backfill_id=backfill_id, window_key=window_key)
        if backfill_id and window_key:
            # Before the cancel is sent: the backfill's runner then sees who asked and why first.
            ledger.append(
                ev.WINDOW_CANCELLED,
                {"run_id": run_id, "reason": reason, "by": "runs cancel"},
                actor=actor,
                backfill_id=backfill_id,
                window_key=window_key,
            )
        client.cancel_run(run_id, recursive=recursive)
        ledger.append("run.cancelled", payload, actor=actor, backfill_id=backfill_id, window_key=window_key)
    return backfill_id, window_key


def _owner(ledger: Ledger, run_id: str) -> tuple[str | None, str | None]:
    """The backfill and window whose run ``run_id`` is, if a backfill created or adopted it."""
    for event in ledger.iter_events(kinds=(ev.WINDOW_CREATED, ev.WINDOW_ADOPTED)):
        if event.payload.get("run_id") == run_id and event.backfill_id and event.window_key:
            return event.backfill_id, event.window_key
    return None, None

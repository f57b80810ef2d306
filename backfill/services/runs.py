"""A factory's pipeline runs (SPEC §12): list, show and export them (secrets masked, each judged
against its usual duration), cancel one (guarded, recorded, confirmed), and the incident record.

The rules live in their own modules (``runs_query``, ``usual``, ``runs_export``, ``cancel``,
``incident``); these are the use cases the CLI (and the console) call, one each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from backfill.errors import FactoryError
from backfill.services.common import connect_factory, database_for
from backfill.timeutil import utcnow

if TYPE_CHECKING:
    from backfill.cancel import CancelOutcome, CancelRequest, Guarded
    from backfill.factory.client import FactoryClient
    from backfill.factory.protocol import FactoryRef
    from backfill.factory.run import Run
    from backfill.identity import Actor
    from backfill.incident import Incident
    from backfill.runs_export import ExportResult
    from backfill.runs_query import JudgedRun, RunDetail, RunQuery
    from backfill.store.database import Database


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
        from backfill.runs_query import ledger_exists
        from backfill.store.history import known_secrets

        try:
            declared = declared_secrets(self._client.get_pipeline(pipeline))
        except FactoryError:
            # A deleted pipeline keeps its runs; what plans marked secret still applies.
            declared = frozenset()
        if not ledger_exists():
            return declared
        from backfill.store.database import opened

        with opened() as db, db.reading() as conn:
            remembered = known_secrets(conn, self._client.ref.key, pipeline)
        return declared | remembered


def list_runs(
    ref: FactoryRef, query: RunQuery, *, outliers: bool = False, now: datetime | None = None
) -> list[JudgedRun]:
    """``runs list``: the query's runs, newest first, each judged; only outliers with ``outliers``."""
    from backfill import runs_query

    client = connect_factory(ref)
    return runs_query.list_runs(client, query, now or utcnow(), _Masker(client), outliers=outliers)


def show_run(ref: FactoryRef, run_id: str, *, now: datetime | None = None) -> RunDetail:
    """``runs show``: the run, its activities, the dominant and the running one, its verdict."""
    from backfill import runs_query

    client = connect_factory(ref)
    return runs_query.show_run(client, run_id, now or utcnow(), _Masker(client))


def export_runs(
    ref: FactoryRef,
    query: RunQuery,
    *,
    fmt: str,
    activities: bool,
    output: str | None,
    progress: Callable[[str], None],
    actor: Actor,
    now: datetime | None = None,
) -> ExportResult:
    """``runs export``: every run of the range written out, then recorded (``runs.exported``)."""
    from backfill import runs_export

    client = connect_factory(ref)
    return runs_export.export_runs(
        client,
        query,
        now or utcnow(),
        _Masker(client),
        fmt=fmt,
        activities=activities,
        output=output,
        progress=progress,
        actor=actor,
    )


@dataclass(frozen=True)
class RunToCancel:
    """A run the guard let through (to show and confirm), with the client to cancel it."""

    client: FactoryClient
    request: CancelRequest
    guarded: Guarded


def run_to_cancel(ref: FactoryRef, request: CancelRequest, *, now: datetime | None = None) -> RunToCancel:
    """Every refusal of the guarded cancel, before anything is sent or recorded."""
    from backfill.cancel import guard

    client = connect_factory(ref)
    return RunToCancel(client, request, guard(client, request, now or utcnow(), _Masker(client)))


def cancel_run(target: RunToCancel, *, actor: Actor, db: Database | None = None) -> CancelOutcome:
    """Record the request, cancel, wait for ADF's ``Cancelled`` and record it."""
    from backfill import cancel
    from backfill.store.ledger import Ledger

    with database_for(db) as database:
        return cancel.cancel_run(target.client, Ledger(database), target.guarded, target.request, actor)


def incident(ref: FactoryRef, run_id: str, *, now: datetime | None = None) -> Incident:
    """``incident``: the record of a run and whether the incident is resolved."""
    from backfill.incident import build_incident

    client = connect_factory(ref)
    return build_incident(client, run_id, now or utcnow(), _Masker(client))

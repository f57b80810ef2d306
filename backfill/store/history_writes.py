"""What a history sync writes to the cache: runs (upserted by run ID), the sync state, and the
parameter names plans marked secret (``backfill.history.sync_history`` calls these)."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, or_, select
from sqlalchemy.engine import Connection

from backfill.factory.run import Run, RunStatus, decode_parameter
from backfill.secrets import REDACTED
from backfill.store.history import decode_run, known_secrets
from backfill.store.history_keys import write_keys, write_record_keys
from backfill.store.history_tables import (
    EPOCH,
    FETCH_CHUNK,
    NAME_LIMIT,
    RUNS,
    SECRETS,
    SYNC,
    SyncState,
    dialect_insert,
    to_us,
)

_MICROSECOND = timedelta(microseconds=1)

# One encoder for every document: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def _row(factory_key: str, pipeline: str, run: Run) -> dict[str, Any]:
    return {
        "factory_key": factory_key,
        "pipeline": pipeline,
        "run_id": run.run_id,
        # An unknown status keeps the service's word (the column holds 16 characters).
        "status": run.status_label[:16],
        "run_start_us": to_us(run.start),
        "last_updated_us": to_us(run.last_updated),
        "run_group_id": run.run_group_id,
        "is_latest": run.is_latest,
        "parameters": _ENCODER.encode(dict(run.parameters)),
        "data": _ENCODER.encode(run.to_json()),
    }


def upsert_runs(conn: Connection, factory_key: str, pipeline: str, runs: Sequence[Run]) -> int:
    """Insert or refresh runs by run ID, in bulk; a row never goes back to an older version.
    Their match keys are written for every key set of the pipeline in the same transaction.

    Returns how many distinct runs were written.
    """
    newest: dict[str, Run] = {}
    for run in runs:
        # One statement must not touch a row twice (PostgreSQL refuses), and a run can appear on
        # two pages when it changes while we page.
        seen = newest.get(run.run_id)
        if seen is None or (to_us(run.last_updated) or 0) >= (to_us(seen.last_updated) or 0):
            newest[run.run_id] = run
    if not newest:
        return 0
    # In primary-key order: consecutive inserts land on the same index pages (run IDs are random).
    rows = [_row(factory_key, pipeline, newest[run_id]) for run_id in sorted(newest)]
    dialect = conn.dialect.name
    updated = ("status", "run_start_us", "last_updated_us", "run_group_id", "is_latest", "parameters", "data")
    if dialect in ("sqlite", "postgresql"):
        conn.execute(_upsert(dialect, updated), rows)
        write_keys(conn, factory_key, pipeline, list(newest.values()))
        return len(rows)
    # Other dialects (Azure SQL, MySQL): replace inside the caller's transaction, keeping any row
    # a concurrent sync already brought further.
    fresh: list[dict[str, Any]] = []
    for start in range(0, len(rows), FETCH_CHUNK):
        chunk = {row["run_id"]: row for row in rows[start : start + FETCH_CHUNK]}
        where = (RUNS.c.factory_key == factory_key, RUNS.c.pipeline == pipeline, RUNS.c.run_id.in_(list(chunk)))
        for run_id, updated_us in conn.execute(select(RUNS.c.run_id, RUNS.c.last_updated_us).where(*where)):
            if updated_us is not None and (chunk[run_id]["last_updated_us"] or 0) < updated_us:
                del chunk[run_id]
        if chunk:
            conn.execute(delete(RUNS).where(*where[:2], RUNS.c.run_id.in_(list(chunk))))
            fresh.extend(chunk.values())
    if fresh:
        conn.execute(RUNS.insert(), fresh)
    write_keys(conn, factory_key, pipeline, list(newest.values()))
    return len(rows)


def _upsert(dialect: str, updated: Sequence[str]) -> Any:
    """INSERT ... ON CONFLICT DO UPDATE, the same statement text on SQLite and PostgreSQL."""
    stmt = dialect_insert(dialect, RUNS)
    return stmt.on_conflict_do_update(
        index_elements=["factory_key", "pipeline", "run_id"],
        set_={name: stmt.excluded[name] for name in updated},
        # Two syncs racing must not let the slower one write an older state back.
        where=RUNS.c.last_updated_us.is_(None) | (stmt.excluded.last_updated_us >= RUNS.c.last_updated_us),
    )


def write_state(conn: Connection, factory_key: str, pipeline: str, state: SyncState, *, exists: bool) -> None:
    values = {
        "watermark_us": to_us(state.watermark),
        "horizon_us": to_us(state.horizon),
        "synced_at_us": to_us(state.synced_at),
    }
    if exists:
        conn.execute(
            SYNC.update().where(SYNC.c.factory_key == factory_key, SYNC.c.pipeline == pipeline).values(**values)
        )
    else:
        conn.execute(SYNC.insert().values(factory_key=factory_key, pipeline=pipeline, **values))


def remember_secrets(conn: Connection, factory_key: str, pipeline: str, names: Collection[str]) -> set[str]:
    """Record secret parameter names and mask their values in the runs already cached; returns
    the names that were new."""
    from backfill.masking import mask_run

    # A name too long to keep is still masked by the sync that names it, just not remembered.
    new = {name for name in names if len(name) <= NAME_LIMIT} - known_secrets(conn, factory_key, pipeline)
    if not new:
        return new
    rows = [{"factory_key": factory_key, "pipeline": pipeline, "name": name} for name in sorted(new)]
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        # Two syncs may learn the same name at once (workers of one backfill start together).
        conn.execute(dialect_insert(dialect, SECRETS).on_conflict_do_nothing(), rows)
    else:
        conn.execute(SECRETS.insert(), rows)
    # Runs cached before a plan said so still hold the value: rewrite only the rows naming one.
    named = or_(*(RUNS.c.parameters.contains(_ENCODER.encode(name) + ":", autoescape=True) for name in sorted(new)))
    query = select(RUNS.c.run_id, RUNS.c.data).where(
        RUNS.c.factory_key == factory_key, RUNS.c.pipeline == pipeline, named
    )
    for run_id, data in list(conn.execute(query)):
        run = decode_run(data)
        masked = mask_run(run, new)
        if masked is not run:
            conn.execute(
                RUNS.update()
                .where(RUNS.c.factory_key == factory_key, RUNS.c.pipeline == pipeline, RUNS.c.run_id == run_id)
                .values(parameters=_ENCODER.encode(dict(masked.parameters)), data=_ENCODER.encode(masked.to_json()))
            )
    return new


# -- a sync's pages, straight into rows (issue 14: no Run built, masked and re-encoded per run) --

_STATUSES = frozenset(status.value for status in RunStatus if status is not RunStatus.UNKNOWN)


def _fast_time(value: Any) -> tuple[str | None, int | None] | None:
    """ADF's ``2026-11-03T02:17:00.1234567Z`` as ``Run.to_json`` spells it and in microseconds;
    None when the text is not the plain form (the record then takes ``Run.from_json``)."""
    if value is None:
        return None, None
    if not isinstance(value, str) or not value.endswith("Z"):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is not UTC or moment.year < 1000:
        return None
    return moment.isoformat()[:-6] + "Z", (moment - EPOCH) // _MICROSECOND


def run_row(
    factory_key: str, pipeline: str, run: Run, secret: Collection[str]
) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """``record_row`` for a run already read (a factory that gives ``Run`` values, not pages)."""
    from backfill.masking import mask_run

    masked = mask_run(run, secret)
    return _row(factory_key, pipeline, masked), masked.parameters


def record_row(
    factory_key: str, pipeline: str, raw: Any, secret: Collection[str]
) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """The cache row of one run record as the service sent it, and its (masked) parameters: the
    same row as ``_row`` of ``mask_run(Run.from_json(raw), secret)``, built without the ``Run``.
    Raises ``MalformedRun`` for a record that cannot be read."""
    row = _fast_row(factory_key, pipeline, raw, secret)
    if row is not None:
        return row
    return run_row(factory_key, pipeline, Run.from_json(raw), secret)


def _fast_row(
    factory_key: str, pipeline: str, raw: Any, secret: Collection[str]
) -> tuple[dict[str, Any], Mapping[str, Any]] | None:
    if type(raw) is not dict:
        return None
    run_id, status, raw_params = raw.get("runId"), raw.get("status"), raw.get("parameters") or {}
    group, latest, invoked = raw.get("runGroupId"), raw.get("isLatest", True), raw.get("invokedBy") or {}
    duration_ms, message, name = raw.get("durationInMs"), raw.get("message") or "", raw.get("pipelineName") or ""
    if (
        type(run_id) is not str
        or not run_id.strip()
        or status not in _STATUSES
        or type(raw_params) is not dict
        or (group is not None and type(group) is not str)
        or type(latest) is not bool
        or type(invoked) is not dict
        or (duration_ms is not None and (type(duration_ms) is not int or abs(duration_ms) > 10**12))
        or type(message) is not str
        or type(name) is not str
    ):
        return None
    start, end, updated = (
        _fast_time(raw.get("runStart")),
        _fast_time(raw.get("runEnd")),
        _fast_time(raw.get("lastUpdated")),
    )
    if start is None or end is None or updated is None:
        return None
    parameters = {str(k): decode_parameter(v) for k, v in raw_params.items()}
    if secret:
        parameters = {k: REDACTED if k in secret else v for k, v in parameters.items()}
    by, by_type = invoked.get("name") or "", invoked.get("invokedByType") or ""
    document = {
        "run_id": run_id,
        "pipeline": name,
        "status": status,
        "parameters": parameters,
        "run_group_id": group,
        "is_latest": latest,
        "start": start[0],
        "end": end[0],
        "last_updated": updated[0],
        "duration_ms": int(timedelta(milliseconds=duration_ms).total_seconds() * 1000)
        if duration_ms is not None
        else None,
        "message": message,
        "invoked_by": by if type(by) is str else str(by),
        "invoked_by_type": by_type if type(by_type) is str else str(by_type),
    }
    row = {
        "factory_key": factory_key,
        "pipeline": pipeline,
        "run_id": run_id,
        "status": status,
        "run_start_us": start[1],
        "last_updated_us": updated[1],
        "run_group_id": group,
        "is_latest": latest,
        "parameters": _ENCODER.encode(parameters),
        "data": _ENCODER.encode(document),
    }
    return row, parameters


_COLUMNS = (
    "factory_key",
    "pipeline",
    "run_id",
    "status",
    "run_start_us",
    "last_updated_us",
    "run_group_id",
    "is_latest",
    "parameters",
    "data",
)


def upsert_rows(
    conn: Connection, factory_key: str, pipeline: str, rows: Sequence[tuple[dict[str, Any], Mapping[str, Any]]]
) -> int:
    """``upsert_runs`` for rows ``record_row`` built: newest per run ID, in primary-key order,
    one executemany of the compiled upsert (no per-row bind processing), and the rows' keys for
    every key set of the pipeline, in the caller's transaction. How many distinct runs."""
    newest: dict[str, tuple[dict[str, Any], Mapping[str, Any]]] = {}
    for pair in rows:
        run_id = pair[0]["run_id"]
        seen = newest.get(run_id)
        if seen is None or (pair[0]["last_updated_us"] or 0) >= (seen[0]["last_updated_us"] or 0):
            newest[run_id] = pair
    if not newest:
        return 0
    ordered = [newest[run_id] for run_id in sorted(newest)]
    dialect = conn.dialect.name
    if dialect == "sqlite":
        compiled = _compiled(conn)
        names = compiled.positiontup or ()
        conn.exec_driver_sql(compiled.string, [tuple(_bind(row, name) for name in names) for row, _ in ordered])
    elif dialect == "postgresql":
        compiled = _compiled(conn)
        conn.exec_driver_sql(compiled.string, [{name: row[name] for name in _COLUMNS} for row, _ in ordered])
    else:
        # Other dialects take the careful path (select, delete, insert) of upsert_runs.
        return upsert_runs(conn, factory_key, pipeline, [Run.from_cache(json.loads(row["data"])) for row, _ in ordered])
    write_record_keys(conn, factory_key, pipeline, [(row["run_id"], parameters) for row, parameters in ordered])
    return len(ordered)


def _bind(row: dict[str, Any], name: str) -> Any:
    # The compiled statement names columns; booleans go to SQLite as 0/1 as SQLAlchemy sends them.
    value = row[name]
    return int(value) if type(value) is bool else value


_COMPILED: dict[str, Any] = {}


def _compiled(conn: Connection) -> Any:
    """The upsert compiled once per dialect, for ``exec_driver_sql``."""
    dialect = conn.dialect
    compiled = _COMPILED.get(dialect.name)
    if compiled is None:
        updated = ("status", "run_start_us", "last_updated_us", "run_group_id", "is_latest", "parameters", "data")
        stmt = _upsert(dialect.name, updated).values({name: bindparam(name) for name in _COLUMNS})
        compiled = _COMPILED[dialect.name] = stmt.compile(dialect=dialect)
    return compiled

"""What a history sync writes to the cache: runs (upserted by run ID), the sync state, and the
parameter names plans marked secret (``backfill.history.sync_history`` calls these)."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.engine import Connection

from backfill.factory.run import Run
from backfill.store.history import decode_run, known_secrets
from backfill.store.history_keys import write_keys
from backfill.store.history_tables import FETCH_CHUNK, NAME_LIMIT, RUNS, SECRETS, SYNC, SyncState, dialect_insert, to_us

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

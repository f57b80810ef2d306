"""Range reads over the history cache, for run investigation (SPEC §12): the usual runs of a
pipeline, a time range of runs streamed for an export, and what a plan matched on.

Streams go through ``yield_per``: an export of 200,000 cached runs holds one chunk at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection

from backfill.factory.run import Run, RunStatus
from backfill.store.history import read_state
from backfill.store.history_tables import KEY_SETS, RUNS, SYNC, to_us

CHUNK = 2_000


def is_synced(conn: Connection, factory_key: str, pipeline: str) -> bool:
    return read_state(conn, factory_key, pipeline) is not None


def synced_pipelines(conn: Connection, factory_key: str) -> list[str]:
    query = select(SYNC.c.pipeline).where(SYNC.c.factory_key == factory_key).order_by(SYNC.c.pipeline)
    return [str(name) for (name,) in conn.execute(query)]


def matched_fields(conn: Connection, factory_key: str, pipeline: str) -> tuple[str, ...] | None:
    """The ``[match] on`` of the newest plan previewed against this pipeline, if any."""
    query = (
        select(KEY_SETS.c.fields)
        .where(KEY_SETS.c.factory_key == factory_key, KEY_SETS.c.pipeline == pipeline)
        .order_by(KEY_SETS.c.id.desc())
        .limit(1)
    )
    row = conn.execute(query).first()
    return tuple(json.loads(row[0])) if row is not None else None


def succeeded_since(conn: Connection, factory_key: str, pipeline: str, since: datetime) -> Iterator[Run]:
    """The cached succeeded runs of a pipeline that started at or after ``since``."""
    query = select(RUNS.c.data).where(
        RUNS.c.factory_key == factory_key,
        RUNS.c.pipeline == pipeline,
        RUNS.c.status == RunStatus.SUCCEEDED.value,
        RUNS.c.run_start_us >= to_us(since),
    )
    for (data,) in conn.execute(query.execution_options(yield_per=CHUNK)):
        yield Run.from_cache(json.loads(data))


def runs_between(
    conn: Connection,
    factory_key: str,
    pipelines: Sequence[str],
    since: datetime,
    until: datetime,
    statuses: Sequence[str] | None = None,
    *,
    updated_before: datetime | None = None,
    after: tuple[int, str] | None = None,
    limit: int = CHUNK,
) -> list[tuple[tuple[int, str], Run]]:
    """One page of the cached runs of these pipelines that started in ``[since, until)`` (and were
    last updated before ``updated_before``: the ones ADF no longer holds), oldest first, after the
    page key ``after``. Pages, not one long cursor: the caller holds no connection between them."""
    query = (
        select(RUNS.c.run_start_us, RUNS.c.run_id, RUNS.c.data)
        .where(
            RUNS.c.factory_key == factory_key,
            RUNS.c.pipeline.in_(list(pipelines)),
            RUNS.c.run_start_us >= to_us(since),
            RUNS.c.run_start_us < to_us(until),
        )
        .order_by(RUNS.c.run_start_us, RUNS.c.run_id)
        .limit(limit)
    )
    if statuses:
        query = query.where(RUNS.c.status.in_(list(statuses)))
    if updated_before is not None:
        query = query.where(RUNS.c.last_updated_us < to_us(updated_before))
    if after is not None:
        start_us, run_id = after
        query = query.where(
            or_(RUNS.c.run_start_us > start_us, and_(RUNS.c.run_start_us == start_us, RUNS.c.run_id > run_id))
        )
    return [
        ((int(start), str(run_id)), Run.from_cache(json.loads(data))) for start, run_id, data in conn.execute(query)
    ]

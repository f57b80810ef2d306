"""What a history sync writes to the cache: runs (upserted by run ID), the sync state, and the
parameter names plans marked secret (``backfill.history.sync_history`` calls these)."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring_ascii
from typing import Any, Final

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
# The cache row of a sync, a tuple in the column order of the compiled upsert (``_COLUMNS``):
# bound as it is on SQLite, no dict built and read back per run.
Row = tuple[str, str, str, str, int | None, int | None, str | None, bool, str, str]
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
# Their places in a Row (checked against _COLUMNS below).
RUN_ID: Final = 2
UPDATED: Final = 5
assert _COLUMNS[RUN_ID] == "run_id" and _COLUMNS[UPDATED] == "last_updated_us"
# JSON string literals as ``_ENCODER`` writes them (ASCII, escaped), without building a dict.
_QUOTE: Any = encode_basestring_ascii
_fromisoformat = datetime.fromisoformat


def _fast_time(value: Any) -> tuple[str | None, int | None] | None:
    """ADF's ``2026-11-03T02:17:00.1234567Z`` as ``Run.to_json`` spells it and in microseconds;
    None when the text is not the plain form (the record then takes ``Run.from_json``).

    ADF always writes that one 28-character form, so the cached spelling is cut from the text
    (``format_utc`` drops a zero fraction) once ``fromisoformat`` has accepted it."""
    if value is None:
        return None, None
    if type(value) is not str or not value.endswith("Z"):
        return None
    try:
        moment = _fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is not UTC or moment.year < 1000:
        return None
    delta = moment - EPOCH
    us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if len(value) == 28 and value[4:20:3] == "--T::." and "0" <= value[26] <= "9":
        # Only YYYY-MM-DDTHH:MM:SS.fffffffZ has these separators at 4, 7, ... 19 (fromisoformat
        # reads ASCII digits only); the 7th digit is below a microsecond and dropped by both.
        return (value[:19] + "Z" if moment.microsecond == 0 else value[:26] + "Z"), us
    return moment.isoformat()[:-6] + "Z", us


def _tuple_row(row: Mapping[str, Any]) -> Row:
    return tuple(row[name] for name in _COLUMNS)


def run_row(factory_key: str, pipeline: str, run: Run, secret: Collection[str]) -> tuple[Row, Mapping[str, Any]]:
    """``record_row`` for a run already read (a factory that gives ``Run`` values, not pages)."""
    from backfill.masking import mask_run

    masked = mask_run(run, secret)
    return _tuple_row(_row(factory_key, pipeline, masked)), masked.parameters


def record_row(factory_key: str, pipeline: str, raw: Any, secret: Collection[str]) -> tuple[Row, Mapping[str, Any]]:
    """The cache row of one run record as the service sent it, and its (masked) parameters: the
    same row as ``_row`` of ``mask_run(Run.from_json(raw), secret)``, built without the ``Run``.
    Raises ``MalformedRun`` for a record that cannot be read."""
    row = _fast_row(factory_key, pipeline, raw, secret)
    if row is not None:
        return row
    return run_row(factory_key, pipeline, Run.from_json(raw), secret)


def _fast_row(
    factory_key: str, pipeline: str, raw: Any, secret: Collection[str]
) -> tuple[Row, Mapping[str, Any]] | None:
    if type(raw) is not dict:
        return None
    get = raw.get
    run_id, status, raw_params = get("runId"), get("status"), get("parameters") or {}
    group, latest, invoked = get("runGroupId"), get("isLatest", True), get("invokedBy") or {}
    duration_ms, message, name = get("durationInMs"), get("message") or "", get("pipelineName") or ""
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
    start, end, updated = _fast_time(get("runStart")), _fast_time(get("runEnd")), _fast_time(get("lastUpdated"))
    if start is None or end is None or updated is None:
        return None
    parameters = {str(k): decode_parameter(v) for k, v in raw_params.items()}
    if secret:
        parameters = {k: REDACTED if k in secret else v for k, v in parameters.items()}
    by, by_type = invoked.get("name") or "", invoked.get("invokedByType") or ""
    encoded = _ENCODER.encode(parameters)
    # Run.to_json's document, written directly: the same keys in the same order and the same
    # literals _ENCODER gives (the parameters' text is the column's), one dict fewer per run.
    document = "".join(
        [
            '{"run_id":',
            _QUOTE(run_id),
            ',"pipeline":',
            _QUOTE(name),
            ',"status":',
            _QUOTE(status),
            ',"parameters":',
            encoded,
            ',"run_group_id":',
            "null" if group is None else _QUOTE(group),
            ',"is_latest":',
            "true" if latest else "false",
            ',"start":',
            "null" if start[0] is None else f'"{start[0]}"',
            ',"end":',
            "null" if end[0] is None else f'"{end[0]}"',
            ',"last_updated":',
            "null" if updated[0] is None else f'"{updated[0]}"',
            ',"duration_ms":',
            "null" if duration_ms is None else str(int(timedelta(milliseconds=duration_ms).total_seconds() * 1000)),
            ',"message":',
            _QUOTE(message),
            ',"invoked_by":',
            _QUOTE(by if type(by) is str else str(by)),
            ',"invoked_by_type":',
            _QUOTE(by_type if type(by_type) is str else str(by_type)),
            "}",
        ]
    )
    return (factory_key, pipeline, run_id, status, start[1], updated[1], group, latest, encoded, document), parameters


def upsert_rows(
    conn: Connection, factory_key: str, pipeline: str, rows: Sequence[tuple[Row, Mapping[str, Any]]]
) -> int:
    """``upsert_runs`` for rows ``record_row`` built: newest per run ID, in primary-key order,
    one executemany of the compiled upsert (no per-row bind processing), and the rows' keys for
    every key set of the pipeline, in the caller's transaction. How many distinct runs."""
    newest: dict[str, tuple[Row, Mapping[str, Any]]] = {}
    for pair in rows:
        run_id = pair[0][RUN_ID]
        seen = newest.get(run_id)
        if seen is None or (pair[0][UPDATED] or 0) >= (seen[0][UPDATED] or 0):
            newest[run_id] = pair
    if not newest:
        return 0
    ordered = [newest[run_id] for run_id in sorted(newest)]
    dialect = conn.dialect.name
    if dialect == "sqlite":
        # The tuples as they are: sqlite3 binds a bool as the 0/1 SQLAlchemy would send.
        conn.exec_driver_sql(_compiled(conn).string, [row for row, _ in ordered])
    elif dialect == "postgresql":
        conn.exec_driver_sql(_compiled(conn).string, [dict(zip(_COLUMNS, row, strict=True)) for row, _ in ordered])
    else:
        # Other dialects take the careful path (select, delete, insert) of upsert_runs.
        return upsert_runs(conn, factory_key, pipeline, [Run.from_cache(json.loads(row[-1])) for row, _ in ordered])
    write_record_keys(conn, factory_key, pipeline, [(row[RUN_ID], parameters) for row, parameters in ordered])
    return len(ordered)


_COMPILED: dict[str, Any] = {}


def _compiled(conn: Connection) -> Any:
    """The upsert compiled once per dialect, for ``exec_driver_sql`` (positional on SQLite, in
    ``_COLUMNS`` order: the rows are bound as they are)."""
    dialect = conn.dialect
    compiled = _COMPILED.get(dialect.name)
    if compiled is None:
        updated = ("status", "run_start_us", "last_updated_us", "run_group_id", "is_latest", "parameters", "data")
        stmt = _upsert(dialect.name, updated).values({name: bindparam(name) for name in _COLUMNS})
        compiled = stmt.compile(dialect=dialect)
        if compiled.positional and tuple(compiled.positiontup or ()) != _COLUMNS:
            raise RuntimeError("the history upsert binds its columns in an unexpected order")
        _COMPILED[dialect.name] = compiled
    return compiled

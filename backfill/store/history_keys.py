"""Cached runs indexed by match key, so a preview reads only the runs its windows can match.

A plan matches on some parameters (``[match] on``, secrets left out); a *key set* is one such list
of fields for one pipeline, and ``history_keys`` holds, per key set, every cached run's
``key_hash`` (``backfill.matching.key_hash``). A preview registers its key set, fills in the keys
of runs cached before the set existed (once), and then looks its windows' hashes up: at most a
few rows per window instead of every run of the last 45 days. Every sync writes the keys of the
runs it caches for every key set of the pipeline, in the same transaction, so the next preview
finds them ready.

The keys are derived data: a run without a key row (a sync that raced with a new key set) is
found by comparing counts and filled in before any lookup, so the index is never trusted stale.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import BigInteger, and_, any_, bindparam, delete, exists, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import ColumnElement

from backfill.factory.run import Run
from backfill.matching import key_hash
from backfill.store.history_tables import FETCH_CHUNK, KEY_SETS, KEYS, RUNS, RunRecord, count_runs, dialect_insert

# Part of every key set's signature: a change to normalisation or hashing starts new key sets
# instead of trusting keys computed the old way.
KEY_VERSION = 1
# Runs whose keys are computed per round trip when filling a key set in.
FILL_CHUNK = 20_000


def signature(fields: Sequence[str]) -> str:
    """The identity of a key set: the matched fields, in order, and the key version."""
    text = json.dumps([KEY_VERSION, list(fields)], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def key_set(conn: Connection, factory_key: str, pipeline: str, fields: Sequence[str]) -> int:
    """The ID of the key set for these fields, created (empty) when it does not exist yet."""
    sig = signature(fields)
    where = (KEY_SETS.c.factory_key == factory_key, KEY_SETS.c.pipeline == pipeline, KEY_SETS.c.signature == sig)
    found = conn.execute(select(KEY_SETS.c.id).where(*where)).scalar()
    if found is not None:
        return int(found)
    values = {"factory_key": factory_key, "pipeline": pipeline, "signature": sig, "fields": json.dumps(list(fields))}
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        # Another preview may register the same set at the same moment; either row will do.
        conn.execute(dialect_insert(dialect, KEY_SETS).values(values).on_conflict_do_nothing())
    else:
        from sqlalchemy.exc import IntegrityError

        try:
            with conn.begin_nested():
                conn.execute(KEY_SETS.insert().values(values))
        except IntegrityError:
            pass
    return int(conn.execute(select(KEY_SETS.c.id).where(*where)).scalar_one())


def key_sets(conn: Connection, factory_key: str, pipeline: str) -> list[tuple[int, tuple[str, ...]]]:
    query = select(KEY_SETS.c.id, KEY_SETS.c.fields).where(
        KEY_SETS.c.factory_key == factory_key, KEY_SETS.c.pipeline == pipeline
    )
    return [(int(set_id), tuple(json.loads(fields))) for set_id, fields in conn.execute(query)]


def write_keys(conn: Connection, factory_key: str, pipeline: str, runs: Sequence[Run]) -> None:
    """The keys of freshly cached runs, for every key set of their pipeline."""
    if not runs:
        return
    for set_id, fields in key_sets(conn, factory_key, pipeline):
        _upsert_keys(conn, set_id, ((run.run_id, run.parameters) for run in runs), fields)


def write_record_keys(conn: Connection, factory_key: str, pipeline: str, runs: Sequence[tuple[str, Any]]) -> None:
    """``write_keys`` for (run ID, parameters) pairs: a sync's rows, keyed as they are written."""
    if not runs:
        return
    for set_id, fields in key_sets(conn, factory_key, pipeline):
        _upsert_keys(conn, set_id, runs, fields)


def fill_keys(
    conn: Connection, factory_key: str, pipeline: str, set_id: int, fields: Sequence[str], *, runs: int | None = None
) -> int:
    """Compute the keys of cached runs that have none in this key set yet; how many were added.

    ``runs``: the number of cached runs when the caller counted them (else counted here); runs
    cached since then without keys are left to the next fill, like runs cached after a read."""
    held = conn.execute(select(func.count()).select_from(KEYS).where(KEYS.c.set_id == set_id)).scalar_one()
    if held == (runs if runs is not None else count_runs(conn, factory_key, pipeline)):
        return 0
    where = [RUNS.c.factory_key == factory_key, RUNS.c.pipeline == pipeline]
    if held:
        # Only the runs without a key; a new key set (the usual case) takes every run as it is.
        where.append(~exists().where(KEYS.c.set_id == set_id, KEYS.c.run_id == RUNS.c.run_id))
    added = 0
    after = ""
    while True:
        # Pages by run ID (the primary key's order), so no cursor stays open while we insert.
        query = (
            select(RUNS.c.run_id, RUNS.c.parameters)
            .where(*where, RUNS.c.run_id > after)
            .order_by(RUNS.c.run_id)
            .limit(FILL_CHUNK)
        )
        rows = conn.execute(query).all()
        if not rows:
            return added
        # One json.loads per page: per-call overhead dominates for small documents.
        parameters = json.loads("[" + ",".join([row[1] for row in rows]) + "]")
        _upsert_keys(conn, set_id, zip([row[0] for row in rows], parameters, strict=True), fields)
        added += len(rows)
        after = rows[-1][0]


def lookup(
    conn: Connection, factory_key: str, pipeline: str, set_id: int, hashes: Iterable[int]
) -> list[tuple[int, RunRecord, str]]:
    """The cached runs whose key hash is one of ``hashes``: (hash, light record, run document)."""
    wanted = sorted(set(hashes))
    join = and_(RUNS.c.factory_key == factory_key, RUNS.c.pipeline == pipeline, RUNS.c.run_id == KEYS.c.run_id)
    columns = (
        KEYS.c.key_hash,
        RUNS.c.run_id,
        RUNS.c.run_start_us,
        RUNS.c.run_group_id,
        RUNS.c.is_latest,
        RUNS.c.status,
        RUNS.c.parameters,
        RUNS.c.data,
    )
    query = select(*columns).select_from(KEYS.join(RUNS, join)).where(KEYS.c.set_id == set_id)
    found: list[tuple[int, RunRecord, str]] = []
    for condition in _in_hashes(conn, wanted):
        rows = conn.execute(query.where(condition)).all()
        if not rows:
            continue
        parameters = json.loads("[" + ",".join([row[6] for row in rows]) + "]")
        for row, params in zip(rows, parameters, strict=True):
            group = row[1] if row[3] == row[1] else row[3]
            found.append((row[0], RunRecord(row[1], row[2], group, row[4], row[5], params), row[7]))
    return found


def _in_hashes(conn: Connection, wanted: list[int]) -> Iterator[ColumnElement[bool]]:
    """``key_hash IN wanted`` as few statements as the database allows: one array on SQLite
    (json_each) and PostgreSQL (ANY), lists of 500 bound values elsewhere (SQL Server's limit)."""
    dialect = conn.dialect.name
    if dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 38):
        values = func.json_each(json.dumps(wanted)).table_valued("value")
        yield KEYS.c.key_hash.in_(select(values.c.value))
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        yield KEYS.c.key_hash == any_(bindparam("hashes", wanted, type_=ARRAY(BigInteger)))
    else:
        for start in range(0, len(wanted), FETCH_CHUNK):
            yield KEYS.c.key_hash.in_(wanted[start : start + FETCH_CHUNK])


def _upsert_keys(conn: Connection, set_id: int, runs: Iterable[tuple[str, Any]], fields: Sequence[str]) -> None:
    rows = []
    for run_id, parameters in runs:
        keyed = key_hash(parameters, fields) if isinstance(parameters, Mapping) else None
        rows.append({"set_id": set_id, "run_id": run_id, "key_hash": keyed[1] if keyed is not None else None})
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "sqlite":
        # The statement compiled once and the rows bound as tuples: a sync writes 200,000 keys.
        conn.exec_driver_sql(_compiled_upsert(conn).string, [(r["set_id"], r["run_id"], r["key_hash"]) for r in rows])
        return
    if dialect == "postgresql":
        conn.exec_driver_sql(_compiled_upsert(conn).string, rows)
        return
    for start in range(0, len(rows), FETCH_CHUNK):
        chunk = rows[start : start + FETCH_CHUNK]
        ids = [row["run_id"] for row in chunk]
        conn.execute(delete(KEYS).where(KEYS.c.set_id == set_id, KEYS.c.run_id.in_(ids)))
        conn.execute(KEYS.insert(), chunk)


_COMPILED: dict[str, Any] = {}
_KEY_COLUMNS = ("set_id", "run_id", "key_hash")


def _compiled_upsert(conn: Connection) -> Any:
    """The keys' upsert, compiled once per dialect (positional on SQLite, in _KEY_COLUMNS order)."""
    dialect = conn.dialect
    compiled = _COMPILED.get(dialect.name)
    if compiled is None:
        stmt = dialect_insert(dialect.name, KEYS)
        # A run's parameters never change, but a racing fill may have written the row first.
        upsert = stmt.on_conflict_do_update(
            index_elements=["set_id", "run_id"], set_={"key_hash": stmt.excluded.key_hash}
        ).values({name: bindparam(name) for name in _KEY_COLUMNS})
        compiled = upsert.compile(dialect=dialect)
        if compiled.positional and tuple(compiled.positiontup or ()) != _KEY_COLUMNS:
            raise RuntimeError("the key upsert binds its columns in an unexpected order")
        _COMPILED[dialect.name] = compiled
    return compiled

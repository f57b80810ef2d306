"""The ledger table and its adapter: append-only storage of the hash chain (spec §8).

Appends are serialised across threads, processes and machines, so the chain never forks: on
SQLite an append is a ``Database.writing()`` transaction (``BEGIN IMMEDIATE``), on PostgreSQL the
append transaction takes a transaction-scoped advisory lock, on Azure SQL an application lock.
``seq`` is the primary key, the last guard against two writers taking the same number.
The database itself refuses UPDATE and DELETE through triggers (Alembic revision 0001_baseline).

An append usually extends the head this process itself committed last (``Database.appended``).
It is then one guarded INSERT: the rows go in only if the head is still that (seq, hash), the
advisory lock is taken inside the same statement on PostgreSQL, and ``ON CONFLICT (seq) DO
NOTHING`` catches a writer that committed while the statement waited for the lock. Anything else
(no such head, another writer was first) inserts nothing and the append takes the locked path:
lock, read the head, insert. See ``_Statements``. On PostgreSQL one event's guarded insert is a
transaction of its own (``Database.single_statement``): one round trip, where the locked path's
transaction takes five; when it misses, the head is read and the insert tried again.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from sqlalchemy import BigInteger, Column, DateTime, String, Table, Text, select, type_coerce
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.sql import Select

from backfill.chain import (
    GENESIS_HASH,
    ChainVerifier,
    Draft,
    LedgerEvent,
    PayloadError,
    PayloadShapes,
    VerifyReport,
    canonical_json,
    export_line,
    format_at,
    json_string,
    new_event,
    parse_at,
)
from backfill.errors import LedgerError, LedgerInvalid, UsageError
from backfill.identity import Actor
from backfill.store.committed import COMMITTED
from backfill.store.database import Database
from backfill.store.schema import METADATA
from backfill.timeutil import require_utc, utcnow

__all__ = ["Draft", "Ledger"]

EXPORT_FORMATS = ("jsonl", "csv")
EXPORT_COLUMNS = (
    "seq",
    "at",
    "actor",
    "identity_source",
    "backfill_id",
    "window_key",
    "kind",
    "payload",
    "prev_hash",
    "hash",
)
_BATCH = 2000
_STREAM_BATCH = 5000
TEAM_SOURCE = "database"
_SEEN_EVERY = 0.25
# "backfill" in ASCII: one application-wide advisory lock key for ledger appends on PostgreSQL.
_PG_LOCK_KEY = 0x6261636B66696C6C


_LIMITS = {"actor": 320, "identity_source": 16, "backfill_id": 128, "window_key": 128, "kind": 64}


# Core tables, not SQLModel: ``status`` and ``ledger verify`` read them without importing the ORM.
TABLE = Table(
    "ledger_events",
    METADATA,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("actor", String(_LIMITS["actor"]), nullable=False),
    Column("identity_source", String(_LIMITS["identity_source"]), nullable=False),
    Column("backfill_id", String(_LIMITS["backfill_id"]), index=True),
    Column("window_key", String(_LIMITS["window_key"])),
    Column("kind", String(_LIMITS["kind"]), nullable=False, index=True),
    # The canonical JSON text, not a JSON column: PostgreSQL's jsonb would re-encode it.
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
APPEND_ONLY = "ledger is append-only"

# ``origin`` (the ledger's identity in signed checkpoints) and ``mode`` (``team`` after
# ``backfill ledger init``). Insert-only (revision 0002_ledger_meta).
META_TABLE = Table(
    "ledger_meta",
    METADATA,
    Column("name", String(64), primary_key=True, autoincrement=False),
    Column("value", Text, nullable=False),
)


class _Unreadable(Exception):
    def __init__(self, seq: int, kind: str | None, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.kind = kind
        self.reason = reason


class _Stale(Exception):
    """A guarded insert of several events found the head moved on while it waited for the lock,
    and wrote some of them after it: the transaction is rolled back and the append redone."""


class Ledger:
    """The append-only, hash-chained event record in the ledger database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- writing ---------------------------------------------------------------------------------

    def append(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        actor: Actor,
        backfill_id: str | None = None,
        window_key: str | None = None,
        conn: Connection | None = None,
    ) -> LedgerEvent:
        """Append one event (payload redacted, see ``backfill.secrets.redact_payload``).

        With ``conn`` (a ``Database.writing()`` transaction), the event joins the caller's
        transaction (to commit with a claim, say); the append lock is then held until it ends.
        """
        return self.append_many([Draft(kind, payload, backfill_id, window_key)], actor=actor, conn=conn)[0]

    def append_many(
        self, drafts: Iterable[Draft], *, actor: Actor, conn: Connection | None = None
    ) -> list[LedgerEvent]:
        """Append several events in one transaction, consecutive in the chain."""
        items = list(drafts)
        for draft in items:
            _check_lengths(actor, draft)
        if not items:
            return []
        if conn is not None:
            # The caller's transaction: it announces the events once it committed (``announce``).
            # Always the locked path: a guarded batch may have to be rolled back, and this
            # transaction is not ours to roll back.
            return self._append(conn, items, actor, None)
        after = self.db.appended
        events = None
        try:
            if len(items) == 1 and self.db.dialect == "postgresql":
                events = self._append_alone(items, actor, after)
                after = None  # not written: straight to the locked path
            if events is None:
                try:
                    with self.db.appending() as own:
                        events = self._append(own, items, actor, after)
                except _Stale:
                    with self.db.appending() as own:
                        events = self._append(own, items, actor, None)
        except IntegrityError:
            # Only reachable on a dialect without an append lock: another writer took this seq.
            raise LedgerError("ledger: another writer appended at the same moment; retry") from None
        # Committed: the next append of this process extends it (a guess the guard checks).
        self.db.appended = (events[-1].seq, events[-1].hash)
        self._trust(events)
        self.announce(events)
        return events

    def announce(self, events: list[LedgerEvent]) -> None:
        """Tell the ``COMMITTED`` listeners of events now committed (appends in the caller's
        transaction call this after it commits)."""
        for listener in list(COMMITTED):
            listener(self.db, events)

    def _append_alone(
        self, drafts: list[Draft], actor: Actor, after: tuple[int, str] | None
    ) -> list[LedgerEvent] | None:
        """PostgreSQL, one event: the guarded insert as a transaction of its own (no BEGIN and no
        COMMIT round trip), after ``after`` or else the head just read. It writes that one event
        or nothing; when another writer was first, the head is read again and the insert tried
        again (each miss is another writer's success), a few times, then None: the locked path."""
        with self.db.single_statement() as conn:
            for _ in range(_ALONE_TRIES):
                if after is None:
                    head = conn.exec_driver_sql(_statements(conn).head).first()
                    if head is None:
                        return None  # the first event of the ledger: the locked path
                    after = (int(head[0]), str(head[1]))
                events = self._guarded(conn, drafts, actor, after)
                if events is not None:
                    return events
                after = None
        return None

    def _append(
        self, conn: Connection, drafts: list[Draft], actor: Actor, after: tuple[int, str] | None
    ) -> list[LedgerEvent]:
        """Insert ``drafts`` after the head ``after`` if it still is the head (one guarded
        statement), else, or without ``after``, after the head read under the append lock."""
        if after is not None:
            events = self._guarded(conn, drafts, actor, after)
            if events is not None:
                return events
            # Nothing written: another writer was first. The locked path, same transaction.
        statements = _statements(conn)
        with _refusals():
            if statements.lock is not None:
                conn.exec_driver_sql(statements.lock)
            head = conn.exec_driver_sql(statements.head).first()
            after = (int(head[0]), str(head[1])) if head else None
            events, rows = self._chain(statements, drafts, self._identity(actor), actor, after)
            conn.exec_driver_sql(statements.insert, rows[0] if len(rows) == 1 else rows)
        return events

    def _guarded(
        self, conn: Connection, drafts: list[Draft], actor: Actor, after: tuple[int, str]
    ) -> list[LedgerEvent] | None:
        """The events, inserted in one guarded statement if ``after`` is still the head; None
        if nothing was written (the head is another; a dialect without the guarded insert)."""
        statements = _statements(conn)
        if not statements.guarded:
            return None
        with _refusals():
            events, rows = self._chain(statements, drafts, self._identity(actor), actor, after)
            inserted = statements.insert_after(conn, after, rows)
        if inserted == len(rows):
            return events
        if inserted:
            raise _Stale
        return None

    def _identity(self, actor: Actor) -> tuple[str, str, str | None]:
        """The actor's name and source as stored, and the note of what the client claimed."""
        if not self.db.team_mode:
            return actor.name, actor.source.value, None
        # Team mode: the database's role is the identity, stamped here exactly as its trigger
        # demands (so the stored row is the hashed one); what the client claimed is a note.
        name = self.db.session_user()
        return name, TEAM_SOURCE, None if actor.name == name else str(actor)

    def _chain(
        self,
        statements: _Statements,
        drafts: list[Draft],
        identity: tuple[str, str, str | None],
        actor: Actor,
        head: tuple[int, str] | None,
    ) -> tuple[list[LedgerEvent], list[tuple[Any, ...]]]:
        """The events chained onto ``head`` (None: the genesis), and their rows."""
        seq, prev_hash = head if head is not None else (0, GENESIS_HASH)
        name, source, note = identity
        at = utcnow()
        events: list[LedgerEvent] = []
        rows: list[tuple[Any, ...]] = []
        for draft in drafts:
            seq += 1
            payload = draft.payload if note is None else {**draft.payload, "client_actor": note}
            if actor.principal_id is not None:
                payload = {**payload, "principal_id": actor.principal_id}
            try:
                event, text = new_event(
                    seq=seq,
                    at=at,
                    actor=name,
                    identity_source=source,
                    backfill_id=draft.backfill_id,
                    window_key=draft.window_key,
                    kind=draft.kind,
                    payload=payload,
                    prev_hash=prev_hash,
                )
            except PayloadError as exc:
                raise LedgerError(f"ledger: {draft.kind} event payload refused: {exc}") from None
            events.append(event)
            rows.append(statements.row(event, text))
            prev_hash = event.hash
        return events, rows

    # --- reading ---------------------------------------------------------------------------------

    def events(
        self,
        *,
        backfill_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Iterable[str] | None = None,
        after_seq: int | None = None,
    ) -> list[LedgerEvent]:
        """Events in seq order; ``since`` inclusive, ``until`` exclusive (like windows)."""
        return list(
            self.iter_events(backfill_id=backfill_id, since=since, until=until, kinds=kinds, after_seq=after_seq)
        )

    def iter_events(
        self,
        *,
        backfill_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Iterable[str] | None = None,
        after_seq: int | None = None,
    ) -> Iterator[LedgerEvent]:
        """Like ``events`` but streamed in batches; raises LedgerInvalid on an unreadable row."""
        query = self._filtered(backfill_id=backfill_id, since=since, until=until, kinds=kinds)
        for row in self._rows(query, after_seq or 0):
            try:
                yield _to_event(row)
            except _Unreadable as exc:
                report = VerifyReport(False, 0, exc.seq, exc.kind, exc.reason)
                raise LedgerInvalid(report.message) from None

    def _filtered(
        self,
        *,
        backfill_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Iterable[str] | None = None,
    ) -> Select[Any]:
        query = self._select()
        if backfill_id is not None:
            query = query.where(TABLE.c.backfill_id == backfill_id)
        if since is not None:
            query = query.where(TABLE.c.at >= require_utc(since, "since"))
        if until is not None:
            query = query.where(TABLE.c.at < require_utc(until, "until"))
        if kinds is not None:
            query = query.where(TABLE.c.kind.in_(list(kinds)))
        return query

    def _select(self) -> Select[Any]:
        if self.db.dialect != "sqlite":
            return select(TABLE)
        # SQLite stores times as text; read it raw so a tampered value is reported, not raised.
        columns = [type_coerce(c, Text).label("at") if c.name == "at" else c for c in TABLE.c]
        return select(*columns)

    def _rows(self, query: Select[Any], after_seq: int) -> Iterator[Mapping[str, Any]]:
        # Keyset pages in short transactions: a long read would keep SQLite's WAL from being
        # checkpointed while the runner appends.
        last = after_seq
        while True:
            page = query.where(TABLE.c.seq > last).order_by(TABLE.c.seq).limit(_BATCH)
            with self.db.reading() as conn:
                rows = [dict(r) for r in conn.execute(page).mappings()]
            yield from rows
            if len(rows) < _BATCH:
                return
            last = int(rows[-1]["seq"])

    def head(self) -> LedgerEvent | None:
        query = self._select().order_by(TABLE.c.seq.desc()).limit(1)
        with self.db.reading() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            return None
        try:
            return _to_event(dict(row))
        except _Unreadable as exc:
            raise LedgerInvalid(VerifyReport(False, 0, exc.seq, exc.kind, exc.reason).message) from None

    # --- auditing --------------------------------------------------------------------------------

    def verify(self, checkpoint: tuple[int, str] | None = None) -> VerifyReport:
        """Recompute the whole chain; the report names the first bad event and why."""
        return self._verify_stream(ChainVerifier(checkpoint), 0)

    def _verify_stream(self, verifier: ChainVerifier, after_seq: int) -> VerifyReport:
        """Feed every event after ``after_seq`` to ``verifier``, in one streamed read.

        Each row is hashed over a text built directly from the stored values, the stored payload
        text included once ``PayloadShapes`` proved it canonical (see ``backfill.chain``). A row
        the fast path declines or whose hash, seq or link does not check out goes to the
        reference (``_to_event`` + ``ChainVerifier.feed``), so a report of tampering is exactly
        the one the reference gives; the fast path only ever says "this event is fine" when the
        reference would (tests/test_ledger_fast_verify.py compares them with hypothesis).
        """
        stop_at = verifier.checkpoint[0] if verifier.checkpoint is not None else -1
        head_seq, head_hash, count = verifier.head_seq, verifier.head_hash, verifier.count
        # The text below writes head_hash unquoted: only a hash the chain proved (hex) is written.
        clean = _HEX64.match(head_hash) is not None
        shapes = PayloadShapes()
        shape_of = shapes.current
        # The JSON of the few distinct (actor, source, kind, backfill) of a ledger, as the two
        # pieces of text around the time, and of the window keys.
        prefixes: dict[tuple[Any, ...], tuple[str, str]] = {}
        windows: dict[Any, str] = {None: "null"}
        last_at, last_text = None, None  # a batch of appends shares one time
        sha256, from_iso, sqlite_at = hashlib.sha256, datetime.fromisoformat, _SQLITE_AT.fullmatch
        with self._fast_rows(after_seq) as (form, rows, reference_row):
            sqlite, datetimes = form == "sqlite", form == "datetime"
            for row in rows:
                seq, at, actor, source, backfill_id, window_key, kind, payload, prev_hash, digest = row
                n = head_seq + 1
                if seq == n and prev_hash == head_hash and seq != stop_at and clean:
                    try:
                        if sqlite:
                            if at == last_at:
                                at = last_text
                            elif sqlite_at(at) and from_iso(at):
                                # The stored form YYYY-MM-DD HH:MM:SS.ffffff, a valid time
                                # (fromisoformat raises otherwise): the canonical one differs by
                                # two characters.
                                last_at, at = at, f"{at[:10]}T{at[11:]}Z"
                                last_text = at
                            else:
                                at = None
                        elif datetimes:
                            at = _fast_at(at)
                        # else PostgreSQL wrote the canonical text itself (None out of range).
                        check = shape_of.get(kind)
                        if check is None or not check(payload):
                            payload = shapes.canonical(kind, payload)
                        if at is not None and payload is not None:
                            key = (actor, source, kind, backfill_id)
                            pre = prefixes.get(key) or _prefix(prefixes, key)
                            w = windows.get(window_key) or _quote(windows, window_key)
                            # chain.hashed_text, inlined: a call per event is measurable here.
                            text = (
                                f'{pre[0]}{at}{pre[1]}{payload},"prev_hash":"{head_hash}","seq":{n},"window_key":{w}}}'
                            )
                            if sha256(text.encode()).hexdigest() == digest:
                                head_seq, head_hash, count = n, digest, count + 1
                                continue
                    except (TypeError, ValueError):
                        pass  # not of the expected type, an invalid time, not UTF-8: the reference
                # The reference decides: an anomaly, a checkpoint, or a row the fast path declined.
                verifier.head_seq, verifier.head_hash, verifier.count = head_seq, head_hash, count
                try:
                    event = _to_event(reference_row(row))
                except _Unreadable as exc:
                    return verifier.fail(exc.seq, exc.kind, exc.reason)
                if verifier.feed(event) is not None:
                    return verifier.finish()
                head_seq, head_hash, count = verifier.head_seq, verifier.head_hash, verifier.count
                clean = _HEX64.match(head_hash) is not None
        verifier.head_seq, verifier.head_hash, verifier.count = head_seq, head_hash, count
        return verifier.finish()

    @contextmanager
    def _fast_rows(
        self, after_seq: int
    ) -> Iterator[tuple[str, Iterable[tuple[Any, ...]], Callable[[tuple[Any, ...]], dict[str, Any]]]]:
        """Every row after ``after_seq`` in seq order, in one read transaction (one snapshot;
        on SQLite a deferred read that takes no lock), as plain driver tuples of the ledger's
        columns. Also says the form of the time column, and gives the function that turns a row
        into what the reference select returns (``_to_event`` reads that).

        ``sqlite``: the stored text, read by the driver's own cursor (a result row of SQLAlchemy
        costs as much again as the read; each extra column ~0.2 µs). ``canonical``
        (PostgreSQL): the server writes the canonical time, streamed in chunks, so the server
        produces rows while this process hashes; a time it cannot write (a year before 1000
        or NULL) comes as NULL, and the reference reads that row again by itself.
        ``datetime``: anything else, the reference select through SQLAlchemy.
        """
        names = [c.name for c in TABLE.c]
        with self.db.reading() as conn:
            dialect = conn.dialect.name
            if dialect == "sqlite":
                cursor = _driver(conn).cursor()
                try:
                    cursor.execute(_SQLITE_FAST, (after_seq,))
                    yield "sqlite", cursor, lambda row: dict(zip(names, row, strict=True))
                finally:
                    cursor.close()
            elif dialect == "postgresql":
                from psycopg import pq

                cursor = _driver(conn).cursor()
                # Rows in primary-key order, never sorted by the server: without statistics (a
                # young table) the planner picks a scan and an on-disk sort of the whole ledger.
                cursor.execute("SET LOCAL enable_sort = off")
                # Chunked results need libpq 17 (and psycopg 3.2); before, one row at a time.
                size = _PG_CHUNK if pq.version() >= 170000 else 1
                try:
                    stream = cursor.stream(_PG_FAST, (after_seq,), size=size)
                except TypeError:  # psycopg 3.1: no size
                    stream = cursor.stream(_PG_FAST, (after_seq,))
                try:
                    yield "canonical", stream, self._pg_reference_row
                finally:
                    # A stream left early is cancelled and drained, so the transaction can end.
                    stream.close()
                    cursor.close()
            else:
                query = self._select().where(TABLE.c.seq > after_seq).order_by(TABLE.c.seq)
                result = conn.execution_options(yield_per=_STREAM_BATCH).execute(query)
                rows = (tuple(row) for partition in result.partitions() for row in partition)
                yield "datetime", rows, lambda row: dict(zip(names, row, strict=True))

    def _pg_reference_row(self, row: tuple[Any, ...]) -> dict[str, Any]:
        """What the reference select returns for a row of ``_PG_FAST``: the time as a datetime
        (the same instant as the server's text), or, for a time the server did not write, the
        row read again by the reference select (the stream holds the connection)."""
        if row[1] is not None:
            return {**dict(zip(_NAMES, row, strict=True)), "at": parse_at(row[1])}
        with self.db.reading() as conn:
            found = conn.execute(self._select().where(TABLE.c.seq == row[0])).mappings().first()
        return dict(found) if found is not None else dict(zip(_NAMES, row, strict=True))

    def _stream(self, query: Select[Any]) -> Iterator[tuple[Any, ...]]:
        """Rows of ``query`` in one read transaction, fetched in batches (a server-side cursor
        on PostgreSQL). One transaction, so the rows are one consistent snapshot; on SQLite it
        is a deferred read that takes no lock (a long one only delays the WAL checkpoint)."""
        with self.db.reading() as conn:
            result = conn.execution_options(yield_per=_STREAM_BATCH).execute(query)
            for partition in result.partitions():
                yield from partition

    def verify_for_action(self, backfill_id: str | None = None) -> VerifyReport:
        """Verify before acting (``run``): raise LedgerInvalid (exit 5) on any break.

        Without a checkpoint this machine trusts, the whole chain is verified. With one (the head
        a previous ``run`` here verified, ``backfill.store.seen``), the ledger must still extend
        it (same hash at that seq: not shrunk, not rewritten), every event after it is verified
        in full, and every earlier event of ``backfill_id`` (the request and approvals the run
        acts on) is re-hashed and must link to both neighbours, so editing it is caught without
        re-reading the whole ledger. The verified head becomes the new trusted checkpoint.
        """
        from backfill.store.seen import remember_checkpoint, seen_checkpoint

        trusted = seen_checkpoint(self.db.url)
        full = trusted is None or trusted[0] == 0
        report = self.verify(trusted) if full else self._verify_from(trusted, backfill_id)  # type: ignore[arg-type]
        if not report.ok:
            raise LedgerInvalid(f"{report.message}; refusing to act on a ledger that does not verify")
        head = (report.head_seq, report.head_hash)
        remember_checkpoint(self.db.url, head)
        self.db.trust_from(head)
        return report

    def _trust(self, events: list[LedgerEvent]) -> None:
        """After a verify_for_action in this process, our own committed appends that extend the
        verified head directly are seen too (an interleaved foreign event stops this)."""
        trusted = self.db.trusted_head
        if trusted is None or not events or events[0].prev_hash != trusted[1] or events[0].seq != trusted[0] + 1:
            return
        from backfill.store.seen import remember_checkpoint

        self.db.trusted_head = (events[-1].seq, events[-1].hash)
        # At most every _SEEN_EVERY seconds (a file write per event would halve the append rate);
        # Database.flush_seen writes the last one at dispose and at exit.
        now = time.monotonic()
        if now - self.db.trusted_written >= _SEEN_EVERY:
            remember_checkpoint(self.db.url, self.db.trusted_head, self.db.state_dir)
            self.db.trusted_written = now

    def _verify_from(self, trusted: tuple[int, str], backfill_id: str | None) -> VerifyReport:
        seq, digest = trusted
        around = self._by_seq({seq})
        anchor = around.get(seq)
        if anchor is None:
            head = self.head()
            ends = head.seq if head else 0
            return VerifyReport(
                False,
                0,
                ends + 1,
                None,
                f"missing: the ledger ends at event {ends} but this machine verified event {seq} (truncated)",
            )
        if anchor.hash != digest:
            return VerifyReport(
                False, 0, seq, anchor.kind, "does not match the checkpoint this machine verified (history rewritten)"
            )
        if backfill_id is not None:
            own = [e for e in self.iter_events(backfill_id=backfill_id) if e.seq < seq]
            neighbours = self._by_seq({e.seq - 1 for e in own} | {e.seq + 1 for e in own})
            for event in own:
                before = neighbours.get(event.seq - 1)
                after = neighbours.get(event.seq + 1)
                prev_hash = before.hash if before else GENESIS_HASH
                problem = None
                if event.expected_hash() != event.hash:
                    problem = "hash mismatch"
                elif event.prev_hash != prev_hash or (event.seq > 1 and before is None):
                    problem = f"chain broken: prev_hash does not match the hash of event {event.seq - 1}"
                elif after is None or after.prev_hash != event.hash:
                    problem = f"chain broken: event {event.seq + 1} does not link to it"
                if problem:
                    return VerifyReport(False, 0, event.seq, event.kind, problem)
        verifier = ChainVerifier()
        verifier.head_seq, verifier.head_hash = seq, digest
        return self._verify_stream(verifier, seq)

    def hashes_at(self, seqs: set[int]) -> dict[int, str]:
        """The stored hash of each event in ``seqs`` that exists."""
        return {seq: event.hash for seq, event in self._by_seq(seqs).items()}

    def _by_seq(self, seqs: set[int]) -> dict[int, LedgerEvent]:
        found: dict[int, LedgerEvent] = {}
        wanted = sorted(s for s in seqs if s > 0)
        for start in range(0, len(wanted), 500):
            query = self._select().where(TABLE.c.seq.in_(wanted[start : start + 500]))
            with self.db.reading() as conn:
                rows = [dict(r) for r in conn.execute(query).mappings()]
            for row in rows:
                try:
                    event = _to_event(row)
                except _Unreadable as exc:
                    raise LedgerInvalid(VerifyReport(False, 0, exc.seq, exc.kind, exc.reason).message) from None
                found[event.seq] = event
        return found

    def checkpoint(self) -> tuple[int, str]:
        """(seq, hash) of the head after verifying the chain; (0, 64 zeros) for an empty ledger.

        Raises LedgerInvalid rather than hand an auditor a checkpoint of a broken chain.
        """
        report = self.verify()
        if not report.ok:
            raise LedgerInvalid(report.message)
        return report.head_seq, report.head_hash

    def export(
        self,
        fmt: str,
        out: TextIO,
        *,
        backfill_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Iterable[str] | None = None,
    ) -> int:
        """Write matching events as JSON lines or CSV; return how many were written.

        Each JSON line is ``LedgerEvent.to_json()``: its ``hash`` is SHA-256 over the canonical
        JSON of the line without ``hash``. CSV carries the same fields, payload as canonical JSON.
        """
        if fmt not in EXPORT_FORMATS:
            raise UsageError(f"export format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
        query = self._filtered(backfill_id=backfill_id, since=since, until=until, kinds=kinds).order_by(TABLE.c.seq)
        count = 0
        if fmt == "jsonl":
            for parts in self._export_parts(query):
                out.write(export_line(*parts) + "\n")
                count += 1
            return count
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(EXPORT_COLUMNS)
        for (
            seq,
            at_text,
            actor,
            source,
            backfill_id_,
            window_key,
            kind,
            payload_text,
            prev,
            digest,
        ) in self._export_parts(query):
            writer.writerow(
                [seq, at_text, actor, source, backfill_id_ or "", window_key or "", kind, payload_text, prev, digest]
            )
            count += 1
        return count

    def _export_parts(self, query: Select[Any]) -> Iterator[tuple[Any, ...]]:
        """Each event's exported values in canonical form (time text, payload JSON text), in one
        streamed read; a row the fast path declines goes through ``_to_event`` (which names an
        unreadable one) and is formatted by the reference."""
        sqlite = self.db.dialect == "sqlite"
        names = [c.name for c in TABLE.c]
        shapes = PayloadShapes()
        for row in self._stream(query):
            fields = _fast_fields(row, sqlite, shapes)
            if fields is not None:
                yield fields
                continue
            try:
                event = _to_event(dict(zip(names, row, strict=True)))
            except _Unreadable as exc:
                raise LedgerInvalid(VerifyReport(False, 0, exc.seq, exc.kind, exc.reason).message) from None
            yield (
                event.seq,
                format_at(event.at),
                event.actor,
                event.identity_source,
                event.backfill_id,
                event.window_key,
                event.kind,
                canonical_json(event.payload),
                event.prev_hash,
                event.hash,
            )


class _Statements:
    """The append's statements, written once per dialect and sent with ``exec_driver_sql``: a
    Core ``execute`` spends longer building the statement's cache key and coercing it than
    SQLite spends running it. Values go through the columns' own bind processors (the time's
    storage form on SQLite), so the stored row is the one ``insert(TABLE)`` would write
    (tests/test_ledger_append.py compares them).

    The locked path: ``lock`` (PostgreSQL, Azure SQL; SQLite's writing() already holds the
    write lock), ``head``, ``insert``. In one statement the lock would not do: PostgreSQL reads
    with the snapshot of the statement's start, taken before the lock is granted, so a head read
    in the same statement can miss the event its holder just committed.

    ``insert_after`` (SQLite and PostgreSQL) is the guarded insert: the rows go in only if the
    head is (seq, hash), else none. On SQLite the transaction holds the write lock, so that is
    exact. On PostgreSQL the statement takes the advisory lock itself (so writers of the locked
    path, this release's or an older one's, still take turns with it), but its guard reads the
    statement's snapshot: a writer that committed while it waited for the lock is caught by the
    primary key instead, ``ON CONFLICT (seq) DO NOTHING``. Rows are never updated or deleted and
    every insert extends the head, so seq N + 1 taken means the head moved on. A batch may then
    have gone in partly (the rows past the other writer's): the caller rolls it back.
    """

    def __init__(self, dialect: Dialect) -> None:
        query = select(TABLE.c.seq, TABLE.c.hash).order_by(TABLE.c.seq.desc()).limit(1)
        if dialect.name not in ("sqlite", "postgresql", "mssql"):
            query = query.with_for_update()
        self.head = str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        # Rows are tuples in column order, for every statement: the positional marker of the
        # drivers a ledger runs on (sqlite3 and pyodbc "?", psycopg "%s").
        marker = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(dialect.paramstyle)
        if marker is None:
            raise LedgerError(
                f"ledger: the {dialect.driver} driver's parameter style {dialect.paramstyle} is not supported"
            )
        self._marker = marker
        self._dialect = dialect.name
        self._columns = ", ".join(c.name for c in TABLE.c)
        self._one = "(" + ", ".join([marker] * len(TABLE.c)) + ")"
        self.insert = f"INSERT INTO ledger_events ({self._columns}) VALUES {self._one}"
        processors = ((i, c.type.dialect_impl(dialect).bind_processor(dialect)) for i, c in enumerate(TABLE.c))
        self.processors = [(i, process) for i, process in processors if process is not None]
        self.lock: str | None = None
        if dialect.name == "postgresql":
            self.lock = f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})"
        elif dialect.name == "mssql":
            self.lock = (
                "EXEC sp_getapplock @Resource = 'backfill-ledger', @LockMode = 'Exclusive', "
                "@LockOwner = 'Transaction', @LockTimeout = 30000"
            )
        self.guarded = dialect.name in ("sqlite", "postgresql")
        self._guarded: dict[int, str] = {}

    def row(self, event: LedgerEvent, payload_text: str) -> tuple[Any, ...]:
        values = [
            event.seq,
            event.at,
            event.actor,
            event.identity_source,
            event.backfill_id,
            event.window_key,
            event.kind,
            payload_text,
            event.prev_hash,
            event.hash,
        ]
        for i, process in self.processors:
            values[i] = process(values[i])
        return tuple(values)

    def insert_after(self, conn: Connection, head: tuple[int, str], rows: list[tuple[Any, ...]]) -> int:
        """Insert ``rows`` if ``head`` (seq, hash) is the ledger's head; how many went in."""
        first = rows[:_GUARDED_ROWS]
        values = [value for row in first for value in row]
        inserted = int(conn.exec_driver_sql(self._guarded_sql(len(first)), (*values, *head)).rowcount)
        if inserted == len(first) and len(rows) > len(first):
            # The lock is held and the head is ours: the rest cannot collide.
            conn.exec_driver_sql(self.insert, rows[len(first) :])
            inserted = len(rows)
        return inserted

    def _guarded_sql(self, count: int) -> str:
        found = self._guarded.get(count)
        if found is not None:
            return found
        values = ", ".join([self._one] * count)
        guard = f"({self._marker}, {self._marker}) = (SELECT seq, hash FROM ledger_events ORDER BY seq DESC LIMIT 1)"
        if self._dialect == "postgresql":
            sql = (
                f"WITH append_lock AS (SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})) "
                f"INSERT INTO ledger_events ({self._columns}) SELECT v.* FROM append_lock, (VALUES {values}) AS v "
                f"WHERE {guard} ON CONFLICT (seq) DO NOTHING"
            )
        else:
            sql = f"INSERT INTO ledger_events ({self._columns}) SELECT * FROM (VALUES {values}) WHERE {guard}"
        self._guarded[count] = sql
        return sql


_STATEMENTS: dict[tuple[str, str, str], _Statements] = {}
# Rows in one guarded statement; a larger batch sends the rest as a plain insert after it.
_GUARDED_ROWS = 32
# Guarded inserts one event tries on PostgreSQL before it takes the locked path (each miss means
# another writer appended in between: two writers at once rarely miss twice in a row).
_ALONE_TRIES = 3


def _statements(conn: Connection) -> _Statements:
    dialect = conn.dialect
    key = (dialect.name, dialect.driver, dialect.paramstyle)  # the SQL text depends on all three
    found = _STATEMENTS.get(key)
    if found is None:
        found = _STATEMENTS[key] = _Statements(dialect)
    return found


@contextmanager
def _refusals() -> Iterator[None]:
    """The team ledger trigger's or a missing grant's refusal of an insert as a LedgerError."""
    try:
        yield
    except DBAPIError as exc:
        refusal = _refusal(exc)
        if refusal is None:
            raise
        raise LedgerError(refusal) from None


def _refusal(exc: DBAPIError) -> str | None:
    """The team ledger trigger's or a missing grant's refusal as one line, else None."""
    first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
    if "team ledger:" in first:
        return first[first.index("team ledger:") :]
    if "permission denied" in first:
        return f"ledger: {first}"
    return None


def _check_lengths(actor: Actor, draft: Draft) -> None:
    values = {
        "actor": actor.name,
        "identity_source": actor.source.value,
        "backfill_id": draft.backfill_id,
        "window_key": draft.window_key,
        "kind": draft.kind,
    }
    if not draft.kind:
        raise LedgerError("ledger: an event needs a kind")
    for name, value in values.items():
        if value is not None and len(value) > _LIMITS[name]:
            raise LedgerError(f"ledger: {name} is longer than {_LIMITS[name]} characters")


_HEX64 = re.compile(r"[0-9a-f]{64}")
_QUOTED_LIMIT = 100_000
_PG_CHUNK = 1000
_COLUMNS = "seq, {at}, actor, identity_source, backfill_id, window_key, kind, payload, prev_hash, hash"
_SQLITE_FAST = f"SELECT {_COLUMNS.format(at='at')} FROM ledger_events WHERE seq > ? ORDER BY seq"
# The form SQLAlchemy stores a time in on SQLite, ASCII digits only (fromisoformat also takes
# week dates such as 2026-W01-1, whose canonical form is another text).
_SQLITE_AT = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}")
# On PostgreSQL the server writes the canonical time (format_at) for the years strftime pads to
# four digits, NULL for any other (the reference then reads the row itself).
_PG_IN_RANGE = "at >= TIMESTAMPTZ '1000-01-01 00:00:00+00' AND at < TIMESTAMPTZ '10000-01-01 00:00:00+00'"
_PG_AT = f"""CASE WHEN {_PG_IN_RANGE} THEN to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') END"""
_PG_FAST = f"SELECT {_COLUMNS.format(at=_PG_AT)} FROM ledger_events WHERE seq > %s ORDER BY seq"
_NAMES = [c.name for c in TABLE.c]


def _driver(conn: Connection) -> Any:
    """The DBAPI connection under ``conn`` (same transaction), for a cursor of the driver's own."""
    driver = conn.connection.driver_connection
    assert driver is not None
    return driver


def _quote(memo: dict[Any, str], value: Any) -> str:
    """``value`` as JSON writes a string, remembered; TypeError for anything but a string."""
    if len(memo) > _QUOTED_LIMIT:
        memo.clear()
        memo[None] = "null"
    memo[value] = encoded = json_string(value)
    return encoded


def _prefix(memo: dict[tuple[Any, ...], tuple[str, str]], key: tuple[Any, ...]) -> tuple[str, str]:
    """The hashed text's pieces before and after the time, for (actor, source, kind, backfill);
    TypeError unless all are strings (the backfill may be None)."""
    actor, source, kind, backfill_id = key
    b = "null" if backfill_id is None else json_string(backfill_id)
    pieces = (
        f'{{"actor":{json_string(actor)},"at":"',
        f'","backfill_id":{b},"identity_source":{json_string(source)},"kind":{json_string(kind)},"payload":',
    )
    if len(memo) > _QUOTED_LIMIT:
        memo.clear()
    memo[key] = pieces
    return pieces


_ZERO = timedelta(0)


def _fast_at_text(text: Any) -> str | None:
    """The canonical form (``format_at``) of a time as SQLite stores it
    (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC, ASCII digits, year 1000 on), without building a
    datetime twice; None for any other form (``_to_event`` then says what is wrong with it, or
    formats it itself)."""
    if type(text) is not str or not _SQLITE_AT.fullmatch(text):
        return None
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return None
    # A valid time with every digit where ours are: the digits are the ones strftime writes.
    return f"{text[:10]}T{text[11:]}Z"


def _fast_at(value: Any) -> str | None:
    """``format_at`` of an aware datetime as PostgreSQL's driver returns it; None otherwise."""
    if type(value) is not datetime or value.tzinfo is None or value.year < 1000:
        return None
    if value.utcoffset() != _ZERO:
        value = value.astimezone(UTC)
        if value.year < 1000:
            return None
    # isoformat pads the year to four digits, as strftime does from year 1000 on.
    stamp: str = value.isoformat(timespec="microseconds")
    return stamp[:26] + "Z"


FastFields = tuple[int, str, str, str, str | None, str | None, str, str, str, str]


def _fast_fields(row: Sequence[Any], sqlite: bool, shapes: PayloadShapes) -> FastFields | None:
    """A ledger row as verify's and export's fast paths read it: seq, the canonical time text,
    actor, source, backfill, window, kind, the canonical payload text, prev_hash and hash; None
    when any column is not of its expected type (the reference path then decides and names it)."""
    seq, at, actor, source, backfill_id, window_key, kind, payload_text, prev_hash, digest = row
    at_text = _fast_at_text(at) if sqlite else _fast_at(at)
    check = shapes.current.get(kind) if type(payload_text) is str else None
    parsed = payload_text if check is not None and check(payload_text) else shapes.canonical(kind, payload_text)
    if (
        at_text is not None
        and parsed is not None
        and type(seq) is int
        and type(actor) is str
        and type(source) is str
        and type(kind) is str
        and (backfill_id is None or type(backfill_id) is str)
        and (window_key is None or type(window_key) is str)
        and type(prev_hash) is str
        and type(digest) is str
    ):
        return seq, at_text, actor, source, backfill_id, window_key, kind, parsed, prev_hash, digest
    return None


def _to_event(row: Mapping[str, Any]) -> LedgerEvent:
    seq = int(row["seq"])
    kind = row["kind"] if isinstance(row["kind"], str) else None
    at = row["at"]
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at)
        except ValueError:
            raise _Unreadable(seq, kind, f"unreadable: time {at!r} is not a timestamp") from None
    if not isinstance(at, datetime):
        raise _Unreadable(seq, kind, f"unreadable: time {at!r} is not a timestamp")
    # SQLite keeps no offset; every stored time was written in UTC.
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    try:
        payload = json.loads(row["payload"])
    except (TypeError, ValueError):
        raise _Unreadable(seq, kind, "unreadable: payload is not JSON") from None
    if not isinstance(payload, dict):
        raise _Unreadable(seq, kind, "unreadable: payload is not a JSON object")
    return LedgerEvent(
        seq=seq,
        at=at,
        actor=str(row["actor"]),
        identity_source=str(row["identity_source"]),
        backfill_id=row["backfill_id"],
        window_key=row["window_key"],
        kind=str(row["kind"]),
        payload=payload,
        prev_hash=str(row["prev_hash"]),
        hash=str(row["hash"]),
    )

"""Window claims: how several workers running the same backfill share out its windows (spec §7).

``window_claims`` holds one row per (backfill, window, attempt). ``seed`` writes attempt 0 (no
worker) for every window a worker may run; a worker claims a window by locking the row of its
latest attempt and inserting attempt + 1 in the same transaction:

- PostgreSQL and MariaDB: ``SELECT ... FOR UPDATE SKIP LOCKED`` (a locked window is skipped, not
  waited for);
- Azure SQL: ``WITH (UPDLOCK, READPAST, ROWLOCK)`` (the same, in T-SQL; written, not tested here);
- SQLite: claims are ``Database.writing()`` transactions (``BEGIN IMMEDIATE``), so claimers are
  serialised.

The unique constraint on (backfill_id, window_key, attempt) is the last guard: two workers that
both saw the same attempt as the latest cannot both insert the next one.

Unlike the ledger, this table is coordination state, not a record: a worker renews the lease of
its claims (``lease_until``) while it works and sets ``released_at`` when done, both by UPDATE. A
claim is free again when released, when its lease ran out (a worker on another machine died), or
at once when its worker was a process on this machine that no longer exists (``kill -9``).
What happened to a window is decided by the ledger alone; a claim only says who works on it now.
``Claims`` is the runner's claims port (``backfill.runner.ports.ClaimsPort``), structurally.

Spec §14: a window is also claimed under its *identity* (factory, pipeline, matched parameter
values), whichever backfill holds it: rows with ``backfill_id = IDENTITY_SCOPE`` and the identity's
hash (``identity_key``; both in ``backfill.runner.machine``) as ``window_key``, claimed and
renewed exactly like a backfill's windows. ``confirm`` is what the runner asks right before
createRun: a claim confirmed within the last few seconds (monotonic clock) with an unexpired
lease, or else renewed in the database now.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, UniqueConstraint, func
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Field, Session, col, select

from backfill.runner.ports import DEFAULT_LEASE, Claim
from backfill.store.database import Database
from backfill.store.orm import TableModel
from backfill.timeutil import utcnow

SEED_CHUNK = 500


class WindowClaim(TableModel, table=True):
    __tablename__ = "window_claims"
    __table_args__ = (UniqueConstraint("backfill_id", "window_key", "attempt", name="uq_window_claims_attempt"),)

    id: int | None = Field(default=None, primary_key=True)
    backfill_id: str = Field(max_length=64, index=True)
    window_key: str = Field(max_length=64)
    attempt: int
    # host:pid:nonce of the claiming process; "" on the seed row (attempt 0).
    worker: str = Field(default="", max_length=255)
    claimed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    lease_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    released_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes for timezone-aware columns; everything stored here is UTC.
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _process_gone(worker: str) -> bool:
    """True when ``worker`` was a process on this host that no longer exists.

    A recycled PID only makes us wait for the lease, never take a live worker's window.
    """
    host, _, rest = worker.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def is_free(row: WindowClaim, now: datetime, me: str) -> bool:
    """May a worker ``me`` take the window whose latest claim row is ``row``?"""
    if not row.worker or row.released_at is not None:
        return True
    if row.worker == me:
        return False
    lease = _utc(row.lease_until)
    if lease is not None and lease < now:
        return True
    return _process_gone(row.worker)


class Claims:
    """Claims of one worker process (``worker``) in the ledger database."""

    def __init__(self, db: Database, *, worker: str | None = None, lease: timedelta = DEFAULT_LEASE) -> None:
        self.db = db
        self.worker = worker or new_worker_id()
        self.lease = lease
        # (backfill_id, window_key, attempt) -> (monotonic time, lease_until) of the last time the
        # database said the claim is ours: what ``confirm`` trusts for a few seconds.
        self._confirmed: dict[tuple[str, str, int], tuple[float, datetime]] = {}

    def as_worker(self, worker: str) -> Claims:
        """The same claims table under another worker name, with the same database and lease."""
        return Claims(self.db, worker=worker, lease=self.lease)

    @contextmanager
    def _session(self, *, writes: bool) -> Iterator[Session]:
        """An ORM session inside one ``Database.reading()``/``writing()`` transaction (which
        decides the lock); what it added is flushed before that transaction commits."""
        transaction = self.db.writing() if writes else self.db.reading()
        with transaction as conn, Session(bind=conn) as session:
            yield session
            session.flush()

    def seed(self, backfill_id: str, keys: Sequence[str]) -> None:
        """Make sure every window in ``keys`` has its attempt-0 row (idempotent, race-safe)."""
        for start in range(0, len(keys), SEED_CHUNK):
            chunk = list(dict.fromkeys(keys[start : start + SEED_CHUNK]))
            for _ in range(3):
                try:
                    with self._session(writes=True) as session:
                        # Only the keys asked for: identity claims share one backfill_id.
                        present = set(
                            session.exec(
                                select(WindowClaim.window_key)
                                .where(WindowClaim.backfill_id == backfill_id, col(WindowClaim.window_key).in_(chunk))
                                .distinct()
                            )
                        )
                        for key in chunk:
                            if key not in present:
                                session.add(WindowClaim(backfill_id=backfill_id, window_key=key, attempt=0))
                    break
                except (IntegrityError, OperationalError):
                    continue  # another worker seeded some of them at the same moment: look again

    def claim(self, backfill_id: str, keys: Sequence[str]) -> Claim | None:
        """Claim the first free window of ``keys`` (in that order), or None when all are taken."""
        for key in keys:
            try:
                claim = self._try_claim(backfill_id, key)
            except (IntegrityError, OperationalError):
                # The unique constraint (or a deadlock victim) says another worker won the race.
                continue
            if claim is not None:
                return claim
        return None

    def _try_claim(self, backfill_id: str, key: str) -> Claim | None:
        now = utcnow()
        with self._session(writes=True) as session:
            row = self._lock_latest(session, backfill_id, key)
            if row is None or not is_free(row, now, self.worker):
                return None
            lease_until = now + self.lease
            session.add(
                WindowClaim(
                    backfill_id=backfill_id,
                    window_key=key,
                    attempt=row.attempt + 1,
                    worker=self.worker,
                    claimed_at=now,
                    lease_until=lease_until,
                )
            )
            session.flush()
            claim = Claim(backfill_id, key, row.attempt + 1, self.worker, lease_until)
        self._confirmed[(backfill_id, key, claim.attempt)] = (time.monotonic(), lease_until)
        return claim

    def _lock_latest(self, session: Session, backfill_id: str, key: str) -> WindowClaim | None:
        latest = (
            select(func.max(WindowClaim.attempt))
            .where(WindowClaim.backfill_id == backfill_id, WindowClaim.window_key == key)
            .scalar_subquery()
        )
        query = select(WindowClaim).where(
            WindowClaim.backfill_id == backfill_id,
            WindowClaim.window_key == key,
            WindowClaim.attempt == latest,
        )
        dialect = self.db.dialect
        if dialect in ("postgresql", "mysql", "mariadb"):
            query = query.with_for_update(skip_locked=True)
        elif dialect == "mssql":
            # T-SQL has no FOR UPDATE on a plain SELECT: the table hints take the update lock
            # and skip rows other transactions hold.
            query = query.with_hint(WindowClaim, "WITH (UPDLOCK, READPAST, ROWLOCK)", "mssql")
        return session.exec(query).first()

    def renew(self, claim: Claim) -> bool:
        """Extend the lease; False when the claim was lost (released, or taken by a newer attempt)."""
        started = time.monotonic()
        with self._session(writes=True) as session:
            # Our own row first, locked: a worker taking the window over holds that lock while it
            # inserts the next attempt, so we wait for it and then see its row below.
            own = select(WindowClaim).where(
                WindowClaim.backfill_id == claim.backfill_id,
                WindowClaim.window_key == claim.window_key,
                WindowClaim.attempt == claim.attempt,
            )
            newer = select(WindowClaim.id).where(
                WindowClaim.backfill_id == claim.backfill_id,
                WindowClaim.window_key == claim.window_key,
                col(WindowClaim.attempt) > claim.attempt,
            )
            if self.db.dialect in ("postgresql", "mysql", "mariadb"):
                own = own.with_for_update()
                # A locking read sees the newest committed rows (MariaDB's plain reads would not).
                newer = newer.with_for_update()
            mine = session.exec(own).first()
            if mine is None or mine.worker != self.worker or mine.released_at is not None:
                return False
            if session.exec(newer).first() is not None:
                return False
            # A lapsed lease with no newer attempt: nobody took the window over, so it is still ours.
            now = utcnow()
            mine.lease_until = now + self.lease
            session.add(mine)
        self._confirmed[(claim.backfill_id, claim.window_key, claim.attempt)] = (started, now + self.lease)
        return True

    def confirm(self, claim: Claim, within: timedelta) -> bool:
        """True when the claim is provably still ours: confirmed by the database less than
        ``within`` ago (monotonic time) with its lease unexpired (wall clock), or renewed now.
        A runner paused past its lease (SIGSTOP, a VM pause) fails both and must not send."""
        seen = self._confirmed.get((claim.backfill_id, claim.window_key, claim.attempt))
        if seen is not None:
            at, lease_until = seen
            if time.monotonic() - at < within.total_seconds() and utcnow() < lease_until:
                return True
        return self.renew(claim)

    def holders(self, backfill_id: str, key: str) -> set[str]:
        """Every worker that ever claimed the window (the seed row's "" left out)."""
        with self._session(writes=False) as session:
            rows = session.exec(
                select(WindowClaim.worker).where(WindowClaim.backfill_id == backfill_id, WindowClaim.window_key == key)
            ).all()
        return {worker for worker in rows if worker}

    def others_since(self, backfill_id: str, key: str, since: datetime) -> bool:
        """Whether a worker other than this one held the window's claim at any time since
        ``since`` (or may still hold it): then someone else may have acted on the window."""
        with self._session(writes=False) as session:
            rows = session.exec(
                select(WindowClaim.worker, WindowClaim.released_at, WindowClaim.lease_until).where(
                    WindowClaim.backfill_id == backfill_id, WindowClaim.window_key == key
                )
            ).all()
        for worker, released_at, lease_until in rows:
            if not worker or worker == self.worker:
                continue
            ended = _utc(released_at) or _utc(lease_until)
            if ended is None or ended >= since:
                return True
        return False

    def release(self, claim: Claim) -> None:
        with self._session(writes=True) as session:
            row = session.exec(
                select(WindowClaim).where(
                    WindowClaim.backfill_id == claim.backfill_id,
                    WindowClaim.window_key == claim.window_key,
                    WindowClaim.attempt == claim.attempt,
                    WindowClaim.worker == self.worker,
                )
            ).first()
            if row is not None and row.released_at is None:
                row.released_at = utcnow()
                session.add(row)

    def held_by_others(self, backfill_id: str) -> dict[str, str]:
        """Windows another live worker holds now: window key -> worker."""
        now = utcnow()
        latest: dict[str, WindowClaim] = {}
        with self._session(writes=False) as session:
            for row in session.exec(select(WindowClaim).where(WindowClaim.backfill_id == backfill_id)):
                if row.window_key not in latest or row.attempt > latest[row.window_key].attempt:
                    latest[row.window_key] = row
            return {
                key: row.worker
                for key, row in latest.items()
                if row.worker and row.worker != self.worker and not is_free(row, now, self.worker)
            }

"""Sending notifications after the ledger event is written, off the writer's thread.

``install(targets, console_url)`` listens to every committed ledger append (``Ledger``'s
``backfill.store.committed`` hook). Messages are queued and sent by one background thread, each retried with
backoff (0.5 s, 1 s, 2 s); a target that still fails is recorded as a ``notify.failed`` event
(the target's kind and the HTTP status or error class, never its URL, which is a secret), and the
backfill goes on either way. At exit the queue is given a few seconds to drain.
"""

from __future__ import annotations

import atexit
import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

from backfill.errors import BackfillError

if TYPE_CHECKING:
    # Every command installs the notifier, most never send a notice (``status``, ``ledger
    # verify``): the messages, the targets and the identities are imported where one is sent.
    from backfill.chain import LedgerEvent
    from backfill.identity import IdentitySource
    from backfill.notify.messages import Notice
    from backfill.notify.targets import Target

    # Imported where a notice is sent: every command installs the notifier, and SQLAlchemy's
    # import (0.2 s) must not land on ``plan check`` and the other commands that need no ledger.
    from backfill.store.database import Database

FAILED_KIND = "notify.failed"
BACKOFF = (0.5, 1.0, 2.0)
DRAIN_AT_EXIT = 10.0
TIMEOUT = 10.0

Post = Callable[[str, bytes], int]


def http_post(url: str, data: bytes) -> int:
    import httpx

    response = httpx.post(url, content=data, headers={"content-type": "application/json"}, timeout=TIMEOUT)
    return int(response.status_code)


@dataclass(frozen=True)
class _Job:
    # The ledger's URL, not the command's Database: holding that object here would keep its
    # connections (and SQLite's -wal and -shm files) alive after the command let go of it.
    ledger_url: str
    notice: Notice
    event: LedgerEvent


PlanTargets = Callable[[str, str], Sequence["Target"]]


def plan_targets(ledger_url: str, backfill_id: str) -> list[Target]:
    """The ``[notify] targets`` of the backfill's plan (as ``run`` reads it: relative windows as at
    the request), or none when the plan cannot be read any more."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.exc import SQLAlchemyError

    from backfill.notify.targets import parse_targets
    from backfill.plan.loader import load_plan
    from backfill.store.backfills import TABLE

    try:
        # An engine of its own, disposed at once: this thread may outlive the command's database,
        # and a connection left open would keep SQLite's -wal and -shm files after it exits.
        engine = create_engine(ledger_url)
        try:
            with engine.connect() as conn:
                query = select(TABLE.c.plan_path, TABLE.c.requested_at).where(TABLE.c.id == backfill_id)
                row = conn.execute(query).first()
        finally:
            engine.dispose()
        if row is None:
            return []
        plan_path, requested_at = str(row[0]), row[1]
        # Most plans name no webhook: read the file, parse it only when it may.
        if "notify" not in Path(plan_path).read_text(encoding="utf-8"):
            return []
        at = requested_at if requested_at.tzinfo else requested_at.replace(tzinfo=UTC)
        loaded = load_plan(plan_path, now=at)
    except (BackfillError, OSError, UnicodeDecodeError, SQLAlchemyError):
        return []
    return [t for text in loaded.plan.notify.targets for t in parse_targets(text, "notify.targets")]


class Notifier:
    """One queue and one sender thread for a process."""

    def __init__(
        self,
        targets: Sequence[Target],
        console_url: str,
        post: Post = http_post,
        backoff: Sequence[float] = BACKOFF,
        per_plan: PlanTargets | None = plan_targets,
    ) -> None:
        self.targets = list(targets)
        self.console_url = console_url
        self.post = post
        self.backoff = tuple(backoff)
        self.per_plan = per_plan
        self._plans: dict[str, list[Target]] = {}
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="backfill-notify", daemon=True)
        self._thread.start()

    def __call__(self, db: Database, events: list[LedgerEvent]) -> None:
        """The ledger hook: queue a message per target for each event worth telling. Never raises."""
        try:
            from backfill.notify.messages import notice_for

            for event in events:
                notice = notice_for(event, self.console_url)
                if notice is not None:
                    self._queue.put(_Job(db.url, notice, event))
        except Exception:  # a notification never stops the writer
            return

    def drain(self, timeout: float = DRAIN_AT_EXIT) -> bool:
        """Wait until every queued message was sent or recorded as failed; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is not None:
                    for target in self._targets_of(job):
                        self._send(job, target)
            finally:
                job = None
                self._queue.task_done()

    def _targets_of(self, job: _Job) -> list[Target]:
        """``BACKFILL_NOTIFY``'s targets and the backfill's plan's, read once per backfill (here,
        off the writer's thread: loading a plan of a year of windows takes a moment)."""
        bid = job.notice.backfill_id
        if self.per_plan is not None and bid not in self._plans:
            try:
                self._plans[bid] = list(self.per_plan(job.ledger_url, bid))
            except Exception:
                self._plans[bid] = []
        return [*self.targets, *self._plans.get(bid, [])]

    def _send(self, job: _Job, target: Target) -> None:
        from backfill.notify.messages import body

        data = json.dumps(body(target.kind, job.notice)).encode()
        why = "not sent"
        for attempt, pause in enumerate((0.0, *self.backoff)):
            if attempt:
                time.sleep(pause)
            try:
                status = self.post(target.resolve(), data)
            except BackfillError as exc:  # an unset ${VAR}: retrying will not set it
                why = str(exc)
                break
            except Exception as exc:
                # The exception's text may quote the URL (a secret): only its class is kept.
                why = type(exc).__name__
                continue
            if 200 <= status < 300:
                return
            why = f"HTTP {status}"
        self._record_failure(job, target, why, attempt + 1)

    def _record_failure(self, job: _Job, target: Target, why: str, attempts: int) -> None:
        from backfill.identity import Actor
        from backfill.store.ledger import Ledger

        payload = {"target": target.kind, "event_seq": job.event.seq, "event": job.event.kind, "reason": why}
        payload["attempts"] = attempts
        actor = Actor(job.event.actor, _source(job.event.identity_source))
        try:
            from backfill.store.database import Database

            db = Database(job.ledger_url, create=False)
            try:
                Ledger(db).append(FAILED_KIND, payload, actor=actor, backfill_id=job.event.backfill_id)
            finally:
                db.dispose()
        except Exception:  # the ledger refusing the record must not kill the sender either
            return


def _source(value: str) -> IdentitySource:
    from backfill.identity import IdentitySource

    try:
        return IdentitySource(value)
    except ValueError:
        return IdentitySource.DECLARED


_installed: Notifier | None = None
_installed_for: tuple[str, str] | None = None


def install(
    targets: Sequence[Target], console_url: str, post: Post = http_post, per_plan: PlanTargets | None = plan_targets
) -> Notifier:
    """Listen to committed ledger appends; notify ``targets`` and each backfill's plan's."""
    global _installed
    from backfill.store import committed as ledger

    if _installed is not None and _installed in ledger.COMMITTED:
        ledger.COMMITTED.remove(_installed)
    notifier = Notifier(targets, console_url, post, per_plan=per_plan)
    ledger.COMMITTED.append(notifier)
    _installed = notifier
    atexit.register(notifier.drain)
    return notifier


def uninstall() -> None:
    global _installed, _installed_for
    from backfill.store import committed as ledger

    if _installed is not None and _installed in ledger.COMMITTED:
        ledger.COMMITTED.remove(_installed)
    _installed = None
    _installed_for = None


def install_from_env() -> Notifier:
    """``BACKFILL_NOTIFY``'s targets and the plans' ``[notify]``, linking to ``BACKFILL_CONSOLE_URL``
    (default: the local console)."""
    import os

    global _installed_for
    value = os.environ.get("BACKFILL_NOTIFY", "").strip()
    console = os.environ.get("BACKFILL_CONSOLE_URL", "").strip() or "http://127.0.0.1:8484"
    if _installed is not None and _installed_for == (value, console):
        return _installed  # commands run in one process (the demo, tests) share the sender
    targets: list[Target] = []
    if value:  # most shells set no webhook: the parser is imported only for one
        from backfill.notify.targets import parse_targets

        targets = parse_targets(value)
    notifier = install(targets, console)
    _installed_for = (value, console)
    return notifier

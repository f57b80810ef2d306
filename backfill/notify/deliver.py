"""Sending notifications after the ledger event is written, off the writer's thread.

``install(targets, console_url)`` listens to every committed ledger append (``Ledger``'s
``COMMITTED`` hook). Messages are queued and sent by one background thread, each retried with
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

from backfill.chain import LedgerEvent
from backfill.errors import BackfillError
from backfill.identity import Actor, IdentitySource
from backfill.notify.messages import Notice, body, notice_for
from backfill.notify.targets import Target
from backfill.store.database import Database

FAILED_KIND = "notify.failed"
BACKOFF = (0.5, 1.0, 2.0)
DRAIN_AT_EXIT = 10.0
TIMEOUT = 10.0

Post = Callable[[str, bytes], int]


def http_post(url: str, data: bytes) -> int:
    import httpx2

    response = httpx2.post(url, content=data, headers={"content-type": "application/json"}, timeout=TIMEOUT)
    return int(response.status_code)


@dataclass(frozen=True)
class _Job:
    db: Database
    target: Target
    notice: Notice
    event: LedgerEvent


class Notifier:
    """One queue and one sender thread for a process."""

    def __init__(
        self, targets: Sequence[Target], console_url: str, post: Post = http_post, backoff: Sequence[float] = BACKOFF
    ) -> None:
        self.targets = list(targets)
        self.console_url = console_url
        self.post = post
        self.backoff = tuple(backoff)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="backfill-notify", daemon=True)
        self._thread.start()

    def __call__(self, db: Database, events: list[LedgerEvent]) -> None:
        """The ledger hook: queue a message per target for each event worth telling. Never raises."""
        try:
            for event in events:
                notice = notice_for(event, self.console_url)
                if notice is None:
                    continue
                for target in self.targets:
                    self._queue.put(_Job(db, target, notice, event))
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
                    self._send(job)
            finally:
                self._queue.task_done()

    def _send(self, job: _Job) -> None:
        data = json.dumps(body(job.target.kind, job.notice)).encode()
        why = "not sent"
        for attempt, pause in enumerate((0.0, *self.backoff)):
            if attempt:
                time.sleep(pause)
            try:
                status = self.post(job.target.resolve(), data)
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
        self._record_failure(job, why, attempt + 1)

    def _record_failure(self, job: _Job, why: str, attempts: int) -> None:
        from backfill.store.ledger import Ledger

        payload = {"target": job.target.kind, "event_seq": job.event.seq, "event": job.event.kind, "reason": why}
        payload["attempts"] = attempts
        actor = Actor(job.event.actor, _source(job.event.identity_source))
        try:
            Ledger(job.db).append(FAILED_KIND, payload, actor=actor, backfill_id=job.event.backfill_id)
        except Exception:  # the ledger refusing the record must not kill the sender either
            return


def _source(value: str) -> IdentitySource:
    try:
        return IdentitySource(value)
    except ValueError:
        return IdentitySource.DECLARED


_installed: Notifier | None = None


def install(targets: Sequence[Target], console_url: str, post: Post = http_post) -> Notifier | None:
    """Listen to committed ledger appends and notify ``targets`` (no-op without targets)."""
    global _installed
    from backfill.store import ledger

    if not targets:
        return None
    if _installed is not None and _installed in ledger.COMMITTED:
        ledger.COMMITTED.remove(_installed)
    notifier = Notifier(targets, console_url, post)
    ledger.COMMITTED.append(notifier)
    _installed = notifier
    atexit.register(notifier.drain)
    return notifier


def uninstall() -> None:
    global _installed
    from backfill.store import ledger

    if _installed is not None and _installed in ledger.COMMITTED:
        ledger.COMMITTED.remove(_installed)
    _installed = None


def install_from_env() -> Notifier | None:
    """``BACKFILL_NOTIFY`` targets, linking to ``BACKFILL_CONSOLE_URL`` (default the local console)."""
    import os

    from backfill.notify.targets import parse_targets

    value = os.environ.get("BACKFILL_NOTIFY", "").strip()
    if not value:
        return None
    console = os.environ.get("BACKFILL_CONSOLE_URL", "").strip() or "http://127.0.0.1:8484"
    return install(parse_targets(value), console)

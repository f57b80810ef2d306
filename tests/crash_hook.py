"""The crash harness's hook: it kills the runner at a chosen ledger step, to prove crash safety.

It lives in the tests, never in the package: the installed ``backfill run`` reads no kill switch
(a stray variable in an operator's shell must not SIGKILL it). ``tests/crash_runner.py`` installs
it from the environment through the runner's ``StepHook`` port (``backfill.runner.ports``) and runs
the real CLI.

``BACKFILL_CRASH_AT="window.intent:2"`` makes the process SIGKILL itself right after it appended
its 2nd ``window.intent`` event; ``"before:window.created:1"`` kills it just before appending its
1st ``window.created`` (createRun has answered, the run exists, the ledger does not know it yet).
Counts are per process. Unset, the hook does nothing.
SIGKILL and not an exception: no ``finally``, no flush, no atexit, exactly like ``kill -9``.
``BACKFILL_CRASH_SIGNAL=STOP`` sends SIGSTOP instead: the process freezes at that step (a VM
pause, a closed laptop lid) until someone sends SIGCONT.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ENV = "BACKFILL_CRASH_AT"
SIGNAL_ENV = "BACKFILL_CRASH_SIGNAL"
RUNNER = Path(__file__).with_name("crash_runner.py")
# Kill points across a window's life; the runner counts events per process, so ":2" strikes at
# the second window a resumed runner reaches, whatever it is. Every point is reached while a window
# is left (a point never reached would let the runner finish everything): "before:window.created"
# leaves a run ADF created but the ledger does not know (resumed by adoption), "after:window.intent"
# an intent whose createRun was never sent (resumed by a definitive reconciliation, then a create).
KILL_POINTS = [
    "after:backfill.started:1",
    "after:window.intent:1",
    "after:window.intent:2",
    "before:window.created:1",
    "before:window.created:2",
    "after:window.created:1",
    "after:window.created:2",
    "after:window.status:1",
    "before:window.finished:1",
    "after:window.finished:1",
]
# The points every runner reaches whatever the machine's load. A window.status event is written
# only when a poll sees the run still going, and on a loaded machine the first poll can find it
# already finished: a cycle drawn at that point then runs the rest of the backfill unkilled. A kill
# there leaves the same state as "after:window.created" (the run is known; the resumed runner
# follows it again), so the harness draws from these.
REACHED_POINTS = [point for point in KILL_POINTS if ":window.status:" not in point]


def crash_command(*args: str) -> list[str]:
    """``backfill ARGS`` as a subprocess command line, with this hook installed from the environment."""
    return [sys.executable, str(RUNNER), *args]


@dataclass(frozen=True)
class CrashPoint:
    when: str  # "before" or "after"
    kind: str
    nth: int

    @classmethod
    def parse(cls, text: str) -> CrashPoint:
        parts = text.strip().split(":")
        when = "after"
        if parts and parts[0] in ("before", "after"):
            when = parts.pop(0)
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) < 1 or not parts[0]:
            raise ValueError(f"{ENV}={text!r}: expected [before:|after:]KIND:N, e.g. window.intent:2")
        return cls(when, parts[0], int(parts[1]))


class CrashHook:
    def __init__(self, point: CrashPoint | None, signum: int = signal.SIGKILL) -> None:
        self.point = point
        self.signum = signum
        # Held by the claim heartbeat while it writes: a SIGSTOP taken under it never freezes the
        # process inside a transaction (a paused SQLite writer would lock everyone else out).
        self.quiet = threading.Lock()
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> CrashHook:
        text = os.environ.get(ENV, "").strip()
        stop = os.environ.get(SIGNAL_ENV, "").strip().upper() in ("STOP", "SIGSTOP")
        return cls(CrashPoint.parse(text) if text else None, signal.SIGSTOP if stop else signal.SIGKILL)

    def before(self, kind: str) -> None:
        self._maybe("before", kind, self._seen[kind] + 1)

    def after(self, kind: str) -> None:
        with self._lock:
            self._seen[kind] += 1
            count = self._seen[kind]
        self._maybe("after", kind, count)

    def _maybe(self, when: str, kind: str, count: int) -> None:
        point = self.point
        if point is not None and point.when == when and point.kind == kind and point.nth == count:
            # To this thread, not the process: kill(getpid()) is taken by the main thread, and a
            # worker thread runs on (past its claim check, into createRun) until the group stop
            # reaches it. Sent to the calling thread, the stop or kill takes it at once.
            if self.signum == signal.SIGSTOP:
                with self.quiet:
                    signal.pthread_kill(threading.get_ident(), self.signum)
                return
            signal.pthread_kill(threading.get_ident(), self.signum)

"""The runner's ports: what it needs from the ledger, the window claims, the clock and the crash
harness, as small protocols (the factory's is ``backfill.factory.protocol.Factory``).

The runner imports these and never a store module: ``backfill.store.ledger.Ledger`` and
``backfill.store.claims.Claims`` satisfy them structurally, and a test can hand the runner
anything else that does. ``Claim`` is the value a claims port deals in, so it is defined here and
the store builds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from backfill.chain import Draft, LedgerEvent
from backfill.identity import Actor

# How long a claim lasts unless its worker renews it.
DEFAULT_LEASE = timedelta(minutes=2)


@dataclass(frozen=True)
class Claim:
    """One worker's hold on one window (or window identity) of a backfill, until ``lease_until``."""

    backfill_id: str
    window_key: str
    attempt: int
    worker: str
    lease_until: datetime


class LedgerPort(Protocol):
    """Appends events to the hash-chained ledger and reads them back in seq order."""

    def append(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        actor: Actor,
        backfill_id: str | None = None,
        window_key: str | None = None,
    ) -> LedgerEvent: ...

    def append_many(self, drafts: Iterable[Draft], *, actor: Actor) -> list[LedgerEvent]:
        """Several events in one transaction, consecutive in the chain (one commit, one fsync)."""
        ...

    def events(
        self,
        *,
        backfill_id: str | None = None,
        kinds: Iterable[str] | None = None,
        after_seq: int | None = None,
    ) -> list[LedgerEvent]: ...


class ClaimsPort(Protocol):
    """Window claims shared by every worker of every backfill (spec §7, §14)."""

    @property
    def worker(self) -> str: ...

    @property
    def lease(self) -> timedelta: ...

    def as_worker(self, worker: str) -> ClaimsPort:
        """The same claims under another worker name (same store, same lease)."""
        ...

    def seed(self, backfill_id: str, keys: Sequence[str]) -> None: ...

    def claim(self, backfill_id: str, keys: Sequence[str]) -> Claim | None: ...

    def renew(self, claim: Claim) -> bool: ...

    def confirm(self, claim: Claim, within: timedelta) -> bool: ...

    def holders(self, backfill_id: str, key: str) -> set[str]: ...

    def others_since(self, backfill_id: str, key: str, since: datetime) -> bool: ...

    def release(self, claim: Claim) -> None: ...


class Clock(Protocol):
    """Now, in UTC (``backfill.timeutil.utcnow`` in production)."""

    def __call__(self) -> datetime: ...


class Sleep(Protocol):
    """Waits ``seconds`` (``time.sleep`` in production)."""

    def __call__(self, seconds: float, /) -> object: ...


class StepHook(Protocol):
    """The runner's port around each ledger append; production passes none (``NO_HOOK``).

    The crash harness (tests/crash_hook.py) plugs in here to kill or freeze the runner at a chosen
    step; nothing in the package reads a kill switch from the environment. ``quiet`` is held by the
    claim heartbeat while it writes, so a hook that freezes the process never does it mid-write."""

    @property
    def quiet(self) -> AbstractContextManager[object]: ...

    def before(self, kind: str) -> None: ...

    def after(self, kind: str) -> None: ...


class _NoHook:
    quiet: AbstractContextManager[object] = nullcontext()

    def before(self, kind: str) -> None:
        pass

    def after(self, kind: str) -> None:
        pass


NO_HOOK: StepHook = _NoHook()

"""The ledger's use cases: show, verify (chain, checkpoints, anchors), checkpoint, export,
team mode, signing keys."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from backfill.errors import LedgerError, LedgerInvalid

if TYPE_CHECKING:
    from backfill.anchors import SignedCheckpoint
    from backfill.chain import LedgerEvent
    from backfill.store.database import Database
    from backfill.store.ledger import Ledger


@contextmanager
def _reading(db: Database | None) -> Iterator[Ledger]:
    """The ledger for reading: a database holding none of backfill's tables is refused, not
    given a schema."""
    from backfill.store.ledger import Ledger

    if db is not None:
        yield Ledger(db)
        return
    from sqlalchemy.exc import SQLAlchemyError

    from backfill.store.database import opened

    with ExitStack() as stack:
        try:
            database = stack.enter_context(opened(create=False))
        except SQLAlchemyError as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise LedgerError(f"ledger database unreachable: {detail}") from None
        yield Ledger(database)


def _origin(store: Ledger) -> str:
    origin = store.db.meta().get("origin")
    if origin is None:  # an empty view of a ledger not created yet
        raise LedgerError(f"ledger {store.db.display_url}: no ledger yet, nothing is anchored")
    return origin


def ledger_events(
    *,
    backfill_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    kinds: Sequence[str] | None = None,
    db: Database | None = None,
) -> list[LedgerEvent]:
    """Ledger events in sequence order."""
    with _reading(db) as store:
        return list(store.events(backfill_id=backfill_id, since=since, until=until, kinds=kinds))


@dataclass(frozen=True)
class Verification:
    message: str
    anchors: Sequence[SignedCheckpoint] = ()  # the signed checkpoints it extends (with ``anchors``)


def verify_ledger(
    *,
    checkpoint: tuple[int, str] | None = None,
    anchors: str | None = None,
    key_path: Path | None = None,
    db: Database | None = None,
) -> Verification:
    """Recompute the hash chain (LedgerInvalid, exit 5, naming the first bad event); also prove it
    extends ``checkpoint`` and every checkpoint signed with ``key_path``'s key at ``anchors``."""
    public = None
    if key_path is not None:
        from backfill.anchors import load_public_key

        public = load_public_key(key_path)
    with _reading(db) as store:
        if checkpoint is None:
            # The newest head a `run` on this machine verified: a ledger shrunk below it is tampering.
            from backfill.store.seen import seen_checkpoint

            checkpoint = seen_checkpoint(store.db.url)
        report = store.verify(checkpoint)
        if not report.ok:
            raise LedgerInvalid(report.message)
        from backfill.store.backfills import verify_requests

        # The backfills rows sit outside the chain: each must agree with its request event (spec §15).
        problem = verify_requests(store.db)
        if problem is not None:
            raise LedgerInvalid(problem)
        if anchors is not None and public is not None:
            from backfill.anchors import check_anchors

            checked = check_anchors(anchors, public, _origin(store), report.head_seq, store.hashes_at)
            return Verification(report.message, checked)
    return Verification(report.message)


@dataclass(frozen=True)
class Checkpoint:
    head: tuple[int, str]
    document: str | None = None  # signed (with a key)
    published_to: str | None = None  # where the signed document was written


def ledger_checkpoint(
    *, key_path: Path | None = None, publish: str | None = None, db: Database | None = None
) -> Checkpoint:
    """The verified head; signed with ``key_path``'s key, and published to ``publish``."""
    with _reading(db) as store:
        head = store.checkpoint()
        if key_path is None:
            return Checkpoint(head)
        from backfill.anchors import destination, load_private_key, sign

        signed = sign(load_private_key(key_path), _origin(store), head[0], head[1])
    if publish is None:
        return Checkpoint(head, signed.document())
    return Checkpoint(head, signed.document(), destination(publish).write(signed.name, signed.document()))


def export_ledger(
    fmt: str,
    out: TextIO | Path,
    *,
    backfill_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    db: Database | None = None,
) -> int:
    """Write the events as JSON lines or CSV to ``out`` (a stream, or a file created once the
    ledger is open); how many."""
    with _reading(db) as store:
        if not isinstance(out, Path):
            return store.export(fmt, out, backfill_id=backfill_id, since=since, until=until)
        try:
            # newline="": the csv module writes its own line endings.
            with out.open("w", encoding="utf-8", newline="") as stream:
                return store.export(fmt, stream, backfill_id=backfill_id, since=since, until=until)
        except OSError as exc:
            raise LedgerError(f"cannot write {out}: {exc.strerror or exc}") from None


def init_team_ledger(role_prefix: str) -> tuple[str, str]:
    """Team mode on PostgreSQL: schema, roles, grants, identity stamping; the two roles."""
    from backfill.store.team import init_team_ledger as init

    return init(prefix=role_prefix)


def generate_signing_key(key_file: Path) -> Path:
    """A new Ed25519 key pair for signed checkpoints; the public key's file."""
    from backfill.anchors import generate_key

    return generate_key(key_file)

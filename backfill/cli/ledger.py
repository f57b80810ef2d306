"""``backfill ledger show|verify|checkpoint|export|init|keygen``: read and audit the hash-chained
ledger, set up team mode, sign and publish checkpoints."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click

from backfill.chain import LedgerEvent, canonical_json, format_checkpoint, parse_checkpoint
from backfill.cli.output import echo_json, echo_table
from backfill.errors import UsageError
from backfill.services import ledger as service
from backfill.store.ledger import EXPORT_FORMATS
from backfill.timeutil import format_utc, utcnow

_PAYLOAD_WIDTH = 60


def _range(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    # Only ``show`` and ``export`` take a range: ``verify`` need not import the time parser.
    from backfill.spans import parse_range

    span = parse_range(since, until, utcnow())
    return span.since, span.until


def _short(event: LedgerEvent) -> str:
    text = canonical_json(event.payload)
    return text if len(text) <= _PAYLOAD_WIDTH else text[: _PAYLOAD_WIDTH - 1] + "…"


_backfill_option = click.option("--backfill", "backfill_id", metavar="ID", help="Only events of this backfill.")
_since_option = click.option("--since", metavar="T", help="Events at or after T (a UTC time, a date, 6h, 2d).")
_until_option = click.option("--until", metavar="T", help="Events before this UTC time.")


@click.group()
def ledger() -> None:
    """Show, verify, checkpoint and export the hash-chained ledger (BACKFILL_LEDGER)."""


@ledger.command()
@_backfill_option
@_since_option
@_until_option
@click.option("--kind", "kinds", metavar="K", multiple=True, help="Only events of this kind (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Stable JSON output.")
def show(backfill_id: str | None, since: str | None, until: str | None, kinds: tuple[str, ...], as_json: bool) -> None:
    """Ledger events in sequence order."""
    start, end = _range(since, until)
    events = service.ledger_events(backfill_id=backfill_id, since=start, until=end, kinds=kinds or None)
    if as_json:
        echo_json({"events": [e.to_json() for e in events]})
        return
    echo_table(
        ["seq", "at", "actor", "kind", "backfill", "window", "payload", "hash"],
        [
            [
                e.seq,
                format_utc(e.at),
                f"{e.actor} ({e.identity_source})",
                e.kind,
                e.backfill_id or "",
                e.window_key or "",
                _short(e),
                e.hash[:12],
            ]
            for e in events
        ],
    )


@ledger.command()
@click.option(
    "--checkpoint", "checkpoint_text", metavar="SEQ:HASH", help="Also prove the ledger still extends this checkpoint."
)
@click.option(
    "--anchors",
    metavar="DEST",
    help="Also prove it extends every signed checkpoint published at DEST (a folder or azblob://CONTAINER/PREFIX).",
)
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PUBLIC_KEY",
    help="The public key the --anchors checkpoints are signed with.",
)
def verify(checkpoint_text: str | None, anchors: str | None, key_path: Path | None) -> None:
    """Recompute the hash chain; exit 5 naming the first bad event."""
    checkpoint = None
    if checkpoint_text is not None:
        try:
            checkpoint = parse_checkpoint(checkpoint_text)
        except ValueError as exc:
            raise UsageError(f"--checkpoint: {exc}") from None
    if (anchors is None) != (key_path is None):
        raise UsageError("--anchors and --key go together")
    verified = service.verify_ledger(checkpoint=checkpoint, anchors=anchors, key_path=key_path)
    if verified.anchors:
        newest = max(verified.anchors, key=lambda a: (a.size, a.time))
        click.echo(
            f"{verified.message}; extends all {len(verified.anchors)} signed checkpoints at {anchors} "
            f"(newest: event {newest.size}, {format_utc(newest.time)})"
        )
        return
    click.echo(verified.message)


@ledger.command()
@click.option(
    "--role-prefix",
    default="backfill",
    show_default=True,
    metavar="PREFIX",
    help="Roles PREFIX_user and PREFIX_admin (role names are cluster-wide).",
)
def init(role_prefix: str) -> None:
    """Team mode on PostgreSQL (administrator, once): schema, roles, grants, identity stamping.

    Afterwards every event is stamped with the connected role (session_user, identity source
    database) and a role cannot review its own request; grant PREFIX_user to each person's role."""
    user, admin = service.init_team_ledger(role_prefix)
    click.echo(
        f"ledger: team mode on; grant {user} to each person's role (GRANT {user} TO alice), {admin} to administrators"
    )


@ledger.command()
@click.option(
    "--sign",
    "key_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="KEY_FILE",
    help="Sign it with this Ed25519 private key (backfill ledger keygen).",
)
@click.option(
    "--publish",
    metavar="DEST",
    help="With --sign: write the signed checkpoint to DEST, a folder or "
    "azblob://CONTAINER/PREFIX (AZURE_STORAGE_CONNECTION_STRING).",
)
def checkpoint(key_path: Path | None, publish: str | None) -> None:
    """Print SEQ:HASH of the verified head.

    Auditors keep it elsewhere and later pass it to ``verify --checkpoint`` to prove the ledger
    still extends it (nothing was truncated or rewritten). With ``--sign`` and ``--publish`` it
    is also signed and published outside the database, for ``verify --anchors``."""
    if publish is not None and key_path is None:
        raise UsageError("--publish needs --sign KEY_FILE")
    made = service.ledger_checkpoint(key_path=key_path, publish=publish)
    if made.document is None:
        click.echo(format_checkpoint(made.head))
        return
    if made.published_to is None:
        click.echo(made.document, nl=False)
        return
    click.echo(format_checkpoint(made.head))
    click.echo(f"ledger: signed checkpoint published to {made.published_to}", err=True)


@ledger.command()
@click.argument("key_file", type=click.Path(dir_okay=False, path_type=Path))
def keygen(key_file: Path) -> None:
    """Write a new Ed25519 key pair for signed checkpoints: KEY_FILE (private, mode 600) and
    KEY_FILE.pub (give it to auditors)."""
    public = service.generate_signing_key(key_file)
    click.echo(f"ledger: private key {key_file} (keep it secret), public key {public}")


@ledger.command()
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="jsonl", show_default=True)
@_backfill_option
@_since_option
@_until_option
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not to stdout.")
def export(fmt: str, backfill_id: str | None, since: str | None, until: str | None, output: Path | None) -> None:
    """Export events as JSON lines or CSV.

    Each event's hash is SHA-256 over the canonical JSON of its other fields, so an auditor can
    recompute the chain from the export alone."""
    start, end = _range(since, until)
    if output is None:
        service.export_ledger(fmt, sys.stdout, backfill_id=backfill_id, since=start, until=end)
        return
    count = service.export_ledger(fmt, output, backfill_id=backfill_id, since=start, until=end)
    click.echo(f"ledger: exported {count} events to {output}")

"""``backfill serve [--host H] [--port N] --auth dev|oidc|proxy [--dev-users a,b]``: the console.

Parses, checks the settings (``backfill.console.settings``), and serves the console's Starlette
application with uvicorn over the ledger ``BACKFILL_LEDGER`` names (never creating one).
"""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8484, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option(
    "--auth",
    type=click.Choice(["dev", "oidc", "proxy"]),
    required=True,
    help="Who is acting: OIDC sign-in, App Service's X-MS-CLIENT-PRINCIPAL, or declared dev users (loopback).",
)
@click.option("--dev-users", metavar="NAME,NAME", help="With --auth dev: who may sign in (declared identities).")
def serve(host: str, port: int, auth: str, dev_users: str | None) -> None:
    """Serve the supervisors' console: backfills, approvals, progress and evidence in a browser."""
    import uvicorn

    from backfill.console.app import create_app
    from backfill.console.settings import load_settings

    settings = load_settings(auth, host=host, port=port, dev_users=dev_users)
    app = create_app(settings)
    console = app.state.console
    click.echo(f"console on {settings.base_url} (auth {settings.auth.value}; ledger {console.db.display_url})")
    if settings.auth.value == "dev":
        click.echo(f"development sign-in as {', '.join(settings.dev_users)}: declared identities, not verified")
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=settings.auth.value == "proxy")

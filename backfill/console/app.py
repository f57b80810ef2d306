"""The console's Starlette application: ``create_app(settings)`` (issue 15).

Server-rendered pages over the same ledger database and the same use-case functions as the CLI
(``backfill.console.calls``); every asset is served by the package itself, so the console works
offline and without JavaScript.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from backfill.console.context import Console
from backfill.console.settings import ConsoleSettings
from backfill.store.database import Database

COOKIE = "backfill_console"
# No script, no frame, nothing from elsewhere: the pages need none, and a note that slipped past
# escaping still could not run.
_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.decode().lower() for k, _ in headers}
                headers += [(k.encode(), v.encode()) for k, v in _HEADERS.items() if k not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(settings: ConsoleSettings, db: Database | None = None) -> Starlette:
    """The console over ``db`` (default: the ledger ``BACKFILL_LEDGER`` names, never created)."""
    from backfill.console import routes

    database = db or open_ledger(settings)
    console = Console(settings, database)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        if db is None:
            database.dispose()

    static = Path(__file__).with_name("static")
    app = Starlette(
        routes=[*routes.routes(console), Mount("/static", StaticFiles(directory=static), name="static")],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=settings.session_secret,
                session_cookie=COOKIE,
                same_site="lax",
                https_only=settings.secure_cookies,
                max_age=12 * 3600,
            ),
        ],
        lifespan=lifespan,
        exception_handlers={404: _not_found(console)},
    )
    app.state.console = console
    return app


def open_ledger(settings: ConsoleSettings) -> Database:
    """The ledger to serve, never created: a console over nothing would only mislead."""
    from backfill.errors import ConfigError

    database = Database(settings.ledger_url, create=False)
    if database.empty_view:
        database.dispose()
        raise ConfigError(
            f"no ledger at {database.display_url} yet: set BACKFILL_LEDGER to the one backfill request wrote"
        )
    return database


def _not_found(console: Console) -> Any:
    async def handler(request: Request, exc: Exception) -> Response:
        return console.render(request, "error.html", 404, title="Not found", message="no such page")

    return handler

"""What every handler of the console needs: settings, the ledger database, templates, sign-in."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from backfill.console import csrf
from backfill.console.auth import current_actor
from backfill.console.frozen import FrozenRequests
from backfill.console.settings import AuthMode, ConsoleSettings
from backfill.store.database import Database


class Console:
    """What every handler needs: settings, the ledger database, templates, the OIDC client."""

    def __init__(self, settings: ConsoleSettings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.frozen = FrozenRequests(db)
        self.team_mode = db.team_mode
        self.templates = Environment(
            loader=PackageLoader("backfill.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.oauth: Any = None
        if settings.auth is AuthMode.OIDC:
            from backfill.console.oidc import oidc_client

            self.oauth = oidc_client(settings)

    def origin(self, request: Request) -> str:
        if self.settings.public_url:
            scheme, _, rest = self.settings.base_url.partition("://")
            return f"{scheme}://{rest.split('/', 1)[0]}"
        return f"{request.url.scheme}://{request.url.netloc}"

    def render(self, request: Request, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        actor = current_actor(request, self.settings)
        flash = request.session.pop("flash", None) if "session" in request.scope else None
        context = {
            "actor": actor,
            "auth": self.settings.auth.value,
            "dev": self.settings.auth is AuthMode.DEV,
            "csrf": csrf.token(request.session),
            "flash": flash,
            "ledger": self.db.display_url,
            **values,
        }
        return HTMLResponse(self.templates.get_template(name).render(context), status_code=status_code)

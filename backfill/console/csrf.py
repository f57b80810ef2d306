"""Cross-site request forgery: every POST carries the session's token and comes from our origin.

Two independent guards, as OWASP recommends: a synchronizer token in every form (compared in
constant time with the one in the signed session cookie), and the browser's own word on where the
request came from (``Sec-Fetch-Site`` and ``Origin``). The session cookie is ``SameSite=Lax`` too,
so a cross-site form post arrives without a session in any current browser.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from starlette.requests import Request

SESSION_KEY = "csrf"
FIELD = "csrf"


def token(session: dict[str, Any]) -> str:
    """The session's CSRF token, created on first use."""
    value = session.get(SESSION_KEY)
    if not isinstance(value, str) or len(value) < 32:
        value = secrets.token_urlsafe(32)
        session[SESSION_KEY] = value
    return value


def refusal(request: Request, submitted: object, own_origin: str) -> str | None:
    """Why this POST is refused as cross-site, or None when it passes both guards."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = request.headers.get("origin")
    if origin is not None and origin != "null" and origin.rstrip("/") != own_origin:
        return f"cross-site request refused (Origin {origin} is not {own_origin})"
    if origin == "null":
        return "cross-site request refused (opaque origin)"
    expected = request.session.get(SESSION_KEY)
    if not isinstance(expected, str) or not isinstance(submitted, str) or not submitted:
        return "request refused: the form's CSRF token is missing (reload the page)"
    if not hmac.compare_digest(expected.encode(), submitted.encode()):
        return "request refused: the form's CSRF token does not match this session (reload the page)"
    return None

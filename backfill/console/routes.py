"""The console's pages and actions. Each handler reads the request, makes one use-case call
(``backfill.console.calls``) as the signed-in actor, and renders or redirects; refusals from the
gates are shown as the CLI's one line, with 403."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from backfill.console import calls, csrf, views
from backfill.console.auth import current_actor, remember
from backfill.console.settings import AuthMode
from backfill.errors import BackfillError, LedgerInvalid, UsageError
from backfill.identity import Actor, IdentitySource
from backfill.timeutil import utcnow

if TYPE_CHECKING:
    from backfill.console.context import Console

Handler = Callable[[Request], Awaitable[Response]]


def _status_for(exc: BackfillError) -> int:
    if isinstance(exc, UsageError):
        return 400
    if str(exc).startswith("no backfill "):
        return 404
    if isinstance(exc, LedgerInvalid):
        return 409
    return 403


def routes(console: Console) -> list[Route]:
    def refused(request: Request, message: str, status: int = 403) -> HTMLResponse:
        return console.render(request, "error.html", status, title="Refused", message=message)

    async def index(request: Request) -> Response:
        now = utcnow()
        items = await run_in_threadpool(calls.list_backfills, console.frozen, now)
        return console.render(request, "index.html", backfills=views.listing(items, now))

    async def backfill(request: Request) -> Response:
        backfill_id = request.path_params["backfill_id"]
        decision = request.query_params.get("decision") or None
        try:
            page = int(request.query_params.get("page", "1"))
        except ValueError:
            page = 1
        now = utcnow()
        try:
            shown = await run_in_threadpool(calls.show_backfill, console.frozen, backfill_id, now)
        except BackfillError as exc:
            return refused(request, str(exc), _status_for(exc))
        actor = current_actor(request, console.settings)
        page_values = views.backfill_page(shown, now, decision=decision, page=page)
        allowed = calls.allowed_actions(shown.record, shown.state, actor, team_mode=console.team_mode)
        return console.render(request, "backfill.html", b=page_values, allowed=allowed)

    def action(run: Callable[[Actor, str, Any], str | list[str] | Any]) -> Handler:
        """A POST: CSRF guards first, then the signed-in actor, then the one use-case call."""

        async def handler(request: Request) -> Response:
            backfill_id = request.path_params["backfill_id"]
            form = await request.form()
            why = csrf.refusal(request, form.get(csrf.FIELD), console.origin(request))
            if why is not None:
                return refused(request, why)
            actor = current_actor(request, console.settings)
            if actor is None:
                return refused(request, "sign in to act", 401)
            try:
                said = await run_in_threadpool(run, actor, backfill_id, form)
            except BackfillError as exc:
                return refused(request, str(exc), _status_for(exc))
            lines = [said] if isinstance(said, str) else list(said)
            request.session["flash"] = "; ".join(lines)
            return RedirectResponse(f"/backfills/{quote(backfill_id, safe='')}", status_code=303)

        return handler

    def _text(form: Any, name: str) -> str | None:
        value = form.get(name)
        return value if isinstance(value, str) else None

    approve = action(lambda actor, bid, form: calls.approve_backfill(console.db, bid, actor, _text(form, "note")))
    reject = action(lambda actor, bid, form: calls.reject_backfill(console.db, bid, actor, _text(form, "reason")))
    accept = action(
        lambda actor, bid, form: calls.accept_window(
            console.db, bid, actor, _text(form, "window") or "", _text(form, "note")
        )
    )
    stop = action(lambda actor, bid, form: calls.stop_backfill(console.db, bid, actor))

    async def report(request: Request) -> Response:
        from backfill.report.html import render_html

        try:
            data = await run_in_threadpool(calls.backfill_report, console.db, request.path_params["backfill_id"])
        except BackfillError as exc:
            return refused(request, str(exc), _status_for(exc))
        # The report is one self-contained file with its own inline style (the same bytes as
        # ``backfill report ID --html``); still no script may run in it.
        csp = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
        return HTMLResponse(render_html(data), headers={"content-security-policy": csp})

    async def evidence(request: Request) -> Response:
        try:
            data = await run_in_threadpool(calls.backfill_report, console.db, request.path_params["backfill_id"])
        except BackfillError as exc:
            return refused(request, str(exc), _status_for(exc))
        return console.render(request, "evidence.html", r=data)

    async def fresh(request: Request) -> Response:
        backfill_id = request.path_params["backfill_id"]
        try:
            shown = await run_in_threadpool(calls.show_backfill, console.frozen, backfill_id, utcnow())
            result = await run_in_threadpool(calls.fresh_preview, console.db, shown.record)
        except BackfillError as exc:
            return console.render(request, "fresh.html", 200, bid=backfill_id, error=str(exc), fresh=None)
        return console.render(request, "fresh.html", bid=shown.record.id, error=None, fresh=result)

    async def signin(request: Request) -> Response:
        settings = console.settings
        target = _next(request)
        if settings.auth is AuthMode.OIDC:
            request.session["next"] = target
            redirect_uri = settings.base_url + "/auth/callback"
            response: Response = await console.oauth.authorize_redirect(request, redirect_uri)
            return response
        if request.method == "POST" and settings.auth is AuthMode.DEV:
            form = await request.form()
            why = csrf.refusal(request, form.get(csrf.FIELD), console.origin(request))
            if why is not None:
                return refused(request, why)
            name = form.get("user")
            if name not in settings.dev_users:
                return refused(request, f"{name} is not among --dev-users", 403)
            assert isinstance(name, str)
            # A new token with a new identity: a form rendered before the sign-in no longer posts.
            request.session.pop(csrf.SESSION_KEY, None)
            remember(request.session, Actor(name, IdentitySource.DECLARED))
            return RedirectResponse(target, status_code=303)
        return console.render(request, "signin.html", users=settings.dev_users, next=target)

    async def callback(request: Request) -> Response:
        from backfill.console.oidc import finish_sign_in

        try:
            actor = await finish_sign_in(console.oauth, request)
        except BackfillError as exc:
            return refused(request, str(exc), 401)
        request.session.pop("user", None)
        request.session.pop(csrf.SESSION_KEY, None)
        remember(request.session, actor)
        target = request.session.pop("next", "/")
        return RedirectResponse(target if isinstance(target, str) and target.startswith("/") else "/", 303)

    async def signout(request: Request) -> Response:
        form = await request.form()
        why = csrf.refusal(request, form.get(csrf.FIELD), console.origin(request))
        if why is not None:
            return refused(request, why)
        request.session.clear()
        return RedirectResponse("/", status_code=303)

    async def health(request: Request) -> Response:
        return Response("ok\n", media_type="text/plain")

    return [
        Route("/", index),
        Route("/backfills/{backfill_id}", backfill),
        Route("/backfills/{backfill_id}/approve", approve, methods=["POST"]),
        Route("/backfills/{backfill_id}/reject", reject, methods=["POST"]),
        Route("/backfills/{backfill_id}/accept", accept, methods=["POST"]),
        Route("/backfills/{backfill_id}/stop", stop, methods=["POST"]),
        Route("/backfills/{backfill_id}/report", report),
        Route("/backfills/{backfill_id}/evidence", evidence),
        Route("/backfills/{backfill_id}/fresh", fresh),
        Route("/signin", signin, methods=["GET", "POST"]),
        Route("/auth/callback", callback),
        Route("/signout", signout, methods=["POST"]),
        Route("/healthz", health),
    ]


def _next(request: Request) -> str:
    # Only a path on this console: never an open redirect to somewhere else.
    target = request.query_params.get("next", "/")
    return target if target.startswith("/") and not target.startswith("//") else "/"

"""Shared set-up of the console tests: a seeded backfill, a console app, signing in."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import missing
from starlette.testclient import TestClient

from backfill.backfills import ApprovalPolicy, BackfillRecord
from backfill.console.app import create_app
from backfill.console.settings import ConsoleSettings, load_settings
from backfill.demo import EVERY, FAST_SPEED, WINDOW_COUNT, demo_plan_text, demo_scenario, shifted_plan, yesterday
from backfill.emulator import Emulator
from backfill.identity import Actor, IdentitySource
from backfill.store.backfills import create_backfill
from backfill.store.database import Database
from backfill.store.ledger import Ledger
from backfill.timeutil import utcnow

K1 = "2026-11-03T00:00:00Z/2026-11-03T00:15:00Z"
K2 = "2026-11-03T00:15:00Z/2026-11-03T00:30:00Z"
K3 = "2026-11-03T00:30:00Z/2026-11-03T00:45:00Z"
REQUESTER = Actor("alice", IdentitySource.DECLARED)
RUNNER = Actor("runner", IdentitySource.OS)
FACTORY = {"subscription_id": "sub-1", "resource_group": "rg-energy", "factory": "adf-grid"}


def frozen_preview(decisions: dict[str, str]) -> dict[str, Any]:
    windows = []
    for key, decision in decisions.items():
        checks = []
        if decision in ("run", "rerun", "blocked-partial"):
            committed = 300 if decision == "blocked-partial" else 0
            checks.append(
                {
                    "check": "readings-in-sink",
                    "status": "partial" if committed else "clean",
                    "reason": f"{committed} of 900 rows committed" if committed else "nothing committed",
                    "evidence": {"committed": committed, "expected": 900},
                }
            )
        windows.append({"key": key, "decision": decision, "reason": f"because {decision}", "checks": checks})
    return {"factory": FACTORY, "windows": windows, "summary": {}}


def seed(
    *,
    note: str | None = None,
    requester: Actor = REQUESTER,
    decisions: dict[str, str] | None = None,
    title: str = "Replay north",
    **policy: Any,
) -> str:
    """A requested backfill (three windows: rerun, blocked-partial, skip-succeeded by default)."""
    chosen = decisions or {K1: "rerun", K2: "blocked-partial", K3: "skip-succeeded"}
    record = BackfillRecord(
        id="",
        plan_path="/plans/north.toml",
        plan_hash="ab" * 32,
        pipeline="LoadMeterTelemetry",
        factory_key="sub-1/rg-energy/adf-grid",
        title=title,
        ticket="INC-4821",
        requester=requester.name,
        requester_source=requester.source.value,
        requested_at=utcnow(),
        note=note,
        policy=ApprovalPolicy(**policy),
        decisions=chosen,
        preview=frozen_preview(chosen),
    )
    runnable = [k for k, d in chosen.items() if d in ("run", "rerun")]
    blocked = [k for k, d in chosen.items() if d.startswith("blocked")]
    db = Database()
    try:
        return create_backfill(db, record, {"runnable": runnable, "blocked": blocked}, requester).id
    finally:
        db.dispose()


def append(backfill_id: str, kind: str, key: str | None = None, actor: Actor = RUNNER, **payload: Any) -> None:
    db = Database()
    try:
        Ledger(db).append(kind, payload, actor=actor, backfill_id=backfill_id, window_key=key)
    finally:
        db.dispose()


def events(backfill_id: str) -> list[Any]:
    db = Database()
    try:
        return list(Ledger(db).events(backfill_id=backfill_id))
    finally:
        db.dispose()


def kinds(backfill_id: str) -> list[str]:
    return [e.kind for e in events(backfill_id)]


def dev_settings(users: str = "alice,bob,carol") -> ConsoleSettings:
    return load_settings("dev", dev_users=users)


@pytest.fixture
def client_for() -> Iterator[Any]:
    """``client_for(settings)``: a TestClient over a console on the test's ledger."""
    made: list[TestClient] = []

    def make(settings: ConsoleSettings | None = None) -> TestClient:
        client = TestClient(create_app(settings or dev_settings()), base_url="http://127.0.0.1:8484")
        client.__enter__()
        made.append(client)
        return client

    yield make
    for client in made:
        client.__exit__(None, None, None)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(client: TestClient, user: str) -> None:
    page = client.get("/signin").text
    response = client.post("/signin", data={"user": user, "csrf": csrf_of(page)}, follow_redirects=False)
    assert response.status_code == 303, response.text


def post(client: TestClient, path: str, **form: str) -> Any:
    """A same-origin form POST with the session's token, as the browser sends it."""
    page = client.get("/").text
    return client.post(path, data={"csrf": csrf_of(page), **form}, follow_redirects=False)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def served(settings: ConsoleSettings) -> Iterator[str]:
    """The console served by uvicorn on a thread, as ``backfill serve`` serves it; its base URL."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host=settings.host, port=settings.port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the console did not start"
        time.sleep(0.02)
    try:
        yield settings.base_url
    finally:
        server.should_exit = True
        thread.join(10)


BOB = {"oid": "6f1c2a3b-0000-4000-8000-00000000b0b0", "preferred_username": "bob@contoso.com"}
ALICE = {"oid": "6f1c2a3b-0000-4000-8000-0000000a11ce", "preferred_username": "alice@contoso.com"}


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real OIDC provider on a free loopback port; BACKFILL_OIDC_* point the console at it."""
    try:
        from oidc_provider_mock import User, run_server_in_thread
    except ImportError:
        missing("oidc-provider-mock")
        raise
    users = [User(sub="bob-sub", claims=BOB), User(sub="alice-sub", claims=ALICE)]
    with run_server_in_thread(user_claims=users) as server:
        issuer = f"http://localhost:{server.server_port}"
        monkeypatch.setenv("BACKFILL_OIDC_ISSUER", issuer)
        monkeypatch.setenv("BACKFILL_OIDC_CLIENT_ID", "backfill-console")
        # A confidential client, as an Entra ID web app registration is (PKCE on top).
        monkeypatch.setenv("BACKFILL_OIDC_CLIENT_SECRET", "console-secret-for-tests")
        yield issuer


@pytest.fixture
def demo_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The demo's emulated factory and plan (a blocked-partial window, a canary of one)."""
    day = yesterday()
    sink_url = f"sqlite:///{tmp_path / 'sink.db'}"
    plan = tmp_path / "plan.toml"
    plan.write_text(shifted_plan(demo_plan_text(), day, day + WINDOW_COUNT * EVERY), encoding="utf-8")
    with Emulator(demo_scenario(day, sink_url, speed=FAST_SPEED)) as emulator:
        for name, value in emulator.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("TELEMETRY_SINK_URL", sink_url)
        monkeypatch.setenv("BACKFILL_RECONCILE_SETTLE", "300ms")
        yield plan

"""The console in a real browser: Playwright driving Debian's Chromium (no browser download).

The issue's scenario, end to end over real parts: the demo's emulated factory over HTTPS, the CLI
for the request and the runs, the console served by uvicorn, and sign-in through a real OIDC
provider. Screenshots are kept under ``test-artifacts/console/`` (gitignored), or
``BACKFILL_TEST_ARTIFACTS`` when set.
"""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import missing
from console_support import demo_factory, events, free_port, provider, served

from backfill import events as ev
from backfill.cli import main
from backfill.console.settings import load_settings
from backfill.demo import (
    EVERY,
    PARTIAL,
    yesterday,
)
from backfill.windows import window_key

__all__ = ["demo_factory", "provider"]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = (
    Path(os.environ.get("BACKFILL_TEST_ARTIFACTS") or Path(__file__).parent.parent / "test-artifacts") / "console"
)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        missing(f"Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright (pip install playwright; the browser is Debian's)")
        raise
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], actor: str, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("BACKFILL_ACTOR", actor)
    capsys.readouterr()
    code = main.run(list(args))
    return code, capsys.readouterr().out


def sign_in(context: Any, base: str, sub: str) -> Any:
    page = context.new_page()
    page.goto(base + "/")
    page.click("text=Sign in")
    # The provider's own page: pick the predefined user, as a person would.
    page.click(f"button[value='{sub}']")
    page.wait_for_url(base + "/")
    return page


class _Attacker(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        body = (
            f'<form id="f" method="post" action="{self.target}"><input name="reason" value="pwned">'
            '<input name="csrf" value="guessed"></form><script>document.getElementById("f").submit()</script>'
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_the_supervisors_story_in_the_browser(
    demo_factory: Path,
    provider: str,
    browser: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The requester requests on the CLI.
    code, out = cli(monkeypatch, capsys, "alice@contoso.com", "request", str(demo_factory))
    assert code == 0, out
    bid = out.splitlines()[0]
    monkeypatch.delenv("BACKFILL_ACTOR")
    port = free_port()
    with served(load_settings("oidc", port=port)) as base:
        # She opens the page signed in through the provider, and cannot approve.
        alice = browser.new_context()
        page = sign_in(alice, base, "alice-sub")
        page.click(f"text={bid}")
        assert page.locator("#approve").count() == 0
        assert "cannot approve it (four eyes)" in page.inner_text("#cannot-approve")
        shot(page, "1-requester-cannot-approve")

        # The supervisor signs in through the provider and approves.
        bob = browser.new_context()
        page = sign_in(bob, base, "bob-sub")
        page.goto(f"{base}/backfills/{bid}")
        assert "signed in as bob@contoso.com (oidc)" in page.inner_text("header")
        assert "readings-in-sink: partial (300 / 900)" in page.inner_text("#windows")
        page.fill("#approve input[name=note]", "<script>alert('x')</script> replay after the lock")
        page.click("#approve button")
        assert f"approved {bid} (1 of 1)" in page.inner_text(".flash")
        assert "<script>alert('x')</script> replay after the lock" in page.inner_text("#approvals")
        shot(page, "2-supervisor-approved")

        # The runner reaches the canary pause; the page shows it, and he approves it.
        code, out = cli(monkeypatch, capsys, "ops", "run", bid)
        assert code == 3, out
        page.reload()
        assert "paused, awaiting approval" in page.inner_text("#approvals")
        shot(page, "3-canary-paused")
        page.click("text=Approve the canary")
        assert f"canary approved for {bid}" in page.inner_text(".flash")

        # He accepts the partial window with a note.
        day = yesterday()
        partial = window_key(day + PARTIAL * EVERY, day + (PARTIAL + 1) * EVERY)
        row = page.locator(f"tr[data-key='{partial}']")
        row.locator("input[name=note]").fill("the 300 rows are verified good; the copy appends")
        row.locator("button").click()
        assert f"accepted window {partial}" in page.inner_text(".flash")

        # The runs finish while he watches: the page refreshes itself, no script needed.
        runner = threading.Thread(target=lambda: cli(monkeypatch, capsys, "ops", "run", bid), daemon=True)
        runner.start()
        page.wait_for_selector("#state:has-text('completed')", timeout=60_000)
        runner.join(30)
        assert "5 done, 0 running, 0 left, 0 failed of 5" in page.inner_text("#progress")
        run_link = page.locator("a.run").first
        assert run_link.get_attribute("href").startswith("https://adf.azure.com/en/monitoring/pipelineruns/")
        shot(page, "4-completed")
        page.click("text=Evidence")
        assert "events verified" in page.inner_text("#ledger-verify")
        shot(page, "5-evidence")

        # A cross-site POST (another origin's page auto-submitting a form) is refused.
        _Attacker.target = f"{base}/backfills/{bid}/reject"
        attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
        threading.Thread(target=attacker.serve_forever, daemon=True).start()
        try:
            evil = bob.new_page()
            evil.goto(f"http://localhost:{attacker.server_address[1]}/")
            evil.wait_for_url(f"{base}/backfills/{bid}/reject")
            assert "cross-site request refused" in evil.inner_text("main")
            shot(evil, "6-cross-site-refused")
        finally:
            attacker.shutdown()

        # A forged App Service header is ignored without --auth proxy.
        forger = browser.new_context(extra_http_headers={"X-MS-CLIENT-PRINCIPAL": _principal("bob@contoso.com")})
        forged = forger.new_page()
        forged.goto(f"{base}/backfills/{bid}")
        assert "signed in as" not in forged.inner_text("header")
        assert forged.locator("form#approve").count() == 0

    recorded = events(bid)
    approvals = [e for e in recorded if e.kind in (ev.APPROVED, ev.CANARY_APPROVED, ev.WINDOW_ACCEPTED)]
    assert {(e.actor, e.identity_source) for e in approvals} == {("bob@contoso.com", "oidc")}
    assert all(e.payload["principal_id"] == "6f1c2a3b-0000-4000-8000-00000000b0b0" for e in approvals)
    assert not any(e.kind == ev.REJECTED for e in recorded)
    assert recorded[-1].kind == ev.COMPLETED


def _principal(name: str) -> str:
    import base64
    import json

    claims = [{"typ": "preferred_username", "val": name}]
    return base64.b64encode(json.dumps({"claims": claims}).encode()).decode()

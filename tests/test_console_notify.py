"""Notifications to a local webhook receiver: Teams (Adaptive Card), Slack and generic JSON, sent
after the ledger event is written, retried with backoff, a failure recorded and never blocking."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_support import append, client_for, demo_factory, events, post, seed, sign_in

from backfill import events as ev
from backfill.cli import main
from backfill.demo import demo_plan_text
from backfill.errors import ConfigError
from backfill.notify import deliver
from backfill.notify.targets import parse_targets

__all__ = ["client_for", "demo_factory"]


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.fail_first = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        data = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.server.fail_first > 0:
            self.server.fail_first -= 1
            self.send_response(503)
        else:
            self.server.received.append((self.path, data))
            self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        deliver.uninstall()


def test_each_kind_of_target_hears_of_a_request_approval_and_completion(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, client_for: Any
) -> None:
    monkeypatch.setenv("HOOK", receiver.url)
    targets = parse_targets("teams=${HOOK}/teams, slack=${HOOK}/slack, json=${HOOK}/json")
    notifier = deliver.install(targets, "https://console.example.com")
    assert notifier is not None
    bid = seed()
    client = client_for()
    sign_in(client, "bob")
    post(client, f"/backfills/{bid}/approve", note="go")
    append(bid, ev.WINDOW_FINISHED, "2026-11-03T00:00:00Z/2026-11-03T00:15:00Z", run_id="r1", status="Failed")
    append(bid, ev.COMPLETED)
    assert notifier.drain()
    by_path: dict[str, list[dict[str, Any]]] = {}
    for path, data in receiver.received:
        by_path.setdefault(path, []).append(data)
    assert [d["headline"] for d in by_path["/json"]] == [
        "requested: awaiting approval",
        "approved",
        "a window failed",
        "completed",
    ]
    assert by_path["/json"][1]["actor"] == "bob (declared)"
    assert by_path["/json"][1]["link"] == f"https://console.example.com/backfills/{bid}"
    card = by_path["/teams"][1]["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["actions"][0]["url"] == f"https://console.example.com/backfills/{bid}"
    assert by_path["/slack"][1]["text"] == f"Backfill {bid} approved"


def test_a_failing_target_is_retried_then_recorded_without_its_url(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK", receiver.url + "/secret-token-in-path")
    receiver.fail_first = 2  # two 503s, then it answers: retried with backoff, delivered
    notifier = deliver.install(parse_targets("json=${HOOK}"), "http://127.0.0.1:8484")
    assert notifier is not None
    notifier.backoff = (0.01, 0.01, 0.01)
    bid = seed()
    assert notifier.drain()
    assert [d["event"] for _, d in receiver.received] == [ev.REQUESTED]
    receiver.fail_first = 10  # never answers well: recorded as an event, the append itself went through
    append(bid, ev.COMPLETED)
    assert notifier.drain()
    failed = [e for e in events(bid) if e.kind == deliver.FAILED_KIND]
    assert len(failed) == 1 and failed[0].payload["reason"] == "HTTP 503" and failed[0].payload["attempts"] == 4
    assert "secret-token" not in json.dumps(failed[0].payload)


def test_backfill_notify_is_checked_and_used_by_every_command(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BACKFILL_NOTIFY", "pager=http://example.com")
    assert main.run(["status"]) == 1
    assert "BACKFILL_NOTIFY: 'pager' is not KIND=URL" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="https://"):
        parse_targets("json=http://example.com/hook")
    bid = seed()
    monkeypatch.setenv("BACKFILL_NOTIFY", f"json={receiver.url}")
    monkeypatch.setenv("BACKFILL_ACTOR", "bob")
    assert main.run(["approve", bid]) == 0
    assert deliver._installed is not None and deliver._installed.drain()
    assert [d["headline"] for _, d in receiver.received] == ["approved"]


def test_a_plans_notify_targets_hear_of_its_backfill(
    receiver: Receiver,
    demo_factory: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AUDIT_HOOK_URL", receiver.url + "/audit")
    plan = demo_factory.read_text(encoding="utf-8")
    demo_factory.write_text(plan + '\n[notify]\ntargets = ["json=${AUDIT_HOOK_URL}"]\n', encoding="utf-8")
    monkeypatch.setenv("BACKFILL_ACTOR", "alice")
    assert main.run(["request", str(demo_factory)]) == 0, capsys.readouterr()
    bid = capsys.readouterr().out.splitlines()[0]
    monkeypatch.setenv("BACKFILL_ACTOR", "bob")
    assert main.run(["approve", bid]) == 0
    assert deliver._installed is not None and deliver._installed.drain()
    assert [(p, d["headline"]) for p, d in receiver.received] == [
        ("/audit", "requested: awaiting approval"),
        ("/audit", "approved"),
    ]


def test_a_plan_never_holds_a_webhook_url_itself(tmp_path: Path) -> None:
    from backfill.errors import PlanError
    from backfill.plan.loader import load_plan

    plan = tmp_path / "plan.toml"
    plan.write_text(demo_plan_text() + '\n[notify]\ntargets = ["teams=https://example.webhook.office.com/x"]\n')
    with pytest.raises(PlanError, match=r"notify.targets\[0\].*write it as \$\{VAR\}"):
        load_plan(plan)


def test_plans_naming_no_webhook_keep_their_hash(tmp_path: Path) -> None:
    from backfill.plan.loader import canonical_json, load_plan

    plain, empty, named = tmp_path / "plain.toml", tmp_path / "empty.toml", tmp_path / "named.toml"
    plain.write_text(demo_plan_text())
    empty.write_text(demo_plan_text() + "\n[notify]\ntargets = []\n")
    named.write_text(demo_plan_text() + '\n[notify]\ntargets = ["json=${HOOK}"]\n')
    assert "notify" not in canonical_json(load_plan(plain).plan)
    assert load_plan(plain).hash == load_plan(empty).hash != load_plan(named).hash

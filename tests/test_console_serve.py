"""``backfill serve`` as a user runs it: a real process on a port, and its one-line refusals."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from console_support import free_port, seed

from backfill.cli import main


def test_serve_starts_over_the_ledger_and_answers(tmp_path: Path) -> None:
    bid = seed()
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "backfill", "serve", "--auth", "dev", "--dev-users", "alice,bob", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/backfills/{bid}", timeout=2) as response:
                    page = response.read().decode()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        assert bid in page and "Development sign-in" in page
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=20)
    assert f"console on http://127.0.0.1:{port} (auth dev; ledger sqlite:///" in out
    assert "development sign-in as alice, bob" in out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["serve", "--auth", "dev"], 2, "--auth dev needs --dev-users"),
        (["serve", "--auth", "dev", "--dev-users", "bob", "--host", "0.0.0.0"], 2, "loopback only"),
        (["serve", "--auth", "oidc"], 1, "--auth oidc needs BACKFILL_OIDC_ISSUER"),
        (["serve", "--auth", "dev", "--dev-users", "bob"], 1, "no ledger at sqlite:///"),
    ],
)
def test_serve_refuses_in_one_line(
    args: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main.run(args) == code
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1

"""Signed checkpoints published outside the database (issue 8, spec §15): to a folder and to an
Azure Blob container on Azurite, Microsoft's storage emulator (from npm, installed by .ci/run).

The attack they stop: whoever can write the ledger database can rewrite its history and
recompute every hash, and then ``ledger verify`` alone is content. A checkpoint signed with a
key the database never sees, kept where the database cannot reach, is not.
"""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import missing

from backfill.chain import compute_hash
from backfill.cli.main import run
from backfill.identity import Actor, IdentitySource
from backfill.store.database import Database
from backfill.store.ledger import Ledger

ALICE = Actor("alice", IdentitySource.DECLARED)
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def fill(count: int) -> None:
    db = Database()
    ledger = Ledger(db)
    for i in range(count):
        ledger.append("note", {"text": f"event {i}"}, actor=ALICE, backfill_id="bf-1")
    db.dispose()


def out_err(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    captured = capsys.readouterr()
    return captured.out, captured.err


@pytest.fixture
def key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    private = tmp_path / "keys" / "ledger.key"
    private.parent.mkdir()
    assert run(["ledger", "keygen", str(private)]) == 0
    assert out_err(capsys)[0] == f"ledger: private key {private} (keep it secret), public key {private}.pub\n"
    assert private.stat().st_mode & 0o777 == 0o600
    assert run(["ledger", "keygen", str(private)]) == 1  # never overwrites
    assert "exists; keygen never overwrites a key" in out_err(capsys)[1]
    return private, Path(f"{private}.pub")


def publish(key: tuple[Path, Path], dest: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert run(["ledger", "checkpoint", "--sign", str(key[0]), "--publish", dest]) == 0, capsys.readouterr()
    out, err = out_err(capsys)
    assert err.startswith(f"ledger: signed checkpoint published to {dest.rstrip('/')}")
    return out.strip()


def verify(key: tuple[Path, Path], dest: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = run(["ledger", "verify", "--anchors", dest, "--key", str(key[1])])
    out, err = out_err(capsys)
    return code, (out + err).strip()


def rewrite_history(tmp_path: Path) -> None:
    """Event 2 changed and every later hash recomputed: the chain alone still verifies."""
    db = Database()
    events = Ledger(db).events()
    db.dispose()
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        conn.execute("DROP TRIGGER ledger_events_no_update")
        prev = events[0].hash
        for event in events[1:]:
            payload = {"text": "rewritten"} if event.seq == 2 else event.payload
            digest = compute_hash(prev, {**event.fields(), "payload": payload})
            conn.execute(
                "UPDATE ledger_events SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (json.dumps(payload, separators=(",", ":")), prev, digest, event.seq),
            )
            prev = digest
    assert run(["ledger", "verify"]) == 0


def truncate(tmp_path: Path, keep: int) -> None:
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        conn.execute("DROP TRIGGER ledger_events_no_delete")
        conn.execute("DELETE FROM ledger_events WHERE seq > ?", (keep,))


def test_folder_anchors_prove_the_ledger_extends_them(
    tmp_path: Path, key: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    dest = str(tmp_path / "anchors")
    fill(3)
    assert publish(key, dest, capsys).startswith("3:")
    fill(2)
    publish(key, dest, capsys)
    documents = sorted((tmp_path / "anchors").glob("checkpoint-*.json"))
    assert [p.name[:23] for p in documents] == ["checkpoint-000000000003", "checkpoint-000000000005"]
    body = json.loads(documents[0].read_text())["checkpoint"]
    assert set(body) == {"format", "origin", "size", "head", "time"} and body["size"] == 3
    code, text = verify(key, dest, capsys)
    assert code == 0 and "extends all 2 signed checkpoints at" in text and "(newest: event 5, " in text


def test_a_rewritten_history_is_caught_by_the_anchors(
    tmp_path: Path, key: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    dest = str(tmp_path / "anchors")
    fill(4)
    publish(key, dest, capsys)
    rewrite_history(tmp_path)
    capsys.readouterr()
    code, text = verify(key, dest, capsys)
    assert code == 5
    assert text.endswith("event 4 does not match the signed checkpoint (history rewritten)")


def test_a_truncated_ledger_is_caught_by_the_anchors(
    tmp_path: Path, key: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    dest = str(tmp_path / "anchors")
    fill(4)
    publish(key, dest, capsys)
    truncate(tmp_path, 2)
    code, text = verify(key, dest, capsys)
    assert code == 5
    assert text.endswith("the ledger ends at event 2 but a signed checkpoint is event 4 (truncated)")


def test_a_forged_or_foreign_anchor_is_refused(
    tmp_path: Path, key: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "anchors"
    fill(2)
    publish(key, str(dest), capsys)
    document = next(dest.glob("checkpoint-*.json"))
    data = json.loads(document.read_text())
    # Altered to vouch for a rewritten head: the signature no longer verifies.
    data["checkpoint"]["head"] = "ab" * 32
    forged = dest / "checkpoint-000000000002-forged.json"
    forged.write_text(json.dumps(data))
    code, text = verify(key, str(dest), capsys)
    assert (code, text) == (
        5,
        f"error: anchor {forged}: signature does not verify with the given key (forged or altered)",
    )
    forged.unlink()
    # Another key: nothing verifies.
    other = tmp_path / "other.key"
    assert run(["ledger", "keygen", str(other)]) == 0
    capsys.readouterr()
    assert verify((other, Path(f"{other}.pub")), str(dest), capsys)[0] == 5
    # The same anchors against another ledger (a fresh one of the same size): not its origin.
    monkeypatch.setenv("BACKFILL_LEDGER", f"sqlite:///{tmp_path / 'other.db'}")
    fill(2)
    code, text = verify(key, str(dest), capsys)
    assert code == 5 and ", not this one (backfill-ledger-" in text


def test_bad_options_are_one_line(tmp_path: Path, key: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    fill(1)
    assert run(["ledger", "checkpoint", "--publish", str(tmp_path / "a")]) == 2
    assert out_err(capsys)[1] == "error: --publish needs --sign KEY_FILE\n"
    assert run(["ledger", "verify", "--anchors", str(tmp_path / "a")]) == 2
    assert out_err(capsys)[1] == "error: --anchors and --key go together\n"
    assert run(["ledger", "checkpoint", "--sign", str(key[1]), "--publish", str(tmp_path / "a")]) == 1
    assert "not an unencrypted PEM private key" in out_err(capsys)[1]
    assert verify(key, str(tmp_path / "nowhere"), capsys) == (
        1,
        f"error: --anchors {tmp_path / 'nowhere'}: no such folder",
    )
    (tmp_path / "empty").mkdir()
    assert verify(key, str(tmp_path / "empty"), capsys)[0] == 1


# --- Azure Blob Storage, on Azurite ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def azurite(tmp_path: Path) -> Iterator[str]:
    """A connection string to a fresh in-memory Azurite blob service on a free loopback port."""
    program = shutil.which("azurite-blob")
    if program is None:
        missing("azurite-blob (npm install -g azurite)")
        raise AssertionError  # unreachable
    port = _free_port()
    workspace = tmp_path / "azurite"
    workspace.mkdir()
    proc = subprocess.Popen(
        # --skipApiVersionCheck: the SDK may be newer than the emulator; no data ever touches disk.
        [
            program,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
        ],
        cwd=workspace,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    why = proc.stderr.read() if proc.stderr and proc.poll() is not None else "no answer in 30 s"
                    raise AssertionError(f"azurite did not start: {why!r}") from None
                time.sleep(0.05)
        yield (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_blob_anchors_on_azurite(
    tmp_path: Path,
    key: tuple[Path, Path],
    azurite: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from azure.storage.blob import BlobServiceClient

    BlobServiceClient.from_connection_string(azurite).create_container("ledger-anchors")
    dest = "azblob://ledger-anchors/team-a"
    fill(3)
    # Without the connection string: one line naming the variable.
    assert run(["ledger", "checkpoint", "--sign", str(key[0]), "--publish", dest]) == 1
    assert out_err(capsys)[1] == (
        f"error: {dest}/: set AZURE_STORAGE_CONNECTION_STRING to the storage account's connection string\n"
    )
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite)
    publish(key, dest, capsys)
    fill(1)
    publish(key, dest, capsys)
    names = [
        b.name
        for b in BlobServiceClient.from_connection_string(azurite).get_container_client("ledger-anchors").list_blobs()
    ]
    assert len(names) == 2 and all(n.startswith("team-a/checkpoint-") for n in names)
    code, text = verify(key, dest, capsys)
    assert code == 0 and "extends all 2 signed checkpoints" in text
    rewrite_history(tmp_path)
    capsys.readouterr()
    code, text = verify(key, dest, capsys)
    assert code == 5 and text.endswith("does not match the signed checkpoint (history rewritten)")
    # A container that does not exist: one line, not a traceback.
    assert run(["ledger", "checkpoint", "--sign", str(key[0]), "--publish", "azblob://nope/x"]) == 1
    err = out_err(capsys)[1]
    assert err.startswith("error: azblob://nope/x/: ") and len(err.splitlines()) == 1


def test_signing_where_there_is_no_ledger_creates_none(
    tmp_path: Path, key: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["ledger", "checkpoint", "--sign", str(key[0]), "--publish", str(tmp_path / "a")]) == 1
    expected = f"error: ledger sqlite:///{tmp_path / 'ledger.db'}: no ledger yet, nothing is anchored\n"
    assert out_err(capsys)[1] == expected
    assert not (tmp_path / "ledger.db").exists() and not (tmp_path / "a").exists()

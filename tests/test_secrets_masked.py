"""No secret parameter reaches the history cache or a screen (issue 9, item 3).

A backfill sends ``sourceKey = { secret = "${SOURCE_API_KEY}" }``; the emulator, like ADF, echoes
it back in run history. Its value must be masked in the cache (stored masked: the database is
read directly), in ``runs list/show`` (table and JSON), ``preview --json``, ``ledger export`` and
``report`` (text and HTML), whether the pipeline declares the parameter ``SecureString`` or only
the plan marks it secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from runner_support import PIPELINE, base_time, cli, emulator, request, scenario, write_plan
from sqlalchemy import create_engine, text

from backfill.emulator import Emulator
from backfill.factory.client import connect
from backfill.factory.protocol import FactoryRef
from backfill.history import sync_history
from backfill.store.database import Database

Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch
SECRET = "hunter2"  # SOURCE_API_KEY in runner_support.FAST_ENV


def _cache_rows(tmp_path: Path) -> list[tuple[str, str]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    with engine.connect() as conn:
        rows = [(str(p), str(d)) for p, d in conn.execute(text("SELECT parameters, data FROM history_runs"))]
    engine.dispose()
    return rows


def _ours(emu: Emulator) -> list[dict[str, Any]]:
    return [run for run in emu.runs() if run["parameters"].get("sourceKey") is not None]


@pytest.mark.parametrize("declared", ["SecureString", "String"])
def test_a_secret_sent_in_a_run_is_masked_everywhere(
    declared: str, tmp_path: Path, monkeypatch: MP, capsys: Cap
) -> None:
    base = base_time()
    scen = scenario(base)
    pipeline = scen.pipelines[0]
    pipeline.parameters = {**pipeline.parameters, "sourceKey": declared}
    plan = write_plan(tmp_path, 2, base=base, name="north.toml")
    with emulator(scen, monkeypatch) as emu:
        backfill_id = request(plan, monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "run", backfill_id) == 0, capsys.readouterr()
        # The secret really was sent, and the factory's history hands it back.
        sent = _ours(emu)
        assert len(sent) == 2 and all(r["parameters"]["sourceKey"] == SECRET for r in sent)
        run_id = str(sent[0]["runId"])
        assert cli(monkeypatch, "carol", "history", "sync", str(plan)) == 0
        capsys.readouterr()

        rows = _cache_rows(tmp_path)
        ours = [row for row in rows if "sourceKey" in row[0]]
        assert len(ours) == 2
        assert all(SECRET not in p and SECRET not in d for p, d in rows)
        assert all(json.loads(p)["sourceKey"] == "***" for p, _ in ours)

        shown: list[str] = []
        for args in (
            ["runs", "list", "--pipeline", PIPELINE],
            ["runs", "list", "--pipeline", PIPELINE, "--json"],
            ["runs", "show", run_id],
            ["runs", "show", run_id, "--json"],
            ["preview", str(plan), "--json"],
            ["ledger", "export", "--format", "jsonl"],
            ["ledger", "export", "--format", "csv"],
            ["report", backfill_id],
            ["report", backfill_id, "--html", str(tmp_path / "report.html")],
        ):
            assert cli(monkeypatch, "carol", *args) in (0, 4), args
            out, err = capsys.readouterr()
            assert SECRET not in out + err, args
            shown.append(out)
        assert SECRET not in (tmp_path / "report.html").read_text(encoding="utf-8")
        listed = json.loads(shown[1])["runs"]
        assert {r["parameters"]["sourceKey"] for r in listed if "sourceKey" in r["parameters"]} == {"***"}
        assert json.loads(shown[3])["run"]["parameters"]["sourceKey"] == "***"
        assert "sourceKey" in shown[2] and "***" in shown[2]


def test_runs_cached_before_a_plan_marked_the_parameter_are_masked_then(tmp_path: Path, monkeypatch: MP) -> None:
    """A sync without secrets (e.g. an older version) cached the value; the first sync that
    knows the parameter is secret rewrites the cached runs."""
    base = base_time()
    scen = scenario(base)
    with emulator(scen, monkeypatch) as emu:
        client = connect(
            FactoryRef("00000000-0000-0000-0000-000000000000", "rg-energy-analytics", "adf-grid-telemetry")
        )
        client.create_run(PIPELINE, {"windowStart": "a", "windowEnd": "b", "feederRegion": "x", "sourceKey": SECRET})
        assert _ours(emu)
        db = Database()
        try:
            sync_history(db, client, PIPELINE)
            assert any(SECRET in d for _, d in _cache_rows(tmp_path))
            sync_history(db, client, PIPELINE, secret={"sourceKey"})
            assert not any(SECRET in p or SECRET in d for p, d in _cache_rows(tmp_path))
            # Remembered: a later sync without the plan's word still masks.
            client.create_run(
                PIPELINE, {"windowStart": "c", "windowEnd": "d", "feederRegion": "x", "sourceKey": SECRET}
            )
            sync_history(db, client, PIPELINE)
            assert not any(SECRET in p or SECRET in d for p, d in _cache_rows(tmp_path))
        finally:
            db.dispose()


def test_secret_names_are_remembered_once_and_mask_cached_rows(ledger_url: str) -> None:
    """On every ledger backend: learning a name twice (two workers at once) is harmless, and the
    rows already cached lose the value, in their parameters and in their document."""
    from datetime import UTC, datetime

    from backfill.factory.run import Run, RunStatus
    from backfill.store import history as store
    from backfill.store import history_writes as writes

    key, pipeline = "sub/rg/adf", "Load"
    run = Run(
        "r1",
        pipeline,
        RunStatus.SUCCEEDED,
        {"windowStart": "2026-11-03T02:00:00Z", "sourceKey": SECRET},
        last_updated=datetime(2026, 11, 3, tzinfo=UTC),
    )
    db = Database(ledger_url)
    try:
        with db.writing() as conn:
            writes.upsert_runs(conn, key, pipeline, [run])
        with db.writing() as conn:
            assert writes.remember_secrets(conn, key, pipeline, {"sourceKey"}) == {"sourceKey"}
            assert writes.remember_secrets(conn, key, pipeline, {"sourceKey"}) == set()
            assert store.known_secrets(conn, key, pipeline) == {"sourceKey"}
            assert store.known_secrets(conn, key, "Other") == set()
        with db.writing() as conn:
            (cached,) = store.fetch_runs(conn, key, pipeline, ["r1"]).values()
            (record,) = store.load_records(conn, key, pipeline)
        assert cached.parameters == {"windowStart": "2026-11-03T02:00:00Z", "sourceKey": "***"}
        assert record.parameters["sourceKey"] == "***"
    finally:
        db.dispose()

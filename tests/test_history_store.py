"""The history cache tables on real SQLite, PostgreSQL and MariaDB: upserts, light loads, fetches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine

from backfill.factory.protocol import FactoryRef
from backfill.factory.run import Run, RunStatus
from backfill.store import history as store
from backfill.store import history_tables as tables
from backfill.store import history_writes as writes
from backfill.store.database import Database
from backfill.store.history import HistoryView, load_history

T0 = datetime(2026, 11, 3, 2, 0, 0, 123456, tzinfo=UTC)
REF = FactoryRef("sub", "rg", "adf-one")
KEY = REF.key


def make_run(
    run_id: str,
    status: RunStatus = RunStatus.SUCCEEDED,
    *,
    updated: timedelta = timedelta(0),
    latest: bool = True,
    group: str | None = "g",
    **parameters: object,
) -> Run:
    return Run(
        run_id=run_id,
        pipeline="Load",
        status=status,
        parameters=parameters or {"windowStart": "2026-11-03T02:00:00Z", "files": ["a.csv"]},
        run_group_id=group,
        is_latest=latest,
        start=T0,
        end=T0 + timedelta(minutes=3) if status.is_final else None,
        last_updated=T0 + timedelta(minutes=3) + updated,
        duration=timedelta(minutes=3) if status.is_final else None,
        message="Operation failed" if status == RunStatus.FAILED else "",
        invoked_by="Manual",
        invoked_by_type="Manual",
    )


def test_upsert_round_trip_and_refresh(db: Database) -> None:
    first = make_run("r1", RunStatus.IN_PROGRESS, updated=timedelta(0))
    with db.writing() as conn:
        assert writes.upsert_runs(conn, KEY, "Load", [first, make_run("r2", RunStatus.FAILED)]) == 2
    done = make_run("r1", RunStatus.SUCCEEDED, updated=timedelta(minutes=5), latest=False)
    with db.writing() as conn:
        writes.upsert_runs(conn, KEY, "Load", [done])
        records = {r.run_id: r for r in store.load_records(conn, KEY, "Load")}
        full = store.fetch_runs(conn, KEY, "Load", ["r1", "r2", "missing"])
    assert set(records) == {"r1", "r2"}
    assert records["r1"].status == RunStatus.SUCCEEDED
    assert records["r1"].is_latest is False
    assert records["r1"].start == T0
    assert records["r1"].parameters == {"windowStart": "2026-11-03T02:00:00Z", "files": ["a.csv"]}
    assert full["r1"] == done
    assert full["r2"].to_json() == make_run("r2", RunStatus.FAILED).to_json()
    assert "missing" not in full


def test_an_older_version_never_overwrites_a_newer_one(db: Database) -> None:
    newer = make_run("r1", RunStatus.SUCCEEDED, updated=timedelta(minutes=10))
    older = make_run("r1", RunStatus.IN_PROGRESS, updated=timedelta(minutes=1))
    with db.writing() as conn:
        writes.upsert_runs(conn, KEY, "Load", [newer])
    with db.writing() as conn:
        writes.upsert_runs(conn, KEY, "Load", [older])
        assert store.fetch_runs(conn, KEY, "Load", ["r1"])["r1"].status == RunStatus.SUCCEEDED


def test_one_batch_may_hold_a_run_twice(db: Database) -> None:
    # A run that changes while we page appears on two pages; the newest version is kept.
    versions = [
        make_run("r1", RunStatus.QUEUED),
        make_run("r1", RunStatus.FAILED, updated=timedelta(minutes=2)),
        make_run("r1", RunStatus.IN_PROGRESS, updated=timedelta(minutes=1)),
    ]
    with db.writing() as conn:
        assert writes.upsert_runs(conn, KEY, "Load", versions) == 1
        assert [r.status for r in store.load_records(conn, KEY, "Load")] == [RunStatus.FAILED]


def test_factories_and_pipelines_are_separate(db: Database) -> None:
    other = FactoryRef("sub", "rg", "adf-two").key
    with db.writing() as conn:
        writes.upsert_runs(conn, KEY, "Load", [make_run("a")])
        writes.upsert_runs(conn, KEY, "Other", [make_run("b")])
        writes.upsert_runs(conn, other, "Load", [make_run("c")])
        assert [r.run_id for r in store.load_records(conn, KEY, "Load")] == ["a"]
        assert tables.count_runs(conn, other, "Load") == 1


def test_load_history_of_a_never_synced_pipeline(db: Database) -> None:
    view = load_history(db, REF, "Load")
    assert len(view) == 0
    assert view.horizon is None
    assert view.synced_at is None
    assert view.runs == ()


def test_history_view_decodes_full_runs_on_demand(db: Database) -> None:
    runs = [make_run(f"r{i}", RunStatus.FAILED, windowStart=f"2026-11-03T0{i}:00:00Z") for i in range(3)]
    with db.writing() as conn:
        writes.upsert_runs(conn, KEY, "Load", runs)
    view = load_history(db, REF, "Load")
    assert len(view) == 3
    assert not any(isinstance(r, Run) for r in view.records)
    assert view.resolve(list(view.records[:2])) == {
        r.run_id: r for r in runs if r.run_id in {view.records[0].run_id, view.records[1].run_id}
    }
    assert sorted(view.runs, key=lambda r: r.run_id) == runs


def test_history_view_of_plain_runs() -> None:
    runs = [make_run("a"), make_run("b")]
    view = HistoryView(runs, T0, T0)
    assert view.runs == tuple(runs)
    assert view.resolve(list(view.records)) == {"a": runs[0], "b": runs[1]}


def test_times_convert_exactly() -> None:
    for moment in (T0, datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)):
        assert tables.from_us(tables.to_us(moment)) == moment
    assert tables.to_us(None) is None


@pytest.mark.mariadb
def test_replace_path_on_other_dialects(mariadb_url: str) -> None:
    # MySQL/MariaDB and Azure SQL take the delete-and-insert path inside one transaction.
    engine = create_engine(mariadb_url)
    for table in (tables.RUNS, tables.KEY_SETS, tables.KEYS):
        table.create(engine)
    try:
        with engine.begin() as conn:
            writes.upsert_runs(conn, KEY, "Load", [make_run("r1", RunStatus.QUEUED), make_run("r2")])
        with engine.begin() as conn:
            writes.upsert_runs(conn, KEY, "Load", [make_run("r1", RunStatus.FAILED, updated=timedelta(minutes=1))])
            writes.upsert_runs(
                conn, KEY, "Load", [make_run("r2", RunStatus.IN_PROGRESS, updated=-timedelta(minutes=1))]
            )
            records = sorted(store.load_records(conn, KEY, "Load"))
        assert [(r.run_id, r.status) for r in records] == [("r1", RunStatus.FAILED), ("r2", RunStatus.SUCCEEDED)]
    finally:
        engine.dispose()


def test_newest_runs_reads_only_the_newest_of_a_status(ledger_url: str) -> None:
    """The runner's usual duration comes from a narrow query, not from every cached run."""
    from datetime import UTC, datetime, timedelta

    from backfill.factory.protocol import FactoryRef
    from backfill.factory.run import Run, RunStatus
    from backfill.store import history_writes as writes
    from backfill.store.database import Database
    from backfill.store.history import HistoryView, load_history

    base = datetime(2026, 11, 3, tzinfo=UTC)
    runs = [
        Run(
            f"r{i}",
            "P",
            RunStatus.SUCCEEDED if i % 3 else RunStatus.FAILED,
            {"i": str(i)},
            start=base + timedelta(minutes=i),
            last_updated=base + timedelta(minutes=i, seconds=30),
            duration=timedelta(seconds=i),
        )
        for i in range(30)
    ]
    db = Database(ledger_url)
    ref = FactoryRef("s", "g", "f")
    with db.writing() as conn:
        writes.upsert_runs(conn, ref.key, "P", runs)
    cached = load_history(db, ref, "P").newest_runs(RunStatus.SUCCEEDED, 5)
    plain = HistoryView(runs).newest_runs(RunStatus.SUCCEEDED, 5)
    assert [r.run_id for r in cached] == [r.run_id for r in plain] == ["r29", "r28", "r26", "r25", "r23"]
    db.dispose()

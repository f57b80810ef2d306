"""The history cache's key index on real SQLite, PostgreSQL and MariaDB: a preview that reads only
the runs its windows can match decides exactly as matching over every cached run does."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, delete, func, select, update

from backfill.factory.protocol import FactoryRef
from backfill.factory.run import Run, RunStatus
from backfill.matching import key_hash
from backfill.secrets import Secret
from backfill.store import history_keys as keys
from backfill.store import history_tables as tables
from backfill.store import history_writes as writes
from backfill.store.database import Database
from backfill.store.history import HistoryView, load_history
from backfill.timeutil import format_utc
from backfill.windows import Window

T0 = datetime(2026, 11, 3, tzinfo=UTC)
EVERY = timedelta(minutes=15)
REF = FactoryRef("sub", "rg", "adf-keys")
FIELDS = ("windowStart", "feederRegion")


def windows(count: int = 12, region: object = "north") -> list[Window]:
    return [
        Window(
            T0 + i * EVERY,
            T0 + (i + 1) * EVERY,
            {"windowStart": format_utc(T0 + i * EVERY), "feederRegion": region, "sourceKey": Secret("${K}")},
        )
        for i in range(count)
    ]


def spelled(moment: datetime, variant: int) -> str:
    # ADF and plans spell one instant in several ways; they must match all the same.
    return [
        format_utc(moment),
        moment.isoformat(),
        moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z",
        moment.astimezone(timezone(timedelta(hours=2))).isoformat(),
    ][variant % 4]


def random_runs(seed: int, count: int = 120) -> list[Run]:
    chance = random.Random(seed)
    runs = []
    for n in range(count):
        slot = chance.randrange(-2, 14)  # some before and after the plan's windows
        start = T0 + slot * EVERY
        parameters: dict[str, object] = {
            "windowStart": spelled(start, chance.randrange(4)),
            "feederRegion": chance.choice(["north", "north", "south", '"north"']),
        }
        if chance.random() < 0.05:
            del parameters["feederRegion"]  # a run from before the parameter existed
        group = f"g{chance.randrange(40)}" if chance.random() < 0.5 else f"run-{n}"
        runs.append(
            Run(
                run_id=f"run-{n}",
                pipeline="Load",
                status=chance.choice(list(RunStatus)),
                parameters=parameters,
                run_group_id=group,
                is_latest=chance.random() < 0.7,
                start=None if chance.random() < 0.05 else start + timedelta(minutes=chance.randrange(0, 300)),
                last_updated=T0 + timedelta(minutes=n),
                message=f"message {n}",
            )
        )
    return runs


def cache(db: Database, runs: list[Run], pipeline: str = "Load") -> None:
    with db.writing() as conn:
        writes.upsert_runs(conn, REF.key, pipeline, runs)


def key_rows(db: Database) -> int:
    with db.writing() as conn:
        return int(conn.execute(select(func.count()).select_from(tables.KEYS)).scalar_one())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_key_index_finds_what_matching_every_run_finds(db: Database, seed: int) -> None:
    runs = random_runs(seed)
    cache(db, runs)
    plan = windows(20)  # the last few have no run
    expected = HistoryView(runs).latest_runs(plan, FIELDS)
    assert any(expected) and not all(expected)
    assert load_history(db, REF, "Load").latest_runs(plan, FIELDS) == expected
    # Runs cached after the key set exists get their keys from the sync itself.
    later = random_runs(seed + 100, 40)
    later = [dataclasses.replace(r, run_id=f"later-{r.run_id}") for r in later]
    cache(db, later)
    assert key_rows(db) == len(runs) + len(later)
    expected = HistoryView(runs + later).latest_runs(plan, FIELDS)
    assert load_history(db, REF, "Load").latest_runs(plan, FIELDS) == expected


def test_runs_cached_before_the_key_set_are_filled_in_once(db: Database) -> None:
    runs = random_runs(7, 60)
    cache(db, runs)
    assert key_rows(db) == 0
    view = load_history(db, REF, "Load")
    assert len(view) == 60
    view.latest_runs(windows(), FIELDS)
    assert key_rows(db) == 60
    with db.writing() as conn:
        set_id = keys.key_set(conn, REF.key, "Load", FIELDS)
        assert keys.fill_keys(conn, REF.key, "Load", set_id, FIELDS) == 0


def test_a_run_whose_key_went_missing_is_found_again(db: Database) -> None:
    # A sync racing with a new key set caches a run without its key; counts reveal it.
    runs = random_runs(11, 60)
    cache(db, runs)
    plan = windows()
    expected = HistoryView(runs).latest_runs(plan, FIELDS)
    load_history(db, REF, "Load").latest_runs(plan, FIELDS)
    with db.writing() as conn:
        conn.execute(delete(tables.KEYS).where(tables.KEYS.c.run_id.in_([r.run_id for r in runs[::3]])))
    assert load_history(db, REF, "Load").latest_runs(plan, FIELDS) == expected
    assert key_rows(db) == 60


def test_a_hash_collision_never_makes_a_match(db: Database) -> None:
    stray = Run(
        run_id="stray",
        pipeline="Load",
        status=RunStatus.SUCCEEDED,
        start=T0 + timedelta(hours=9),
        parameters={"windowStart": format_utc(T0), "feederRegion": "south"},
    )
    cache(db, [stray])
    plan = windows(1)
    view = load_history(db, REF, "Load")
    assert view.latest_runs(plan, FIELDS) == [None]
    # Give the stray run the window's hash, as a collision would.
    window_hash = key_hash(plan[0].parameters, FIELDS)
    assert window_hash is not None
    with db.writing() as conn:
        conn.execute(update(tables.KEYS).where(tables.KEYS.c.run_id == "stray").values(key_hash=window_hash[1]))
    assert view.latest_runs(plan, FIELDS) == [None]


def test_each_match_on_has_its_own_key_set_and_pipelines_stay_apart(db: Database) -> None:
    north = Run(
        run_id="n",
        pipeline="Load",
        status=RunStatus.FAILED,
        start=T0 + timedelta(minutes=20),
        parameters={"windowStart": format_utc(T0), "feederRegion": "north"},
    )
    south = Run(
        run_id="s",
        pipeline="Load",
        status=RunStatus.SUCCEEDED,
        start=T0 + timedelta(minutes=30),
        parameters={"windowStart": format_utc(T0), "feederRegion": "south"},
    )
    cache(db, [north, south])
    cache(
        db,
        [
            Run(
                run_id="o",
                pipeline="Other",
                status=RunStatus.SUCCEEDED,
                start=T0 + timedelta(hours=1),
                parameters=dict(north.parameters),
            )
        ],
        pipeline="Other",
    )
    plan = windows(1)
    view = load_history(db, REF, "Load")
    assert view.latest_runs(plan, FIELDS) == [north]
    # Matching on the start alone: both regions' runs belong to the window; the newest wins.
    assert view.latest_runs(plan, ("windowStart",)) == [south]
    # A secret in match_on is left out of the key (ADF never gives its value back).
    assert view.latest_runs(plan, ("windowStart", "sourceKey")) == [south]
    with db.writing() as conn:
        assert len(keys.key_sets(conn, REF.key, "Load")) == 2
        assert keys.key_sets(conn, REF.key, "Other") == []


def test_an_empty_or_unknown_pipeline(db: Database) -> None:
    view = load_history(db, REF, "Never")
    assert len(view) == 0
    assert view.latest_runs(windows(3), FIELDS) == [None, None, None]
    assert view.latest_runs([], FIELDS) == []


@pytest.mark.mariadb
def test_keys_on_other_dialects(mariadb_url: str) -> None:
    # MariaDB (and Azure SQL) take the delete-and-insert path and lists of bound values.
    engine = create_engine(mariadb_url)
    for table in (tables.RUNS, tables.KEY_SETS, tables.KEYS):
        table.create(engine)
    try:
        runs = random_runs(5, 80)
        with engine.begin() as conn:
            writes.upsert_runs(conn, REF.key, "Load", runs[:40])
            set_id = keys.key_set(conn, REF.key, "Load", FIELDS)
            assert keys.key_set(conn, REF.key, "Load", FIELDS) == set_id
            assert keys.fill_keys(conn, REF.key, "Load", set_id, FIELDS) == 40
            writes.upsert_runs(conn, REF.key, "Load", runs[40:])
            assert keys.fill_keys(conn, REF.key, "Load", set_id, FIELDS) == 0
            plan = windows()
            wanted = {hashed[1] for w in plan if (hashed := key_hash(w.parameters, FIELDS))}
            found = keys.lookup(conn, REF.key, "Load", set_id, wanted)
        matching = {r.run_id for r in runs if (hashed := key_hash(r.parameters, FIELDS)) and hashed[1] in wanted}
        assert {record.run_id for _, record, _ in found} == matching
    finally:
        engine.dispose()

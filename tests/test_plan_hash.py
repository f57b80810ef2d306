"""The canonical plan hash: layout-free, meaning-sensitive; and naive times refused anywhere."""

from __future__ import annotations

import copy
import hashlib
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plan_samples import MINIMAL_PLAN, SPEC_PLAN, toml_document

from backfill.errors import PlanError
from backfill.plan.loader import canonical_json, load_plan, plan_from_data

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

names = st.from_regex(r"[a-z][A-Za-z0-9_]{0,8}", fullmatch=True)
plain_text = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_characters="{}$\\\x7f"), max_size=12
)
templates = st.sampled_from(["{start}", "{end}", "{start:%Y-%m-%d}", "{end:%H:%M}", "x-{start:%Y%m%dT%H%M}-{{y}}"])
literals = st.one_of(plain_text, st.integers(-1000, 1000), st.booleans(), st.lists(plain_text, max_size=3))
secrets = st.from_regex(r"[A-Z][A-Z_]{0,8}", fullmatch=True).map(lambda v: {"secret": "${" + v + "}"})
# (spelling, equivalent spelling) of window lengths that divide a day
everies = st.sampled_from([("15m", "900s"), ("1h", "60m"), ("2h", "7200s"), ("1d", "24h"), ("30m", "1800s")])


@st.composite
def plans(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid plan dict and an equivalent spelling of its window length."""
    every, alias = draw(everies)
    start = draw(st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)))
    start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    parameters: dict[str, Any] = {
        "windowStart": draw(templates.filter(lambda t: "start" in t and "%Y-%m-%d}" not in t))
    }
    for name in draw(st.lists(names.filter(lambda n: n != "windowStart"), max_size=4, unique=True)):
        parameters[name] = draw(st.one_of(templates, literals, secrets))
    data: dict[str, Any] = {
        "title": draw(plain_text.filter(bool)),
        "ticket": draw(plain_text),
        "target": {"subscription_id": "sub", "resource_group": "rg", "factory": "f", "pipeline": draw(names)},
        "windows": {"start": start, "end": start + timedelta(days=draw(st.integers(1, 2))), "every": every},
        "parameters": parameters,
        "approval": {"required": draw(st.integers(1, 3)), "expires": draw(st.sampled_from(["12h", "720m"]))},
        "execution": {
            "concurrency": draw(st.integers(1, 8)),
            "order": draw(st.sampled_from(["oldest-first", "newest-first"])),
            "poll": draw(st.sampled_from(["auto", "30s"])),
        },
    }
    if draw(st.booleans()):
        data["match"] = {"on": ["windowStart"]}
    checks = draw(st.lists(names, max_size=2, unique=True))
    if checks:
        data["checks"] = [
            {"name": name, "kind": "sql", "url": "${SINK}", "query": "SELECT 1", "args": {"s": "{start}"}}
            for name in checks
        ]
    return data, alias


def _hash_of(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_plan(path).hash


@FAST
@given(case=plans(), seed=st.integers(), gap=st.sampled_from(["\n", "\n\n\n", "\n# a comment line\n"]))
def test_layout_key_order_offsets_and_duration_spelling_do_not_change_the_hash(
    tmp_path: Path, case: tuple[dict[str, Any], str], seed: int, gap: str
) -> None:
    data, alias = case
    reference = _hash_of(tmp_path, "a.toml", toml_document(data))
    keys = sorted({k for table in (data, *[v for v in data.values() if isinstance(v, dict)]) for k in table})
    random.Random(seed).shuffle(keys)
    respelled = copy.deepcopy(data)
    respelled["windows"]["every"] = alias
    variant = toml_document(respelled, order=keys, gap=gap, comment="reformatted", offset_style=seed % 3)
    assert _hash_of(tmp_path, "b.toml", variant) == reference
    # The canonical JSON is itself a plan with the same hash, whatever its indentation.
    canonical = json.loads(canonical_json(load_plan(tmp_path / "a.toml").plan))
    assert _hash_of(tmp_path, "c.json", json.dumps(canonical, indent=seed % 5, sort_keys=seed % 2 == 0)) == reference


def _changes(data: dict[str, Any]) -> list[dict[str, Any]]:
    changed = []
    for path, value in [
        (("title",), data["title"] + "!"),
        (("target", "pipeline"), data["target"]["pipeline"] + "2"),
        (("windows", "end"), data["windows"]["end"] + timedelta(days=1)),
        (("windows", "every"), "1d" if data["windows"]["every"] not in ("1d", "24h") else "12h"),
        (("parameters", "windowStart"), "{start:%Y-%m-%dT%H:%M:%S}"),
        (("parameters", "extra"), "v"),
        (("approval", "required"), data["approval"]["required"] + 1),
        (("execution", "concurrency"), data["execution"]["concurrency"] + 1),
    ]:
        variant = copy.deepcopy(data)
        target = variant
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        changed.append(variant)
    return changed


@FAST
@given(case=plans())
def test_any_change_of_meaning_changes_the_hash(case: tuple[dict[str, Any], str]) -> None:
    data, _ = case
    reference = plan_from_data(data).hash
    hashes = {plan_from_data(variant).hash for variant in _changes(data)}
    assert reference not in hashes
    assert len(hashes) == len(_changes(data))


def test_spec_plan_hash_ignores_comments_and_blank_lines(tmp_path: Path) -> None:
    stripped = "\n".join(line.split("  #")[0].rstrip() for line in SPEC_PLAN.splitlines() if line.strip())
    assert "#" not in stripped
    assert _hash_of(tmp_path, "a.toml", SPEC_PLAN) == _hash_of(tmp_path, "b.toml", stripped + "\n")
    explicit_defaults = SPEC_PLAN.replace("[approval]", '[approval]\nidentity = "any"')
    assert _hash_of(tmp_path, "c.toml", explicit_defaults) == _hash_of(tmp_path, "a.toml", SPEC_PLAN)
    swapped = SPEC_PLAN.replace('on = ["windowStart", "feederRegion"]', 'on = ["feederRegion", "windowStart"]')
    assert _hash_of(tmp_path, "d.toml", swapped) == _hash_of(tmp_path, "a.toml", SPEC_PLAN)
    secret_changed = SPEC_PLAN.replace("${SOURCE_API_KEY}", "${OTHER_KEY}")
    assert _hash_of(tmp_path, "e.toml", secret_changed) != _hash_of(tmp_path, "a.toml", SPEC_PLAN)


naive_times = st.datetimes(datetime(1990, 1, 1), datetime(2100, 1, 1)).map(lambda d: d.replace(microsecond=0))


@FAST
@given(moment=naive_times, key=st.sampled_from(["start", "end"]))
def test_naive_toml_datetimes_are_refused_with_the_key(tmp_path: Path, moment: datetime, key: str) -> None:
    local = moment.strftime("%Y-%m-%dT%H:%M:%S")
    old = "start = 2026-11-03T00:00:00Z" if key == "start" else "end = 2026-11-03T01:00:00Z"
    path = tmp_path / "naive.toml"
    path.write_text(MINIMAL_PLAN.replace(old, f"{key} = {local}"), encoding="utf-8")
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    assert str(caught.value) == (
        f"{path}: windows.{key}: {moment.isoformat()} is a local time; expected a UTC offset, e.g. 2026-11-03T00:00:00Z"
    )


@FAST
@given(moment=naive_times, index=st.integers(0, 1))
def test_naive_times_in_explicit_lists_and_json_are_refused(moment: datetime, index: int) -> None:
    pair: list[Any] = [datetime(2026, 11, 3, tzinfo=UTC), datetime(2126, 11, 3, tzinfo=UTC)]
    pair[index] = moment
    data = {
        "title": "t",
        "target": {"subscription_id": "s", "resource_group": "r", "factory": "f", "pipeline": "p"},
        "windows": {"list": [pair]},
    }
    with pytest.raises(PlanError) as caught:
        plan_from_data(data, path="p.toml")
    assert str(caught.value).startswith(f"p.toml: windows.list[0][{index}]: {moment.isoformat()} is a local time")
    as_json = copy.deepcopy(data)
    as_json["windows"] = {"start": moment.isoformat(), "end": "2126-01-01T00:00:00Z", "every": "1d"}
    with pytest.raises(PlanError, match=r"^p.json: windows.start: \".*\" is a local time"):
        plan_from_data(as_json, path="p.json")


QUERY_FILE_CHECK = """
[[checks]]
name = "readings"
kind = "sql"
url = "${SINK_URL}"
query_file = "../checks/readings.sql"
args = { start = "{start}", end = "{end}" }
expect = { query_file = "../checks/source.sql", args = { start = "{start}" } }
"""


def test_editing_a_query_file_changes_the_hash(tmp_path: Path) -> None:
    (tmp_path / "checks").mkdir()
    (tmp_path / "plans").mkdir()
    sink_sql, source_sql = tmp_path / "checks" / "readings.sql", tmp_path / "checks" / "source.sql"
    sink_sql.write_text("SELECT COUNT(*) FROM readings WHERE ts >= :start AND ts < :end\n", encoding="utf-8")
    source_sql.write_text("SELECT 4 WHERE :start IS NOT NULL\n", encoding="utf-8")
    plan = tmp_path / "plans" / "p.toml"
    plan.write_text(MINIMAL_PLAN + QUERY_FILE_CHECK, encoding="utf-8")
    first = load_plan(plan).hash
    assert load_plan(plan).hash == first
    sink_sql.write_text("SELECT COUNT(*) FROM readings WHERE ts >= :start AND ts <= :end\n", encoding="utf-8")
    second = load_plan(plan).hash
    source_sql.write_text("SELECT 5 WHERE :start IS NOT NULL\n", encoding="utf-8")
    third = load_plan(plan).hash
    assert len({first, second, third}) == 3
    # Plans without query files keep the hash of their canonical JSON alone.
    plain = load_plan(tmp_path / "plans" / "p.toml")
    assert plain.hash != hashlib.sha256(canonical_json(plain.plan).encode()).hexdigest()
    bare = tmp_path / "bare.toml"
    bare.write_text(MINIMAL_PLAN, encoding="utf-8")
    assert load_plan(bare).hash == hashlib.sha256(canonical_json(load_plan(bare).plan).encode()).hexdigest()


def test_a_missing_query_file_is_refused_with_its_key(tmp_path: Path) -> None:
    plan = tmp_path / "p.toml"
    plan.write_text(MINIMAL_PLAN + QUERY_FILE_CHECK, encoding="utf-8")
    with pytest.raises(PlanError) as caught:
        load_plan(plan)
    missing_file = tmp_path / ".." / "checks" / "readings.sql"
    assert str(caught.value) == f"{plan}: checks[0].query_file: {missing_file} does not exist; expected a SQL file"

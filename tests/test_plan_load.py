"""Loading plans: the spec's example, the example plans, JSON plans, limits and LoadedPlan."""

from __future__ import annotations

import json
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from plan_samples import MINIMAL_PLAN, SPEC_PLAN, TINY_TARGET, plan_toml

from backfill.checks.base import CheckSpec
from backfill.errors import ConfigError, PlanError
from backfill.factory.protocol import FactoryRef
from backfill.plan.loader import canonical_json, load_plan, plan_from_data
from backfill.secrets import Secret

PLANS = Path(__file__).resolve().parent.parent / "plans"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_spec_example_loads(tmp_path: Path) -> None:
    loaded = load_plan(write(tmp_path / "spec.toml", SPEC_PLAN))
    assert loaded.path == tmp_path / "spec.toml"
    assert loaded.plan.title == "Replay north feeder telemetry after the sink lock incident"
    assert loaded.ref == FactoryRef("00000000-0000-0000-0000-000000000000", "rg-energy-analytics", "adf-grid-telemetry")
    assert loaded.pipeline == "LoadMeterTelemetry"
    assert loaded.match_on == ("windowStart", "feederRegion")
    assert len(loaded.windows) == 24
    first = loaded.windows[0]
    assert first.key == "2026-11-03T00:00:00Z/2026-11-03T00:15:00Z"
    assert first.start == datetime(2026, 11, 3, tzinfo=UTC) and first.start.tzinfo is UTC
    assert first.public_parameters() == {
        "windowStart": "2026-11-03T00:00:00Z",
        "windowEnd": "2026-11-03T00:15:00Z",
        "feederRegion": "north",
        "sourceKey": "***",
    }
    secret = first.parameters["sourceKey"]
    assert isinstance(secret, Secret) and secret.reveal({"SOURCE_API_KEY": "k3y"}) == "k3y"
    assert loaded.check_specs == (
        CheckSpec(
            name="readings-in-sink",
            kind="odbc",
            options={
                "connection": "${TELEMETRY_SINK_ODBC}",
                "query": "SELECT COUNT(*) FROM meter_readings WHERE feeder = ? AND reading_ts >= ? AND reading_ts < ?",
                "args": ["north", "{start}", "{end}"],
                "expect": 900,
            },
            timeout=timedelta(seconds=30),
            base_dir=tmp_path,
        ),
    )
    approval, execution = loaded.plan.approval, loaded.plan.execution
    assert (approval.required, approval.approvers, approval.expires, approval.canary, approval.identity) == (
        1,
        [],
        timedelta(hours=12),
        1,
        "any",
    )
    assert (execution.mode, execution.concurrency, execution.order, execution.on_failure) == (
        "new-run",
        1,
        "oldest-first",
        "stop",
    )
    assert (execution.run_timeout, execution.on_timeout, execution.poll) == (timedelta(minutes=45), "report", "auto")
    assert loaded.windows_by_key[first.key] is first
    assert len(loaded.hash) == 64


def test_loading_never_reads_the_environment_for_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "spec.toml", SPEC_PLAN)
    monkeypatch.delenv("SOURCE_API_KEY", raising=False)
    unset = load_plan(path)
    monkeypatch.setenv("SOURCE_API_KEY", "one")
    monkeypatch.setenv("TELEMETRY_SINK_ODBC", "Driver=x")
    assert load_plan(path).hash == unset.hash
    assert "${SOURCE_API_KEY}" in canonical_json(unset.plan) and "one" not in canonical_json(unset.plan)


def _plan_files() -> list[Path]:
    # plans/ also holds emulator scenarios; a plan is a file with a [target].
    files = []
    for path in sorted(PLANS.glob("*.toml")):
        if "target" in tomllib.loads(path.read_text(encoding="utf-8")):
            files.append(path)
    return files


def test_the_example_plans_exist() -> None:
    names = {path.name for path in _plan_files()}
    assert {
        "demo.toml",
        "telemetry-15m.toml",
        "hourly-partitions.toml",
        "business-dates.toml",
        "failed-windows-list.toml",
    } <= names


@pytest.mark.parametrize("path", _plan_files(), ids=lambda p: p.name)
def test_every_example_plan_loads(path: Path) -> None:
    loaded = load_plan(path)
    assert loaded.windows and loaded.match_on
    assert all(spec.base_dir == PLANS for spec in loaded.check_specs)
    keys = [w.key for w in loaded.windows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    # The check options are the ones their kind accepts (built, not connected).
    from backfill.checks.registry import build_checks

    assert [check.name for check in build_checks(loaded.check_specs)] == [s.name for s in loaded.check_specs]


def test_example_plans_say_what_they_promise() -> None:
    demo = load_plan(PLANS / "demo.toml")
    assert (demo.pipeline, demo.ref.factory, len(demo.windows)) == ("LoadMeterTelemetry", "adf-grid-telemetry", 24)
    assert set(demo.plan.parameters) == {"windowStart", "windowEnd", "feederRegion"}
    (check,) = demo.check_specs
    assert (check.kind, check.options["url"], check.options["expect"]) == ("sql", "${TELEMETRY_SINK_URL}", 900)
    assert "meter_readings" in check.options["query"]
    dates = load_plan(PLANS / "business-dates.toml")
    assert dates.windows[0].parameters["businessDate"] == "2026-10-01"
    assert dates.windows[-1].parameters["businessDate"] == "2026-10-31"
    listed = load_plan(PLANS / "failed-windows-list.toml")
    assert listed.plan.windows.list_ is not None
    assert [w.start for w in listed.windows] == sorted(w.start for w in listed.windows)
    assert listed.plan.execution.mode == "recover"
    hourly = load_plan(PLANS / "hourly-partitions.toml")
    assert hourly.windows[5].parameters["partitionHour"] == "05"
    assert hourly.windows[0].parameters["sourceTables"] == ["sales_orders", "sales_lines"]


def test_a_json_plan_is_the_same_plan(tmp_path: Path) -> None:
    toml_plan = load_plan(write(tmp_path / "spec.toml", SPEC_PLAN))
    data = json.loads(canonical_json(toml_plan.plan))
    data["windows"]["every"] = "900s"
    json_plan = load_plan(write(tmp_path / "spec.json", json.dumps(data, indent=4)))
    assert json_plan.hash == toml_plan.hash
    assert json_plan.windows == toml_plan.windows


def test_json_times_need_an_offset(tmp_path: Path) -> None:
    data = json.loads(canonical_json(load_plan(write(tmp_path / "p.toml", MINIMAL_PLAN)).plan))
    data["windows"]["start"] = "2026-11-03T00:00:00"
    with pytest.raises(PlanError) as caught:
        load_plan(write(tmp_path / "p.json", json.dumps(data)))
    assert str(caught.value) == (
        f'{tmp_path / "p.json"}: windows.start: "2026-11-03T00:00:00" is a local time; '
        "expected a UTC offset, e.g. 2026-11-03T00:00:00Z"
    )
    data["windows"]["start"] = "2026-11-03T02:00:00+02:00"  # the same instant as 00:00Z
    assert load_plan(write(tmp_path / "q.json", json.dumps(data))).windows[0].start == datetime(2026, 11, 3, tzinfo=UTC)


def test_offsets_are_converted_to_utc(tmp_path: Path) -> None:
    text = MINIMAL_PLAN.replace("start = 2026-11-03T00:00:00Z", "start = 2026-11-02T19:00:00-05:00")
    loaded = load_plan(write(tmp_path / "p.toml", text))
    assert loaded.windows[0].key == "2026-11-03T00:00:00Z/2026-11-03T00:15:00Z"
    assert loaded.plan.windows.start is not None and loaded.plan.windows.start.tzinfo is UTC


def test_the_window_limit_is_counted_before_generating(tmp_path: Path) -> None:
    text = MINIMAL_PLAN.replace("end = 2026-11-03T01:00:00Z", "end = 2126-11-03T00:00:00Z").replace('"15m"', '"1s"')
    path = write(tmp_path / "p.toml", text)
    began = time.monotonic()
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    assert time.monotonic() - began < 1
    assert str(caught.value) == (
        f'{path}: windows.every: "1s" gives 3155673600 windows, more than the limit of 100000 (BACKFILL_MAX_WINDOWS)'
    )


def test_the_window_limit_comes_from_the_caller_or_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path / "p.toml", MINIMAL_PLAN)
    assert len(load_plan(path, max_windows=4).windows) == 4
    with pytest.raises(PlanError, match=r"windows.every: \"15m\" gives 4 windows, more than the limit of 3 "):
        load_plan(path, max_windows=3)
    with pytest.raises(PlanError, match=r"more than the limit of 2 "):
        load_plan(path, env={"BACKFILL_MAX_WINDOWS": "2"})
    assert len(load_plan(path, max_windows=10, env={"BACKFILL_MAX_WINDOWS": "2"}).windows) == 4
    with pytest.raises(ConfigError, match=r"^BACKFILL_MAX_WINDOWS='many' is not a positive whole number$"):
        load_plan(path, env={"BACKFILL_MAX_WINDOWS": "many"})


def test_the_limit_applies_to_explicit_lists(tmp_path: Path) -> None:
    windows = ", ".join(f"[2026-11-03T0{i}:00:00Z, 2026-11-03T0{i}:30:00Z]" for i in range(3))
    text = MINIMAL_PLAN.replace(
        'start = 2026-11-03T00:00:00Z\nend = 2026-11-03T01:00:00Z\nevery = "15m"', f"list = [{windows}]"
    )
    path = write(tmp_path / "p.toml", text)
    assert len(load_plan(path).windows) == 3
    with pytest.raises(PlanError) as caught:
        load_plan(path, max_windows=2)
    assert str(caught.value) == f"{path}: windows.list: 3 windows, more than the limit of 2 (BACKFILL_MAX_WINDOWS)"


def test_match_on_defaults_to_every_non_secret_parameter(tmp_path: Path) -> None:
    text = SPEC_PLAN.replace('on = ["windowStart", "feederRegion"]', "")
    loaded = load_plan(write(tmp_path / "p.toml", text))
    assert loaded.match_on == ("windowStart", "windowEnd", "feederRegion")


def test_plan_from_data_needs_no_file() -> None:
    data = tomllib.loads(MINIMAL_PLAN)
    loaded = plan_from_data(data)
    assert loaded.path == Path("<plan>")
    assert [w.parameters["windowStart"] for w in loaded.windows][-1] == "2026-11-03T00:45:00Z"
    data["windows"]["every"] = "7m"
    with pytest.raises(PlanError) as caught:
        plan_from_data(data, path="memory")
    assert str(caught.value) == (
        'memory: windows.every: "7m" does not divide the range 2026-11-03T00:00:00Z to 2026-11-03T01:00:00Z (1h)'
    )


@pytest.mark.parametrize(
    ("windows", "start_template", "refused"),
    [
        ('start = 2026-11-03T00:00:00Z\nend = 2026-11-05T00:00:00Z\nevery = "1h"', "{start:%Y-%m-%d}", True),
        ('start = 2026-11-03T00:00:00Z\nend = 2026-11-05T00:00:00Z\nevery = "1h"', "{start:%H}", True),
        ('start = 2026-11-03T00:00:00Z\nend = 2026-11-05T00:00:00Z\nevery = "1h"', "{start}", False),
        (
            "list = [[2026-11-03T01:00:00Z, 2026-11-03T02:00:00Z], [2026-11-03T00:00:00Z, 2026-11-03T01:00:00Z]]",
            "{end}",
            False,
        ),
    ],
)
def test_windows_must_render_distinct_matched_parameters(
    tmp_path: Path, windows: str, start_template: str, refused: bool
) -> None:
    text = plan_toml(
        windows,
        title="t",
        ticket="T-1",
        target=TINY_TARGET,
        parameters={"windowStart": start_template, "region": "north"},
        match=["windowStart", "region"],
    )
    path = write(tmp_path / "plan.toml", text)
    if refused:
        with pytest.raises(PlanError, match="render the same matched parameters"):
            load_plan(path)
    else:
        loaded = load_plan(path)
        assert len({w.parameters["windowStart"] for w in loaded.windows}) == len(loaded.windows)

"""The emulator's ``[[series]] weekdays`` key, which pins the example's stories to weekdays."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from backfill.emulator import load_scenario
from backfill.errors import ScenarioError

ORIGIN = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)  # a Tuesday


def _scenario(tmp_path: Path, weekdays: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(
        '[[pipelines]]\nname = "P"\nparameters = { businessDate = "String" }\n\n'
        '[[series]]\nstart = "-15d"\nend = "-1d"\nevery = "1d"\n'
        f'parameters = {{ businessDate = "{{end:%Y-%m-%d}}" }}\ndelay = "450m"\n{weekdays}\n'
    )
    return path


def test_only_windows_ending_on_the_named_weekdays_run(tmp_path: Path) -> None:
    scenario = load_scenario(_scenario(tmp_path, 'weekdays = ["Mon", "Thu"]'))
    runs = list(scenario.all_history(ORIGIN))
    days = [datetime.fromisoformat(run.parameters["businessDate"]).strftime("%a") for run in runs]
    assert days == ["Thu", "Mon", "Thu", "Mon"]
    assert all(run.start.weekday() in (0, 3) for run in runs)  # type: ignore[union-attr]


def test_without_the_key_every_window_runs(tmp_path: Path) -> None:
    assert len(list(load_scenario(_scenario(tmp_path, "")).all_history(ORIGIN))) == 14


def test_a_bad_weekday_is_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"series\[0\]\.weekdays\[1\]: expected one of Mon, .*, got 'Funday'"):
        load_scenario(_scenario(tmp_path, 'weekdays = ["Mon", "Funday"]'))


def test_the_example_scenario_loads() -> None:
    scenario = load_scenario(Path(__file__).resolve().parent.parent / "slas" / "emulator-scenario.toml")
    assert [p.name for p in scenario.pipelines] == ["RefreshClaimsSeverity"]

"""``preview`` and ``request`` read the target pipeline (issue 9, item 5): an unknown pipeline, a
parameter the pipeline does not declare, or a required one the plan leaves out is refused with
one line before anything else is asked of the factory, instead of failing at ``run``."""

from __future__ import annotations

from pathlib import Path

import pytest
from runner_support import PIPELINE, base_time, cli, emulator, plan_text, scenario

Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch


def _write(tmp_path: Path, text: str) -> Path:
    plan = tmp_path / "plan.toml"
    plan.write_text(text, encoding="utf-8")
    return plan


@pytest.mark.parametrize("command", ["preview", "request", "history"])
def test_an_unknown_pipeline_is_refused_in_one_line(command: str, tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    plan = _write(tmp_path, plan_text(base, 2).replace(f'pipeline = "{PIPELINE}"', 'pipeline = "LoadMeterTelemetri"'))
    with emulator(scenario(base), monkeypatch) as emu:
        args = ["history", "sync", str(plan)] if command == "history" else [command, str(plan)]
        assert cli(monkeypatch, "alice", *args) == 1
        out, err = capsys.readouterr()
        assert err == (
            f"error: {plan}: target.pipeline: pipeline 'LoadMeterTelemetri' does not exist in factory "
            "'adf-grid-telemetry' (resource group 'rg-energy-analytics')\n"
        )
        assert out == ""
        # One pipeline get, and nothing else was asked.
        assert [r.operation for r in emu.request_log] == ["getPipeline"]


def test_preview_gets_the_pipeline_once(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    plan = _write(tmp_path, plan_text(base, 2))
    with emulator(scenario(base), monkeypatch) as emu:
        assert cli(monkeypatch, "alice", "preview", str(plan)) == 0, capsys.readouterr()
        operations = [r.operation for r in emu.request_log]
        assert operations.count("getPipeline") == 1
        assert operations[0] == "getPipeline"


def test_an_undeclared_parameter_is_refused(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    plan = _write(
        tmp_path,
        plan_text(base, 2)
        .replace('feederRegion = "north"', 'feederRegoin = "north"')
        .replace('on = ["windowStart", "feederRegion"]', 'on = ["windowStart"]'),
    )
    scen = scenario(base)
    scen.pipelines[0].defaults = {"feederRegion": "north"}
    with emulator(scen, monkeypatch):
        assert cli(monkeypatch, "alice", "preview", str(plan)) == 1
        assert capsys.readouterr().err == (
            f"error: {plan}: parameters.feederRegoin: pipeline '{PIPELINE}' declares no parameter 'feederRegoin' "
            "(it declares: feederRegion, sourceKey, windowEnd, windowStart)\n"
        )


def test_a_required_parameter_left_out_is_refused_and_one_with_a_default_may_be(
    tmp_path: Path, monkeypatch: MP, capsys: Cap
) -> None:
    base = base_time()
    plan = _write(
        tmp_path,
        plan_text(base, 2)
        .replace('feederRegion = "north"\n', "")
        .replace('on = ["windowStart", "feederRegion"]', 'on = ["windowStart"]'),
    )
    with emulator(scenario(base), monkeypatch):
        assert cli(monkeypatch, "alice", "request", str(plan)) == 1
        assert capsys.readouterr().err == (
            f"error: {plan}: parameters: pipeline '{PIPELINE}' requires 'feederRegion' (no default value), "
            "which the plan does not set\n"
        )
    scen = scenario(base)
    scen.pipelines[0].defaults = {"feederRegion": "north"}
    with emulator(scen, monkeypatch):
        assert cli(monkeypatch, "alice", "preview", str(plan)) == 0, capsys.readouterr()

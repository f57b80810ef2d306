"""``backfill emulator serve`` as a real process: six export lines, HTTPS with the token, clean exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from emulator_support import call, factory_url

from backfill.cli.main import run
from backfill.emulator import Emulator, Scenario, load_scenario

EXAMPLE = Path(__file__).parent.parent / "plans" / "emulator-scenario.toml"
NAMES = [
    "BACKFILL_ADF_ENDPOINT",
    "BACKFILL_ADF_CA_BUNDLE",
    "BACKFILL_ADF_TOKEN",
    "AZURE_SUBSCRIPTION_ID",
    "BACKFILL_RESOURCE_GROUP",
    "BACKFILL_FACTORY",
]


@contextmanager
def serving(tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "backfill", "emulator", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in NAMES]
        settings = {}
        for line in lines:
            assert line.startswith("export "), (line, process.stderr.read() if process.stderr else "")
            name, _, value = line[len("export ") :].strip().partition("=")
            settings[name] = value
        yield process, settings
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


class Printed:
    """The emulator as the printed settings describe it (what emulator_support.call needs)."""

    def __init__(self, settings: dict[str, str], scenario: Scenario) -> None:
        self.ca_file = settings["BACKFILL_ADF_CA_BUNDLE"]
        self.token = settings["BACKFILL_ADF_TOKEN"]
        self.port = int(settings["BACKFILL_ADF_ENDPOINT"].rsplit(":", 1)[1])
        self.scenario = scenario


def test_serve_prints_settings_answers_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    with serving(tmp_path, "--scenario", str(EXAMPLE)) as (process, settings):
        assert list(settings) == NAMES
        assert settings["BACKFILL_ADF_ENDPOINT"].startswith("https://127.0.0.1:")
        assert (
            settings["AZURE_SUBSCRIPTION_ID"],
            settings["BACKFILL_RESOURCE_GROUP"],
            settings["BACKFILL_FACTORY"],
        ) == ("00000000-0000-0000-0000-000000000000", "rg-energy-analytics", "adf-grid-telemetry")
        emu = Printed(settings, load_scenario(EXAMPLE))
        status, _, body = call(emu, "GET", factory_url(emu, "pipelines/LoadMeterTelemetry"))
        assert status == 200 and body["name"] == "LoadMeterTelemetry"
        denied = call(emu, "GET", factory_url(emu, "pipelines/LoadMeterTelemetry"), token="wrong")
        assert denied[0] == 401 and denied[2]["error"]["code"] == "InvalidAuthenticationToken"
        ca_folder = Path(settings["BACKFILL_ADF_CA_BUNDLE"]).parent
        assert ca_folder.is_dir()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 130
    assert out == ""
    assert "Traceback" not in err and err.endswith("interrupted\n")
    assert err.startswith("emulator: https://127.0.0.1:")
    assert not ca_folder.exists()
    assert (tmp_path / "telemetry-sink.db").exists()  # the scenario's sink, relative to the working folder


def test_serve_stops_on_sigterm_with_exit_0(tmp_path: Path) -> None:
    with serving(tmp_path) as (process, settings):
        assert settings["BACKFILL_FACTORY"] == "adf-grid-telemetry"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0
    assert err.endswith("emulator: stopped\n") and "Traceback" not in err


def test_a_busy_port_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with Emulator() as emu:
        assert run(["emulator", "serve", "--port", str(emu.port)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: emulator: cannot listen on 127.0.0.1:{emu.port}: Address already in use\n"


def test_the_settings_point_commands_at_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    from backfill.factory.client import FactoryClient
    from backfill.factory.settings import ConnectionSettings, factory_ref_from_options

    with Emulator() as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        client = FactoryClient(factory_ref_from_options(None, None, None), ConnectionSettings.from_env())
        assert client.get_pipeline("LoadMeterTelemetry").activities == ("LookupWatermark", "CopyReadings")
        assert os.environ["BACKFILL_ADF_CA_BUNDLE"] == emu.ca_file

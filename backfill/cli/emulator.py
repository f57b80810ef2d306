"""``backfill emulator serve``: the ADF emulator as a command, until Ctrl-C.

It prints the six settings as ``export NAME=value`` lines on stdout (and nothing else there), so
``backfill emulator serve > emulator.env &`` then ``. ./emulator.env`` points every command at it.
"""

from __future__ import annotations

import shlex
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import click


@click.group()
def emulator() -> None:
    """Run the local ADF emulator."""


@emulator.command()
@click.option(
    "--scenario",
    "scenario_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Scenario TOML file (docs/scenario.md); default: a one-pipeline factory.",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Port on 127.0.0.1; 0 picks a free one."
)
@click.option(
    "--throttle",
    type=click.FloatRange(min=0, min_open=True),
    is_flag=False,
    flag_value=25.0,
    envvar="BACKFILL_EMULATOR_THROTTLE",
    help="Throttle reads as ARM does: a token bucket of --burst refilled at this many a second "
    "(25 when given alone), 429 with Retry-After when empty.",
)
@click.option(
    "--burst",
    type=click.IntRange(min=1),
    default=None,
    envvar="BACKFILL_EMULATOR_BURST",
    help="Reads the throttle lets through at once (ARM: 250).",
)
@click.option(
    "--latency",
    default=None,
    envvar="BACKFILL_EMULATOR_LATENCY",
    help="Latency added to every answer, e.g. 200ms.",
)
def serve(
    scenario_path: Path | None, port: int, throttle: float | None, burst: int | None, latency: str | None
) -> None:
    """Serve the ADF REST API over HTTPS on 127.0.0.1 until interrupted."""
    from dataclasses import replace

    from backfill.emulator import Emulator, Scenario, load_scenario
    from backfill.errors import UsageError
    from backfill.timeutil import parse_duration

    scenario = load_scenario(scenario_path) if scenario_path is not None else Scenario.default()
    limits = scenario.limits
    if throttle is not None:
        limits = replace(limits, read_rate=throttle)
    if burst is not None:
        limits = replace(limits, read_burst=burst)
    if latency is not None:
        try:
            limits = replace(limits, latency=parse_duration(latency, "--latency").total_seconds())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    scenario.limits = limits
    previous = _stop_on_sigterm()
    try:
        with Emulator(scenario, port=port) as emu:
            history = len(emu.state.runs) if emu.state is not None else 0
            click.echo(
                f"emulator: {emu.endpoint} factory {scenario.factory}, {len(scenario.pipelines)} pipeline(s), "
                f"{history} run(s), speed {scenario.speed:g}; Ctrl-C to stop",
                err=True,
            )
            for name, value in emu.env().items():
                click.echo(f"export {name}={shlex.quote(value)}")
            while True:
                time.sleep(3600)
    except _Stop:
        click.echo("emulator: stopped", err=True)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Stop(Exception):
    """SIGTERM: an orderly stop (exit 0); Ctrl-C goes through the CLI's interrupt handling (130)."""


def _stop_on_sigterm() -> signal.Handlers | None:
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, stop)
    return previous if isinstance(previous, signal.Handlers) else signal.Handlers.SIG_DFL

"""A local Azure Data Factory emulator for the real SDK: HTTPS, scenarios, clock speed-up, faults.

``Emulator`` runs it in-process; ``backfill emulator serve`` runs it as a command. See
docs/scenario.md for the scenario file.
"""

from backfill.emulator.emulator import Emulator
from backfill.emulator.faults import Fault, FaultSet
from backfill.emulator.http import LoggedRequest
from backfill.emulator.loader import load_scenario
from backfill.emulator.scenario import (
    Activity,
    HistorySeries,
    OutcomeRule,
    PastRun,
    Pipeline,
    Scenario,
    Sink,
)

__all__ = [
    "Activity",
    "Emulator",
    "Fault",
    "FaultSet",
    "HistorySeries",
    "LoggedRequest",
    "OutcomeRule",
    "PastRun",
    "Pipeline",
    "Scenario",
    "Sink",
    "load_scenario",
]

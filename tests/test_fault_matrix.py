"""API faults against the emulator: no duplicate run, and every window ends definite or flagged.

Each case injects one fault (at runtime, after the request's own history sync) into a backfill of
two windows; createRun faults strike the first window's createRun only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from runner_support import (
    EVERY,
    base_time,
    cli,
    creates_per_window,
    emulator,
    events,
    keys,
    request,
    scenario,
    window_kinds,
    write_plan,
)

from backfill import events as ev
from backfill.emulator import Emulator
from backfill.timeutil import format_utc

Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch


@dataclass(frozen=True)
class Case:
    name: str
    faults: list[dict[str, Any]]
    first_window: list[str]  # the first window's event kinds (window_kinds: without status events)
    exit_code: int = 0
    # createRun requests the emulator logged, faulted ones included; None: not asserted (the
    # emulator does not log a request whose answer it could not send back)
    create_calls: int | None = 2
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    Case(
        "throttled reads (429 Retry-After)",
        [
            dict(kind="throttle", operation="getPipelineRun", count=2, retry_after=0.05),
            dict(kind="throttle", operation="queryPipelineRuns", count=1, retry_after=0.05),
        ],
        ["intent", "created", "finished"],
    ),
    Case(
        "500 before createRun took effect",
        [dict(kind="error", operation="createRun", status=500)],
        ["intent", "intent", "created", "finished"],
        create_calls=3,
    ),
    Case(
        "500 after createRun took effect",
        [dict(kind="error", operation="createRun", status=500, when="after")],
        ["intent", "adopted", "finished"],
    ),
    Case(
        "answer later than the client timeout, after effect",
        [dict(kind="latency", operation="createRun", latency=1.5, when="after")],
        # The 0.15 s run has ended by the time the 0.5 s client timeout gives up: adopted finished.
        ["intent", "adopted", "finished"],
        create_calls=None,
        env={"BACKFILL_ADF_TIMEOUT": "0.5"},
    ),
    Case(
        "connection dropped after effect",
        [dict(kind="drop", operation="createRun", when="after")],
        ["intent", "adopted", "finished"],
    ),
    Case(
        "connection dropped before effect",
        [dict(kind="drop", operation="createRun")],
        ["intent", "intent", "created", "finished"],
        create_calls=3,
    ),
    Case(
        "createRun refused (400)",
        [dict(kind="error", operation="createRun", status=400, code="BadRequest", message="bad parameter")],
        ["intent", "create-failed", "finished"],
        exit_code=1,
    ),
    Case(
        "500 after effect and history unreadable",
        [
            dict(kind="error", operation="createRun", status=500, when="after"),
            dict(
                kind="error", operation="queryPipelineRuns", status=403, code="AuthorizationFailed", skip=1, count=None
            ),
        ],
        ["intent", "needs-operator"],
        exit_code=4,
    ),
]


def _inject(emu: Emulator, case: Case) -> None:
    for fault in case.faults:
        emu.faults.add(**fault)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault(case: Case, tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    # on_failure = continue: the second window runs whatever happens to the first.
    plan = write_plan(tmp_path, 2, base=base, execution={"on_failure": "continue"})
    first = keys(base, 1)[0]
    with emulator(scenario(base), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        for name, value in case.env.items():
            monkeypatch.setenv(name, value)
        _inject(emu, case)
        assert cli(monkeypatch, "carol", "run", bid) == case.exit_code, capsys.readouterr().err
        created = creates_per_window(emu)
        if case.create_calls:
            assert len(emu.create_run_calls()) == case.create_calls
        assert all(count == 1 for count in created.values()), created  # never a duplicate run
        per = window_kinds(bid)
        assert per[first] == case.first_window
        assert per[keys(base, 2)[1]] == ["intent", "created", "finished"]
        if case.exit_code == 4:
            flagged = next(e.payload for e in events(bid) if e.kind == ev.WINDOW_NEEDS_OPERATOR)
            assert flagged["reason"].startswith("createRun in doubt: factory: 500 ")
            assert flagged["reason"].endswith("history could not tell whether the run exists")
            assert "AuthorizationFailed" in flagged["evidence"]["error"]
            # The operator restores read access; the next run adopts the run instead of creating one.
            emu.faults.clear()
            assert cli(monkeypatch, "carol", "run", bid) == 0
            assert creates_per_window(emu) == {format_utc(base): 1, format_utc(base + EVERY): 1}
            assert window_kinds(bid)[first] == ["intent", "needs-operator", "adopted", "finished"]


def test_a_doubt_reconciled_to_nothing_is_recorded_with_its_evidence(
    tmp_path: Path, monkeypatch: MP, capsys: Cap
) -> None:
    base = base_time()
    plan = write_plan(tmp_path, 1, base=base)
    with emulator(scenario(base), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        emu.faults.add("error", "createRun", status=503)
        assert cli(monkeypatch, "carol", "run", bid) == 0
    intents = [e.payload for e in events(bid) if e.kind == ev.WINDOW_INTENT]
    doubt = intents[1]["after_doubt"]
    assert doubt["doubt"].startswith("createRun in doubt: factory: 503 ")
    assert doubt["matching_runs"] == [] and doubt["query"]["queries"] >= 1

"""Every command of every runbook runs, for real, in the order the runbook gives.

For each ``runbooks/*.md`` the test starts what its story starts from, as a user would: a checkout's
``plans/`` and ``checks/`` in a fresh folder, and ``backfill emulator serve --scenario
plans/emulator-scenario.toml`` there as a process of its own, its ``export`` lines in
``emulator.env`` (the runbook sources them). Some runbooks start from a backfill already under way:
a set-up makes it with the real commands. Then the runbook's ```sh blocks become one bash script
(``runbook_support``), run with ``bash -e`` and an environment holding only a bare login's
variables and the console script on PATH: the ledger, the factory and the sink are what the
runbook itself tells the user to set. Last, the test checks what the story promises (one run per
window, the sink holding each window once), counting runs in the emulator's own history.

The runbooks run concurrently: their time goes mostly into starting Python for each command. A
runbook without a stage of its own below runs against the example scenario and plans.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import missing
from crash_hook import crash_command
from hypothesis import given
from hypothesis import strategies as st
from runbook_support import BIN, MARK, SINK_FILE, Block, Play, bash_script, failed_at, sh_blocks

from backfill import demo
from backfill import progress as pg
from backfill.timeutil import format_utc, parse_utc, utcnow

REPO = Path(__file__).resolve().parent.parent
RUNBOOKS = sorted((REPO / "runbooks").glob("*.md"))
# The README's walk-through is played like a runbook: from its heading to the next one of its level.
README_SECTION = ("## How a backfill goes", "### Decisions")
LIMIT = 240.0  # seconds for one runbook, however loaded the machine is
ENGINEER, SUPERVISOR = demo.ENGINEER, demo.SUPERVISOR
SCENARIO = "plans/emulator-scenario.toml"


@dataclass(frozen=True)
class Stage:
    """What a runbook starts from; ``prepare`` sets its story up, ``verify`` checks its end."""

    emulator: bool = True
    factory_in_shell: bool = True  # False: the runbook's shell cannot reach the factory
    scenario: Callable[[str], str] | None = None  # None: plans/emulator-scenario.toml as it is
    prepare: Callable[[Play], None] | None = None
    verify: Callable[[Play], None] | None = None


def _key(index: int) -> str:
    start = demo.yesterday() + index * demo.EVERY
    return f"{format_utc(start)}/{format_utc(start + demo.EVERY)}"


def _readings(play: Play, index: int) -> int:
    start, end = _key(index).split("/")
    with contextlib.closing(sqlite3.connect(play.work / SINK_FILE)) as sink:
        query = "SELECT COUNT(*) FROM meter_readings WHERE feeder = 'north' AND reading_ts >= ? AND reading_ts < ?"
        return int(sink.execute(query, (start, end)).fetchone()[0])


def _new_runs(play: Play) -> list[dict[str, Any]]:
    """The runs created since the emulator started, from its own history (``runs list``)."""
    out = play.cli(["runs", "list", "--json", "--since", play.emulator_started])
    return list(json.loads(out)["runs"])


def _creates(play: Play) -> Counter[str]:
    """Runs per window among the runs this story created."""
    return Counter(
        f"{run['parameters']['windowStart']}/{run['parameters']['windowEnd']}"
        for run in _new_runs(play)
        if run["parameters"].get("feederRegion") == "north"
    )


def _window_states(play: Play, backfill_id: str) -> dict[str, str]:
    from backfill.store.backfills import load_backfill
    from backfill.store.database import Database

    db = Database(play.env()["BACKFILL_LEDGER"])
    try:
        _, state = load_backfill(db, backfill_id)
    finally:
        db.dispose()
    return {key: str(window["state"]) for key, window in state.windows.items()}


def _requested_and_canaried(play: Play, plan: str) -> str:
    """Requested, approved, its canary windows run and approved: the rest may run."""
    backfill_id = play.cli(["request", plan, "--note", "INC-4821"], actor=ENGINEER).splitlines()[0]
    play.cli(["approve", backfill_id], actor=SUPERVISOR)
    play.cli(["run", backfill_id], actor=ENGINEER, expect=(3,))
    play.cli(["approve", backfill_id], actor=SUPERVISOR)
    play.facts["id"] = backfill_id
    return backfill_id


# --- replay-failed-windows: from nothing to a completed backfill ----------------------------------


def _verify_replay(play: Play) -> None:
    ran = {_key(i) for i, decision in demo.EXPECTED_DECISIONS.items() if decision.runnable or decision.blocked}
    assert _creates(play) == Counter(ran), "one createRun per window, the accepted partial one included"
    assert _readings(play, demo.PARTIAL) == demo.ROWS, "the accepted window holds its readings once"


# --- after-a-crash: the runner killed while it created the last two runs --------------------------

# The two windows that never ran hang in CopyReadings when run. When the runner dies, one is in
# flight with its run ID recorded, the other in doubt (its run exists, the ledger does not know it).
HUNG = demo.NEVER
# The emulator compresses runs' durations, not the runner's clock: a run_timeout of a few real
# seconds stands for the plan's 45 minutes. The set-up crashes the runner right after its second
# createRun, milliseconds after the first, far inside it; then it waits for the event the runbook's
# story needs, both runs overdue, before the runbook starts: no race with a loaded machine.
RUN_TIMEOUT = timedelta(seconds=8)


def _crash_plan(text: str) -> str:
    # Two canary windows (the two reruns), then the two hung windows in flight together.
    for key, value in (("run_timeout", f'"{RUN_TIMEOUT.seconds}s"'), ("canary", "2"), ("concurrency", "2")):
        text, count = re.subn(rf"^{key} = \S+", f"{key} = {value}", text, flags=re.MULTILINE)
        assert count == 1, f"plans/demo.toml sets {key} once"
    return text


def _crash_scenario(text: str) -> str:
    # The story's trouble: runs of 03:00 and 03:15 hang. The first matching outcome rule decides.
    starts = ", ".join(f'"{_key(i).split("/")[0]}"' for i in HUNG)
    rule = f'[[outcomes]]\nmatch = {{ windowStart = [{starts}] }}\nresult = "hang"\nactivity = "CopyReadings"\n\n'
    first = text.index("[[outcomes]]")
    return text[:first] + rule + text[first:]


def _prepare_crash(play: Play) -> None:
    plan = play.work / "crash-plan.toml"
    plan.write_text(_crash_plan((REPO / "plans" / "demo.toml").read_text(encoding="utf-8")), encoding="utf-8")
    backfill_id = _requested_and_canaried(play, plan.name)
    # SIGKILL right before the second window.created: both runs exist in ADF, one is recorded.
    env = play.env() | {"BACKFILL_ACTOR": ENGINEER, "BACKFILL_CRASH_AT": "before:window.created:2"}
    crashed = subprocess.run(
        crash_command("run", backfill_id), cwd=play.work, env=env, capture_output=True, text=True, timeout=LIMIT
    )
    assert crashed.returncode == -signal.SIGKILL, f"set-up: the runner was to be killed: {crashed.stderr[-800:]}"
    states = sorted(_window_states(play, backfill_id)[_key(i)] for i in HUNG)
    assert states == [pg.WindowState.INTENT, pg.WindowState.RUNNING], (
        f"set-up: after the crash the hung windows are {states}"
    )
    hung = {_key(i).split("/")[0] for i in HUNG}
    starts = [parse_utc(run["start"]) for run in _new_runs(play) if run["parameters"]["windowStart"] in hung]
    assert len(starts) == 2, f"set-up: {len(starts)} runs of the hung windows exist, expected 2"
    # The event the resume's story needs: both runs past run_timeout (measured from their start).
    while utcnow() < max(starts) + RUN_TIMEOUT + timedelta(seconds=0.5):
        time.sleep(0.2)


def _verify_crash(play: Play) -> None:
    assert _creates(play) == Counter({_key(i): 1 for i in (*demo.LOCKED, *HUNG)}), "no window got a second run"
    states = _window_states(play, play.facts["id"])
    assert [states[_key(i)] for i in HUNG] == [pg.WindowState.CANCELLED, pg.WindowState.CANCELLED]


# --- audit-the-ledger: a finished backfill to audit -----------------------------------------------


def _prepare_audit(play: Play) -> None:
    backfill_id = _requested_and_canaried(play, "plans/demo.toml")
    play.cli(["run", backfill_id], actor=ENGINEER, expect=(0, 4))  # 4: the partial window stays blocked


def _verify_audit(play: Play) -> None:
    reports = [path.read_text(encoding="utf-8") for path in play.work.glob("*.html")]
    assert any(play.facts["id"] in report for report in reports), "the runbook wrote the backfill's report"


def _verify_readme(play: Play) -> None:
    report = (play.work / "evidence.html").read_text(encoding="utf-8")
    assert "4 ran and succeeded" in report, "the README's backfill ran its four windows"


def _readme_blocks() -> list[Block]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start, end = text.index(README_SECTION[0]), text.index(README_SECTION[1])
    offset = text[:start].count("\n")
    return [Block(block.line + offset, block.code, block.expect) for block in sh_blocks(text[start:end])]


# --- team-ledger: a fresh PostgreSQL database; roles with a random suffix, dropped afterwards ------


def _prepare_team(play: Play) -> None:
    import uuid

    from conftest import POSTGRES_ADMIN
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if shutil.which("psql") is None:
        missing("the psql command")
    suffix = uuid.uuid4().hex[:8]
    name, prefix, alice, bob = f"bf_team_{suffix}", f"bft_{suffix}", f"alice_{suffix}", f"bob_{suffix}"
    try:
        admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except Exception as exc:
        missing(f"PostgreSQL at {POSTGRES_ADMIN} ({type(exc).__name__})")

    def cleanup() -> None:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            for role in (alice, bob, f"{prefix}_user", f"{prefix}_admin"):
                conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()

    play.facts["cleanup"] = cleanup
    url = make_url(POSTGRES_ADMIN).set(database=name)

    def as_role(role: str | None, driver: bool = True) -> str:
        target = url if role is None else url.set(username=role)
        target = target if driver else target.set(drivername="postgresql")
        return target.render_as_string(hide_password=False)

    play.facts["env"] = {
        "TEAM_ADMIN_LEDGER": as_role(None),
        "TEAM_PSQL": as_role(None, driver=False),
        "TEAM_PREFIX": prefix,
        "ALICE": alice,
        "BOB": bob,
        "ALICE_LEDGER": as_role(alice),
        "BOB_LEDGER": as_role(bob),
        "ALICE_PSQL": as_role(alice, driver=False),
    }
    play.facts["roles"] = (alice, bob)


def _verify_team(play: Play) -> None:
    from backfill.store.database import Database
    from backfill.store.ledger import Ledger

    alice, bob = play.facts["roles"]
    db = Database(play.facts["env"]["TEAM_ADMIN_LEDGER"])
    try:
        stamps = {(e.kind, e.actor, e.identity_source) for e in Ledger(db).events()}
    finally:
        db.dispose()
    assert ("backfill.requested", alice, "database") in stamps
    assert ("backfill.approved", bob, "database") in stamps
    assert not any(kind == "backfill.approved" and actor == alice for kind, actor, _ in stamps)


# --- sla-morning-check: the page and the spreadsheet it promises ------------------------------------


def _verify_sla(play: Play) -> None:
    page = (play.work / "sla.html").read_text(encoding="utf-8")
    assert 'class="deadline"' in page and page.count('class="mark"') >= 15, "the page draws the dates"
    lines = (play.work / "sla.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("date,weekday,scheduled,status") and len(lines) > 5


# --- stuck-run: one stuck run among hundreds, its own scenario -------------------------------------


def _stuck_scenario(_example: str) -> str:
    return (REPO / "plans" / "stuck-run-scenario.toml").read_text(encoding="utf-8")


def _verify_stuck(play: Play) -> None:
    page = (play.work / "incident.html").read_text(encoding="utf-8")
    assert "Incident resolved: replaced by" in page, "the incident record proves the replacement"
    replays = [run for run in _new_runs(play) if run["parameters"].get("feederRegion") == "south"]
    assert len(replays) == 1 and replays[0]["status"] == "Succeeded", "one replacement run of the window"


STAGES: dict[str, Stage] = {
    "README": Stage(emulator=False, verify=_verify_readme),  # it starts its own emulator
    "replay-failed-windows": Stage(verify=_verify_replay),
    "after-a-crash": Stage(scenario=_crash_scenario, prepare=_prepare_crash, verify=_verify_crash),
    # An auditor needs no access to the factory: the runbook's shell gets none.
    "audit-the-ledger": Stage(factory_in_shell=False, prepare=_prepare_audit, verify=_verify_audit),
    "try-the-emulator": Stage(emulator=False),  # it starts its own, from plans/emulator-scenario.toml
    "sla-morning-check": Stage(emulator=False, verify=_verify_sla),  # it starts slas/emulator-scenario.toml
    "team-ledger": Stage(prepare=_prepare_team, verify=_verify_team),
    "stuck-run": Stage(scenario=_stuck_scenario, verify=_verify_stuck),
}


# --- playing them ----------------------------------------------------------------------------------


def _start(play: Play, stage: Stage) -> None:
    play.work.mkdir()
    play.factory_in_shell = stage.factory_in_shell
    (play.base / "tmp").mkdir()
    for folder in ("plans", "checks", "slas"):  # the runbooks are written for a checkout of the repository
        shutil.copytree(REPO / folder, play.work / folder)
    if stage.emulator:
        scenario = play.work / SCENARIO
        if stage.scenario is not None:  # this story's own trouble, on top of the example's
            scenario = play.work / "crash-scenario.toml"
            scenario.write_text(stage.scenario((REPO / SCENARIO).read_text(encoding="utf-8")), encoding="utf-8")
        play.serve(scenario, timeout=LIMIT / 4)
    if stage.prepare is not None:
        stage.prepare(play)
    _venv(play.work)
    play.start(bash_script(play.blocks, _source(play.name)))


def _source(name: str) -> str:
    return "README.md" if name == "README" else f"runbooks/{name}.md"


def _venv(work: Path) -> None:
    """``.venv`` in the folder, as the README's quick start makes it: this test's virtualenv."""
    prefix = Path(sys.prefix)
    if (prefix / "bin" / "activate").is_file():
        (work / ".venv").symlink_to(prefix, target_is_directory=True)
    else:  # not a virtualenv: an activate script that does what the real one does for PATH
        (work / ".venv" / "bin").mkdir(parents=True)
        (work / ".venv" / "bin" / "activate").write_text(f'PATH="{BIN}:$PATH"\nexport PATH\n', encoding="utf-8")


def _selected(session: pytest.Session) -> list[str]:
    """The runbooks whose test is to run in this session (so ``-k`` plays only those)."""
    names = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if getattr(item, "path", None) == Path(__file__) and callspec is not None and "runbook" in callspec.params:
            names.append(str(callspec.params["runbook"]))
    return names


@pytest.fixture(scope="module")
def plays(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Play]]:
    """Start every selected runbook, those with a set-up first: a set-up and its runbook take longest.

    Set-ups run in-process in this thread only, before their runbook starts: they alone change
    os.environ while the other runbooks' shells run with environments of their own."""
    names = sorted(set(_selected(request.session)), key=lambda name: STAGES.get(name, Stage()).prepare is None)
    started: dict[str, Play] = {}
    try:
        for name in names:
            play = started[name] = Play(name, [], tmp_path_factory.mktemp(name))
            try:
                play.blocks = (
                    _readme_blocks()
                    if name == "README"
                    else sh_blocks((REPO / "runbooks" / f"{name}.md").read_text(encoding="utf-8"))
                )
                _start(play, STAGES.get(name, Stage()))
            except Exception as exc:  # the runbook's own test reports it, not every test
                play.error = str(exc) if isinstance(exc, AssertionError) else f"{type(exc).__name__}: {exc}"
        yield started
    finally:
        for play in started.values():
            if play.proc is not None and play.proc.returncode is None:
                play.finish(0)
            play.stop_emulator()
            if "cleanup" in play.facts:
                play.facts["cleanup"]()
        from backfill.checks import sql

        sql.dispose_engines()


@pytest.mark.parametrize("runbook", [path.stem for path in RUNBOOKS] + ["README"])
def test_runbook(runbook: str, plays: dict[str, Play]) -> None:
    play = plays[runbook]
    if play.error is not None:
        pytest.fail(f"{_source(runbook)}: {play.error}")
    assert play.blocks, f"{_source(runbook)} has no ```sh block: every runbook is run by this test"
    if any("sqlite3 " in block.code for block in play.blocks) and shutil.which("sqlite3") is None:
        missing("the sqlite3 command")
    code = play.finish(LIMIT)
    transcript = play.tail()
    assert code is not None, f"{_source(runbook)} still running after {LIMIT:.0f}s:\n{transcript}"
    where = failed_at(transcript)
    assert code == 0 and where == "done", f"{_source(runbook)} failed at {where} (exit {code}):\n{transcript}"
    stage = STAGES.get(runbook, Stage())
    if stage.verify is not None:
        stage.verify(play)


# --- the harness itself ----------------------------------------------------------------------------


def test_every_runbook_parses_and_has_commands() -> None:
    assert len(RUNBOOKS) >= 3
    for path in RUNBOOKS:
        blocks = sh_blocks(path.read_text(encoding="utf-8"))
        assert blocks, f"{path.name} has no ```sh block"
        assert all(block.code.strip() for block in blocks), f"{path.name} has an empty ```sh block"


_NOT_IN_LINE = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
CODE_LINE = st.text(st.characters(codec="utf-8", exclude_characters="`~" + _NOT_IN_LINE), max_size=30)
PROSE = st.text(st.characters(codec="utf-8", exclude_characters="`~<" + _NOT_IN_LINE), min_size=1, max_size=30)
SEGMENT = st.one_of(
    st.tuples(st.just("prose"), PROSE.filter(str.strip)),
    st.tuples(st.just("sh"), st.lists(CODE_LINE, max_size=4), st.none() | st.integers(0, 255)),
    st.tuples(st.just("other"), st.sampled_from(["", "toml", "json", "shell"]), st.lists(CODE_LINE, max_size=3)),
)


@given(st.lists(SEGMENT, max_size=8), st.sampled_from(["```", "````", "~~~"]))
def test_sh_blocks_finds_each_block_its_code_and_exit(segments: list[tuple[Any, ...]], fence: str) -> None:
    lines: list[str] = []
    expected: list[Block] = []
    for segment in segments:
        if segment[0] == "prose":
            lines += [segment[1], ""]
        elif segment[0] == "sh":
            _, code, exit_code = segment
            if exit_code is not None:
                lines.append(f"<!-- exit: {exit_code} -->")
            expected.append(Block(len(lines) + 1, "\n".join(code), exit_code or 0))
            lines += [fence + "sh", *code, fence, ""]
        else:
            lines += [fence + segment[1], *segment[2], fence, ""]
    assert sh_blocks("\n".join(lines)) == expected


@pytest.mark.parametrize(
    ("markdown", "problem"),
    [
        ("```sh\nbackfill status\n", "line 1: the ```sh block is never closed"),
        ("<!-- exit: 4 -->\nSome prose.\n```sh\nfalse\n```\n", "line 1: the exit comment is not right before"),
        ("<!-- exit: 4 -->\n```toml\na = 1\n```\n", "line 1: the exit comment is not right before"),
        ("text\n<!-- exit: 3 -->\n", "line 2: the exit comment is not right before"),
    ],
)
def test_sh_blocks_refuses_what_would_hide_a_command(markdown: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        sh_blocks(markdown)


def _bash(markdown: str, folder: Path) -> tuple[int, list[str]]:
    script = folder / "script.sh"
    script.write_text(bash_script(sh_blocks(markdown), "x.md"), encoding="utf-8")
    done = subprocess.run(["bash", "-e", str(script)], cwd=folder, capture_output=True, text=True, timeout=30)
    return done.returncode, (done.stdout + done.stderr).splitlines()


def test_variables_carry_across_blocks_and_every_block_fails_on_its_first_error(tmp_path: Path) -> None:
    story = '```sh\nID=bf-1\n```\n\n<!-- exit: 4 -->\n```sh\necho "$ID"\nexit 4\n```\n\n```sh\necho "again $ID"\n```\n'
    assert _bash(story, tmp_path) == (
        0,
        [
            f"{MARK}x.md:1",
            "$ ID=bf-1",
            f"{MARK}x.md:6",
            '$ echo "$ID"',
            "$ exit 4",
            "bf-1",
            f"{MARK}x.md:11",
            '$ echo "again $ID"',
            "again bf-1",
            f"{MARK}done",
        ],
    )
    code, out = _bash("<!-- exit: 4 -->\n```sh\nfalse\necho after\n```\n", tmp_path)
    assert (code, out[-1], "after" in out) == (1, f"{MARK}x.md:2: exit 1, expected 4", False)
    code, out = _bash("```sh\nfalse\necho after\n```\n\n```sh\necho next\n```\n", tmp_path)
    assert (code, failed_at("\n".join(out)), "after" in out) == (1, "x.md:1", False)

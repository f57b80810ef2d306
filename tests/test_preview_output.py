"""The preview's text output drawn fast (issue 14) is the output drawn the plain way.

``echo_preview`` builds the table with one format per line and the reasons from halves around
each key; the reference here is the straightforward rendering it replaced (tabulate, textwrap
per window). Also: the fast column checks of ``_plain`` against the per-cell definition, and the
keys set when windows are generated against ``window_key``.
"""

from __future__ import annotations

import string
import textwrap
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from tabulate import tabulate

from backfill.checks.base import CheckResult, CheckStatus
from backfill.cli.output import WIDTH, _plain, fit, short_id
from backfill.cli.preview import echo_preview
from backfill.decisions import Decision
from backfill.factory.run import Run, RunStatus
from backfill.preview import Preview, WindowDecision
from backfill.windows import Window, explicit_windows, generate_windows, window_key

START = datetime(2026, 11, 3, tzinfo=UTC)
REASONS = (
    "no run in history; no sink check configured",
    "latest run 6f1e Failed (started 2026-11-03T02:00:05Z): the copy activity timed out after a very long "
    "wait on the sink, which the operator should look at before anything is rerun",
    "",
    "the sink answered: déjà vu",
)


def reference(result: Preview, *, wide: bool) -> str:
    """The preview's text as it was drawn before issue 14: tabulate, each reason wrapped alone."""
    headers = ["window", "latest run", "status", "checks", "decision"]
    rows = []
    for item in result.decisions:
        run = item.latest_run
        row = [
            item.key,
            (run.run_id if wide else short_id(run.run_id)) if run else "-",
            run.status.value if run else "-",
            item.check_summary(),
            item.decision.value,
        ]
        rows.append([*row, item.reason] if wide else row)
    names = [*headers, "reason"] if wide else headers
    cells = [[str(cell) for cell in row] for row in rows]
    if not wide:
        cells = fit(names, cells, ["checks"])
    out = [tabulate(cells, headers=names, tablefmt="simple", disable_numparse=True)]
    if not wide:
        notable = [item for item in result.decisions if item.decision.value != "skip-succeeded"]
        lines: list[str] = []
        for item in sorted(notable, key=lambda item: not item.decision.blocked):
            lines.extend(
                textwrap.wrap(
                    f"{item.decision.value} {item.key}: {item.reason}",
                    WIDTH,
                    initial_indent="  ",
                    subsequent_indent="    ",
                )
            )
        if lines:
            out.append("\n".join(lines))
    out.append(result.summary_line())
    return "\n".join(out) + "\n"


_DECISION = st.tuples(
    st.sampled_from(list(Decision)),
    st.sampled_from(REASONS),
    st.one_of(st.none(), st.sampled_from(list(RunStatus))),
    st.sampled_from([(), ("readings-in-sink",), ("readings-in-sink", "a-much-longer-check-name-" * 3)]),
)


Item = tuple[Decision, str, RunStatus | None, tuple[str, ...]]


def preview_of(items: list[Item]) -> Preview:
    every = timedelta(minutes=15)
    windows = generate_windows(START, START + len(items) * every, every) if items else []
    decisions = []
    for index, (window, (decision, reason, status, checks)) in enumerate(zip(windows, items, strict=True)):
        run = None
        if status is not None:
            run = Run(run_id=f"{index:08x}-1111-2222-3333-444455556666", pipeline="P", status=status)
        results = tuple(CheckResult(name, CheckStatus.PARTIAL, "rows found") for name in checks)
        decisions.append(WindowDecision(window, decision, reason, run, results))
    return Preview(plan_hash="h", decisions=tuple(decisions), history_horizon=START)


def drawn(result: Preview, *, wide: bool) -> str:
    import click

    @click.command()
    def show() -> None:
        echo_preview(result, wide=wide)

    outcome = CliRunner().invoke(show, [])
    assert outcome.exit_code == 0, outcome.output
    return outcome.output


@settings(max_examples=60, deadline=None)
@given(st.lists(_DECISION, max_size=30), st.booleans())
def test_the_preview_text_is_the_reference_rendering(items: list[Item], wide: bool) -> None:
    result = preview_of(items)
    assert drawn(result, wide=wide) == reference(result, wide=wide)


def test_a_large_preview_is_the_reference_rendering() -> None:
    # Past the size where tabulate was bypassed before (500 rows) and with every shape repeated.
    items = [
        (Decision.BLOCKED_UNKNOWN, REASONS[0], None, ()),
        (Decision.SKIP_SUCCEEDED, "latest run succeeded", RunStatus.SUCCEEDED, ()),
        (Decision.RERUN, REASONS[1], RunStatus.FAILED, ("readings-in-sink",)),
    ] * 400
    result = preview_of(items)
    for wide in (False, True):
        assert drawn(result, wide=wide) == reference(result, wide=wide)


def plain_reference(headers: list[str], cells: list[list[str]]) -> bool:
    for row in (headers, *cells):
        if len(row) != len(headers):
            return False
        for cell in row:
            if not (cell.isascii() and cell.isprintable()) or cell != cell.strip():
                return False
    return True


_CELL = st.text(alphabet=string.ascii_letters + " \n\t\x1b-é…", max_size=6)


@given(
    st.integers(1, 4).flatmap(
        lambda n: st.tuples(
            st.lists(_CELL, min_size=n, max_size=n),
            st.lists(st.lists(_CELL, min_size=n, max_size=n + 1), max_size=6),
        )
    )
)
def test_plain_checks_columns_as_the_per_cell_definition(table: tuple[list[str], list[list[str]]]) -> None:
    headers, cells = table
    assert _plain(headers, cells) == plain_reference(headers, cells)


@given(
    st.integers(1, 200),
    st.sampled_from([timedelta(minutes=15), timedelta(hours=1), timedelta(seconds=1)]),
    st.booleans(),
)
def test_generated_windows_carry_their_keys(count: int, every: timedelta, with_parameters: bool) -> None:
    parameters = {"windowStart": "{start}", "day": "{start:%Y-%m-%d}"} if with_parameters else None
    windows = generate_windows(START, START + count * every, every, parameters)
    assert [w.key for w in windows] == [window_key(w.start, w.end) for w in windows]
    pairs = [(w.start, w.end) for w in windows[::2]]
    assert [w.key for w in explicit_windows(pairs, parameters)] == [window_key(s, e) for s, e in pairs]


def test_a_window_made_by_hand_formats_its_key() -> None:
    window = Window(START, START + timedelta(minutes=15))
    assert window.key == "2026-11-03T00:00:00Z/2026-11-03T00:15:00Z"


@pytest.mark.parametrize("wide", [False, True])
def test_an_empty_preview(wide: bool) -> None:
    result = preview_of([])
    assert drawn(result, wide=wide) == reference(result, wide=wide)

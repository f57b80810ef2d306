"""``plan check`` refuses everything about a plan's checks that ``preview`` would refuse, before
anything connects (issue 9, item 6), and ``plan check --env`` names the ``${VAR}``s not set."""

from __future__ import annotations

from pathlib import Path

import pytest
from plan_samples import SPEC_PLAN

from backfill.cli.main import run

Cap = pytest.CaptureFixture[str]
QUERY = 'query = "SELECT COUNT(*) FROM meter_readings WHERE feeder = ? AND reading_ts >= ? AND reading_ts < ?"'
ARGS = 'args = ["north", "{start}", "{end}"]'
SQL_CHECK = """
[[checks]]
name = "named"
kind = "sql"
url = "${SINK_URL}"
query = "SELECT COUNT(*) FROM t WHERE a >= :start AND a < :end"
"""


def _spec(old: str, new: str) -> str:
    assert old in SPEC_PLAN, old
    return SPEC_PLAN.replace(old, new)


CASES = [
    (
        "unknown-kind",
        _spec('kind = "odbc"', 'kind = "odbcc"'),
        "checks[0]: check 'readings-in-sink': unknown kind 'odbcc' (known kinds: ",
    ),
    (
        "variable-in-query",
        _spec("WHERE feeder = ?", "WHERE feeder = '${REGION}' AND 1 = ?"),
        "checks[0]: check 'readings-in-sink': option 'query': may not use ${VAR}: only the connection is expanded",
    ),
    (
        "expect-lots",
        _spec("expect = 900", 'expect = "lots"'),
        "checks[0]: check 'readings-in-sink': option 'expect': must be a whole number >= 0 or a table with a query",
    ),
    (
        "odbc-too-few-args",
        _spec(ARGS, 'args = ["north", "{start}"]'),
        "checks[0]: check 'readings-in-sink': option 'args': gives 2 values but the query has 3 ? placeholders",
    ),
    (
        "odbc-too-many-args",
        _spec(QUERY, 'query = "SELECT COUNT(*) FROM meter_readings WHERE feeder = ?"'),
        "checks[0]: check 'readings-in-sink': option 'args': gives 3 values but the query has 1 ? placeholder",
    ),
    (
        "sql-missing-arg",
        SPEC_PLAN + SQL_CHECK + 'args = { start = "{start}" }\n',
        "checks[1]: check 'named': option 'args': no value for the placeholder :end",
    ),
    (
        "sql-extra-arg",
        SPEC_PLAN + SQL_CHECK + 'args = { start = "{start}", end = "{end}", region = "x" }\n',
        "checks[1]: check 'named': option 'args': 'region' matches no :region placeholder in the query",
    ),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan_check_refuses_what_preview_refuses(text: str, message: str, capsys: Cap) -> None:
    Path("bad.toml").write_text(text, encoding="utf-8")
    assert run(["plan", "check", "bad.toml"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: bad.toml: {message}") and err.count("\n") == 1, err
    # preview refuses it with the same reason, before asking the factory anything.
    assert run(["preview", "bad.toml"]) == 1
    preview_err = capsys.readouterr().err
    assert preview_err.removeprefix("error: ") in err


def test_plan_check_env_names_every_unset_variable(monkeypatch: pytest.MonkeyPatch, capsys: Cap) -> None:
    Path("p.toml").write_text(SPEC_PLAN + SQL_CHECK + 'args = { start = "{start}", end = "{end}" }\n', encoding="utf-8")
    for name in ("SOURCE_API_KEY", "TELEMETRY_SINK_ODBC", "SINK_URL"):
        monkeypatch.delenv(name, raising=False)
    # Without --env the variables are not needed yet.
    assert run(["plan", "check", "p.toml"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("TELEMETRY_SINK_ODBC", "Driver=SQLite3;Database=x.db")
    assert run(["plan", "check", "p.toml", "--env"]) == 1
    assert capsys.readouterr().err == (
        "error: p.toml: environment variables are not set: SOURCE_API_KEY (parameters.sourceKey), "
        "SINK_URL (checks[1].url)\n"
    )
    monkeypatch.setenv("SOURCE_API_KEY", "k")
    monkeypatch.setenv("SINK_URL", "sqlite:///x.db")
    assert run(["plan", "check", "p.toml", "--env"]) == 0
    assert capsys.readouterr().out.startswith("plan: p.toml")

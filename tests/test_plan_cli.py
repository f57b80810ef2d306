"""``backfill plan check`` and ``backfill plan schema``: exit codes and exact one-line messages."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from plan_samples import MINIMAL_PLAN, SPEC_PLAN

from backfill.cli.main import run

LIST = "list = [[2026-11-03T00:00:00Z, 2026-11-03T01:00:00Z], [2026-11-03T03:00:00Z, 2026-11-03T04:00:00Z]"
RANGE = 'start = 2026-11-03T00:00:00Z\nend = 2026-11-03T06:00:00Z\nevery = "15m"'


def _spec(old: str, new: str) -> str:
    assert old in SPEC_PLAN, old
    return SPEC_PLAN.replace(old, new)


def _range(new: str) -> str:
    """The spec plan with its [windows] range, comments dropped, replaced by ``new``."""
    text = "\n".join(line.split("  #")[0].rstrip() for line in SPEC_PLAN.splitlines())
    assert RANGE in text
    return text.replace(RANGE, new)


# One malformed plan per rule of SPEC §3 (and of the brief), with the exact line it must give.
MALFORMED: list[tuple[str, str, str]] = [
    (
        "unknown-key",
        _spec("[target]\n", '[target]\npipline = "x"\n'),
        "target.pipline: unknown key; expected one of factory, pipeline, resource_group, subscription_id",
    ),
    (
        "unknown-section",
        _spec("[execution]", "[exectuion]"),
        "exectuion: unknown key; expected one of approval, checks, execution, match, notify, parameters, target, "
        "ticket, title, windows",
    ),
    (
        "naive-time",
        _spec("start = 2026-11-03T00:00:00Z", "start = 2026-11-03T00:00:00"),
        "windows.start: 2026-11-03T00:00:00 is a local time; expected a UTC offset, e.g. 2026-11-03T00:00:00Z",
    ),
    (
        "date-only",
        _spec("end = 2026-11-03T06:00:00Z", "end = 2026-11-04"),
        "windows.end: 2026-11-04 is a date without a time; expected e.g. 2026-11-03T00:00:00Z",
    ),
    (
        "end-before-start",
        _spec("end = 2026-11-03T06:00:00Z", "end = 2026-11-02T06:00:00Z"),
        "windows.end: 2026-11-02T06:00:00Z is not after the start 2026-11-03T00:00:00Z",
    ),
    (
        "every-does-not-divide",
        _spec('every = "15m"', 'every = "7m"'),
        'windows.every: "7m" does not divide the range 2026-11-03T00:00:00Z to 2026-11-03T06:00:00Z (6h)',
    ),
    (
        "every-not-a-duration",
        _spec('every = "15m"', 'every = "15 minutes"'),
        'windows.every: expected a duration like "15m", "1h", "90s" or "2d", got "15 minutes"',
    ),
    ("every-subsecond", _spec('every = "15m"', 'every = "1500ms"'), 'windows.every: "1500ms" is not whole seconds'),
    (
        "list-and-every",
        _spec('every = "15m"', 'every = "15m"\n' + LIST + "]"),
        "windows.list: expected either list or start/end/every, not both",
    ),
    (
        "overlapping-list",
        _range(LIST + ", [2026-11-03T00:30:00Z, 2026-11-03T02:00:00Z]]"),
        "windows.list[2]: 2026-11-03T00:30:00Z/2026-11-03T02:00:00Z overlaps list[0] "
        "(2026-11-03T00:00:00Z/2026-11-03T01:00:00Z)",
    ),
    (
        "empty-explicit-window",
        _range("list = [[2026-11-03T01:00:00Z, 2026-11-03T01:00:00Z]]"),
        "windows.list[0]: 2026-11-03T01:00:00Z is not after the start 2026-11-03T01:00:00Z",
    ),
    (
        "not-a-pair",
        _range("list = [[2026-11-03T01:00:00Z]]"),
        "windows.list[0]: expected a [start, end] pair, got [2026-11-03T01:00:00+00:00]",
    ),
    (
        "unknown-template-field",
        _spec('"{end:%Y-%m-%dT%H:%M:%SZ}"', '"{stop:%Y-%m-%dT%H:%M:%SZ}"'),
        'parameters.windowEnd: template "{stop:%Y-%m-%dT%H:%M:%SZ}": unknown field {stop} '
        "(only {start} and {end} exist)",
    ),
    (
        "lone-brace",
        _spec('"{end:%Y-%m-%dT%H:%M:%SZ}"', '"{end:%Y-%m-%dT%H:%M:%SZ"'),
        'parameters.windowEnd: template "{end:%Y-%m-%dT%H:%M:%SZ": a lone { or }; write {{ or }} for a literal brace',
    ),
    (
        "variable-outside-secret",
        _spec('feederRegion = "north"', 'feederRegion = "${REGION}"'),
        'parameters.feederRegion: "${REGION}" uses ${VAR}, which is expanded only in secrets; '
        'write { secret = "${REGION}" }',
    ),
    (
        "malformed-secret",
        _spec('{ secret = "${SOURCE_API_KEY}" }', '{ secrte = "${SOURCE_API_KEY}" }'),
        'parameters.sourceKey: expected { secret = "..." } (one string key "secret"), '
        'got { secrte = "${SOURCE_API_KEY}" }',
    ),
    (
        "match-unknown-parameter",
        _spec('on = ["windowStart", "feederRegion"]', 'on = ["windowStart", "region"]'),
        'match.on[1]: "region" is not in [parameters] (known: feederRegion, windowEnd, windowStart)',
    ),
    (
        "match-secret",
        _spec('on = ["windowStart", "feederRegion"]', 'on = ["sourceKey"]'),
        'match.on[0]: "sourceKey" is a secret; secrets cannot be matched on',
    ),
    (
        "match-does-not-tell-windows-apart",
        _spec('on = ["windowStart", "feederRegion"]', 'on = ["feederRegion"]'),
        "match.on: windows 2026-11-03T00:00:00Z/2026-11-03T00:15:00Z and 2026-11-03T00:15:00Z/2026-11-03T00:30:00Z "
        "render the same matched parameters (feederRegion); match on a parameter that differs per window",
    ),
    (
        "duplicate-check-name",
        SPEC_PLAN + '\n[[checks]]\nname = "readings-in-sink"\nkind = "sql"\n',
        'checks[1].name: "readings-in-sink" is already the name of checks[0]',
    ),
    ("check-without-kind", SPEC_PLAN + '\n[[checks]]\nname = "x"\n', "checks[1].kind: is required"),
    (
        "check-args-unknown-field",
        _spec('args = ["north", "{start}", "{end}"]', 'args = ["north", "{start}", "{finish}"]'),
        'checks[0].args[2]: template "{finish}": unknown field {finish} (only {start} and {end} exist)',
    ),
    (
        "check-timeout",
        _spec("expect = 900", 'expect = 900\ntimeout = "soon"'),
        'checks[0].timeout: expected a duration like "15m", "1h", "90s" or "2d", got "soon"',
    ),
    (
        "approvals-zero",
        _spec("required = 1 ", "required = 0 "),
        "approval.required: expected a whole number >= 1, got 0",
    ),
    (
        "approvals-text",
        _spec("required = 1 ", 'required = "1" '),
        'approval.required: expected a whole number, got "1"',
    ),
    (
        "too-few-approvers",
        _spec("required = 1 ", "required = 2 ").replace("approvers = []", 'approvers = ["ann@contoso.com"]'),
        "approval.required: 2 approvals needed but approval.approvers lists only 1",
    ),
    (
        "identity",
        _spec("[approval]", '[approval]\nidentity = "aad"'),
        # Spec §15 added verified and the other sources.
        'approval.identity: expected "any", "verified", "azure-ad", "database", "oidc", "proxy", "os" or '
        '"declared", got "aad"',
    ),
    (
        "mode",
        _spec('mode = "new-run"', 'mode = "rerun"'),
        'execution.mode: expected "new-run" or "recover", got "rerun"',
    ),
    (
        "concurrency",
        _spec("concurrency = 1 ", "concurrency = 0 "),
        "execution.concurrency: expected a whole number >= 1, got 0",
    ),
    (
        "poll",
        _spec('poll = "auto"', 'poll = "fast"'),
        'execution.poll: expected "auto" or a duration like "30s", got "fast"',
    ),
    (
        "cancel-without-timeout",
        _spec('run_timeout = "45m"', "").replace('on_timeout = "report"', 'on_timeout = "cancel"'),
        'execution.on_timeout: "cancel" needs execution.run_timeout',
    ),
    (
        "check-option-naive-time",
        _spec("expect = 900", 'expect = { query = "x", args = [1, 2026-01-01T00:00:00] }'),
        "checks[0].expect.args[1]: 2026-01-01T00:00:00 is a local time; "
        "expected a UTC offset, e.g. 2026-11-03T00:00:00Z",
    ),
    ("check-option-nan", _spec("expect = 900", "expect = nan"), "checks[0].expect: nan is not a finite number"),
    (
        "parameter-not-a-value",
        _spec('feederRegion = "north"', "feederRegion = 2026-01-01T00:00:00Z"),
        'parameters.feederRegion: expected a string, number, boolean, array or { secret = "..." }, '
        "got 2026-01-01T00:00:00+00:00",
    ),
    ("missing-key", _spec('pipeline = "LoadMeterTelemetry"', ""), "target.pipeline: is required"),
    ("section-not-a-table", _spec("[target]\n", 'target = "x"\n[target2]\n'), 'target: expected a table, got "x"'),
    (
        "toml-syntax",
        _spec('every = "15m" ', 'every = "15m '),
        "invalid TOML: Illegal character '\\n' (at line 13, column 95)",
    ),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_plans_are_refused_in_one_line(text: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    Path("bad.toml").write_text(text, encoding="utf-8")
    assert run(["plan", "check", "bad.toml"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: bad.toml: {message}\n"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("absent.toml", None, "absent.toml: no such file"),
        ("plan.yaml", "title: x", "plan.yaml: expected a .toml or .json plan file"),
        ("dir.toml", "", "dir.toml: is a directory, expected a plan file"),
        (
            "bad.json",
            "{",
            "bad.json: invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        ("list.json", "[]", "list.json: expected a JSON object at the top level"),
        ("latin.toml", b'title = "\xe9"', "latin.toml: is not UTF-8 text"),
    ],
)
def test_unreadable_plan_files_are_one_line(
    name: str, content: str | bytes | None, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if name == "dir.toml":
        Path(name).mkdir()
    elif isinstance(content, bytes):
        Path(name).write_bytes(content)
    elif content is not None:
        Path(name).write_text(content, encoding="utf-8")
    assert run(["plan", "check", name]) == 1
    assert capsys.readouterr().err == f"error: {message}\n"


def test_the_window_limit_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("p.toml").write_text(SPEC_PLAN, encoding="utf-8")
    monkeypatch.setenv("BACKFILL_MAX_WINDOWS", "10")
    assert run(["plan", "check", "p.toml"]) == 1
    assert capsys.readouterr().err == (
        'error: p.toml: windows.every: "15m" gives 24 windows, more than the limit of 10 (BACKFILL_MAX_WINDOWS)\n'
    )
    monkeypatch.setenv("BACKFILL_MAX_WINDOWS", "ten")
    assert run(["plan", "check", "p.toml"]) == 1
    assert capsys.readouterr().err == "error: BACKFILL_MAX_WINDOWS='ten' is not a positive whole number\n"


def test_check_prints_the_windows_with_secrets_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    Path("spec.toml").write_text(SPEC_PLAN, encoding="utf-8")
    assert run(["plan", "check", "spec.toml"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "plan: spec.toml"
    assert out[3].startswith("hash: ") and len(out[3]) == len("hash: ") + 64
    assert out[4:7] == ["match on: windowStart, feederRegion", "checks: readings-in-sink (odbc)", "windows: 24"]
    assert out[7].split() == ["key", "start", "end", "windowStart", "windowEnd", "feederRegion", "sourceKey"]
    assert out[9].split() == [
        "2026-11-03T00:00:00Z/2026-11-03T00:15:00Z",
        "2026-11-03T00:00:00Z",
        "2026-11-03T00:15:00Z",
        "2026-11-03T00:00:00Z",
        "2026-11-03T00:15:00Z",
        "north",
        "***",
    ]
    assert len(out) == 9 + 24
    assert "SOURCE_API_KEY" not in "\n".join(out)


def test_check_json_shape(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_API_KEY", "never-printed")
    Path("spec.toml").write_text(SPEC_PLAN, encoding="utf-8")
    assert run(["plan", "check", "spec.toml", "--json"]) == 0
    out = capsys.readouterr().out
    assert "never-printed" not in out
    document: dict[str, Any] = json.loads(out)
    assert sorted(document) == ["hash", "match_on", "path", "plan", "window_count", "windows"]
    assert document["path"] == "spec.toml" and len(document["hash"]) == 64
    assert document["match_on"] == ["windowStart", "feederRegion"]
    assert document["window_count"] == len(document["windows"]) == 24
    assert document["windows"][1] == {
        "key": "2026-11-03T00:15:00Z/2026-11-03T00:30:00Z",
        "start": "2026-11-03T00:15:00Z",
        "end": "2026-11-03T00:30:00Z",
        "parameters": {
            "windowStart": "2026-11-03T00:15:00Z",
            "windowEnd": "2026-11-03T00:30:00Z",
            "feederRegion": "north",
            "sourceKey": "***",
        },
    }
    plan = document["plan"]
    assert plan["windows"] == {
        "start": "2026-11-03T00:00:00Z",
        "end": "2026-11-03T06:00:00Z",
        "every": "15m",
        "list": None,
    }
    assert plan["parameters"]["sourceKey"] == {"secret": "${SOURCE_API_KEY}"}
    assert plan["execution"]["run_timeout"] == "45m" and plan["approval"]["expires"] == "12h"
    # The plan in the document is itself a plan file with the same hash.
    Path("again.json").write_text(json.dumps(plan), encoding="utf-8")
    assert run(["plan", "check", "again.json", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hash"] == document["hash"]


def test_schema_is_a_json_schema_of_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["plan", "schema"]) == 0
    schema: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert sorted(schema["required"]) == ["target", "title", "windows"]

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            return resolve(schema["$defs"][node["$ref"].rsplit("/", 1)[1]])
        return node

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if "$ref" in node else []
            return own + [r for value in node.values() for r in refs(value)]
        return [r for value in node for r in refs(value)] if isinstance(node, list) else []

    assert refs(schema)
    for ref in refs(schema):
        assert ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in schema["$defs"]
    sections = {name: resolve(prop) for name, prop in schema["properties"].items()}
    windows = sections["windows"]["properties"]
    assert set(windows) == {"start", "end", "every", "list"}
    start = windows["start"]["anyOf"][0]
    assert (start["type"], start["format"]) == ("string", "date-time")
    assert windows["every"]["anyOf"][0]["pattern"] and windows["every"]["description"]
    assert sections["approval"]["properties"]["expires"]["default"] == "12h"
    assert resolve(sections["checks"]["items"])["additionalProperties"] is True
    # Every key the spec's example uses is described by the schema.
    example = tomllib.loads(SPEC_PLAN)
    for section, value in example.items():
        assert section in sections
        if isinstance(value, dict) and section != "parameters":
            assert set(value) <= set(sections[section]["properties"]), section


def test_minimal_plan_checks(capsys: pytest.CaptureFixture[str]) -> None:
    Path("m.toml").write_text(MINIMAL_PLAN, encoding="utf-8")
    assert run(["plan", "check", "m.toml"]) == 0
    out = capsys.readouterr().out
    assert "checks: (none)" in out and "windows: 4" in out


def test_check_without_a_path_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["plan", "check"]) == 2
    assert "Missing argument 'PATH'" in capsys.readouterr().err


REPO = Path(__file__).resolve().parent.parent


def _json_ready(value: Any) -> Any:
    """A TOML document as an editor's schema check sees it: TOML date-times as RFC 3339 text."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    return value.isoformat() if hasattr(value, "isoformat") else value


def _validator(capsys: pytest.CaptureFixture[str]) -> Any:
    from jsonschema import Draft202012Validator, FormatChecker

    assert run(["plan", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    Draft202012Validator.check_schema(schema)
    checker = FormatChecker()
    assert "date-time" in checker.checkers, "rfc3339-validator is installed: formats are checked"
    return Draft202012Validator(schema, format_checker=checker)


def test_every_example_plan_meets_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    validator = _validator(capsys)
    plans = [path for path in sorted((REPO / "plans").glob("*.toml")) if not path.name.endswith("scenario.toml")]
    relative = 0
    for path in plans:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        errors = [
            f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
            for error in validator.iter_errors(_json_ready(data))
        ]
        assert not errors, (path.name, errors)
        relative += isinstance(data["windows"].get("start"), str)
    assert len(plans) >= 5 and relative >= 2, "demo.toml and telemetry-15m.toml name yesterday's windows"


@pytest.mark.parametrize(
    ("start", "loads"),
    [
        ("yesterday 00:00Z", True),
        ("-2d 00:00Z", True),
        ("today  6:30:00+00:00", True),
        ("yesterday 00:00", False),  # a local time of day
        ("-6h", False),  # an offset from the instant: windows would move with every command
        ("yesterday", False),
        ("yesterday 24:00Z", False),
        ("2026-11-03 00:00", False),
    ],
)
def test_the_schema_accepts_the_window_bounds_the_loader_accepts(
    capsys: pytest.CaptureFixture[str], start: str, loads: bool
) -> None:
    validator = _validator(capsys)
    text = _range(f'start = "{start}"\nend = "tomorrow 00:00Z"\nevery = "15m"')
    Path("p.toml").write_text(text, encoding="utf-8")
    assert (run(["plan", "check", "p.toml"]) == 0) is loads, capsys.readouterr()
    assert validator.is_valid(_json_ready(tomllib.loads(text))) is loads

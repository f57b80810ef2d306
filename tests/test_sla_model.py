"""SLA files (spec §13): the example loads, every wrong key is refused in one line naming it, and
the JSON Schema that ``sla schema`` prints accepts the example as an editor would."""

from __future__ import annotations

import json
from datetime import UTC, time, timedelta
from pathlib import Path

import jsonschema
import pytest

from backfill.cli import main
from backfill.sla.model import SlaFileError, load_sla, sla_from_data

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "slas" / "claims-severity.toml"
Cap = pytest.CaptureFixture[str]


def _data(**sla: object) -> dict[str, object]:
    base: dict[str, object] = {
        "business_date": "businessDate",
        "deadline": "06:00",
        "timezone": "America/New_York",
    }
    base.update(sla)
    return {
        "title": "t",
        "target": {"subscription_id": "s", "resource_group": "rg", "factory": "f", "pipeline": "p"},
        "sla": {k: v for k, v in base.items() if v is not None},
    }


def test_the_example_loads_with_its_meaning() -> None:
    loaded = load_sla(EXAMPLE)
    spec = loaded.spec
    assert (spec.business_date, spec.deadline, spec.timezone) == ("businessDate", time(6), "America/New_York")
    assert spec.days == ["Mon", "Tue", "Wed", "Thu", "Fri"] and spec.warn_before == timedelta(minutes=30)
    drift = loaded.file.drift
    assert (drift.recent, drift.baseline, drift.threshold) == (10, 20, 0.15)
    assert loaded.pipeline == "RefreshClaimsSeverity" and loaded.ref.factory == "adf-claims"


def test_defaults_are_business_days_and_the_spec_drift() -> None:
    loaded = sla_from_data(_data())
    assert loaded.spec.days == ["Mon", "Tue", "Wed", "Thu", "Fri"]
    assert (loaded.file.drift.recent, loaded.file.drift.baseline, loaded.file.drift.threshold) == (10, 20, 0.15)


@pytest.mark.parametrize(
    ("change", "key", "expected"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "sla.timezone", '"Mars/Olympus_Mons" is not an IANA time zone'),
        ({"timezone": "../../etc/passwd"}, "sla.timezone", "is not an IANA time zone"),
        ({"timezone": None}, "sla.timezone", "is required: the deadline is a local time"),
        ({"deadline": "06:00Z"}, "sla.deadline", "carries an offset; write the local time"),
        ({"deadline": "06:00+01:00"}, "sla.deadline", "carries an offset"),
        ({"deadline": time(6, tzinfo=UTC)}, "sla.deadline", "carries an offset"),
        ({"deadline": "6am"}, "sla.deadline", 'expected a local time of day like "06:00"'),
        ({"deadline": "25:00"}, "sla.deadline", "is not a time of day"),
        ({"days": ["Mon", "Funday"]}, "sla.days[1]", 'expected one of Mon, Tue, Wed, Thu, Fri, Sat, Sun, got "Funday"'),
        ({"days": ["Mon", "Mon"]}, "sla.days[1]", "Mon is named twice"),
        ({"days": []}, "sla.days", "expected at least one weekday"),
        ({"warn_before": "soon"}, "sla.warn_before", "expected a duration"),
        ({"business_date": ""}, "sla.business_date", "a non-empty string"),
        ({"colour": "red"}, "sla.colour", "unknown key; expected one of business_date, days, deadline"),
    ],
)
def test_a_wrong_key_is_refused_naming_it(change: dict[str, object], key: str, expected: str) -> None:
    with pytest.raises(SlaFileError) as caught:
        sla_from_data(_data(**change), path="x.toml")
    message = str(caught.value)
    assert message.startswith(f"x.toml: {key}: "), message
    assert expected in message and "\n" not in message


def test_drift_settings_are_checked() -> None:
    data = _data()
    data["drift"] = {"recent": 2, "threshold": "15"}
    with pytest.raises(SlaFileError, match=r"drift.recent: expected a whole number >= 3, got 2"):
        sla_from_data(data, path="x.toml")
    data["drift"] = {"threshold": "15"}
    with pytest.raises(SlaFileError, match=r'drift.threshold: expected a percentage like "15%"'):
        sla_from_data(data, path="x.toml")


def test_files_that_cannot_be_read_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(SlaFileError, match="no such file"):
        load_sla(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("title = \n")
    with pytest.raises(SlaFileError, match="invalid TOML"):
        load_sla(bad)


def test_sla_check_and_a_refusal_on_the_command_line(tmp_path: Path, capsys: Cap) -> None:
    assert main.run(["sla", "check", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "deadline: 06:00 America/New_York on Mon, Tue, Wed, Thu, Fri" in out
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(EXAMPLE.read_text().replace('"America/New_York"', '"America/Nowhere"'))
    assert main.run(["sla", "check", str(wrong)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f'error: {wrong}: sla.timezone: "America/Nowhere" is not an IANA time zone '
        '(e.g. "America/New_York", "Europe/Paris")'
    ]


def test_the_schema_accepts_the_example_and_refuses_a_bad_day(capsys: Cap) -> None:
    import tomllib

    assert main.run(["sla", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    example = tomllib.loads(EXAMPLE.read_text())
    jsonschema.validate(example, schema)
    example["sla"]["days"] = ["Funday"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(example, schema)

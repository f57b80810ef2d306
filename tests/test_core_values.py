"""The small core values: secrets, templates, windows, run parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backfill.errors import ConfigError
from backfill.factory.run import Run, RunStatus, decode_parameter
from backfill.secrets import REDACTED, Secret, expand, redact, reveal_all
from backfill.windows import TemplateError, Window, render, template_fields

START = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)
END = datetime(2026, 11, 3, 2, 15, tzinfo=UTC)


def test_expand_reads_the_environment_at_use_time() -> None:
    assert expand("Server=${HOST};Pwd=${PWD_X}", {"HOST": "db", "PWD_X": "s3"}) == "Server=db;Pwd=s3"
    with pytest.raises(ConfigError, match="environment variable NOPE is not set"):
        expand("${NOPE}", {})


def test_secret_never_prints_its_value() -> None:
    secret = Secret("${KEY}")
    assert str(secret) == REDACTED and "KEY" not in repr(secret)
    assert redact({"a": secret, "b": [secret, "x"]}) == {"a": REDACTED, "b": [REDACTED, "x"]}
    assert reveal_all({"a": secret}, {"KEY": "v"}) == {"a": "v"}


def test_render_templates() -> None:
    assert render("{start}", START, END) == "2026-11-03T02:00:00Z"
    assert render("{start:%Y-%m-%d}/{end:%H%M}", START, END) == "2026-11-03/0215"
    assert render("{{literal}}", START, END) == "{literal}"
    assert render(["{start}", 5], START, END) == ["2026-11-03T02:00:00Z", 5]
    assert template_fields("{start:%H} {end} {{x}}") == ["start", "end"]
    with pytest.raises(TemplateError, match=r"unknown field \{begin\}"):
        render("{begin}", START, END)


def test_window_key_and_public_parameters() -> None:
    window = Window(START, END, {"windowStart": "2026-11-03T02:00:00Z", "key": Secret("${K}")})
    assert window.key == "2026-11-03T02:00:00Z/2026-11-03T02:15:00Z"
    assert window.public_parameters() == {"windowStart": "2026-11-03T02:00:00Z", "key": REDACTED}


def test_parameters_decoded_from_adf_json_strings() -> None:
    assert decode_parameter('["exampleoutput.csv"]') == ["exampleoutput.csv"]
    assert decode_parameter('{"a": 1}') == {"a": 1}
    assert decode_parameter("north") == "north"
    assert decode_parameter("[not json") == "[not json"


def test_both_spellings_of_cancelled() -> None:
    assert RunStatus.parse("Canceled") is RunStatus.CANCELLED
    assert RunStatus.parse("Cancelled") is RunStatus.CANCELLED
    with pytest.raises(ValueError):
        RunStatus.parse("Exploded")


def test_run_cache_form_round_trips() -> None:
    run = Run.from_json(
        {
            "runId": "r1",
            "pipelineName": "p",
            "status": "Failed",
            "parameters": {"a": "[1,2]"},
            "runGroupId": "g",
            "isLatest": False,
            "runStart": "2026-11-03T02:00:00.1234567Z",
            "runEnd": "2026-11-03T02:10:00Z",
            "lastUpdated": "2026-11-03T02:10:00Z",
            "durationInMs": 600000,
            "message": "boom",
            "invokedBy": {"name": "Manual", "invokedByType": "Manual"},
        }
    )
    assert run.parameters == {"a": [1, 2]}
    assert Run.from_cache(run.to_json()) == run

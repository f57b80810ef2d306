"""Unknown strftime directives are refused at load, naming the key (issue 9, item 7): glibc copies
``%Q`` literally, so ``windowEnd = "{end:%Q}"`` would send ``%Q`` to every run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from plan_samples import SPEC_PLAN

from backfill.cli.main import run
from backfill.windows import STRFTIME_DIRECTIVES, TemplateError, check_template, render

Cap = pytest.CaptureFixture[str]
END = '"{end:%Y-%m-%dT%H:%M:%SZ}"'


def _spec(old: str, new: str) -> str:
    assert old in SPEC_PLAN, old
    return SPEC_PLAN.replace(old, new)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            _spec(END, '"{end:%Q}"'),
            'parameters.windowEnd: template "{end:%Q}": unknown strftime directive %Q in {end:%Q} '
            "(e.g. %Y-%m-%dT%H:%M:%SZ; write %% for a literal %)",
        ),
        (
            _spec(END, '"{end:%Y-%m-%d %}"'),
            'parameters.windowEnd: template "{end:%Y-%m-%d %}": a lone % at the end of the format '
            "'%Y-%m-%d %'; write %% for a literal %",
        ),
        (
            _spec('args = ["north", "{start}", "{end}"]', 'args = ["north", "{start:%Y%q}", "{end}"]'),
            'checks[0].args[1]: template "{start:%Y%q}": unknown strftime directive %q in {start:%Y%q} '
            "(e.g. %Y-%m-%dT%H:%M:%SZ; write %% for a literal %)",
        ),
    ],
    ids=["parameter", "lone-percent", "check-arg"],
)
def test_unknown_directives_are_refused_naming_the_key(text: str, message: str, capsys: Cap) -> None:
    Path("bad.toml").write_text(text, encoding="utf-8")
    assert run(["plan", "check", "bad.toml"]) == 1
    assert capsys.readouterr().err == f"error: bad.toml: {message}\n"


def test_known_directives_flags_and_literal_percent_pass() -> None:
    for template in ("{end:%Y-%m-%dT%H:%M:%S.%fZ}", "{start:%-d/%-m %%}", "{start:%s}", "{end:%:z}", "100%"):
        check_template(template)


@given(st.sampled_from(sorted(set(map(chr, range(33, 127))) - STRFTIME_DIRECTIVES - {"-", "_", "0", "^", "#", ":"})))
def test_every_other_directive_is_refused(code: str) -> None:
    with pytest.raises(TemplateError):
        check_template(f"{{end:%{code}}}")


@given(st.lists(st.sampled_from(sorted(STRFTIME_DIRECTIVES - {"%"})), min_size=1, max_size=5))
def test_accepted_directives_never_render_literally(codes: list[str]) -> None:
    template = "{end:" + "|".join(f"%{c}" for c in codes) + "}"
    check_template(template)
    rendered = render(template, datetime(2026, 11, 3, tzinfo=UTC), datetime(2026, 11, 3, 0, 15, tzinfo=UTC))
    assert all(f"%{c}" not in rendered.split("|")[i] for i, c in enumerate(codes)), rendered

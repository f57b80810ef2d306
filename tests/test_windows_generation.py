"""Window generation, explicit windows and parameter rendering (backfill.windows)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfill.secrets import Secret
from backfill.timeutil import format_utc, parse_duration, parse_utc
from backfill.windows import (
    TemplateError,
    Window,
    WindowError,
    check_template,
    count_windows,
    duration_text,
    explicit_windows,
    generate_windows,
    render,
    render_parameters,
    template_fields,
)

T0 = datetime(2026, 11, 3, tzinfo=UTC)

starts = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)).map(
    lambda d: d.replace(microsecond=0)
)
everies = st.integers(min_value=1, max_value=3 * 86_400).map(lambda s: timedelta(seconds=s))


@given(start=starts, every=everies, count=st.integers(min_value=1, max_value=300))
def test_generated_windows_tile_the_range(start: datetime, every: timedelta, count: int) -> None:
    end = start + count * every
    windows = generate_windows(start, end, every)
    assert count_windows(start, end, every) == count == len(windows) == (end - start) // every
    assert windows[0].start == start and windows[-1].end == end
    for before, after in itertools.pairwise(windows):
        assert before.end == after.start  # contiguous, no gap and no overlap
    assert all(w.end - w.start == every for w in windows)
    keys = [w.key for w in windows]
    assert len(set(keys)) == len(keys)
    for window, key in zip(windows, keys, strict=True):
        first, second = key.split("/")
        assert (parse_utc(first), parse_utc(second)) == (window.start, window.end)


@given(start=starts, every=everies, count=st.integers(min_value=1, max_value=50), data=st.data())
def test_every_instant_lies_in_exactly_one_half_open_window(
    start: datetime, every: timedelta, count: int, data: st.DataObject
) -> None:
    end = start + count * every
    span = (end - start) // timedelta(microseconds=1)
    instant = start + timedelta(microseconds=data.draw(st.integers(0, span - 1)))
    windows = generate_windows(start, end, every)
    assert sum(1 for w in windows if w.start <= instant < w.end) == 1
    assert not any(w.start <= end < w.end for w in windows)  # the end itself belongs to none


@given(start=starts, every=everies, count=st.integers(min_value=1, max_value=50), extra=everies)
def test_a_range_every_does_not_divide_is_refused(
    start: datetime, every: timedelta, count: int, extra: timedelta
) -> None:
    end = start + count * every + extra % every
    if (end - start) % every == timedelta(0):
        return
    with pytest.raises(WindowError) as caught:
        generate_windows(start, end, every)
    assert caught.value.field == "every"
    assert str(caught.value).startswith(f'"{duration_text(every)}" does not divide the range {format_utc(start)} to ')


def test_an_end_not_after_the_start_is_refused() -> None:
    with pytest.raises(WindowError, match=r"^2026-11-03T00:00:00Z is not after the start 2026-11-03T00:00:00Z$"):
        count_windows(T0, T0, timedelta(minutes=15))
    with pytest.raises(WindowError) as caught:
        count_windows(T0, T0 - timedelta(hours=1), timedelta(minutes=15))
    assert caught.value.field == "end"


def test_counting_does_not_generate() -> None:
    # A typo like every = "1s" over a century is counted, not materialised.
    assert count_windows(T0, T0 + timedelta(days=36_500), timedelta(seconds=1)) == 3_153_600_000


@given(
    start=starts,
    lengths=st.lists(st.tuples(st.integers(1, 10_000), st.integers(0, 10_000)), min_size=1, max_size=30),
    seed=st.integers(),
)
def test_explicit_windows_are_sorted_and_disjoint(start: datetime, lengths: list[tuple[int, int]], seed: int) -> None:
    pairs = []
    cursor = start
    for length, gap in lengths:
        pairs.append((cursor, cursor + timedelta(seconds=length)))
        cursor += timedelta(seconds=length + gap)
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    windows = explicit_windows(shuffled)
    assert [(w.start, w.end) for w in windows] == pairs


@given(
    start=starts,
    lengths=st.lists(st.integers(2, 10_000), min_size=2, max_size=20),
    data=st.data(),
)
def test_overlapping_explicit_windows_are_refused(start: datetime, lengths: list[int], data: st.DataObject) -> None:
    pairs = []
    cursor = start
    for length in lengths:
        pairs.append((cursor, cursor + timedelta(seconds=length)))
        cursor += timedelta(seconds=length)
    victim = data.draw(st.integers(0, len(pairs) - 1))
    inside = pairs[victim][0] + timedelta(seconds=1)
    pairs.append((inside, inside + timedelta(seconds=1)))
    with pytest.raises(WindowError) as caught:
        explicit_windows(pairs)
    assert caught.value.field == "list"
    assert caught.value.index == len(pairs) - 1
    assert f"overlaps list[{victim}]" in str(caught.value)


def test_explicit_overlap_message_names_both_windows() -> None:
    pairs = [(T0, T0 + timedelta(hours=1)), (T0 + timedelta(minutes=30), T0 + timedelta(hours=2))]
    with pytest.raises(WindowError) as caught:
        explicit_windows(pairs)
    assert str(caught.value) == (
        "2026-11-03T00:30:00Z/2026-11-03T02:00:00Z overlaps list[0] (2026-11-03T00:00:00Z/2026-11-03T01:00:00Z)"
    )
    with pytest.raises(WindowError) as empty:
        explicit_windows([(T0, T0)])
    assert (empty.value.field, empty.value.index) == ("list", 0)


# --- rendering ----------------------------------------------------------------------------------

pieces = st.sampled_from(
    ["{start}", "{end}", "{start:%Y-%m-%d}", "{end:%H%M}", "{start:%Y-%m-%dT%H:%M:%SZ}", "{{", "}}", "${SINK_KEY}"]
)
literal = st.text(st.characters(blacklist_characters="{}$", codec="utf-8"), max_size=8)
templates = st.lists(st.one_of(pieces, literal), max_size=8).map("".join)
values = st.one_of(
    templates,
    st.integers(),
    st.booleans(),
    st.lists(templates, max_size=3),
    templates.map(Secret),
)


@given(parameters=st.dictionaries(st.text(min_size=1, max_size=5), values, max_size=6), start=starts, every=everies)
def test_render_parameters_agrees_with_render(parameters: dict[str, object], start: datetime, every: timedelta) -> None:
    end = start + every
    rendered = render_parameters(parameters, start, end)
    assert rendered == {name: render(value, start, end) for name, value in parameters.items()}
    for template in parameters.values():
        if isinstance(template, str):
            check_template(template)  # every generated template is valid
            assert set(template_fields(template)) <= {"start", "end"}


@given(start=starts)
def test_bare_fields_render_as_utc_z_and_env_references_stay(start: datetime) -> None:
    end = start + timedelta(minutes=15)
    rendered = render_parameters(
        {
            "a": "{start}/{end}",
            "b": "{start:%Y-%m-%d}",
            "c": Secret("${KEY}-{start:%H}"),
            "d": 5,
            "e": "{{x}}",
            "f": "{end:%H%z %Z}",
        },
        start,
        end,
    )
    assert rendered["a"] == f"{format_utc(start)}/{format_utc(end)}"
    assert rendered["b"] == start.strftime("%Y-%m-%d")
    assert isinstance(rendered["c"], Secret) and rendered["c"].template == f"${{KEY}}-{start:%H}"
    assert (rendered["d"], rendered["e"]) == (5, "{x}")
    assert rendered["f"] == end.strftime("%H+0000 UTC")
    window = Window(start, end, rendered)
    assert window.public_parameters()["c"] == "***"


@given(name=st.text(st.characters(blacklist_characters="{}:", codec="utf-8"), max_size=10))
def test_unknown_fields_are_refused(name: str) -> None:
    if name in ("start", "end"):
        return
    with pytest.raises(TemplateError, match="unknown field"):
        check_template(f"x{{{name}}}y")
    with pytest.raises(TemplateError, match="unknown field"):
        render_parameters({"p": f"{{{name}:%Y}}"}, T0, T0 + timedelta(hours=1))


@pytest.mark.parametrize("template", ["{start", "start}", "{start:%Y", "a } b", "{{start}"])
def test_lone_braces_are_refused(template: str) -> None:
    with pytest.raises(TemplateError, match=r"^a lone \{ or \}; write \{\{ or \}\} for a literal brace$"):
        check_template(template)


@given(amount=st.integers(1, 10_000), unit=st.sampled_from(["ms", "s", "m", "h", "d", "w"]))
def test_duration_text_is_exact_and_parseable(amount: int, unit: str) -> None:
    value = parse_duration(f"{amount}{unit}")
    text = duration_text(value)
    assert parse_duration(text) == value
    assert duration_text(parse_duration(text)) == text


@settings(max_examples=20)
@given(start=starts)
def test_generated_windows_carry_rendered_parameters(start: datetime) -> None:
    windows = generate_windows(start, start + timedelta(hours=1), timedelta(minutes=15), {"ws": "{start}"})
    assert [w.parameters["ws"] for w in windows] == [format_utc(w.start) for w in windows]


@settings(max_examples=60)
@given(
    parameters=st.dictionaries(
        st.text(min_size=1, max_size=5),
        st.one_of(values, st.sampled_from(["{start}", "{end}", "{end:%H}", "x"])),
        max_size=5,
    ),
    start=starts,
    every=everies,
    count=st.integers(min_value=1, max_value=6),
    gap=st.integers(min_value=0, max_value=2),
)
def test_windows_render_each_parameter_as_render_does(
    parameters: dict[str, object], start: datetime, every: timedelta, count: int, gap: int
) -> None:
    generated = generate_windows(start, start + count * every, every, parameters)
    # Explicit windows with gaps between them share no bounds; contiguous ones share them all.
    listed = explicit_windows(
        [(start + i * (1 + gap) * every, start + (i * (1 + gap) + 1) * every) for i in reversed(range(count))],
        parameters,
    )
    for window in [*generated, *listed]:
        expected = {name: render(value, window.start, window.end) for name, value in parameters.items()}
        assert window.parameters == expected

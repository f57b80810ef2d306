"""Matching runs to windows: the normaliser and the latest-run rule (SPEC §4)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfill.factory.run import Run, RunStatus, decode_parameter
from backfill.matching import (
    _canonical_text,
    canonical,
    key_hash,
    key_hashes,
    latest_of,
    latest_runs,
    match_fields,
    match_key,
    normalise,
)
from backfill.secrets import Secret
from backfill.windows import Window

T0 = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)


def window(start: datetime, **parameters: object) -> Window:
    return Window(start, start + timedelta(minutes=15), parameters)


def run(
    run_id: str,
    start: datetime | None,
    *,
    group: str | None = None,
    latest: bool = True,
    status: RunStatus = RunStatus.SUCCEEDED,
    **parameters: object,
) -> Run:
    return Run(
        run_id=run_id,
        pipeline="P",
        status=status,
        parameters=parameters,
        run_group_id=group,
        is_latest=latest,
        start=start,
    )


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("2026-11-03T02:00:00Z", "2026-11-03T02:00:00.000Z"),
        ("2026-11-03T02:00:00Z", "2026-11-03T02:00:00+00:00"),
        ("2026-11-03T02:00:00Z", "2026-11-03T03:00:00+01:00"),
        ("2026-11-03T02:00:00.1234567Z", "2026-11-03T02:00:00.123456Z"),
        ("2026-11-03T02:00:00Z", T0),
        ('["a.csv", "b.csv"]', ["a.csv", "b.csv"]),
        ('{"b": 1, "a": [2]}', {"a": ["2"], "b": "1"}),
        ('"north"', "north"),
        ("5", 5),
        ("5.0", 5),
        ("-2.5", -2.5),
        ("true", True),
        ("False", False),
        ("[1, 2]", "[1.0, 2.0]"),
    ],
)
def test_equal_meanings_normalise_equal(left: object, right: object) -> None:
    assert normalise(left) == normalise(right)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("north", "North"),
        ("north", "north "),
        ("007", 7),
        ("2026-11-03T02:00:00", "2026-11-03T02:00:00Z"),  # naive is not an instant
        ("2026-11-03T02:00:00Z", "2026-11-03T02:00:01Z"),
        ("1", True),
        ("[1, 2]", "[2, 1]"),
        ("{not json", "{not json}"),
        (None, "null"),
    ],
)
def test_different_meanings_stay_different(left: object, right: object) -> None:
    assert normalise(left) != normalise(right)


aware_times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@given(aware_times, offsets)
def test_any_iso_spelling_of_an_instant_is_the_same(moment: datetime, offset: timezone) -> None:
    spellings = [
        moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        moment.isoformat(),
        moment.astimezone(offset).isoformat(),
        moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z",  # ADF's seven fractional digits
        moment,
    ]
    if not moment.microsecond:
        spellings.append(moment.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert len({normalise(s) for s in spellings}) == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@given(json_values.filter(lambda v: v is not None))
def test_json_encoded_string_equals_its_value(value: object) -> None:
    assert normalise(json.dumps(value)) == normalise(value)


@given(st.integers() | st.floats(allow_nan=False, allow_infinity=False))
def test_number_equals_its_string_form(number: float) -> None:
    assert normalise(str(number) if isinstance(number, int) else json.dumps(number)) == normalise(number)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_ ", min_size=1), st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_ "))
def test_plain_text_only_equals_itself(left: str, right: str) -> None:
    if left.lower() in ("true", "false") or right.lower() in ("true", "false"):
        return
    assert (normalise(left) == normalise(right)) == (left == right)


def test_adf_decoded_parameters_match_plan_values() -> None:
    # What the service sends (every value a string) against what a plan renders.
    sent = {"files": '["a.csv"]', "when": "2026-11-03T02:00:00.0000000Z", "n": "5"}
    decoded = {name: decode_parameter(value) for name, value in sent.items()}
    fields = ("files", "when", "n")
    assert match_key(decoded, fields) == match_key({"files": ["a.csv"], "when": "2026-11-03T02:00:00Z", "n": 5}, fields)


def test_missing_field_never_matches() -> None:
    assert match_key({"a": 1}, ("a", "b")) is None


def test_secure_parameters_are_left_out_of_matching() -> None:
    windows = [window(T0, windowStart="{start}", key=Secret("${KEY}"))]
    assert match_fields(windows, ("windowStart", "key")) == ("windowStart",)


def test_latest_is_newest_start() -> None:
    old = run("a", T0 + timedelta(minutes=1), status=RunStatus.FAILED)
    new = run("b", T0 + timedelta(minutes=30))
    assert latest_of([new, old]) is new
    assert latest_of([]) is None


def test_run_without_start_is_newest() -> None:
    started = run("a", T0, status=RunStatus.FAILED)
    queued = run("b", None, status=RunStatus.QUEUED)
    assert latest_of([started, queued]) is queued


def test_within_a_recovery_group_is_latest_wins() -> None:
    # The original run carries the newest runStart (clock skew between ADF nodes), but ADF marks
    # the recovery run as the group's latest.
    original = run("orig", T0 + timedelta(minutes=10), group="g1", latest=False, status=RunStatus.FAILED)
    recovery = run("recov", T0 + timedelta(minutes=9), group="g1", latest=True)
    other = run("other", T0, group="g2", status=RunStatus.FAILED)
    assert latest_of([other, original, recovery]) is recovery


def test_newest_group_decides_even_when_an_older_group_is_latest() -> None:
    old = run("old", T0, group="g1", latest=True)
    newest = run("new", T0 + timedelta(hours=1), group="g2", latest=True, status=RunStatus.FAILED)
    assert latest_of([old, newest]) is newest


def test_latest_runs_per_window() -> None:
    windows = [
        window(
            T0 + i * timedelta(minutes=15),
            windowStart=(T0 + i * timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            region="north",
        )
        for i in range(3)
    ]
    runs = [
        run("r0", T0 + timedelta(minutes=1), windowStart="2026-11-03T02:00:00.0000000Z", region="north"),
        run("r0-south", T0 + timedelta(minutes=2), windowStart="2026-11-03T02:00:00Z", region="south"),
        run("r1-old", T0 + timedelta(minutes=16), windowStart="2026-11-03T02:15:00+00:00", region="north"),
        run("r1-new", T0 + timedelta(minutes=40), windowStart="2026-11-03T03:15:00+01:00", region="north"),
        run("no-params", T0 + timedelta(minutes=50)),
    ]
    found = latest_runs(windows, runs, ("windowStart", "region"))
    assert [r.run_id if r else None for r in found] == ["r0", "r1-new", None]


def test_coarse_match_shares_runs_between_windows() -> None:
    windows = [window(T0 + i * timedelta(minutes=15), region="north") for i in range(1000)]
    runs = [run(f"r{i}", T0 + timedelta(seconds=i), region="north") for i in range(1000)]
    found = latest_runs(windows, runs, ("region",))
    assert {r.run_id for r in found if r} == {"r999"}


def _spell(moment: datetime, style: int) -> object:
    return [
        moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        moment.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
        moment.isoformat(),
        moment,
    ][style]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=30),
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=40),  # window index (>= count: matches none)
            st.sampled_from(["north", "south"]),
            st.integers(min_value=0, max_value=3),  # spelling of windowStart
            st.integers(min_value=0, max_value=10_000),  # start offset, seconds
            st.booleans(),
        ),
        max_size=80,
    ),
)
def test_matching_agrees_with_brute_force(count: int, specs: list[tuple[int, str, int, int, bool]]) -> None:
    starts = [T0 + i * timedelta(minutes=15) for i in range(count)]
    windows = [
        window(s, windowStart=s.strftime("%Y-%m-%dT%H:%M:%SZ"), region="north", asOf="2026-01-01") for s in starts
    ]
    runs = []
    for n, (index, region, style, offset, latest) in enumerate(specs):
        moment = T0 + index * timedelta(minutes=15)
        runs.append(
            run(
                f"r{n:03d}",
                T0 + timedelta(seconds=offset),
                group=f"g{n % 5}",
                latest=latest,
                windowStart=_spell(moment, style),
                region=region,
                asOf='"2026-01-01"',
            )
        )
    found = latest_runs(windows, runs, ("windowStart", "region", "asOf"))
    for i, start in enumerate(starts):
        # The oracle compares meanings directly, window by window.
        matching = [r for r, spec in zip(runs, specs, strict=True) if spec[0] == i and spec[1] == "north"]
        assert found[i] is latest_of(matching), (start, found[i], matching)


# --- key_hash: the canonical text behind the history cache's key index ----------------------------

parameter_values = st.one_of(
    json_values,
    st.builds(json.dumps, json_values),
    aware_times.map(lambda moment: moment.isoformat()),
    st.tuples(aware_times, offsets).map(lambda pair: pair[0].astimezone(pair[1]).isoformat()),
    aware_times.map(lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"),
    st.sampled_from(
        [
            "5",
            "5.0",
            "-0",
            "0.0",
            "1e3",
            "1000",
            "007",
            "true",
            "False",
            "nan",
            "null",
            "north",
            "2026-11-03T02:00:00",
            "2026-11-03T02:00Z",
            '"north"',
            "[1, 2]",
            "[1.0, 2.0]",
        ]
    ),
)


@settings(max_examples=300)
@given(parameter_values, parameter_values)
def test_canonical_text_is_equal_exactly_when_values_match(left: object, right: object) -> None:
    assert (canonical(normalise(left)) == canonical(normalise(right))) == (normalise(left) == normalise(right))


@settings(max_examples=200)
@given(
    st.dictionaries(st.sampled_from(["a", "b", "c"]), parameter_values, max_size=3),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), parameter_values, max_size=3),
)
def test_key_hash_agrees_with_match_key(left: dict[str, object], right: dict[str, object]) -> None:
    fields = ("a", "b")
    keyed = [key_hash(side, fields) for side in (left, right)]
    for side, result in zip((left, right), keyed, strict=True):
        assert (result is None) == (match_key(side, fields) is None)
        if result is not None:
            assert -(2**63) <= result[1] < 2**63
    if keyed[0] is not None and keyed[1] is not None:
        assert (keyed[0][0] == keyed[1][0]) == (match_key(left, fields) == match_key(right, fields))
        if keyed[0][0] == keyed[1][0]:
            assert keyed[0][1] == keyed[1][1]


def test_key_text_frames_every_piece() -> None:
    # Without lengths, ("ab", "c") and ("a", "bc") would concatenate to the same text.
    first = key_hash({"x": "ab", "y": "c"}, ("x", "y"))
    second = key_hash({"x": "a", "y": "bc"}, ("x", "y"))
    assert first is not None and second is not None and first[0] != second[0]
    assert key_hash({"x": "2026-11-03T03:00:00+01:00"}, ("x",)) == key_hash({"x": "2026-11-03T02:00:00Z"}, ("x",))
    # A stable value, so keys written by one version are found by the next.
    assert key_hash(
        {"windowStart": "2026-11-03T02:00:00Z", "feederRegion": "north"}, ("windowStart", "feederRegion")
    ) == ("t1793671200000000;s5:north", 819136572098545377)


@given(
    aware_times,
    offsets,
    st.sampled_from(
        [timedelta(0), timedelta(microseconds=1), timedelta(milliseconds=1), timedelta(seconds=1), timedelta(hours=-1)]
    ),
)
def test_canonical_instants_differ_by_any_amount(moment: datetime, offset: timezone, delta: timedelta) -> None:
    other = (moment + delta).astimezone(offset)
    for spelling in (other.isoformat(), other.strftime("%Y-%m-%dT%H:%M:%S.%f") + "1" + other.strftime("%z")):
        assert (canonical(normalise(moment.isoformat())) == canonical(normalise(spelling))) == (delta == timedelta(0))


@settings(max_examples=100)
@given(
    st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]), parameter_values, max_size=3), max_size=6),
    st.sampled_from([(), ("a",), ("a", "b"), ("c", "a", "b")]),
)
def test_key_hashes_of_many_agree_with_key_hash(sets: list[dict[str, object]], fields: tuple[str, ...]) -> None:
    assert key_hashes(sets, fields) == [key_hash(parameters, fields) for parameters in sets]


@given(
    st.one_of(parameter_values.filter(lambda v: isinstance(v, str)), st.text(alphabet="0123456789-T:Z+. ", max_size=26))
)
def test_canonical_text_of_a_string_is_canonical_of_its_normal_form(text: str) -> None:
    assert _canonical_text.__wrapped__(text) == canonical(normalise(text))

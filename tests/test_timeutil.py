from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill.errors import UsageError
from backfill.timeutil import (
    NaiveTimestamp,
    format_duration,
    format_utc,
    parse_adf_time,
    parse_duration,
    parse_utc,
    parse_utc_option,
)

aware = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@given(aware)
def test_format_then_parse_round_trips(value: datetime) -> None:
    assert parse_utc(format_utc(value, precise=True)) == value


@given(aware, st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_offsets_are_converted_to_utc(value: datetime, minutes: int) -> None:
    shifted = value.astimezone(timezone(timedelta(minutes=minutes)))
    assert parse_utc(shifted.isoformat()) == value


@pytest.mark.parametrize("text", ["2026-11-03T02:00:00", "2026-11-03 02:00", "2026-11-03"])
def test_naive_timestamps_are_refused(text: str) -> None:
    with pytest.raises(NaiveTimestamp, match="has no UTC offset"):
        parse_utc(text)


def test_naive_option_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--since '2026-11-03T02:00:00' has no UTC offset"):
        parse_utc_option("2026-11-03T02:00:00", "--since")


def test_adf_seven_fractional_digits() -> None:
    value = parse_adf_time("2018-06-16T00:37:44.6257014Z")
    assert value == datetime(2018, 6, 16, 0, 37, 44, 625701, tzinfo=UTC)
    assert parse_adf_time(None) is None


def test_equal_spellings_of_one_instant() -> None:
    spellings = ["2026-11-03T02:00:00Z", "2026-11-03T02:00:00.000Z", "2026-11-03T02:00:00+00:00"]
    assert len({parse_utc(s) for s in spellings}) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("90s", timedelta(seconds=90)),
        ("2d", timedelta(days=2)),
        ("500ms", timedelta(milliseconds=500)),
        ("1w", timedelta(weeks=1)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "15", "m", "0m", "1.5h", "-1h", "1y"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(timedelta(minutes=45)) == "45m"
    assert format_duration(timedelta(hours=1, minutes=5)) == "1h05m"
    assert format_duration(timedelta(seconds=12.3)) == "12.3s"
    assert format_duration(None) == ""


# --- the fast paths agree with the careful ones ------------------------------------------------


def reference_parse(text: str) -> datetime:
    """parse_utc as it was before its fromisoformat fast path: regex, then fromisoformat."""
    cleaned = re.sub(r"(\.\d{6})\d+", r"\1", text.strip())
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    value = datetime.fromisoformat(cleaned)
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveTimestamp(text)
    return value.astimezone(UTC)


any_moment = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))
spellings = st.one_of(
    st.tuples(any_moment, st.integers(min_value=-14 * 60, max_value=14 * 60)).map(
        lambda pair: pair[0].astimezone(timezone(timedelta(minutes=pair[1]))).isoformat()
    ),
    any_moment.map(lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "4Z"),
    any_moment.map(lambda moment: moment.isoformat().replace("+00:00", "z")),
    any_moment.map(lambda moment: f" {moment.isoformat()} "),
    any_moment.map(lambda moment: moment.replace(tzinfo=None).isoformat()),
    st.text(alphabet="0123456789-:T.Zz+ ", max_size=30),
)


@given(spellings)
def test_parse_utc_agrees_with_the_reference(text: str) -> None:
    try:
        expected: datetime | type[Exception] = reference_parse(text)
    except NaiveTimestamp:
        expected = NaiveTimestamp
    except ValueError:
        expected = ValueError
    if isinstance(expected, datetime):
        parsed = parse_utc(text)
        assert parsed == expected and parsed.tzinfo is UTC
    else:
        with pytest.raises(expected):
            parse_utc(text)


@given(any_moment, st.booleans())
def test_format_utc_agrees_with_strftime(moment: datetime, precise: bool) -> None:
    expected = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if precise and moment.microsecond else "%Y-%m-%dT%H:%M:%SZ")
    assert format_utc(moment, precise=precise) == expected
    assert format_utc(moment.astimezone(timezone(timedelta(hours=5, minutes=30))), precise=precise) == expected

"""Deadlines in UTC, each date in its own offset: both sides of a DST change, half-hour zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill.sla.calendar import business_date_of, business_dates_before, dates_in, deadline_utc

NEW_YORK = ZoneInfo("America/New_York")


def _z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        # Autumn 2026: clocks go back on Sunday 1 November.
        (date(2026, 10, 30), "2026-10-30T10:00:00Z"),  # EDT, UTC-4
        (date(2026, 10, 31), "2026-10-31T10:00:00Z"),
        (date(2026, 11, 1), "2026-11-01T11:00:00Z"),  # the change happened at 02:00, before 06:00
        (date(2026, 11, 2), "2026-11-02T11:00:00Z"),  # EST, UTC-5
        # Spring 2026: clocks go forward on Sunday 8 March.
        (date(2026, 3, 7), "2026-03-07T11:00:00Z"),
        (date(2026, 3, 8), "2026-03-08T10:00:00Z"),
        (date(2026, 3, 9), "2026-03-09T10:00:00Z"),
    ],
)
def test_a_six_oclock_deadline_in_new_york_on_both_sides_of_a_change(day: date, expected: str) -> None:
    assert deadline_utc(day, time(6), NEW_YORK) == _z(expected)


def test_a_half_hour_zone_without_dst_and_one_with() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")  # UTC+05:30 all year
    assert deadline_utc(date(2026, 1, 15), time(6), kolkata) == _z("2026-01-15T00:30:00Z")
    assert deadline_utc(date(2026, 7, 15), time(6), kolkata) == _z("2026-07-15T00:30:00Z")
    adelaide = ZoneInfo("Australia/Adelaide")  # UTC+10:30 in summer, +09:30 in winter; changes 5 April 2026
    assert deadline_utc(date(2026, 4, 4), time(6), adelaide) == _z("2026-04-03T19:30:00Z")
    assert deadline_utc(date(2026, 4, 5), time(6), adelaide) == _z("2026-04-04T20:30:00Z")
    assert deadline_utc(date(2026, 10, 4), time(6), adelaide) == _z("2026-10-03T19:30:00Z")  # forward again


def test_a_deadline_in_the_skipped_hour_is_the_instant_after_the_jump() -> None:
    # 02:30 does not exist in New York on 8 March 2026: it is read as 03:30 EDT, 07:30Z.
    assert deadline_utc(date(2026, 3, 8), time(2, 30), NEW_YORK) == _z("2026-03-08T07:30:00Z")
    # 01:30 happens twice on 1 November 2026: the first, 05:30Z (EDT), the stricter.
    assert deadline_utc(date(2026, 11, 1), time(1, 30), NEW_YORK) == _z("2026-11-01T05:30:00Z")


def test_the_dates_of_a_range_are_those_whose_local_midnight_is_in_it() -> None:
    # 2026-11-03T00:00Z is 19:00 on the 2nd in New York: the 3rd is the first date.
    found = list(dates_in(_z("2026-11-03T00:00:00Z"), _z("2026-11-06T00:00:00Z"), NEW_YORK))
    assert found == [date(2026, 11, 3), date(2026, 11, 4), date(2026, 11, 5)]


def test_business_dates_before_skip_the_weekend() -> None:
    days = frozenset({"Mon", "Tue", "Wed", "Thu", "Fri"})
    found = business_dates_before(_z("2026-11-10T12:00:00Z"), NEW_YORK, days, 4)  # a Tuesday
    assert found == [date(2026, 11, 5), date(2026, 11, 6), date(2026, 11, 9), date(2026, 11, 10)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-03", date(2026, 11, 3)),
        ("20261103", date(2026, 11, 3)),
        ("2026-11-03T00:00:00Z", date(2026, 11, 3)),
        ("2026-11-03T00:00:00.0000000Z", date(2026, 11, 3)),
        ("2026-02-30", None),
        ("tomorrow", None),
        ("2026-11-031", None),
        (20261103, None),
        (None, None),
    ],
)
def test_the_business_date_a_run_carries(value: object, expected: date | None) -> None:
    assert business_date_of(value) == expected


@given(
    st.dates(min_value=date(2000, 1, 1), max_value=date(2060, 12, 31)),
    st.sampled_from(
        sorted(["America/New_York", "Europe/Paris", "Australia/Adelaide", "Asia/Kolkata", "Pacific/Chatham", "UTC"])
    ),
)
def test_the_deadline_is_six_on_that_dates_wall_clock(day: date, zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    local = deadline_utc(day, time(6), zone).astimezone(zone)
    assert (local.date(), local.time()) == (day, time(6))
    assert deadline_utc(day, time(6), zone).tzinfo is UTC


@given(
    st.dates(min_value=date(1900, 1, 1), max_value=date(2199, 12, 31)),
    st.sampled_from(["iso", "compact", "stamp", "adf"]),
)
def test_every_spelling_of_a_date_reads_back(day: date, form: str) -> None:
    text = {
        "iso": day.isoformat(),
        "compact": day.strftime("%Y%m%d"),
        "stamp": f"{day.isoformat()}T00:00:00Z",
        "adf": f"{day.isoformat()}T00:00:00.0000000Z",
    }[form]
    assert business_date_of(text) == day


@given(st.text(max_size=12).filter(lambda t: not t[:1].isdigit()))
def test_text_that_does_not_start_with_a_date_is_no_date(text: str) -> None:
    assert business_date_of(text) is None

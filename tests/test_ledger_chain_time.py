"""new_event writes the event time's text with isoformat where strftime would write the same
(a four-digit year): the hash must be the reference's for any UTC time, whole seconds included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from backfill.chain import GENESIS_HASH, format_at, new_event


@settings(max_examples=400, deadline=None)
@given(
    at=st.datetimes(timezones=st.just(UTC))
    | st.datetimes(timezones=st.just(timezone(timedelta(hours=-5))), min_value=datetime(1, 1, 2))
    | st.sampled_from([datetime(2026, 1, 1, tzinfo=UTC), datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC)])
)
def test_the_hashed_time_is_the_reference_text(at: datetime) -> None:
    fields = {
        "seq": 1,
        "actor": "a",
        "identity_source": "os",
        "kind": "k",
        "payload": {"t": at},
        "prev_hash": GENESIS_HASH,
    }
    event, _text = new_event(at=at, **fields)  # type: ignore[arg-type]
    # expected_hash is the reference: the fields' canonical encoding, the time through format_at.
    assert event.hash == event.expected_hash()
    assert format_at(event.at) == format_at(at)

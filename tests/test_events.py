"""Typed events: one registry covers every kind, and decoding never loses a byte of the payload
the hash chain covers (``encode(decode(kind, payload)) == payload``)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from backfill import events as ev

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FIELD_NAMES = sorted({name for cls in ev.REGISTRY.values() for name in cls.__dataclass_fields__} - {"extra"})


def test_the_registry_names_every_kind_once() -> None:
    assert sorted(ev.REGISTRY) == sorted(ev.ALL_KINDS)
    assert all(cls.kind == kind for kind, cls in ev.REGISTRY.items())


def test_a_finished_payload_decodes_to_typed_fields() -> None:
    body = ev.decode(ev.WINDOW_FINISHED, {"run_id": "r-1", "status": "Succeeded", "duration_ms": 90_000, "x": 1})
    assert isinstance(body, ev.WindowFinished)
    assert body == ev.WindowFinished(run_id="r-1", status="Succeeded", duration_ms=90_000, extra={"x": 1})
    assert body.reason is None and body.error is None


def test_a_value_of_the_wrong_type_is_kept_not_coerced() -> None:
    body = ev.decode(ev.STARTED, {"concurrency": "4", "note": None})
    assert isinstance(body, ev.Started) and body.concurrency is None and body.note is None
    assert ev.encode(body) == (ev.STARTED, {"concurrency": "4", "note": None})


def test_an_unknown_kind_is_kept_whole() -> None:
    body = ev.decode("window.future", {"a": 1})
    assert isinstance(body, ev.Unknown) and ev.encode(body) == ("window.future", {"a": 1})


@given(
    st.sampled_from([*ev.ALL_KINDS, "other.kind"]),
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), JSON, max_size=8),
)
def test_decoding_then_encoding_gives_the_stored_payload_back(kind: str, payload: dict[str, Any]) -> None:
    assert ev.encode(ev.decode(kind, payload)) == (kind, payload)

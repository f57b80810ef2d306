"""Typed events: one registry covers every kind, and decoding never loses a byte of the payload
the hash chain covers (``encode(decode(kind, payload)) == payload``)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest
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


# --- @event behaves as @dataclass(frozen=True, kw_only=True) (issue 14: the import cost) -------------

_VALUES = st.one_of(st.none(), st.integers(), st.text(max_size=4), st.lists(st.integers(), max_size=2))


def _reference(cls: type[ev.Event]) -> type:
    """The same fields as a real frozen keyword-only dataclass, named like ``cls``."""
    specs = [
        (f.name, Any, dataclasses.field(default=f.default, default_factory=f.default_factory, hash=f.hash))
        for f in dataclasses.fields(cls)
    ]
    made = dataclasses.make_dataclass(cls.__name__, specs, frozen=True, kw_only=True)
    made.__qualname__ = cls.__qualname__
    return made


@given(st.sampled_from(sorted(ev.REGISTRY)), st.data())
def test_event_types_behave_as_frozen_dataclasses(kind: str, data: st.DataObject) -> None:
    cls = ev.REGISTRY[kind]
    names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
    values: dict[str, Any] = data.draw(st.dictionaries(st.sampled_from(names), _VALUES, max_size=4))
    other: dict[str, Any] = data.draw(st.dictionaries(st.sampled_from(names), _VALUES, max_size=4))
    reference = _reference(cls)
    made, twin, expected = cls(**values), cls(**other), reference(**values)
    assert repr(made) == repr(expected)
    assert (made == twin) == (expected == reference(**other))
    assert made == cls(**values) and made != ev.Unknown(name=kind)
    try:
        expected_hash: int | None = hash(expected)
    except TypeError:
        expected_hash = None  # a list value: unhashable in both
    if expected_hash is None:
        with pytest.raises(TypeError):
            hash(made)
    else:
        assert hash(made) == expected_hash
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, "note", "changed")  # noqa: B010
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(made, "extra")
    with pytest.raises(TypeError):
        cls(no_such_field=1)  # type: ignore[call-arg]
    assert dataclasses.replace(made, extra={"x": 1}) == cls(**values, extra={"x": 1})
    assert made.extra == {} and made.extra is not cls().extra  # a fresh dict per event
    assert cls.__match_args__ == ()


def test_field_types_read_from_the_annotations_are_the_evaluated_ones() -> None:
    for cls in ev.REGISTRY.values():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name != "extra":
                assert ev._accepted_text(str(f.type)) == ev._accepted(hints[f.name]), (cls, f.name)
    assert ev._accepted_text("Sequence[int] | None") is None  # unknown: evaluated instead
    assert ev._accepted_text("list[list[int]]") is None

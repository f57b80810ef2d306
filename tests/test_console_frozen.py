"""The console's lazy reader of frozen previews agrees with ``json.loads`` of the whole text."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from backfill.console.frozen import FrozenWindows

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@given(
    keys=st.lists(st.text(min_size=1, max_size=12), unique=True, max_size=12),
    extra=st.dictionaries(st.sampled_from(["factory", "history", "summary", "zz", "plan"]), values, max_size=4),
    body=values,
    sort=st.booleans(),
    indent=st.sampled_from([None, 1]),
)
def test_windows_decoded_on_demand_are_the_ones_json_loads_reads(
    keys: list[str], extra: dict[str, Any], body: Any, sort: bool, indent: int | None
) -> None:
    preview = {**extra, "windows": [{"key": k, "decision": "run", "body": body} for k in keys]}
    text = json.dumps(preview, sort_keys=sort, indent=indent)
    frozen = FrozenWindows(text)
    whole = {w["key"]: w for w in json.loads(text)["windows"]}
    asked = [*reversed(keys[: len(keys) // 2]), "not-a-key"]
    assert frozen.get(asked) == {k: whole[k] for k in asked if k in whole}
    assert frozen.get(keys) == whole
    # The values before the windows are read whole (json.dumps puts the rest after them).
    assert all(extra[k] == v for k, v in frozen.head.items())
    if sort:
        assert set(frozen.head) == {k for k in extra if k < "windows"}


def test_a_preview_without_windows_has_none() -> None:
    assert FrozenWindows("{}").get(["a"]) == {}
    assert FrozenWindows('{"factory": {"factory": "adf"}}').head == {"factory": {"factory": "adf"}}

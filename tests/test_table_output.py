"""Large tables are drawn without tabulate (issue 14): the same characters as its simple format."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st
from tabulate import tabulate

from backfill.cli.output import _plain, simple_table

_CELL = st.text(alphabet=string.ascii_letters + string.digits + "-:/ .*…", max_size=14)


@given(
    st.integers(1, 5).flatmap(
        lambda n: st.tuples(
            st.lists(_CELL, min_size=n, max_size=n), st.lists(st.lists(_CELL, min_size=n, max_size=n), max_size=8)
        )
    )
)
def test_simple_table_draws_what_tabulate_draws(table: tuple[list[str], list[list[str]]]) -> None:
    headers, rows = table
    if not _plain(headers, rows):
        return  # such tables go to tabulate
    assert simple_table(headers, rows) == tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)

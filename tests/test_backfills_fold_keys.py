"""The fold's table of ADF statuses is keyed by ``RunStatus``'s values, written out so that
``backfill.backfills`` need not import the factory's run model (issue 14): hold them to the enum."""

from __future__ import annotations

from backfill import backfills
from backfill.decision_kinds import Decision as Light
from backfill.decisions import Decision
from backfill.factory.run import RunStatus
from backfill.progress import WindowState


def test_the_fold_knows_every_adf_status_it_maps_by_the_enums_value() -> None:
    table = backfills._FROM_ADF_STATUS
    assert set(table) == {s.value for s in RunStatus if s is not RunStatus.UNKNOWN} | {"Canceled"}
    for status in RunStatus:
        if status is not RunStatus.UNKNOWN:
            assert table[status] == table[status.value]  # a member and its text find the same state
    assert table[RunStatus.SUCCEEDED] is WindowState.SUCCEEDED
    assert RunStatus.FAILED.value == backfills._FAILED


def test_the_decisions_are_one_enum_wherever_they_are_imported_from() -> None:
    assert Light is Decision

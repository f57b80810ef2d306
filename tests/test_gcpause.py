"""paused_gc: the collector paused for a block, and frozen only after a block that imported."""

from __future__ import annotations

import gc
import sys
import types

from backfill.gcpause import paused_gc


def test_pauses_and_restores() -> None:
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_left_disabled_when_it_was() -> None:
    gc.disable()
    try:
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_freezes_only_after_an_import() -> None:
    gc.unfreeze()
    try:
        with paused_gc(freeze=True):
            pass  # nothing imported: a long-running process's later calls freeze nothing
        assert gc.get_freeze_count() == 0
        with paused_gc(freeze=True):
            sys.modules["backfill_test_fake_module"] = types.ModuleType("backfill_test_fake_module")
        assert gc.get_freeze_count() > 0
        assert gc.isenabled()
    finally:
        sys.modules.pop("backfill_test_fake_module", None)
        gc.unfreeze()

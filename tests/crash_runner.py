"""``python tests/crash_runner.py run ID``: the real ``backfill`` CLI with the crash hook installed.

The crash harness starts this instead of ``python -m backfill``: it reads ``BACKFILL_CRASH_AT`` /
``BACKFILL_CRASH_SIGNAL`` (tests/crash_hook.py) and hands the hook to the same CLI through click's
context object, which only an embedding caller can set. Everything else is the production code.
"""

from __future__ import annotations

import sys

from crash_hook import CrashHook

from backfill.cli.main import run


def main() -> None:
    sys.exit(run(sys.argv[1:], obj={"step_hook": CrashHook.from_env()}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A ``command`` check: count one window's meter readings in a SQLite sink, answer in JSON.

In a plan (paths relative to the plan file)::

    [[checks]]
    name = "readings-by-script"
    kind = "command"
    command = ["../checks/meter_readings_command.py", "--feeder", "north", "--expect", "900"]

The window arrives in BACKFILL_WINDOW_START / BACKFILL_WINDOW_END; the sink file in
TELEMETRY_SINK_SQLITE, read from the inherited environment so that it never appears in the
command line (which is recorded as evidence). Diagnostics go to stderr: stdout is the answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--feeder", required=True)
    parser.add_argument("--expect", type=int)
    options = parser.parse_args()
    sink = os.environ.get("TELEMETRY_SINK_SQLITE")
    if not sink:
        print("TELEMETRY_SINK_SQLITE is not set", file=sys.stderr)
        return 2
    start, end = os.environ["BACKFILL_WINDOW_START"], os.environ["BACKFILL_WINDOW_END"]
    with sqlite3.connect(f"file:{sink}?mode=ro", uri=True) as connection:
        (committed,) = connection.execute(
            "SELECT COUNT(*) FROM meter_readings WHERE feeder = ? AND reading_ts >= ? AND reading_ts < ?",
            (options.feeder, start, end),
        ).fetchone()
    json.dump({"committed": committed, "expected": options.expect, "sink_table": "meter_readings"}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

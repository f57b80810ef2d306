"""``backfill --help`` start-up time: one JSON line per figure.

python bench/startup.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    samples = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "backfill.cli", "--help"], check=True, capture_output=True)
        samples.append(time.perf_counter() - started)
    print(
        json.dumps(
            {
                "figure": "help_startup_seconds_median",
                "value": round(statistics.median(samples), 3),
                "repeat": args.repeat,
            }
        )
    )
    print(json.dumps({"figure": "help_startup_seconds_max", "value": round(max(samples), 3)}))


if __name__ == "__main__":
    main()

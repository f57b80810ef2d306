"""Start-up time of ``backfill --help``, ``status`` and ``ledger verify``: one JSON line per figure.

``status`` and ``ledger verify`` run against the ledger the demo leaves (``backfill demo --fast
--keep``: one completed backfill, a few dozen events), so the figure is start-up plus a small
read, which is what a user waits for. Each line carries the load average when it was measured
(the machine may be shared) and the CPU time, which a busy machine inflates far less.

Python's bytecode cache is used as an installed copy uses it: each command runs once untimed,
writing its ``.pyc`` files into a temporary ``PYTHONPYCACHEPREFIX``, even where the environment
sets ``PYTHONDONTWRITEBYTECODE`` (which made every timed run compile all of backfill's modules
again). ``--no-bytecode-cache`` measures that old condition.

    .venv/bin/python bench/startup.py [--repeat 10] [--no-bytecode-cache]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "help": ["--help"],
    "status": ["status"],
    "ledger_verify": ["ledger", "verify"],
}


def _time(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of the command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "backfill.cli", *args], check=True, capture_output=True, cwd=cwd, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument(
        "--no-bytecode-cache", action="store_true", help="keep PYTHONDONTWRITEBYTECODE as set (compile every run)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        kept = root / "demo"
        env = {**os.environ, "BACKFILL_STATE_DIR": str(root / "state")}
        if not args.no_bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        subprocess.run(
            [sys.executable, "-m", "backfill.cli", "demo", "--fast", "--keep", str(kept)],
            check=True,
            capture_output=True,
            cwd=root,
            env=env,
        )
        env["BACKFILL_LEDGER"] = f"sqlite:///{kept / 'backfill-ledger.db'}"
        for name, command in COMMANDS.items():
            _time(command, kept, env)  # warm the page cache and the bytecode
            samples = [_time(command, kept, env) for _ in range(args.repeat)]
            walls = [wall for wall, _ in samples]
            line = {
                "bench": "startup",
                "figure": f"{name}_startup_seconds_median",
                "value": round(statistics.median(walls), 3),
                "max": round(max(walls), 3),
                # CPU time barely moves with the machine's load, so it is the figure to compare.
                "cpu_seconds_median": round(statistics.median(cpu for _, cpu in samples), 3),
                "repeat": args.repeat,
                "bytecode_cache": not args.no_bytecode_cache,
                "load_average_1m": round(os.getloadavg()[0], 2),
            }
            if name != "help":
                line["target"] = 0.35
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

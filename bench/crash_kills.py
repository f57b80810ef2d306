"""The random-kill harness, bigger: two overlapping backfills killed at random until both end.

    python bench/crash_kills.py [--kills 200] [--windows 160] [--seed 7] [--ledger URL]

Two plans share half their windows (A: 0..N-1, B: N/2..3N/2-1), both approved, concurrency 2
each. Each cycle starts one runner per unfinished backfill at the same time, each as a real
process (tests/crash_runner.py) with a random ``BACKFILL_CRASH_AT`` point (SIGKILL at a ledger step,
tests/crash_hook.py),
until both backfills have completed and at least ``--kills`` runners were killed. Then every
window of either plan must have exactly one run in the emulator and exactly one createRun that
took effect, each ledger must verify, and each shared window must have run in one backfill only.
Prints one JSON line of figures (used in docs/proof.md); exits 1 if a promise broke.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--windows", type=int, default=160, help="windows per plan (half are shared)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ledger", default="", help="ledger URL (default: a fresh SQLite file)")
    parser.add_argument("--max-cycles", type=int, default=2000)
    args = parser.parse_args()

    from crash_hook import REACHED_POINTS, crash_command
    from runner_support import EVERY, FAST_ENV, base_time, plan_text, scenario

    from backfill import events as ev
    from backfill.cli import main as cli
    from backfill.emulator import Emulator
    from backfill.store.database import Database
    from backfill.store.ledger import Ledger

    # Only points every runner reaches (tests/crash_hook.REACHED_POINTS): one that never gets to
    # its point runs the whole backfill to its end.
    points = REACHED_POINTS

    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="backfill-crash-kills-"))
    ledger = args.ledger or f"sqlite:///{folder / 'ledger.db'}"
    half = args.windows // 2
    # Far enough back that every window of both plans lies in the past.
    base = base_time() - (args.windows + half) * EVERY
    plans = {"a": folder / "a.toml", "b": folder / "b.toml"}
    plans["a"].write_text(plan_text(base, args.windows, execution={"concurrency": 2}))
    plans["b"].write_text(plan_text(base + half * EVERY, args.windows, execution={"concurrency": 2}))
    figures: Counter[str] = Counter()
    began = time.monotonic()
    with Emulator(scenario(base)) as emu:
        env = {**os.environ, **emu.env(), **FAST_ENV, "BACKFILL_LEDGER": ledger}
        os.environ.update(env)
        ids: dict[str, str] = {}
        for name, plan in plans.items():
            out = subprocess.run(
                [sys.executable, "-m", "backfill", "request", str(plan)],
                env={**env, "BACKFILL_ACTOR": "alice"},
                cwd=folder,
                capture_output=True,
                text=True,
                check=True,
            )
            ids[name] = out.stdout.splitlines()[0]
            os.environ["BACKFILL_ACTOR"] = "bob"
            assert cli.run(["approve", ids[name]]) == 0
        db = Database(ledger)
        store = Ledger(db)

        def done(bid: str) -> bool:
            recorded = store.events(backfill_id=bid)
            return bool(recorded) and recorded[-1].kind == ev.COMPLETED

        cycles = 0
        while cycles < args.max_cycles:
            left = [bid for bid in ids.values() if not done(bid)]
            if not left and figures["kills"] >= args.kills:
                break
            if not left:
                break
            cycles += 1
            runners = []
            for bid in left:
                # Every runner is killed until the count is reached; then they run to the end.
                point = rng.choice(points) if figures["kills"] < args.kills else None
                run_env = {**env, "BACKFILL_ACTOR": "carol"}
                if point:
                    run_env["BACKFILL_CRASH_AT"] = point
                runners.append(
                    subprocess.Popen(
                        crash_command("run", bid),
                        env=run_env,
                        cwd=folder,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                )
            for runner in runners:
                _, err = runner.communicate(timeout=300)
                if runner.returncode == -signal.SIGKILL:
                    figures["kills"] += 1
                elif runner.returncode != 0:
                    print(json.dumps({"bench": "crash_kills", "error": err.strip().splitlines()[-1:]}))
                    return 1
        windows = args.windows + half
        from backfill.timeutil import format_utc

        starts = {format_utc(base + i * EVERY) for i in range(windows)}
        # Runs of the plans' windows (the declared history lies before them), however long ago.
        created = Counter(
            str(run["parameters"].get("windowStart"))
            for run in emu.runs()
            if str(run["parameters"].get("windowStart")) in starts
        )
        effective = Counter(str((e.body or {}).get("windowStart")) for e in emu.create_run_calls() if e.effect)
        recorded = {name: [e.kind for e in store.events(backfill_id=bid)] for name, bid in ids.items()}
        verified = cli.run(["ledger", "verify"]) == 0
        result = {
            "bench": "crash_kills",
            "windows": windows,
            "shared_windows": args.windows - half,
            "kills": figures["kills"],
            "cycles": cycles,
            "runs_per_window": sorted(set(created.values())),
            "windows_with_a_run": len(created),
            "effective_creates": sum(effective.values()),
            "effective_creates_per_window": sorted(set(effective.values())),
            "create_requests": len(emu.create_run_calls()),
            "adopted": sum(kinds.count(ev.WINDOW_ADOPTED) for kinds in recorded.values()),
            "skipped_shared": sum(kinds.count(ev.WINDOW_SKIPPED) for kinds in recorded.values()),
            "intents_after_doubt": sum(kinds.count(ev.WINDOW_INTENT) for kinds in recorded.values())
            - sum(kinds.count(ev.WINDOW_CREATED) + kinds.count(ev.WINDOW_ADOPTED) for kinds in recorded.values()),
            "ledger_verifies": verified,
            "completed": all(done(bid) for bid in ids.values()),
            "seconds": round(time.monotonic() - began, 1),
        }
        db.dispose()
    print(json.dumps(result))
    ok = (
        result["completed"]
        and verified
        and result["runs_per_window"] == [1]
        and len(created) == windows
        and result["effective_creates"] == windows
        and len(effective) == windows
        and figures["kills"] >= args.kills
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""History under ARM's throttle: 200,000 runs at 200 ms a request, 25 reads a second (bucket 250).

    python bench/history_throttle.py [--runs 200000] [--latency 200ms] [--sequential-pages 40]

The emulator runs in its own process (``backfill emulator serve --throttle --latency``). Figures:
the sliced fetch (FactoryClient.query_run_pages: concurrent last-updated slices, adaptive pacing)
against the throttle's ceiling, the least time its bucket allows for the requests made
((requests - burst) / rate) and for the pages the history holds; and sequential paging
(``query_runs``, one query), timed over ``--sequential-pages`` pages and scaled to every page:
one request at a time is linear in pages by construction (5 a second at 200 ms, under the
throttle's rate, so never throttled). One JSON line per figure, with the load average.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

RATE, BURST = 25.0, 250


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--latency", default="200ms")
    parser.add_argument("--sequential-pages", type=int, default=40)
    args = parser.parse_args()

    from history_emulator import PIPELINE, emit, served

    from backfill.factory.client import FactoryClient
    from backfill.factory.protocol import FactoryRef
    from backfill.factory.settings import ConnectionSettings
    from backfill.factory.slicing import FetchStats
    from backfill.timeutil import utcnow

    folder = Path(tempfile.mkdtemp(prefix="backfill-bench-throttle-"))
    end = utcnow().replace(second=0, microsecond=0)
    ref = FactoryRef("00000000-0000-0000-0000-000000000000", "rg-energy-analytics", "adf-grid-telemetry")
    pages_needed = math.ceil(args.runs / 100)
    try:
        with served(folder, end, args.runs, "--throttle", "--latency", args.latency) as env:
            settings = ConnectionSettings(
                endpoint=env["BACKFILL_ADF_ENDPOINT"],
                ca_bundle=env["BACKFILL_ADF_CA_BUNDLE"],
                token=env["BACKFILL_ADF_TOKEN"],
            )
            now = utcnow()
            after, before = now - timedelta(days=45), now + timedelta(days=1)
            # The bucket starts full; let it be full again before each measurement.
            client = FactoryClient(ref, settings)
            stats = FetchStats()
            started = time.perf_counter()
            ids: set[str] = set()
            records = 0
            for page in client.query_run_pages(
                updated_after=after, updated_before=before, pipeline=PIPELINE, stats=stats
            ):
                records += len(page)
                ids.update(raw["runId"] for raw in page)
            sliced = time.perf_counter() - started
            ok = stats.requests - stats.throttled
            ceiling = max(0.0, ok - BURST) / RATE
            ceiling_pages = max(0.0, pages_needed - BURST) / RATE
            emit(
                "throttle",
                "sliced_fetch_seconds",
                round(sliced, 1),
                "s",
                runs=len(ids),
                records=records,
                requests=stats.requests,
                answered=ok,
                throttled=stats.throttled,
                slices=stats.slices,
                tail_passes=stats.tail_passes,
                most_in_flight=stats.most_in_flight,
                ceiling_seconds_for_requests=round(ceiling, 1),
                share_of_ceiling=round(ceiling / sliced, 3),
                ceiling_seconds_for_pages=round(ceiling_pages, 1),
                share_of_page_ceiling=round(ceiling_pages / sliced, 3),
                answered_per_second=round(ok / sliced, 1),
            )
            client.close()
            time.sleep(BURST / RATE)  # the bucket refills
            client = FactoryClient(ref, settings)
            started = time.perf_counter()
            for count, _ in enumerate(
                client.query_runs(updated_after=after, updated_before=before, pipeline=PIPELINE), 1
            ):
                if count >= args.sequential_pages * 100:
                    break
            per_page = (time.perf_counter() - started) / args.sequential_pages
            sequential = per_page * pages_needed
            emit(
                "throttle",
                "sequential_paging_seconds",
                round(sequential, 1),
                "s",
                extrapolated_from_pages=args.sequential_pages,
                seconds_per_page=round(per_page, 3),
                pages=pages_needed,
                sliced_speedup=round(sequential / sliced, 2),
            )
            client.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

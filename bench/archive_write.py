"""The archive's write of edge-log batches (mesh/archive/store.py) as a log grows: storing
the same new records must cost what the records cost, not what the log already holds.

One log, a valid hash chain in 100-record batches (bench/central.py's log workload). For
each size in ``--held``, in a fresh schema of the tests' PostgreSQL: the log's first
``held`` records are stored through ``store.write`` (not timed), then its next
``--records`` are, timed, in groups of ``--group`` batches on one connection (a group of
one log's batches is one transaction, as an archiver writes them: its seqs looked up, its
new records copied in, the watermark moved). **Floor**: a ``COPY`` of the same rows into
the table of another fresh schema. Reported per size: seconds, records per second and the
ratio to the floor; and **growth**, the time at the largest size over the time at the
smallest (target: at most 1.5).

    python bench/archive_write.py [--json] [--smoke] [--held 0,200000] [--records 20000]
        [--group 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bench/central.py's workload and fresh schemas

from bench.central import DEFAULT_PG, LogWorkload, Message, copy_time, migrated, schema  # noqa: E402
from bridge.topics import Topics  # noqa: E402
from mesh.archive import store  # noqa: E402
from mesh.archive.db import connect  # noqa: E402
from mesh.archive.intake import Item, accept  # noqa: E402

TARGET_GROWTH = 1.5
SMOKE = {"held": "0,2000", "records": 2_000, "group": 10}


def items_of(topics: Topics, messages: list[Message]) -> list[Item]:
    out = []
    for message in messages:
        item = accept(topics, message.topic, message.payload)
        assert item is not None
        out.append(item)
    return out


async def write(dsn: str, items: list[Item], group: int) -> tuple[float, int]:
    """Seconds to store ``items`` in groups of ``group``, and the records stored."""
    conn = await connect(dsn)
    try:
        stored = 0
        start = time.perf_counter()
        for first in range(0, len(items), group):
            result = await store.write(conn, items[first : first + group], "bench")
            stored += result.counts["stored.log_record"]
        return time.perf_counter() - start, stored
    finally:
        await conn.close()


async def one_size(base: str, held: list[Item], new: list[Item], group: int) -> dict[str, Any]:
    with schema(base) as dsn:
        await migrated(dsn)
        if held:
            await write(dsn, held, group)
        seconds, stored = await write(dsn, new, group)
    return {"seconds": round(seconds, 3), "stored": stored}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    topics = Topics("bench/mesh/v2")
    sizes = sorted(int(n) for n in args.held.split(","))
    workload = LogWorkload(topics, sizes[-1] + args.records, logs=1)
    messages = list(workload.messages())
    per_batch = len(messages[0].copy_rows)
    items = items_of(topics, messages)
    timed = args.records // per_batch
    results = []
    for size in sizes:
        # The log's first `size` records stored, then its next ones timed: the log as it
        # grows, its watermark following.
        first = size // per_batch
        outcome = await one_size(args.pg, items[:first], items[first : first + timed], args.group)
        results.append({"held": first * per_batch, **outcome})
    records = timed * per_batch
    with schema(args.pg) as dsn:
        await migrated(dsn)
        floor_s = await asyncio.to_thread(copy_time, dsn, workload, messages[:timed])
    for r in results:
        r["records_per_s"] = round(records / r["seconds"])
        r["ratio"] = round(floor_s / r["seconds"], 3)
        r["lost"] = records - r.pop("stored")
    growth = results[-1]["seconds"] / results[0]["seconds"]
    return {
        "bench": "archive_write",
        "smoke": args.smoke,
        "records": records,
        "group_batches": args.group,
        "sizes": results,
        "floor": {"copy_s": round(floor_s, 3), "records_per_s": round(records / floor_s)},
        "growth": round(growth, 3),
        "meets_growth": growth <= TARGET_GROWTH,
        "no_loss": all(r["lost"] == 0 for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proof it runs")
    parser.add_argument("--held", default="0,200000", help="records the log holds before")
    parser.add_argument("--records", type=int, default=20_000, help="records timed")
    parser.add_argument("--group", type=int, default=20, help="batches per transaction")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL (a schema per run)")
    args = parser.parse_args()
    if args.smoke:
        args.held, args.records, args.group = SMOKE["held"], SMOKE["records"], SMOKE["group"]
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    report = asyncio.run(run(args))
    for r in report["sizes"]:
        print(
            f"held {r['held']:8d}: {report['records']} records in {r['seconds']} s "
            f"({r['records_per_s']}/s, {r['ratio']} of the floor's COPY, lost {r['lost']})",
            file=sys.stderr if args.json else sys.stdout,
        )
    print(
        f"floor COPY {report['floor']['copy_s']} s; growth {report['growth']} "
        f"(target <= {TARGET_GROWTH})",
        file=sys.stderr if args.json else sys.stdout,
    )
    if args.json:
        print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()

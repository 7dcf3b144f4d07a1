"""The cost of write-before-send: durable appends to the activation log.

1. raw SQLite commits (one record each, WAL, synchronous=FULL) on a growing WAL against a
   pre-sized one (the reason ActivationLog pre-sizes its WAL);
2. ActivationLog.append_durable from an event loop (what the coordinator waits for before
   it publishes), back to back and with 10 ms between appends (as triggers come).

    python bench/log_append.py [--json] [--dir DIR] [--count 1500] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from mesh.decide.stats import percentile
from mesh.journal.records import RecordKind, ResumedEntry
from mesh.journal.store import WAL_PRESIZE_BYTES, ActivationLog

SMOKE_HELP = "tiny sizes: proves the script runs (make bench-smoke), not its figures"


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {q: round(percentile(ms, p), 3) for q, p in (("p50", 50), ("p90", 90), ("p99", 99))}


def raw_commits(directory: Path, count: int, presize: bool) -> dict[str, float]:
    path = directory / f"raw-{'presized' if presize else 'growing'}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA journal_size_limit={2 * WAL_PRESIZE_BYTES}")
    conn.execute("CREATE TABLE r (seq INTEGER PRIMARY KEY, body TEXT)")
    if presize:
        conn.execute("BEGIN")
        conn.execute("CREATE TABLE scratch (b BLOB)")
        conn.execute("INSERT INTO scratch VALUES (zeroblob(?))", (WAL_PRESIZE_BYTES,))
        conn.execute("DROP TABLE scratch")
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(RESTART)")
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO r (body) VALUES (?)", ("x" * 600,))
        conn.execute("COMMIT")
        samples.append(time.perf_counter() - start)
    conn.close()
    return summary_ms(samples)


async def durable_appends(directory: Path, count: int, gap_s: float) -> dict[str, float]:
    log = ActivationLog(directory / f"log-gap-{gap_s}.db")
    body = ResumedEntry(reason="x" * 900, acks_recovered=0)  # about an activation's size
    samples = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            await log.append_durable(RecordKind.RESUMED, "a-bench", body, time.time_ns())
            samples.append(time.perf_counter() - start)
            if gap_s:
                await asyncio.sleep(gap_s)
    finally:
        log.close()
    return summary_ms(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default /tmp)")
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        args.count = 50
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="trigger-mesh-logbench-") as tmp:
        directory = Path(tmp)
        report: dict[str, Any] = {
            "bench": "log_append",
            "count": args.count,
            "raw_commit_growing_ms": raw_commits(directory, args.count, presize=False),
            "raw_commit_presized_ms": raw_commits(directory, args.count, presize=True),
            "append_durable_back_to_back_ms": asyncio.run(
                durable_appends(directory, args.count, 0.0)
            ),
            "append_durable_10ms_apart_ms": asyncio.run(
                durable_appends(directory, min(args.count, 500), 0.01)
            ),
        }
    for name, value in report.items():
        if isinstance(value, dict):
            print(
                f"{name:34s} p50 {value['p50']:.3f}  p90 {value['p90']:.3f}  p99 {value['p99']:.3f}"
            )
    if args.json:
        print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()

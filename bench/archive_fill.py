"""The cost of making live rows from a synced log (mesh/archive/fill.py), against the
same rows written without the log's check, in the same run.

A gateway's log as the real ActivationLog writes it, signed by the gateway's key: per
activation ``--presence`` presence records (heartbeats a decision read: most of a real
log, and no live row), its ``activation`` record, one signed ack from each of 3 cameras
and its ``finished`` record, a checkpoint after every 10 activations. It is synced into a fresh
schema of the PostgreSQL of the tests (the archive's own writes, not timed); then:

- **fill**: ``fill_log`` until the log's mark reaches its last checkpoint (reading the
  records, verifying their chain and checkpoints, checking each ack's signature, writing
  the rows), timed;
- **floor**: the same rows (the items ``live_items`` makes) written with the live path's
  ``write_small`` into another fresh schema, in groups of 200 as the archiver writes live
  messages, timed.

Reported: both times, records and rows per second, and fill / floor.

    python bench/archive_fill.py [--json] [--smoke] [--activations 2000] [--presence 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bench/central.py's fresh schema

from bench.central import schema  # noqa: E402
from bridge.topics import Topics  # noqa: E402
from mesh.archive import fill, store  # noqa: E402
from mesh.archive.db import connect  # noqa: E402
from mesh.archive.from_log import live_items  # noqa: E402
from mesh.archive.intake import accept  # noqa: E402
from mesh.archive.migrate import migrate  # noqa: E402
from mesh.journal.records import AckEntry, ActivationEntry, FinishedEntry, RecordKind  # noqa: E402
from mesh.journal.signer import CheckpointSigner  # noqa: E402
from mesh.journal.store import ActivationLog, log_id_of, read_records  # noqa: E402
from mesh.journal.sync import batch_records  # noqa: E402
from mesh.ops import logs  # noqa: E402
from mesh.protocol.codec import encode  # noqa: E402
from mesh.protocol.log_wire import LogBatch  # noqa: E402
from mesh.protocol.models import (  # noqa: E402
    AckStatus,
    ActivationRecord,
    ActivationState,
    CameraAck,
    CameraOutcome,
    CameraPresence,
    CameraRole,
    OutcomeStatus,
    Position,
    RecordStart,
    Targets,
    TriggerKind,
    TriggerSummary,
)
from mesh.security.signing import PayloadSigner  # noqa: E402
from mesh.security.trust import KeyRole, TrustStore, trusted_key  # noqa: E402
from triggers.manual import manual_trigger  # noqa: E402

SMOKE_HELP = "tiny sizes: proves the script runs (make bench-smoke), not its figures"
DSN = "postgresql://127.0.0.1:5432/test"
GW, UNIT = "gw-bench", "car-bench"
CAMERAS = ("bwc-1", "bwc-2", "bwc-3")
BATCH_RECORDS = 500  # records per synced batch
TOPICS = Topics("bench/mesh/v2")


async def write_log(
    path: Path, keys: dict[str, Ed25519PrivateKey], activations: int, presence: int
) -> None:
    log = ActivationLog(path, signer=CheckpointSigner(keys[GW]), checkpoint_interval_s=3600)
    signers = {c: PayloadSigner(keys[c]) for c in CAMERAS}
    try:
        for n in range(activations):
            now, activation_id = time.time_ns(), f"act-{n}"
            for p in range(presence):  # heartbeats a decision read: no live row
                camera = CAMERAS[p % len(CAMERAS)]
                seen = CameraPresence(
                    camera_id=camera,
                    unit_id=UNIT,
                    role=CameraRole.BODY,
                    online=True,
                    recording=False,
                    position=Position(lat=40.0, lon=-75.0, accuracy_m=5.0, fix_at_ns=now),
                    last_seen_ns=now + p,
                )
                log.append(RecordKind.PRESENCE, None, seen, now)
            trigger = manual_trigger(TriggerKind.WEAPON_DRAW, UNIT, source_id=f"bench-{n}")
            summary = TriggerSummary.of(trigger)
            command = RecordStart(
                activation_id=activation_id,
                issuer=GW,
                trigger=summary,
                issued_at_ns=now,
                origin=None,
                radius_m=150.0,
                pre_event_s=60,
                targets=Targets(units=(UNIT,)),
                expires_at_ns=now + 30 * 10**9,
            )
            entry = ActivationEntry.json_of(trigger, now, command, [])
            log.append_json(RecordKind.ACTIVATION, activation_id, entry, now)
            for camera, signer in signers.items():
                ack = CameraAck(
                    activation_id=activation_id,
                    camera_id=camera,
                    unit_id=UNIT,
                    status=AckStatus.STARTED,
                    received_at_ns=now,
                )
                body = AckEntry.json_of(ack, 20.0, "accepted", signer.seal(ack))
                log.append_json(RecordKind.ACK, activation_id, body, now)
            record = ActivationRecord(
                activation_id=activation_id,
                issuer=GW,
                unit_id=UNIT,
                trigger=summary,
                state=ActivationState.CONFIRMED,
                decided_at_ns=now,
                finished_at_ns=now,
                expires_at_ns=now + 30 * 10**9,
                origin=None,
                radius_m=150.0,
                pre_event_s=60,
                cameras=tuple(
                    CameraOutcome(
                        camera_id=c,
                        unit_id=UNIT,
                        expected=True,
                        targeting="unit",
                        status=OutcomeStatus.STARTED,
                    )
                    for c in CAMERAS
                ),
            )
            log.append(RecordKind.FINISHED, activation_id, FinishedEntry(record=record), now)
            if n % 10 == 9:
                await log.checkpoint()
        await log.checkpoint()
    finally:
        log.close()


async def sync(dsn: str, path: Path) -> int:
    """The log into the archive at ``dsn``, as the gateway's sync sends it; its records."""
    records = list(read_records(path))
    conn = await connect(dsn)
    try:
        await migrate(conn)
        for start in range(0, len(records), BATCH_RECORDS):
            part = records[start : start + BATCH_RECORDS]
            batch = LogBatch(
                log_id=log_id_of(path),
                gateway_id=GW,
                head_seq=records[-1].seq,
                sent_at_ns=time.time_ns(),
                records=batch_records(part),
            )
            item = accept(TOPICS, TOPICS.log_records(batch.log_id, GW), encode(batch))
            assert item is not None
            await store.write(conn, [item], "bench")
    finally:
        await conn.close()
    return len(records)


async def timed_fill(dsn: str, log_id: str, trust: TrustStore) -> tuple[float, int]:
    conn = await connect(dsn)
    try:
        stored = 0
        started = time.perf_counter()
        while True:
            outcome = await fill.fill_log(
                conn, log_id, trust=trust, units={GW: UNIT}, archived_by="bench"
            )
            if outcome.status != "filled":
                break
            stored += sum(v for k, v in outcome.counts.items() if k.startswith("stored."))
        return time.perf_counter() - started, stored
    finally:
        await conn.close()


async def timed_floor(dsn: str, path: Path, trust: TrustStore) -> tuple[float, int]:
    items = live_items(read_records(path), GW, UNIT, trust).items
    conn = await connect(dsn)
    try:
        await migrate(conn)
        result = store.WriteResult()
        started = time.perf_counter()
        for start in range(0, len(items), store.GROUP_MAX):
            async with conn.transaction():
                await store.write_small(conn, items[start : start + store.GROUP_MAX], "x", result)
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    return elapsed, sum(v for k, v in result.counts.items() if k.startswith("stored."))


async def run(activations: int, presence: int) -> dict[str, Any]:
    keys = {n: Ed25519PrivateKey.generate() for n in (GW, *CAMERAS)}
    trust = TrustStore(
        [
            trusted_key(keys[GW].public_key(), KeyRole.GATEWAY, GW),
            *(trusted_key(keys[c].public_key(), KeyRole.CAMERA, c) for c in CAMERAS),
        ]
    )
    with tempfile.TemporaryDirectory(prefix="tm-fill-") as tmp:
        path = Path(tmp) / "gw.db"
        await write_log(path, keys, activations, presence)
        with schema(DSN) as archive, schema(DSN) as floor:
            records = await sync(archive, path)
            fill_s, rows = await timed_fill(archive, log_id_of(path), trust)
            floor_s, floor_rows = await timed_floor(floor, path, trust)
    if rows != floor_rows:
        raise SystemExit(f"fill stored {rows} rows, the floor {floor_rows}")
    return {
        "bench": "archive_fill",
        "activations": activations,
        "presence_per_activation": presence,
        "records": records,
        "rows": rows,
        "fill_s": round(fill_s, 3),
        "floor_s": round(floor_s, 3),
        "fill_records_per_s": round(records / fill_s),
        "fill_rows_per_s": round(rows / fill_s),
        "floor_rows_per_s": round(rows / floor_s),
        "fill_vs_floor": round(fill_s / floor_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activations", type=int, default=2000)
    parser.add_argument(
        "--presence", type=int, default=20, help="presence records logged per activation"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        args.activations = 30
    logs.configure("console", "warning")
    report = asyncio.run(run(args.activations, args.presence))
    print(
        f"{report['records']} records ({report['activations']} activations, "
        f"{report['presence_per_activation']} presence records each) -> "
        f"{report['rows']} rows: fill {report['fill_s']} s ({report['fill_records_per_s']} "
        f"records/s, {report['fill_rows_per_s']} rows/s); floor (the rows written "
        f"unchecked) {report['floor_s']} s ({report['floor_rows_per_s']} rows/s); "
        f"fill / floor {report['fill_vs_floor']}"
    )
    if args.json:
        print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()

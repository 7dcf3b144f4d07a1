"""Issue 15 item 1, in the car: the gateway's own retention loop meets a retention record an
insider forged into its log (the attacks on the log file alone: tests/unit/test_audit_tamper.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.decide.policy import Policy
from mesh.gateway.build import build_gateway, config_in_code
from mesh.journal.retention import NS_PER_DAY
from mesh.journal.signer import CheckpointSigner
from mesh.journal.store import read_records
from mesh.security.keys import new_gateway_key
from tests.harness import UNIT, wait_until
from tests.unit.test_audit_tamper import (
    Keys,
    cli,
    forged,
    rewrite,
    rows_of,
    write_recent_evidence_log,
)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    files = new_gateway_key(tmp_path / "keys", "gw-car-12")
    return files.private, files.public


async def test_the_gateways_retention_loop_refuses_and_counts(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, keys: Keys
) -> None:
    """F1 as it happens in the car: the tampered log is the gateway's, and its own
    retention loop (first pass at start) meets the insider's record."""
    log = tmp_path / "a.db"
    now = await write_recent_evidence_log(log, keys[0])
    chain = rows_of(log)
    run = [10, 12, chain[12][6], chain[9][6]]
    body = json.dumps({"cutoff_ns": now - 30 * NS_PER_DAY, "removed": [run]})
    rewrite(
        log, delete=range(10, 13), insert=[forged(18, chain[17][6], "retention", None, body, now)]
    )
    gateway = build_gateway(
        config_in_code(UNIT, log, topics=topics, retention_days=30),
        Policy(),
        signer=CheckpointSigner.from_file(keys[0]),
        url=mosquitto.url,
        client_id=f"gw-{topics.prefix[:15]}",
    )
    task = asyncio.create_task(gateway.run())
    try:
        await wait_until(lambda: gateway.counters["log.retention_refused"] == 1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [r.seq for r in read_records(log)][:9] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert [r.seq for r in read_records(log) if r.kind == "retention"] == [18]
    code, out = cli("audit", "verify", log, "--pubkey", keys[1])
    assert code == 1, out
    assert "record 13: missing: records 10-12" in out

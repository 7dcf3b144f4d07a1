"""The `offline_grace_s` rule, end to end over a real mosquitto (issue 17 item 1).

docs/protocol.md, "Escalation": `offline` goes out *at once, when the command goes out*,
for a camera offline longer than `offline_grace_s`; a camera offline for less is expected,
retried like a silent one (docs/policy.md), and one still silent after every retry is
`no_ack` when the activation finishes. Its escalation still says it was offline.
"""

from __future__ import annotations

from pathlib import Path

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.decide.policy import Policy
from mesh.journal.records import EscalatedEntry, RecordKind
from mesh.journal.store import read_records
from mesh.protocol.codec import decode
from mesh.protocol.models import (
    Escalation,
    EscalationReason,
    OutcomeStatus,
    TriggerKind,
)
from tests.harness import event, ghost, listen, running_mesh, wait_until

FAST = Policy.model_validate(
    {"defaults": {"ack_deadline_ms": 150, "max_retries": 2}, "offline_grace_s": 120}
)


async def test_a_camera_offline_within_the_grace_is_retried_then_escalated_no_ack(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db", policy=FAST) as mesh:
        dispatch = await listen(mesh, topics.escalation("dispatch"))
        # Its last will was published 30 s ago: within the 120 s grace, so it may be back.
        await ghost(mesh, "bwc-brief", 50, online=False, offline_s=30)
        # Gone an hour: beyond the grace, escalated `offline` at once, not waited for.
        await ghost(mesh, "bwc-gone", 60, online=False, offline_s=3600)
        record = await mesh.activate(event(TriggerKind.WEAPON_DRAW))
        brief = next(c for c in record.cameras if c.camera_id == "bwc-brief")
        assert brief.expected
        assert (brief.status, brief.attempts) == (OutcomeStatus.MISSED, 3)  # 1 + 2 retries
        await wait_until(lambda: len(dispatch) == 2)
        escalations = {e.camera_id: e for e in (decode(Escalation, m.payload) for m in dispatch)}
        assert escalations["bwc-brief"].reason is EscalationReason.NO_ACK
        assert escalations["bwc-brief"].attempts == 3
        assert "offline" in escalations["bwc-brief"].detail  # dispatch still learns why
        assert escalations["bwc-gone"].reason is EscalationReason.OFFLINE
        assert escalations["bwc-gone"].attempts == 0
        # `offline` went out when the command did; `no_ack` only at the finish.
        assert record.published_at_ns is not None
        assert record.finished_at_ns is not None
        assert escalations["bwc-gone"].at_ns < record.published_at_ns + 150_000_000
        assert escalations["bwc-brief"].at_ns >= record.finished_at_ns
        counters = mesh.gateway.coordinator.counters
        assert (counters["escalations.offline"], counters["escalations.no_ack"]) == (1, 1)
    logged = {
        e.camera_id: e.reason
        for e in (
            EscalatedEntry.model_validate_json(r.body).escalation
            for r in read_records(tmp_path / "log.db", kinds=(RecordKind.ESCALATED.value,))
        )
    }
    assert logged == {"bwc-brief": EscalationReason.NO_ACK, "bwc-gone": EscalationReason.OFFLINE}

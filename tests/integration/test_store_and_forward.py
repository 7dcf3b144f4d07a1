"""Store-and-forward: the gateway keeps deciding and logging with the broker gone; what it
could not send waits durably (activation log for commands, outbox for the rest) and goes
out when the broker returns, commands only within their expiry (docs/reliability.md).
The outbox by itself: tests/unit/test_outbox.py."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess, free_port
from bridge.topics import Topics
from mesh.decide.policy import Policy
from mesh.journal.store import read_records
from mesh.protocol.codec import decode
from mesh.protocol.models import (
    ActivationRecord,
    ActivationState,
    Escalation,
    ReceiptOutcome,
    TriggerKind,
    TriggerReceipt,
)
from tests.conftest import require_mosquitto
from tests.harness import UNIT, event, make_gateway, running_mesh, wait_until

# --- acknowledging only what is safe ----------------------------------------------------


async def test_a_deferred_message_comes_back_after_a_crash_and_a_settled_one_does_not(
    mosquitto: MosquittoProcess, topics: Topics
) -> None:
    """The mechanism behind "a trigger is PUBACKed once its activation is durable"."""
    topic = f"{topics.prefix}/defer"
    client_id = f"defer-{uuid.uuid4().hex[:6]}"
    got: list[bytes] = []
    settle_now = False

    def handler(message: Inbound) -> None:
        got.append(message.payload)
        settle = message.defer()
        if settle_now:
            settle()

    async def session() -> tuple[MqttLink, asyncio.Task[None]]:
        link = MqttLink(mosquitto.url, LinkOptions(client_id, subscriptions=((topic, 1),)))
        task = asyncio.create_task(link.run(handler))
        await link.wait_up(10)
        return link, task

    async def end(task: asyncio.Task[None]) -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    sender = MqttLink(mosquitto.url, LinkOptions(f"{client_id}-s", persistent_session=False))
    sending = asyncio.create_task(sender.run(lambda _m: None))
    try:
        _, first = await session()
        await sender.publish(topic, b"one")
        await wait_until(lambda: got == [b"one"])
        await end(first)  # never settled: as if the process died before the log write

        settle_now = True
        _, second = await session()
        await wait_until(lambda: got == [b"one", b"one"])  # the broker sends it again
        await end(second)

        _, third = await session()
        await sender.publish(topic, b"two")
        await wait_until(lambda: b"two" in got)
        await asyncio.sleep(0.2)
        assert got == [b"one", b"one", b"two"]  # settled once: not delivered a third time
        await end(third)
    finally:
        await end(sending)


# --- the gateway through an outage ------------------------------------------------------


async def _recorder(url_broker: MosquittoProcess, topics: Topics) -> tuple[list[Inbound], MqttLink]:
    """A persistent-session subscriber (its session survives the broker's clean restart)."""
    got: list[Inbound] = []
    link = MqttLink(
        url_broker.url,
        LinkOptions(
            f"t-outage-{uuid.uuid4().hex[:6]}",
            subscriptions=(
                (topics.receipt(UNIT), 1),
                (topics.all_activations(), 1),
                (topics.escalation("+"), 1),
                (f"{topics.prefix}/cmd/#", 1),
            ),
        ),
    )
    return got, link


def _finished(log: Path, activation_id: str) -> list[dict[str, object]]:
    return [
        json.loads(r.body)["record"]
        for r in read_records(log, activation_id=activation_id, kinds=("finished",))
    ]


async def test_an_outage_delays_receipts_and_records_and_loses_none(
    tmp_path: Path, topics: Topics
) -> None:
    broker = MosquittoProcess(require_mosquitto(), free_port(), tmp_path / "mosq", persistent=True)
    broker.start()
    log = tmp_path / "gw.db"
    try:
        async with running_mesh(broker.url, topics, log) as mesh:
            got, link = await _recorder(broker, topics)
            mesh.tasks.append(asyncio.create_task(link.run(got.append)))
            await link.wait_up(10)

            broker.stop()  # clean stop: the broker saves its sessions
            await wait_until(lambda: not mesh.gateway.link.is_up)
            triggers = [
                event(TriggerKind.EMERGENCY_LIGHTS, source_id="lights"),
                event(TriggerKind.TASER_ARM, source_id="taser-1"),
            ]
            receipts = [await mesh.gateway.submit(t) for t in triggers]
            assert all(r.outcome is ReceiptOutcome.ACCEPTED for r in receipts)
            ids = [r.activation_id for r in receipts]
            assert all(isinstance(i, str) for i in ids)
            # Decided and logged with no broker; the commands wait for it (the receipts,
            # which follow their command, too).
            for aid in ids:
                assert any(r.activation_id == aid for r in read_records(log, kinds=("activation",)))
            await asyncio.sleep(0.3)
            assert all(not mesh.gateway.coordinator.live[str(a)].published for a in ids)
            assert not mesh.gateway.link.is_up
            assert got == []

            broker.start()
            # The commands go out within their expiry; everything queued follows.
            await wait_until(lambda: all(_finished(log, str(a)) for a in ids), 20)
            assert [_finished(log, str(a))[0]["state"] for a in ids] == ["confirmed"] * 2
            await wait_until(lambda: mesh.gateway.outbox.depth() == 0, 10)

            def final(aid: str) -> ActivationRecord | None:
                for m in got:
                    if m.topic == topics.activation(UNIT, aid):
                        record = decode(ActivationRecord, m.payload)
                        if record.state is not ActivationState.PENDING:
                            return record
                return None

            await wait_until(lambda: all(final(str(a)) is not None for a in ids), 10)
            receipt_ids = {
                decode(TriggerReceipt, m.payload).activation_id
                for m in got
                if m.topic == topics.receipt(UNIT)
            }
            assert set(ids) <= receipt_ids
            assert mesh.gateway.forwarder.counters["outbox.sent"] >= 4
            assert mesh.agents["dash-12"].simulated.recordings >= 1
    finally:
        broker.stop()


async def test_a_command_that_expires_in_an_outage_is_never_sent_and_is_escalated(
    tmp_path: Path, topics: Topics
) -> None:
    """Logged, then the gateway restarts with the broker still down: the resumed activation
    is finished as missed when its command expires, without ever connecting; after the
    broker returns, a third gateway run delivers the escalations from the outbox and no
    command for it reaches anyone."""
    broker = MosquittoProcess(require_mosquitto(), free_port(), tmp_path / "mosq", persistent=True)
    broker.start()
    log = tmp_path / "gw.db"
    brief = Policy.model_validate({"defaults": {"command_ttl_s": 1.5}})
    try:
        async with running_mesh(broker.url, topics, log, policy=brief) as mesh:
            got, link = await _recorder(broker, topics)
            mesh.tasks.append(asyncio.create_task(link.run(got.append)))
            await link.wait_up(10)
            recordings_before = {c: a.simulated.recordings for c, a in mesh.agents.items()}
            client_id = mesh.gateway.link.options.client_id

            broker.stop()
            await wait_until(lambda: not mesh.gateway.link.is_up)
            receipt = await mesh.gateway.submit(event())
            aid = receipt.activation_id
            assert aid is not None
            first = mesh.tasks[len(mesh.agents)]
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
            assert _finished(log, aid) == []

            second = make_gateway(broker.url, topics, log, policy=brief, client_id=client_id)
            running = asyncio.create_task(second.run())
            await wait_until(lambda: _finished(log, aid) != [], 10)
            assert second.link.connects == 0  # decided with no broker at all
            record = _finished(log, aid)[0]
            assert record["state"] == "missed"
            assert str(record["reason"]).startswith("command could not be published")
            expected = [c["camera_id"] for c in record["cameras"] if c["expected"]]
            assert expected
            assert all(c["status"] == "missed" for c in record["cameras"])
            await wait_until(lambda: second.outbox.depth() >= len(expected))
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

            broker.start()
            third = make_gateway(broker.url, topics, log, policy=brief, client_id=client_id)
            mesh.tasks.append(asyncio.create_task(third.run()))
            await wait_until(lambda: third.outbox.depth() == 0, 15)

            def escalated() -> set[str]:
                return {
                    decode(Escalation, m.payload).camera_id
                    for m in got
                    if m.topic.startswith(f"{topics.prefix}/escalation/")
                }

            await wait_until(lambda: escalated() >= set(expected), 10)
            await asyncio.sleep(0.3)
            commands = [m for m in got if m.topic.startswith(f"{topics.prefix}/cmd/")]
            assert commands == []  # never sent late
            assert {c: a.simulated.recordings for c, a in mesh.agents.items()} == recordings_before
    finally:
        broker.stop()


# --- an outbox whose file cannot be opened -------------------------------------------------


async def test_an_outbox_held_in_memory_is_kept_at_a_clean_stop_once_its_file_opens(
    topics: Topics, tmp_path: Path
) -> None:
    """The gateway runs with its outbox in memory (its path is a directory: SQLite cannot
    open it); at a clean stop it tries the file once more, so what the link never took is
    there for the next start; if the file still cannot be opened, the loss is logged."""
    from structlog.testing import capture_logs

    from bridge.mqtt.urls import BrokerUrl
    from mesh.gateway.outbox import Outbox

    url = BrokerUrl.parse("mqtt://127.0.0.1:1")  # nothing listens: nothing is sent
    for freed in (True, False):
        log = tmp_path / f"freed-{freed}" / "gw.db"
        outbox = Path(f"{log}.outbox")
        outbox.mkdir(parents=True)
        gateway = make_gateway(url, topics, log)
        assert not gateway.outbox.durable
        running = asyncio.create_task(gateway.run())
        await asyncio.sleep(0)  # run() takes its first step (logs `started`, spawns)
        await gateway.log.flush()
        assert [r.kind for r in read_records(log)] == ["started"]
        gateway.forwarder.deliver("t/escalation", b"kept")
        assert gateway.outbox.depth() == 1
        if freed:
            outbox.rmdir()
        with capture_logs() as logged:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        lost = [e for e in logged if e["event"].startswith("outbox held in memory")]
        if freed:
            assert lost == []
            box = Outbox(outbox)
            try:
                assert box.durable
                assert [(q.topic, q.payload) for q in box.head(10)] == [("t/escalation", b"kept")]
            finally:
                box.close()
        else:
            assert [(e["log_level"], e["lost"], e["path"]) for e in lost] == [
                ("error", 1, str(outbox))
            ]

"""End to end over a real mosquitto: trigger → durable log → broadcast → camera acks."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.decide.fanout import command_topics
from mesh.decide.policy import Policy
from mesh.journal.records import ActivationEntry, RecordKind
from mesh.journal.store import read_records
from mesh.protocol.codec import decode, encode
from mesh.protocol.models import (
    CONFIRMED_OUTCOMES,
    AckStatus,
    ActivationState,
    CameraAck,
    CameraPresence,
    CameraRole,
    OutcomeStatus,
    Position,
    ReceiptOutcome,
    RecordStart,
    TriggerKind,
)
from tests.harness import UNIT, event, running_mesh, spec, wait_until

FAST = Policy.model_validate({"defaults": {"ack_deadline_ms": 150, "max_retries": 2}})


def outcomes(record: object) -> dict[str, OutcomeStatus]:
    return {c.camera_id: c.status for c in record.cameras}  # type: ignore[attr-defined]


async def test_trigger_starts_every_in_range_camera_and_no_other(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db") as mesh:
        record = await mesh.activate(event(TriggerKind.WEAPON_DRAW))
        assert record.state is ActivationState.CONFIRMED
        assert outcomes(record) == {
            "dash-12": OutcomeStatus.STARTED,
            "bwc-12a": OutcomeStatus.STARTED,
            "bwc-7a": OutcomeStatus.STARTED,
        }
        assert all(c.latency_ms is not None and c.latency_ms > 0 for c in record.cameras)
        assert record.all_acked_ms is not None
        far = mesh.agents["bwc-far"]
        assert far.simulated.recordings == 0
        assert far.acks_sent == []
        # 2 km away it is in none of the cells the command went to: it never heard it.
        assert far.counters["decision.ignore"] == 0
        started = mesh.agents["bwc-7a"].acks_sent[0]
        assert started.pre_event_kept_s == 60.0  # weapon draw keeps 60 s of buffer

    # The log says: decided first (with the reason for every camera: durable before
    # anything is sent), then published and the acks, finished last. `published` is
    # logged once the broker has acknowledged the command on every topic; a camera on
    # the first topic may answer before the last PUBACK, so an ack may come before it.
    # The cameras' `recording` messages (each one's start, after its ack) come on their
    # own time, before or after `finished`: they are checked apart.
    every = list(read_records(tmp_path / "log.db", activation_id=record.activation_id))
    rows = [r for r in every if r.kind != "recording"]
    kinds = [r.kind for r in rows]
    assert kinds[0] == "activation"
    assert sorted(kinds[1:-1]) == ["ack", "ack", "ack", "published"]
    assert kinds[-1] == "finished"
    recordings = [r for r in every if r.kind == "recording"]
    assert all('"event":"start"' in r.body for r in recordings)
    assert len(recordings) <= 3
    entry = ActivationEntry.model_validate_json(rows[0].body)
    reasons = {t.camera_id: t.reason for t in entry.targets}
    assert "bwc-far" not in reasons  # cameras beyond the circle's cells are not even read
    assert reasons["dash-12"] == "unit car-12 targeted"
    assert reasons["bwc-7a"].startswith("in range: 126 m <= 150 m")
    assert rows[0].at_ns <= rows[1].at_ns <= rows[2].at_ns


async def test_duplicate_command_is_idempotent(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db") as mesh:
        record = await mesh.activate(event())
        command = ActivationEntry.model_validate_json(
            next(read_records(tmp_path / "log.db", kinds=("activation",))).body
        ).command
        recordings = {cid: a.simulated.recordings for cid, a in mesh.agents.items()}
        sent = {cid: len(a.acks_sent) for cid, a in mesh.agents.items()}
        # Redelivered on every topic it went out on (cells, unit): answered already, silent.
        for topic in command_topics(topics, command):
            await mesh.driver.publish(topic, encode(command))
        # Then straight to each camera, as a retry: answered. Each camera gets the
        # redelivery first, so one new ack each, from the retry, means silence before it.
        retry = command.model_copy(update={"attempt": 1})
        in_range = [c.camera_id for c in record.cameras]
        for cid in in_range:
            await mesh.driver.publish(topics.command_camera(cid), encode(retry))
        await wait_until(lambda: all(len(mesh.agents[c].acks_sent) > sent[c] for c in in_range))
        await asyncio.sleep(0.2)
        for cid in in_range:
            new = mesh.agents[cid].acks_sent[sent[cid] :]
            assert [(a.attempt, a.status) for a in new] == [(1, AckStatus.ALREADY_RECORDING)]
            assert new[0].reason == "duplicate command for this activation"
        assert {cid: a.simulated.recordings for cid, a in mesh.agents.items()} == recordings


async def test_a_burst_of_identical_triggers_makes_one_activation(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db") as mesh:
        burst = [event(TriggerKind.TASER_ARM, source_id="taser-9") for _ in range(20)]
        for trigger in burst:
            await mesh.send(trigger)
        receipts = [await mesh.receipt(t) for t in burst]
        accepted = [r for r in receipts if r.outcome is ReceiptOutcome.ACCEPTED]
        assert len(accepted) == 1
        assert all(r.activation_id == accepted[0].activation_id for r in receipts)
        record = await mesh.watcher.final_record(accepted[0].activation_id or "", 10)
        assert record is not None
        assert record.state is ActivationState.CONFIRMED
        assert sum(a.simulated.recordings for a in mesh.agents.values()) == 3
    kinds = [r.kind for r in read_records(tmp_path / "log.db")]
    assert kinds.count("activation") == 1
    assert kinds.count("suppressed") == 19


async def test_silent_camera_is_retried_then_reported_missed(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db", policy=FAST) as mesh:
        # A camera that announced itself in range, then went deaf (no agent behind it).
        deaf = CameraPresence(
            camera_id="bwc-deaf",
            unit_id="car-7",
            role=CameraRole.BODY,
            online=True,
            recording=False,
            last_seen_ns=time.time_ns(),
            position=Position(lat=39.9527, lon=-75.1652, fix_at_ns=time.time_ns()),
        )
        await mesh.driver.publish(topics.presence("bwc-deaf"), encode(deaf), retain=True)
        await wait_until(lambda: mesh.gateway.presence.get("bwc-deaf") is not None)
        record = await mesh.activate(event())
        assert record.state is ActivationState.PARTIAL
        missed = next(c for c in record.cameras if c.camera_id == "bwc-deaf")
        assert missed.status is OutcomeStatus.MISSED
        assert missed.attempts == 3  # the broadcast and two direct retries
        assert missed.detail == "no ack after 3 attempt(s)"
        assert mesh.gateway.coordinator.counters["retries"] == 2
        await mesh.driver.publish(topics.presence("bwc-deaf"), b"", retain=True)


async def test_camera_that_misses_the_broadcast_is_reached_by_a_direct_retry(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db", policy=FAST) as mesh:
        # A minimal camera written from the protocol document: it only listens on its own
        # command topic, so only a retry reaches it.
        cid = "bwc-direct"
        link = MqttLink(
            mesh.url,
            LinkOptions(
                f"{topics.prefix}-{cid}",
                persistent_session=False,
                subscriptions=((topics.command_camera(cid), 1),),
            ),
        )

        def on_command(message: Inbound) -> None:
            command = decode(RecordStart, message.payload)
            ack = CameraAck(
                activation_id=command.activation_id,
                camera_id=cid,
                unit_id="car-7",
                status=AckStatus.STARTED,
                attempt=command.attempt,
                received_at_ns=time.time_ns(),
            )
            link.publish_soon(topics.ack(command.issuer, cid), encode(ack))

        task = asyncio.create_task(link.run(on_command))
        try:
            await link.wait_up(10)
            presence = CameraPresence(
                camera_id=cid,
                unit_id="car-7",
                role=CameraRole.BODY,
                online=True,
                recording=False,
                last_seen_ns=time.time_ns(),
                position=Position(lat=39.9527, lon=-75.1652, fix_at_ns=time.time_ns()),
            )
            await link.publish(topics.presence(cid), encode(presence), retain=True)
            await wait_until(lambda: mesh.gateway.presence.get(cid) is not None)
            record = await mesh.activate(event())
            assert record.state is ActivationState.CONFIRMED
            direct = next(c for c in record.cameras if c.camera_id == cid)
            assert direct.status is OutcomeStatus.STARTED
            assert direct.attempts == 2
            assert direct.latency_ms is not None
            assert direct.latency_ms >= 150
            await link.publish(topics.presence(cid), b"", retain=True)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_direct_commands_always_get_an_answer(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db") as mesh:
        await mesh.activate(event())
        command = ActivationEntry.model_validate_json(
            next(read_records(tmp_path / "log.db", kinds=("activation",))).body
        ).command
        far = mesh.agents["bwc-far"]
        # Out of range, asked directly: says so, with its distance, and records nothing.
        await mesh.driver.publish(topics.command_camera("bwc-far"), encode(command))
        await wait_until(lambda: len(far.acks_sent) == 1)
        assert far.acks_sent[0].status is AckStatus.OUT_OF_RANGE
        assert far.acks_sent[0].reason == "out of range: 2000 m > 150 m"
        # Expired: rejected, with how late it was.
        expired = command.model_copy(
            update={"activation_id": "a-expired", "expires_at_ns": time.time_ns() - 2 * 10**9}
        )
        await mesh.driver.publish(topics.command_camera("bwc-7a"), encode(expired))
        agent = mesh.agents["bwc-7a"]
        await wait_until(lambda: agent.acks_sent[-1].activation_id == "a-expired")
        assert agent.acks_sent[-1].status is AckStatus.REJECTED
        assert agent.acks_sent[-1].reason.startswith("command expired")
        assert far.simulated.recordings == 0
        # The gateway logs acks for activations it does not know and changes nothing.
        await wait_until(lambda: mesh.gateway.coordinator.counters["acks.unknown_activation"] >= 1)


async def test_broker_restart_mid_run_loses_nothing(
    own_mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    log = tmp_path / "log.db"
    async with running_mesh(own_mosquitto.url, topics, log) as mesh:
        first = await mesh.activate(event(TriggerKind.EMERGENCY_LIGHTS, source_id="lights"))
        assert first.state is ActivationState.CONFIRMED

        own_mosquitto.kill()  # no clean shutdown, no persistence: sessions are gone
        await wait_until(lambda: not mesh.gateway.link.is_up)
        # A trigger while the broker is down is accepted and logged; its command waits.
        during = event(TriggerKind.WEAPON_DRAW, source_id="holster-1")
        receipt = await mesh.gateway.submit(during)
        assert receipt.outcome is ReceiptOutcome.ACCEPTED
        assert receipt.activation_id is not None
        assert any(
            r.activation_id == receipt.activation_id
            for r in read_records(log, kinds=("activation",))
        )
        await asyncio.sleep(0.5)
        own_mosquitto.start()

        # Everyone reconnects, re-subscribes and re-announces; the waiting command goes out
        # (silent cameras get it by direct retry if they re-subscribed after the broadcast).
        # The log is the authority: the watcher, too, lost its session with the broker and
        # may re-subscribe only after the final record went out (records are not retained).
        def finished_in_log() -> list[dict[str, object]]:
            return [
                json.loads(r.body)["record"]
                for r in read_records(log, kinds=("finished",))
                if r.activation_id == receipt.activation_id
            ]

        await wait_until(lambda: finished_in_log() != [], 20)
        assert finished_in_log()[0]["state"] == "confirmed", finished_in_log()
        # The next receipt is not retained either: wait until the watcher and the driver
        # are back and subscribed before sending the trigger after the restart.
        await mesh.watcher.link.wait_up(15)
        await mesh.driver.wait_up(15)
        after = await mesh.activate(event(TriggerKind.TASER_ARM, source_id="taser-1"))
        assert after.state is ActivationState.CONFIRMED
        assert mesh.gateway.link.connects >= 2

    finished = [
        json.loads(r.body)["record"]["state"] for r in read_records(log, kinds=("finished",))
    ]
    assert finished == ["confirmed", "confirmed", "confirmed"]


async def test_gateway_restart_resumes_an_activation_logged_but_not_sent(
    own_mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    log = tmp_path / "log.db"
    async with running_mesh(own_mosquitto.url, topics, log) as mesh:
        # Broker gone; the trigger is logged durably, then the gateway process stops.
        own_mosquitto.kill()
        await wait_until(lambda: not mesh.gateway.link.is_up)
        receipt = await mesh.gateway.submit(event())
        activation_id = receipt.activation_id
        assert activation_id is not None
        gateway_task = mesh.tasks[len(mesh.agents)]
        gateway_task.cancel()
        await asyncio.gather(gateway_task, return_exceptions=True)
        assert not any(
            r.activation_id == activation_id
            for r in read_records(log, kinds=("published", "finished"))
        )

        # A new gateway process on the same log, with the broker back.
        own_mosquitto.start()
        from tests.harness import make_gateway

        # Same client id as before, as a restarted gateway has: its session comes back.
        second = make_gateway(
            own_mosquitto.url, topics, log, client_id=mesh.gateway.link.options.client_id
        )
        mesh.tasks.append(asyncio.create_task(second.run()))
        await asyncio.wait_for(second.ready.wait(), 15)
        assert second.coordinator.counters["activations.resumed"] == 1
        await second.coordinator.tasks.wait(20)

    kinds = [r.kind for r in read_records(log, activation_id=activation_id)]
    assert kinds[0] == "activation"
    assert "resumed" in kinds
    final = json.loads(
        next(read_records(log, activation_id=activation_id, kinds=("finished",))).body
    )["record"]
    assert final["state"] == "confirmed"
    assert {c["camera_id"] for c in final["cameras"]} == {"dash-12", "bwc-12a", "bwc-7a"}


async def test_gateway_restart_resumes_a_published_activation_and_keeps_its_acks(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    log = tmp_path / "log.db"
    slow = Policy.model_validate({"defaults": {"ack_deadline_ms": 3000, "max_retries": 3}})
    specs = [spec("dash-12", UNIT, 0, role=CameraRole.DASH), spec("bwc-late", "car-7", 50)]
    async with running_mesh(mosquitto.url, topics, log, specs, policy=slow) as mesh:
        # bwc-late goes away (offline presence), so only dash-12 can answer at first.
        late = mesh.agents.pop("bwc-late")
        late_task = mesh.tasks.pop(1)
        late_task.cancel()
        await asyncio.gather(late_task, return_exceptions=True)
        await wait_until(lambda: not mesh.gateway.presence.get("bwc-late").online)  # type: ignore[union-attr]

        await mesh.send(trigger := event())
        receipt = await mesh.receipt(trigger)
        activation_id = receipt.activation_id or ""
        await wait_until(
            lambda: any(r.activation_id == activation_id for r in read_records(log, kinds=("ack",)))
        )
        gateway_task = mesh.tasks[-3]
        gateway_task.cancel()  # stop before the first retry is due
        await asyncio.gather(gateway_task, return_exceptions=True)

        late_task = asyncio.create_task(late.run())
        mesh.tasks.append(late_task)
        await late.link.wait_up(10)
        from tests.harness import make_gateway

        # Same client id as before: acks the broker queued while it was down reach it.
        second = make_gateway(
            mosquitto.url, topics, log, policy=slow, client_id=mesh.gateway.link.options.client_id
        )
        mesh.tasks.append(asyncio.create_task(second.run()))
        record = await mesh.watcher.final_record(activation_id, 20)
        assert record is not None
        assert record.state is ActivationState.CONFIRMED, record
        # bwc-late's persistent session had the broadcast queued: it started on reconnect
        # (ack queued for the gateway) or on the resumed gateway's direct retry.
        assert set(outcomes(record)) == {"dash-12", "bwc-late"}
        assert all(s in CONFIRMED_OUTCOMES for s in outcomes(record).values())
        assert late.simulated.recordings == 1
        dash = next(c for c in record.cameras if c.camera_id == "dash-12")
        assert dash.latency_ms is not None  # measured before the restart, kept from the log
        assert record.all_acked_ms is None  # no monotonic origin survives a restart
    resumed = json.loads(
        next(read_records(log, activation_id=activation_id, kinds=(RecordKind.RESUMED.value,))).body
    )
    assert resumed["acks_recovered"] == 1


async def test_late_and_unknown_acks_are_told_apart_and_change_nothing(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db") as mesh:
        record = await mesh.activate(event())
        issuer = mesh.gateway.settings.issuer
        late = CameraAck(
            activation_id=record.activation_id,
            camera_id="bwc-7a",
            status=AckStatus.ALREADY_RECORDING,
            received_at_ns=time.time_ns(),
        )
        stray = late.model_copy(update={"activation_id": "a-nobody"})
        await mesh.driver.publish(topics.ack(issuer, "bwc-7a"), encode(late))
        await mesh.driver.publish(topics.ack(issuer, "bwc-7a"), encode(stray))
        counters = mesh.gateway.coordinator.counters
        await wait_until(
            lambda: counters["acks.late"] == 1 and counters["acks.unknown_activation"] == 1
        )
    acks = [json.loads(r.body) for r in read_records(tmp_path / "log.db", kinds=("ack",))]
    assert [a["effect"] for a in acks if a["ack"]["activation_id"] == record.activation_id][
        -1
    ] == "late"
    assert not any(a["ack"]["activation_id"] == "a-nobody" for a in acks)
    finished = [r for r in read_records(tmp_path / "log.db", kinds=("finished",))]
    assert len(finished) == 1  # the late ack did not reopen or rewrite the activation

"""Fault injection: a camera that loses its connection and comes back within the
command's expiry must still start for the activation issued while it was away.

The camera reaches the broker through a ChaosProxy; the gateway (the real daemon) and
the other cameras connect directly. Cutting the camera's connection makes the broker
publish its last will (offline presence), as for a camera whose radio drops out.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from bridge.mqtt.embedded import MosquittoProcess
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.decide.admission import activation_id_for
from mesh.journal.records import FinishedEntry, RecordKind
from mesh.journal.store import read_records
from mesh.protocol.models import CONFIRMED_OUTCOMES
from mesh.sim.camera_fleet import CameraSpec
from tests.chaos_tools import (
    FAR,
    IN_RANGE,
    CameraFleet,
    ChaosProxy,
    GatewayRunner,
    Observer,
    TriggerSender,
    assert_chain_intact,
    audit_verify,
    public_key_of,
    running,
    wait_for,
    wait_settled,
    write_gateway_config,
)

AWAY = "bwc-12a"  # the camera that drops out
AWAY_S = 3.0  # well within the 30 s expiry, past the first ack deadline (1 s)


async def test_camera_away_within_expiry_still_starts(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    gateway_id = f"gw-chaos-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "activations.db"
    proxy = ChaosProxy(("127.0.0.1", mosquitto.url.port), seed=3)
    await proxy.start()
    config = write_gateway_config(
        tmp_path / "gateway.yaml",
        broker=mosquitto.url,
        topics=topics,
        gateway_id=gateway_id,
        log_path=log,
    )
    runner = GatewayRunner(config, tmp_path)
    observer = Observer(mosquitto.url, topics, gateway_id)
    sender = TriggerSender(mosquitto.url, topics)

    def url_of(camera: CameraSpec) -> BrokerUrl:
        return proxy.url if camera.camera_id == AWAY else mosquitto.url

    fleet = CameraFleet([*IN_RANGE, FAR], mosquitto.url, topics, url_of=url_of)
    away = fleet.agents[AWAY]
    required = [s.camera_id for s in IN_RANGE]
    began = time.monotonic()
    try:
        async with running(observer.link, sender.link, handler=observer.on_message):
            await fleet.start()
            runner.start()
            await observer.wait_gateway_up(runner)
            before = sender.event("before")
            await sender.publish(before)
            assert (await wait_settled([before], log, fleet, required, 20)).started == 1

            # The camera drops out; the broker tells everyone (its will: offline).
            assert proxy.cut("refuse") == 3  # its connections: unit and cell, own topic, cmd/all
            await wait_for(lambda: not away.link.is_up, 5, "the camera's link down")
            during = sender.event("during")
            await sender.publish(during)
            aid = activation_id_for(during.event_id)
            await asyncio.sleep(AWAY_S)
            assert not fleet.started(AWAY, aid)  # it really was away
            await proxy.restore()
            back_at = time.monotonic()
            await wait_for(lambda: away.link.is_up, 10, "the camera back")
            back_s = time.monotonic() - back_at
            report = await wait_settled([during], log, fleet, required, 30)
            after = sender.event("after")
            await sender.publish(after)
            final = await wait_settled([before, during, after], log, fleet, required, 20)
    finally:
        runner.close()
        await fleet.stop()
        await proxy.close()
    code, verdict = await audit_verify(log, public_key_of(config))
    [row] = read_records(log, activation_id=aid, kinds=(RecordKind.FINISHED,))
    record = FinishedEntry.model_validate_json(row.body).record
    outcome = {c.camera_id: c for c in record.cameras}[AWAY]
    print(
        f"camera away {AWAY_S:g} s: {final.summary()}; {AWAY}: {outcome.status.value} after "
        f"{outcome.attempts} attempts, {outcome.latency_ms} ms; camera connects "
        f"{away.link.connects}, back {back_s:.2f} s after the cut ended; "
        f"proxy {dict(proxy.counters)}; {time.monotonic() - began:.1f} s"
    )
    assert_chain_intact(code, verdict)
    assert away.link.connects >= 2
    assert report.lost == []
    assert final.lost == []
    assert final.started == 3
    assert final.started_late == []
    assert final.missed_escalated == []
    # Already recording since the first activation: it joins that recording.
    assert outcome.expected
    assert outcome.status in CONFIRMED_OUTCOMES
    assert outcome.acked_at_ns is not None
    assert outcome.acked_at_ns < record.expires_at_ns

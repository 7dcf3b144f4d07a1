"""Fault injection: mosquitto SIGKILLed mid-burst and restarted on the same port.

The broker is not persistent, so its SIGKILL loses every session, queued message and
retained presence: triggers it had acknowledged but not yet delivered are gone with it.
Only the gateway's receipt tells a sender that its trigger arrived, so the sender here
sends again (same event id) when no receipt comes; the gateway merges the repeat. The
gateway (the real daemon, a child process), the cameras and dispatch all reconnect.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from pathlib import Path

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.protocol.models import ReceiptOutcome, TriggerReceipt
from tests.chaos_tools import (
    FAR,
    IN_RANGE,
    CameraFleet,
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

BURST = 20
SPACING_S = 0.1
KILL_AFTER = 6  # triggers sent before the broker dies
DOWN_S = 1.0


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


async def test_broker_killed_mid_burst_loses_no_activation(
    own_mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    gateway_id = f"gw-chaos-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "activations.db"
    url = own_mosquitto.url
    config = write_gateway_config(
        tmp_path / "gateway.yaml", broker=url, topics=topics, gateway_id=gateway_id, log_path=log
    )
    runner = GatewayRunner(config, tmp_path)
    observer = Observer(url, topics, gateway_id)
    sender = TriggerSender(url, topics)
    fleet = CameraFleet([*IN_RANGE, FAR], url, topics)
    required = [s.camera_id for s in IN_RANGE]
    began = time.monotonic()
    sent_while_down = 0
    try:
        async with running(observer.link, sender.link, handler=observer.on_message):
            await fleet.start()
            runner.start()
            await observer.wait_gateway_up(runner)
            connected_before = runner_connects(observer, runner)

            events = [sender.event(f"burst{k}") for k in range(BURST)]
            deliveries: list[asyncio.Task[TriggerReceipt]] = []
            for k, event in enumerate(events):
                if k == KILL_AFTER:
                    own_mosquitto.kill()
                    killed_at = time.monotonic()
                    assert not _listening(url.port)
                if k >= KILL_AFTER and time.monotonic() - killed_at >= DOWN_S:
                    if not _listening(url.port):
                        own_mosquitto.start()  # the same port, a fresh broker
                elif k >= KILL_AFTER:
                    sent_while_down += not _listening(url.port)
                deliveries.append(
                    asyncio.create_task(
                        sender.send_until_receipt(event, observer, resend_s=3, timeout_s=45)
                    )
                )
                await asyncio.sleep(SPACING_S)
            if not _listening(url.port):
                own_mosquitto.start()
            receipts = [await delivery for delivery in deliveries]
            report = await wait_settled(events, log, fleet, required, timeout_s=40)
            await wait_for(
                lambda: runner_connects(observer, runner) > connected_before,
                15,
                "the gateway's online status after the restart",
            )
            assert runner.running, runner.output()[-3000:]
            # A camera out of range takes no part in the burst's activations, so the settled
            # report does not wait for it: its reconnect, on its own back-off schedule, is
            # awaited here rather than assumed to have happened already.
            await wait_for(
                lambda: all(a.link.connects >= 2 for a in fleet.agents.values()),
                15,
                "every camera's reconnect after the restart",
            )
            camera_connects = {c: a.link.connects for c, a in fleet.agents.items()}
    finally:
        runner.close()
        await fleet.stop()
    code, verdict = await audit_verify(log, public_key_of(config))
    # A trigger sent again whose first copy never reached the gateway (no merged repeat
    # in the log): a sender that does not wait for its receipt would have lost it.
    first_copy_lost = [e for e in sender.resent if e not in report.merged_ids]
    elapsed = time.monotonic() - began
    print(
        f"broker kill: {report.summary()}; {sent_while_down} triggers sent while the broker "
        f"was down; {sender.resends} resends for want of a receipt, {len(first_copy_lost)} "
        f"triggers arrived only by a resend; {sender.publish_retries} publishes retried; "
        f"camera connects {camera_connects}; {elapsed:.1f} s"
    )
    assert_chain_intact(code, verdict)
    # The scenario happened: triggers were sent into a dead broker, everyone came back.
    assert sent_while_down >= 3
    assert all(n >= 2 for n in camera_connects.values()), camera_connects
    assert all(r.outcome is not ReceiptOutcome.REJECTED for r in receipts)
    # Nothing lost.
    assert report.sent == BURST
    assert report.lost == [], "\n".join(report.lost) + runner.output()[-3000:]
    assert report.started_late == []
    assert report.missed_escalated == []
    assert report.started == BURST


def runner_connects(observer: Observer, runner: GatewayRunner) -> int:
    """How many times this run of the gateway announced itself online (once a connect)."""
    return len(
        {
            s.last_seen_ns
            for s in observer.statuses
            if s.online and s.started_at_ns >= runner.started_ns
        }
    )

"""Issue 15, item 3: a command flood must not make a camera miss a genuine command.

The attack as found: a gateway's broker credential without its signing key published
51,103 badly signed commands on ``cmd/all`` in 15 s; the camera checked them one by one
from an unbounded queue, and a genuine weapon draw sent meanwhile was handled 47 s later,
expired. Here a separate process floods ``cmd/all`` of a real mosquitto with tens of
thousands of such commands while genuine signed commands go to the camera's cell and unit
topics, and the time from publishing a genuine command to the camera starting is compared
with the same measured unloaded, in the same test. The same is done with the flood on the
camera's own topic ``cmd/camera/<id>`` (which any gateway credential may write, for
retries: review finding F3), while genuine commands go to its unit topic: before the
defence they shared a lane with the flood and were shed.

The comparison allows p99 under flood ≤ 2 × p99 unloaded + 25 ms. The slack is for the
test bench, not the camera: the camera, the broker forwarding the flood, the flood's
publisher and the genuine sender all share this machine's cores (two, on the machine it
was written on), and one pause of the test process (scheduling, a garbage collection)
delays the few commands sent during it: about 1 run in 8 saw a p99 near 20 ms there, the
others 4-10 ms. The camera without its defence misses every command (p99 infinite).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.camera.agent import CameraAgent, CameraIdentity
from mesh.camera.recorder import RecordingStart, SimulatedRecorder
from mesh.clock import NS
from mesh.protocol.codec import encode
from mesh.protocol.models import CameraRole, RecordStart, Targets, TriggerKind, TriggerSummary
from mesh.security.checks import Security
from mesh.security.signing import PayloadSigner
from mesh.security.trust import KeyRole, TrustStore, trusted_key
from tests.command_flood_tools import flood_file, start_flood
from tests.harness import CENTER, UNIT, event, wait_until

ISSUER = f"gw-{UNIT}"
FLOODER = "gw-car-7"  # whose broker credential the attacker holds, without its key
FLOOD_COUNT = 60_000
SAMPLES = 100
SPACING_S = 0.005
TTL_S = 10.0
# Absolute slack on top of twice the unloaded p99, for the test bench rather than the
# camera: the broker, the flood's publisher and this process (camera and measurement in
# one event loop) share two cores, and one scheduling pause of this process puts two of
# the hundred samples (the p99) 20-40 ms late. Before the defence the genuine commands
# were not handled at all within their 10 s expiry.
SLACK_MS = 50.0


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


class Genuine:
    """gw-car-12's commands to the camera, and how long each took to start it."""

    def __init__(self, key: Ed25519PrivateKey, driver: MqttLink, topics: Topics) -> None:
        self.signer = PayloadSigner(key)
        self.driver, self.topics = driver, topics

    def command(self) -> tuple[RecordStart, bytes]:
        """A fresh command, and the message that carries it (signed)."""
        command = self.unsigned()
        return command, self.signer.seal(command).to_bytes()

    @staticmethod
    def unsigned() -> RecordStart:
        now = time.time_ns()
        return RecordStart(
            activation_id=f"a-{uuid.uuid4().hex[:16]}",
            issuer=ISSUER,
            trigger=TriggerSummary.of(event(TriggerKind.WEAPON_DRAW)),
            issued_at_ns=now,
            origin=CENTER,
            radius_m=150.0,
            pre_event_s=30,
            targets=Targets(units=(UNIT,)),
            expires_at_ns=now + int(TTL_S * NS),
        )

    async def measure(
        self, recorder: TimedRecorder, topics: tuple[str, str]
    ) -> tuple[list[float], float]:
        """``SAMPLES`` commands, one every ``SPACING_S``, alternately on the two topics,
        whether or not the last one has started yet; then the ms from just before each
        was published to the camera starting for it (inf if it had not by the command's
        expiry), and the seconds the sending took."""
        sent: dict[str, int] = {}
        began = time.monotonic()
        for i in range(SAMPLES):
            command, message = self.command()
            sent[command.activation_id] = time.time_ns()
            await self.driver.publish(topics[i % 2], message)
            await asyncio.sleep(max(0.0, began + (i + 1) * SPACING_S - time.monotonic()))
        sending_s = time.monotonic() - began
        with contextlib.suppress(AssertionError):
            await wait_until(lambda: sent.keys() <= recorder.started.keys(), timeout_s=TTL_S)
        latencies = [
            (recorder.started[aid] - at) / 1e6 if aid in recorder.started else math.inf
            for aid, at in sent.items()
        ]
        return latencies, sending_s


@dataclass
class TimedRecorder(SimulatedRecorder):
    """A simulated recorder that notes when it started for each activation."""

    started: dict[str, int] = field(default_factory=dict)

    def start_now(
        self, activation_id: str, pre_event_s: int, now_ns: int, *, issuer: str = ""
    ) -> RecordingStart:
        self.started[activation_id] = now_ns
        return super().start_now(activation_id, pre_event_s, now_ns, issuer=issuer)


def flood_seen(camera: CameraAgent) -> int:
    """Flood commands the camera has read and dealt with (refused or shed), so far."""
    shed_unread = sum(link.inbound_dropped for link in links_of(camera))
    return shed_unread + sum(
        n
        for name, n in camera.counters.items()
        if name.startswith(("refused.command.", "intake.dropped.", "rejected.command."))
    )


def links_of(camera: CameraAgent) -> list[MqttLink]:
    """The camera's connections (one, on a camera from before the defence)."""
    names = ("link", "broadcast_link", "own_link")
    return list({id(link): link for n in names if (link := getattr(camera, n, None))}.values())


@pytest.mark.parametrize("flooded", ["cmd/all", "own topic"])
async def test_a_command_flood_does_not_delay_a_genuine_command(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, flooded: str
) -> None:
    gateway, flooder = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    camera_key = Ed25519PrivateKey.generate()
    flooder_entry = trusted_key(flooder.public_key(), KeyRole.GATEWAY, FLOODER)
    trust = TrustStore(
        [
            trusted_key(gateway.public_key(), KeyRole.GATEWAY, ISSUER),
            flooder_entry,
            trusted_key(camera_key.public_key(), KeyRole.CAMERA, "bwc-12a"),
        ]
    )
    tag = uuid.uuid4().hex[:6]
    # Every recording ends at once, so every genuine command starts a new one.
    recorder = TimedRecorder(powered_on_ns=time.time_ns() - 600 * NS, record_s=0.001)
    camera = CameraAgent(
        CameraIdentity("bwc-12a", UNIT, CameraRole.BODY),
        url=mosquitto.url,
        topics=topics,
        position=CENTER,
        recorder=recorder,
        security=Security(signer=PayloadSigner(camera_key), trust=trust),
        client_id=f"t{tag}-cam",
    )
    driver = MqttLink(mosquitto.url, LinkOptions(f"t{tag}-gw", persistent_session=False))
    tasks = [
        asyncio.create_task(camera.run()),
        asyncio.create_task(driver.run(lambda _m: None)),
    ]
    flood: subprocess.Popen[bytes] | None = None
    lines = flood_file(tmp_path / "flood.txt", FLOOD_COUNT, FLOODER, flooder_entry.key_id)
    try:
        for link in links_of(camera):
            await link.wait_up(10)
        await driver.wait_up(10)
        cell = camera.cell
        assert cell is not None
        genuine = Genuine(gateway, driver, topics)
        if flooded == "cmd/all":
            flood_topic = topics.command_all()
            sent_to = (topics.command_cell(cell), topics.command_unit(UNIT))
        else:
            # Retries on the flooded topic itself wait in the broker's queue for that
            # connection behind the flood (docs/security.md); what must not wait is
            # everything else, here the unit's commands.
            flood_topic = topics.command_camera("bwc-12a")
            sent_to = (topics.command_unit(UNIT), topics.command_unit(UNIT))
        unloaded, _ = await genuine.measure(recorder, sent_to)

        deepest = {"intake": 0, "link": 0}

        async def sample() -> None:
            while True:
                depth = getattr(camera, "intake_depth", 0)
                deepest["intake"] = max(deepest["intake"], depth)
                backlog = sum(link.inbound_backlog for link in links_of(camera))
                deepest["link"] = max(deepest["link"], backlog)
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        tasks.append(sampler)
        flood = start_flood(mosquitto.url, flood_topic, lines)
        flood_began = time.monotonic()
        await wait_until(lambda: flood_seen(camera) >= 2000, timeout_s=60)
        seen_before = flood_seen(camera)
        loaded, measured_s = await genuine.measure(recorder, sent_to)
        seen_end = flood_seen(camera)
        seen_during = seen_end - seen_before
        # The measurement was under flood: it was arriving the whole time, and still is
        # (from the publisher, or from what the broker queued for the camera when the
        # publisher was faster than the camera and finished first: 60,000 in 1.1 s in CI).
        await wait_until(lambda: flood_seen(camera) > seen_end, timeout_s=30)
        _, errors = flood.communicate(timeout=120)
        assert flood.returncode == 0, errors
        flood_s = time.monotonic() - flood_began
        figures = (
            f"unloaded p99 {p99(unloaded):.2f} ms (max {max(unloaded):.2f}), "
            f"under flood p99 {p99(loaded):.2f} ms (max {max(loaded):.2f}); "
            f"flood: {FLOOD_COUNT} published in {flood_s:.2f} s, {seen_during} read in the "
            f"{measured_s:.2f} s the genuine ones were sent over; "
            f"deepest intake {deepest['intake']}, link backlog {deepest['link']}; "
            f"counters {dict(camera.counters)}"
        )
        print(figures)
        assert p99(loaded) <= 2 * p99(unloaded) + SLACK_MS, figures
        assert seen_during >= 1000, figures
        # Bounded: the lanes hold at most 256 + 256 + 256 + 64, and the links kept up.
        assert deepest["intake"] <= 832, figures
        assert deepest["link"] <= 1000, figures
    finally:
        if flood is not None and flood.poll() is None:
            flood.kill()
            flood.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_an_upgraded_camera_no_longer_reads_cmd_all_on_its_main_connection(
    mosquitto: MosquittoProcess, topics: Topics
) -> None:
    """A camera's persistent session from a version that read ``cmd/all`` on its main
    connection would keep that subscription, and any flood with it, for ever."""
    client_id = f"t{uuid.uuid4().hex[:6]}-cam"
    old = MqttLink(
        mosquitto.url, LinkOptions(client_id, subscriptions=((topics.command_all(), 1),))
    )
    camera = CameraAgent(
        CameraIdentity("bwc-12a", UNIT, CameraRole.BODY),
        url=mosquitto.url,
        topics=topics,
        position=CENTER,
        client_id=client_id,
    )
    driver = MqttLink(mosquitto.url, LinkOptions(f"{client_id}-gw", persistent_session=False))
    got: list[Inbound] = []
    tasks = [asyncio.create_task(old.run(lambda _m: None))]
    try:
        await old.wait_up(10)
        tasks.pop().cancel()
        # The new camera's main connection alone, on the old session.
        tasks += [
            asyncio.create_task(camera.link.run(got.append)),
            asyncio.create_task(driver.run(lambda _m: None)),
        ]
        await camera.link.wait_up(10)
        await driver.wait_up(10)
        await driver.publish(topics.command_all(), encode(Genuine.unsigned()))
        await driver.publish(topics.command_unit(UNIT), encode(Genuine.unsigned()))
        await wait_until(lambda: any(m.topic == topics.command_unit(UNIT) for m in got))
        assert [m.topic for m in got] == [topics.command_unit(UNIT)]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

"""Issue 15, item 3: a command flood must not make a camera miss a genuine command.

The attack as found: a gateway's broker credential without its signing key published
51,103 badly signed commands on ``cmd/all`` in 15 s; the camera checked them one by one
from an unbounded queue, and a genuine weapon draw sent meanwhile was handled 47 s later,
expired. Here a separate process floods ``cmd/all`` of a real mosquitto with tens of
thousands of such commands while genuine signed commands go to the camera's cell and unit
topics, and the time from publishing a genuine command to the camera starting is compared
with the same measured unloaded, in the same test.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.client import Inbound, LinkOptions, MqttLink
from bridge.codec import encode
from bridge.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.camera_agent import CameraAgent, CameraIdentity
from mesh.models import (
    CameraRole,
    RecordStart,
    Targets,
    TriggerKind,
    TriggerSummary,
)
from mesh.recorder import RecordingStart, SimulatedRecorder
from mesh.security import Security
from mesh.signing import PayloadSigner
from mesh.trust import KeyRole, TrustStore, trusted_key
from tests.command_flood_tools import flood_file, start_flood
from tests.harness import CENTER, UNIT, event, wait_until

ISSUER = f"gw-{UNIT}"
FLOODER = "gw-car-7"  # whose broker credential the attacker holds, without its key
NS = 1_000_000_000
FLOOD_COUNT = 60_000
PACED_FLOOD_PER_S = 2_000
FAST_FLOOD_PER_S = 10_000
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

    def command(self) -> RecordStart:
        return self.signer.sign(self.unsigned())

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
        self, recorder: TimedRecorder, topics: tuple[str, ...]
    ) -> tuple[list[float], float]:
        """``SAMPLES`` commands, one every ``SPACING_S``, on each of ``topics`` in turn,
        whether or not the last one has started yet; then the ms from just before each
        was published to the camera starting for it (inf if it had not by the command's
        expiry), and the seconds the sending took."""
        sent: dict[str, int] = {}
        began = time.monotonic()
        for i in range(SAMPLES):
            command = self.command()
            sent[command.activation_id] = time.time_ns()
            await self.driver.publish(topics[i % len(topics)], encode(command))
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
    """A simulated recorder that notes when it started (or joined a recording, already
    under way) for each activation."""

    started: dict[str, int] = field(default_factory=dict)

    def start(
        self, activation_id: str, pre_event_s: int, now_ns: int, *, issuer: str = ""
    ) -> RecordingStart:
        self.started[activation_id] = now_ns
        return super().start(activation_id, pre_event_s, now_ns, issuer=issuer)

    def attach(self, activation_id: str) -> None:
        # Two commands within the recording's millisecond: the second joins it.
        self.started[activation_id] = time.time_ns()
        super().attach(activation_id)


def links_of(camera: CameraAgent) -> list[MqttLink]:
    """The camera's connections (one, two or three, depending on its version)."""
    names = ("link", "direct_link", "broadcast_link")
    return [link for name in names if (link := getattr(camera, name, None)) is not None]


def flood_seen(camera: CameraAgent) -> int:
    """Flood commands the camera has read and dealt with (refused or shed), so far."""
    return sum(link.inbound_dropped for link in links_of(camera)) + sum(
        n
        for name, n in camera.counters.items()
        if name.startswith(("refused.command.", "intake.dropped.", "rejected.command."))
    )


Topic = Callable[[Topics, str], str]  # a topic, given the camera's cell


async def flood_while_measuring(
    mosquitto: MosquittoProcess,
    topics: Topics,
    tmp_path: Path,
    *,
    flood_topic: Topic,
    flood_issuer: str,
    genuine_topics: tuple[Topic, ...],
    late_topics: tuple[Topic, ...] = (),
    flood_count: int = FLOOD_COUNT,
    flood_per_s: int | None = None,
) -> None:
    """A camera, a flood of badly signed commands naming ``flood_issuer`` (published by
    another process under gw-car-7's broker credential, with that issuer's key id) on
    ``flood_topic``, and gw-car-12's genuine commands on ``genuine_topics`` and then
    ``late_topics`` in turn, measured unloaded and then under the flood. Those on
    ``genuine_topics`` must start in normal time; those on ``late_topics`` (the flooded
    topic itself: they queue behind the flood at the broker) before they expire."""
    gateway, flooder = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    camera_key = Ed25519PrivateKey.generate()
    entries = {
        ISSUER: trusted_key(gateway.public_key(), KeyRole.GATEWAY, ISSUER),
        FLOODER: trusted_key(flooder.public_key(), KeyRole.GATEWAY, FLOODER),
    }
    trust = TrustStore(
        [*entries.values(), trusted_key(camera_key.public_key(), KeyRole.CAMERA, "bwc-12a")]
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
    lines = flood_file(
        tmp_path / "flood.txt", flood_count, flood_issuer, entries[flood_issuer].key_id
    )
    try:
        # Every connection up (on a version with one, its main one).
        await getattr(camera, "wait_up", camera.link.wait_up)(10)
        await driver.wait_up(10)
        cell = camera.cell
        assert cell is not None
        genuine = Genuine(gateway, driver, topics)
        to = tuple(topic(topics, cell) for topic in genuine_topics + late_topics)
        on_time = len(genuine_topics)

        def timely(latencies: list[float]) -> list[float]:
            return [ms for i, ms in enumerate(latencies) if i % len(to) < on_time]

        def late(latencies: list[float]) -> list[float]:
            return [ms for i, ms in enumerate(latencies) if i % len(to) >= on_time]

        unloaded, _ = await genuine.measure(recorder, to)

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
        flood = start_flood(mosquitto.url, flood_topic(topics, cell), lines, flood_per_s)
        flood_began = time.monotonic()
        await wait_until(lambda: flood_seen(camera) >= 2000, timeout_s=60)
        seen_before = flood_seen(camera)
        loaded, measured_s = await genuine.measure(recorder, to)
        seen_during = flood_seen(camera) - seen_before
        flood_running = flood.poll() is None
        _, errors = flood.communicate(timeout=120)
        assert flood.returncode == 0, errors
        flood_s = time.monotonic() - flood_began
        figures = (
            f"unloaded p99 {p99(timely(unloaded)):.2f} ms (max {max(timely(unloaded)):.2f}), "
            f"under flood p99 {p99(timely(loaded)):.2f} ms (max {max(timely(loaded)):.2f}), "
            f"{sum(map(math.isinf, loaded))} of {SAMPLES} never started; "
            + (
                f"on the flooded topic: unloaded max {max(late(unloaded)):.2f} ms, "
                f"under flood p50 {sorted(late(loaded))[len(late(loaded)) // 2]:.0f} ms, "
                f"max {max(late(loaded)):.0f} ms; "
                if late_topics
                else ""
            )
            + f"flood: {flood_count} published in {flood_s:.2f} s, {seen_during} read in the "
            f"{measured_s:.2f} s the genuine ones were sent over; "
            f"deepest intake {deepest['intake']}, link backlog {deepest['link']}, shed "
            f"unread {[link.inbound_dropped for link in links_of(camera)]}; "
            f"counters {dict(camera.counters)}"
        )
        print(figures)
        assert p99(timely(loaded)) <= 2 * p99(timely(unloaded)) + SLACK_MS, figures
        assert not any(map(math.isinf, loaded)), figures
        # The measurement was under flood: it was arriving the whole time.
        assert flood_running, figures
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


def all_topic(t: Topics, _cell: str) -> str:
    return t.command_all()


def cell_topic(t: Topics, cell: str) -> str:
    return t.command_cell(cell)


def unit_topic(t: Topics, _cell: str) -> str:
    return t.command_unit(UNIT)


def camera_topic(t: Topics, _cell: str) -> str:
    return t.command_camera("bwc-12a")


async def test_a_command_flood_on_cmd_all_does_not_delay_a_genuine_command(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    await flood_while_measuring(
        mosquitto,
        topics,
        tmp_path,
        flood_topic=all_topic,
        flood_issuer=FLOODER,
        genuine_topics=(cell_topic, unit_topic),
    )


async def test_a_flood_on_the_cameras_own_topic_delays_neither_unit_commands_nor_retries(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """Review finding F3: gw-car-7's credential floods cmd/camera/bwc-12a, where any
    gateway may send retries, at 2,000 badly signed commands a second (about what the
    camera reads of one connection on a busy test machine; the next test goes as fast
    as it can). gw-car-12's commands on the unit topic must start the camera in normal
    time, and its direct retries on the flooded topic before they expire: they wait
    behind the flood in the broker's queue for that connection, not in the camera.
    Before: each forgery had a full signature check in the unit topic's lane (p99 ∞)."""
    await flood_while_measuring(
        mosquitto,
        topics,
        tmp_path,
        flood_topic=camera_topic,
        flood_issuer=FLOODER,
        genuine_topics=(unit_topic,),
        late_topics=(camera_topic,),
        flood_per_s=PACED_FLOOD_PER_S,
    )


async def test_a_flood_on_the_cameras_own_topic_naming_its_unit_gateway_spares_the_unit_topic(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """The same at 10,000 a second (about what mosquitto_pub reaches unpaced; the review
    measured 20,000 in-process, tests/test_camera_direct_flood.py), naming gw-car-12
    itself: the issuer a command names is not proven before its signature is checked, so
    such a flood spends gw-car-12's share and budget on the camera topic, and past what
    the camera reads of that connection the broker queues, then drops, that topic's
    messages for it. The unit topic, on its own connection and lane, is untouched:
    gw-car-12's commands there start in normal time. Before: 23 of 100 never started."""
    await flood_while_measuring(
        mosquitto,
        topics,
        tmp_path,
        flood_topic=camera_topic,
        flood_issuer=ISSUER,
        genuine_topics=(unit_topic,),
        flood_count=100_000,
        flood_per_s=FAST_FLOOD_PER_S,
    )


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

"""The central tier on a real 3-node NATS JetStream cluster (docs/broker.md § A NATS central
tier), started from the configs ``broker-config --central nats`` writes: TLS everywhere,
one account whose users mirror the mosquitto ACL, the MQTT listener on every node.

(a) a stream with 3 replicas takes a message and a consumer reads it; (b) with the stream's
leader killed, the stream is still written and read (Raft: 2 of 3); (c) the car's real
mosquitto, bridged by the generated config, relays QoS 1 car → central and central → car
(a command topic), a retained presence is kept at central, nothing loops; (d) when the
node the bridge uses is killed, the bridge moves to another node and both directions flow.
Nothing waits a fixed time: each condition is awaited against a deadline.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bridge.broker.bridge import bridge_client_id
from bridge.broker.nats import ADMIN_USER, mqtt_subjects
from bridge.broker.nats_run import bridge_in_subjects, bridge_subscribed
from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess, free_port
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from tests.conftest import require_mosquitto, require_nats_server
from tests.harness import wait_until
from tests.nats_tools import (
    CAMERAS,
    DISPATCH,
    GW,
    UNIT,
    RunningCluster,
    loopback_layout,
    others_heard,
)

nats = pytest.importorskip("nats")


def _tls(cluster: RunningCluster) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cluster.layout.central.ca_cert))


async def _admin(cluster: RunningCluster, nodes: tuple[int, ...] = (0, 1, 2)) -> Any:
    central = cluster.layout.central
    return await nats.connect(
        servers=[central.nats_url(i) for i in nodes],
        user=ADMIN_USER,
        password=central.password(ADMIN_USER),
        tls=_tls(cluster),
        tls_hostname="localhost",
        connect_timeout=5,
        reconnect_time_wait=0.2,
        max_reconnect_attempts=-1,
        allow_reconnect=True,
        dont_randomize=True,
    )


async def _until(make: Any, timeout_s: float, what: str) -> Any:
    """Call the coroutine function ``make`` until it returns; the cluster may still be
    electing a leader. Fails with the last error after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            return await make()
        except Exception as exc:
            if loop.time() > deadline:
                raise AssertionError(f"{what}: not within {timeout_s} s: {exc!r}") from exc
            await asyncio.sleep(0.05)


def _subject(topics: Topics, tail: str) -> str:
    return mqtt_subjects(f"{topics.prefix}/{tail}")[0]


def test_every_generated_node_config_is_valid(tmp_path: Any) -> None:
    """`nats-server -t` accepts each node's config as written."""
    binary = require_nats_server()
    layout = loopback_layout(tmp_path / "car", "t/mesh/v2")
    for name, conf in layout.central.confs.items():
        done = subprocess.run(
            [str(binary), "-t", "-c", str(conf)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, (name, done.stdout, done.stderr)


async def test_a_stream_with_3_replicas_takes_and_gives_a_message(
    nats_cluster: RunningCluster,
) -> None:
    """(a) Created on the cluster with 3 replicas, placed on 3 nodes, all current; a
    message published is consumed by a durable pull consumer."""
    from nats.js.api import StorageType, StreamConfig

    topics = Topics(nats_cluster.layout.car.spec.prefix)
    subject = _subject(topics, "probe/a")
    nc = await _admin(nats_cluster)
    try:
        js = nc.jetstream()
        config = StreamConfig(
            name="PROBE_A", subjects=[subject], num_replicas=3, storage=StorageType.FILE
        )
        await _until(lambda: js.add_stream(config), 20, "add the stream")
        ack = await js.publish(subject, b"one")
        assert ack.seq == 1

        async def all_current() -> Any:
            info = await js.stream_info("PROBE_A")
            replicas = info.cluster.replicas or []
            assert info.cluster.leader is not None
            assert len(replicas) == 2, info.cluster
            assert all(r.current for r in replicas), info.cluster
            return info

        info = await _until(all_current, 20, "3 current replicas")
        names = {info.cluster.leader, *(r.name for r in info.cluster.replicas)}
        assert names == {"nats-1", "nats-2", "nats-3"}
        assert info.config.num_replicas == 3
        consumer = await js.pull_subscribe(subject, durable="reader")
        msgs = await consumer.fetch(1, timeout=5)
        assert [m.data for m in msgs] == [b"one"]
        await msgs[0].ack()
        print(f"3 nodes healthy (JetStream current) {nats_cluster.ready_s:.2f} s after start")
    finally:
        await nc.close()


async def test_the_stream_survives_its_leader_killed(nats_cluster: RunningCluster) -> None:
    """(b) SIGKILL the node leading the stream: a new leader is elected among the two
    left, a publish is acknowledged (a quorum stored it) and a consumer created after the
    kill reads both messages, in order."""
    from nats.js.api import StorageType, StreamConfig

    topics = Topics(nats_cluster.layout.car.spec.prefix)
    subject = _subject(topics, "probe/b")
    nc = await _admin(nats_cluster)
    try:
        js = nc.jetstream()
        config = StreamConfig(
            name="PROBE_B", subjects=[subject], num_replicas=3, storage=StorageType.FILE
        )
        await _until(lambda: js.add_stream(config), 20, "add the stream")
        await js.publish(subject, b"before")

        async def leader() -> str:
            info = await js.stream_info("PROBE_B")
            assert info.cluster.leader
            assert all(r.current for r in info.cluster.replicas or [])
            return str(info.cluster.leader)

        old = await _until(leader, 20, "a leader and current replicas")
        victim = next(p for p in nats_cluster.procs if p.node.name == old)
        victim.kill()
        killed = time.monotonic()

        async def publish_after() -> Any:
            # Sent again until a quorum acknowledges it, as a producer does through an
            # election; its message id makes a repeat of a stored one a duplicate, not seq 3.
            return await js.publish(
                subject, b"after", timeout=2, headers={"Nats-Msg-Id": "probe-b-after"}
            )

        ack = await _until(publish_after, 30, "a publish after the leader's death")
        assert ack.seq == 2
        elected = time.monotonic() - killed
        new = await _until(leader_not(js, old), 30, "a new leader")
        assert new != old
        consumer = await _until(
            lambda: js.pull_subscribe(subject, durable="after-kill"), 30, "the consumer"
        )

        async def consumer_led() -> None:
            # The consumer is a Raft group of its own: read once it has a leader.
            info = await js.consumer_info("PROBE_B", "after-kill")
            assert info.cluster is not None
            assert info.cluster.leader

        await _until(consumer_led, 30, "the consumer's leader")
        msgs = await consumer.fetch(2, timeout=10)
        assert [m.data for m in msgs] == [b"before", b"after"]
        print(f"leader {old} killed: publish acknowledged after {elected:.2f} s, leader {new}")
    finally:
        await nc.close()


def leader_not(js: Any, old: str) -> Any:
    async def check() -> str:
        info = await js.stream_info("PROBE_B")
        assert info.cluster.leader
        assert info.cluster.leader != old
        return str(info.cluster.leader)

    return check


# --- the car's bridge ---------------------------------------------------------------------------
@asynccontextmanager
async def spy(url: BrokerUrl, topic_filter: str) -> AsyncIterator[list[Inbound]]:
    """Everything published on ``topic_filter`` at this broker, in arrival order."""
    got: list[Inbound] = []
    link = MqttLink(
        url,
        LinkOptions(
            f"t-spy-{uuid.uuid4().hex[:8]}",
            subscriptions=((topic_filter, 1),),
            persistent_session=False,
            protocol="3.1.1",
        ),
    )
    task = asyncio.create_task(link.run(got.append))
    try:
        await link.wait_up(20)
        yield got
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def publisher(url: BrokerUrl) -> AsyncIterator[MqttLink]:
    """A client that publishes at QoS 1 and waits for the broker's PUBACK."""
    link = MqttLink(
        url,
        LinkOptions(f"t-pub-{uuid.uuid4().hex[:8]}", persistent_session=False, protocol="3.1.1"),
    )
    task = asyncio.create_task(link.run(lambda _m: None))
    try:
        await link.wait_up(20)
        yield link
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _payloads(messages: list[Inbound], topic: str) -> list[bytes]:
    return [m.payload for m in messages if m.topic == topic]


async def _marker_up(gateway: MqttLink, at_central: list[Inbound], topics: Topics, a: str) -> None:
    """Send a record up and await it at central: whatever the car's bridge had to send
    before it has been sent (one connection, in order)."""
    marker = topics.activation(UNIT, a)
    await gateway.publish(marker, b"marker")
    await wait_until(lambda: _payloads(at_central, marker) == [b"marker"], 15)


@asynccontextmanager
async def car_broker(cluster: RunningCluster) -> AsyncIterator[MosquittoProcess]:
    car = cluster.layout.car
    broker = MosquittoProcess(require_mosquitto(), car.port, car.out_dir, config=car.conf)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _bridge_on(cluster: RunningCluster, node: int) -> bool:
    """Whether the car's bridge is connected to node ``node`` and has subscribed there to
    everything it brings in."""
    if not cluster.procs[node].running:
        return False
    layout = cluster.layout
    client_id = bridge_client_id(layout.bridge, layout.car.spec)
    if not bridge_subscribed(cluster.procs[node].node, client_id, layout.car.spec):
        return False
    # Its subscriptions (QoS 0: plain subject interest) are announced to the other nodes
    # after the SUBACK; a publish at a node that has not heard yet finds no subscriber.
    try:
        return others_heard(cluster, bridge_in_subjects(layout.car.spec), but={node})
    except OSError:
        return False


async def test_the_car_bridge_relays_both_ways(nats_cluster: RunningCluster) -> None:
    """(c) The generated car config on a real mosquitto: QoS 1 car → central (seen by an
    MQTT client and a NATS subscriber on other nodes than the bridge's), central → car on a
    command topic and a trigger, a retained presence kept at central for a later reader,
    and no loop on a topic bridged both ways."""
    layout = nats_cluster.layout
    central, car = layout.central, layout.car
    topics = Topics(car.spec.prefix)
    nc = await _admin(nats_cluster, (2,))
    native: list[tuple[str, bytes]] = []

    async def on_native(msg: Any) -> None:
        native.append((msg.subject, msg.data))

    await nc.subscribe(_subject(topics, "activation/*/*"), cb=on_native)
    await nc.flush()
    started = time.monotonic()
    try:
        async with (
            car_broker(nats_cluster),
            spy(central.mqtt_url(DISPATCH, node=1), f"{topics.prefix}/#") as at_central,
            spy(car.url_for(DISPATCH), f"{topics.prefix}/#") as in_car,
            publisher(car.url_for(GW)) as gateway,
            publisher(car.url_for(CAMERAS[0])) as camera,
            publisher(central.mqtt_url(DISPATCH, node=1)) as dispatch,
            # Another car's bridge (the same grants as this one's) commanding this unit.
            publisher(central.mqtt_url(layout.bridge.url.username or "", node=2)) as other_car,
        ):
            await wait_until(lambda: _bridge_on(nats_cluster, 0), 30)
            bridged_s = time.monotonic() - started
            record = topics.activation(UNIT, "a-0000000000000001")
            await gateway.publish(record, b"record")
            await wait_until(lambda: _payloads(at_central, record) == [b"record"], 15)
            await wait_until(lambda: (mqtt_subjects(record)[0], b"record") in native, 15)

            command = topics.command_unit(UNIT)
            await other_car.publish(command, b"command")
            await wait_until(lambda: _payloads(in_car, command) == [b"command"], 15)
            await dispatch.publish(topics.trigger(UNIT), b"from dispatch")
            await wait_until(
                lambda: b"from dispatch" in _payloads(in_car, topics.trigger(UNIT)), 15
            )

            presence = topics.presence(CAMERAS[0])
            await camera.publish(presence, b"present", retain=True)
            await wait_until(lambda: _payloads(at_central, presence) == [b"present"], 15)
            async with spy(central.mqtt_url(DISPATCH, node=2), topics.all_presence()) as late:
                await wait_until(lambda: _payloads(late, presence) == [b"present"], 15)
                assert all(m.retain for m in late if m.topic == presence)

            # No loop. NATS sends the car's own trigger (a topic bridged both ways) back
            # to the bridge, as it has no bridge flag: the car hears it twice. The echo is
            # not sent up again: a marker sent after the echo arrived in the car reaches
            # central, and the trigger is still there once.
            trigger = topics.trigger(UNIT)
            await gateway.publish(trigger, b"from the car")
            await wait_until(lambda: _payloads(in_car, trigger).count(b"from the car") == 2, 15)
            await _marker_up(gateway, at_central, topics, "a-0000000000000002")
            assert _payloads(at_central, trigger).count(b"from the car") == 1
            assert _payloads(in_car, trigger).count(b"from the car") == 2
            # The same for an ack of the car's camera to the car's own gateway: up by
            # ack/+/C, back in by ack/G/+.
            ack = f"{topics.prefix}/ack/{GW}/{CAMERAS[0]}"
            await camera.publish(ack, b"ack")
            await wait_until(lambda: len(_payloads(in_car, ack)) == 2, 15)
            await _marker_up(gateway, at_central, topics, "a-0000000000000003")
            assert _payloads(at_central, ack) == [b"ack"]
            assert _payloads(in_car, ack) == [b"ack", b"ack"]
            # The command from another car came in once and did not go back up.
            assert _payloads(at_central, command) == [b"command"]
            assert _payloads(in_car, command) == [b"command"]
            print(f"bridge up and subscribed {bridged_s:.2f} s after the car broker's start")
    finally:
        await nc.close()


class SilentNode:
    """A listener that takes connections and never says a word (a node holding the
    bridge's CONNECT unanswered)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.accepted = 0
        self._held: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._take, "127.0.0.1", self.port)

    async def _take(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._held.append(writer)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._held:
            writer.transport.abort()


async def test_a_stolen_bridge_credential_sends_log_batches_only_as_its_own_gateway(
    nats_cluster: RunningCluster,
) -> None:
    """The car's bridge user at central (what a thief holding the car's bridge password
    has) publishes a log batch under another gateway's name and then one under its own:
    NATS drops the first (permissions from bridge_topics), the second reaches a reader."""
    layout = nats_cluster.layout
    topics = Topics(layout.car.spec.prefix)
    thief_url = layout.central.mqtt_url(layout.bridge.url.username or "", node=1)
    forged, own = topics.log_records("log-x", "gw-car-7"), topics.log_records("log-x", GW)
    # Reader and thief on one node: no route has to learn of the reader's interest first.
    async with (
        spy(layout.central.mqtt_url(DISPATCH, node=1), topics.all_log_records()) as archive,
        publisher(thief_url) as thief,
    ):
        await thief.publish(forged, b"forged")
        await thief.publish(own, b"own")
        await wait_until(lambda: any(m.payload == b"own" for m in archive), 20)
    assert [(m.topic, m.payload) for m in archive] == [(own, b"own")]


@pytest.mark.parametrize("kind", ["ack", "recording", "presence"])
async def test_a_stolen_bridge_credential_speaks_only_for_its_own_car_s_cameras(
    nats_cluster: RunningCluster, kind: str
) -> None:
    """The car's bridge user at central publishes an ack (a recording, a presence) of
    another car's camera, then one of its own car's: NATS drops the first (permissions
    from bridge_topics: the car's cameras only), the second reaches a reader. Before, the
    bridge carried ack/+/+, recording/+/+ and presence/+, and a thief could send unsigned
    acks under every camera's name into the archive's conflicts, or overwrite any camera's
    retained presence that dispatch shows."""
    layout = nats_cluster.layout
    topics = Topics(layout.car.spec.prefix)
    thief_url = layout.central.mqtt_url(layout.bridge.url.username or "", node=1)
    of_camera = {
        "ack": lambda cam: topics.ack(GW, cam),
        "recording": lambda cam: topics.recording(GW, cam),
        "presence": topics.presence,
    }[kind]
    forged, own = of_camera("bwc-7a"), of_camera(CAMERAS[0])
    async with (
        spy(layout.central.mqtt_url(DISPATCH, node=1), f"{topics.prefix}/{kind}/#") as reader,
        publisher(thief_url) as thief,
    ):
        await thief.publish(forged, b"forged")
        await thief.publish(own, b"own")
        await wait_until(lambda: any(m.payload == b"own" for m in reader), 20)
    # Retained presence another test left at central comes first, marked retained.
    assert [(m.topic, m.payload) for m in reader if not m.retain] == [(own, b"own")]


async def test_a_node_that_never_answers_the_bridge_is_given_up_for_the_next(
    nats_cluster: RunningCluster,
) -> None:
    """The first address of the car's bridge takes its connection and never answers (as a
    NATS node did for 50 s while its MQTT streams elected leaders after another node was
    killed): mosquitto gives it up after 1.5 keepalives and connects to the next node, so
    what the car queued reaches central within that (with a keepalive of 30 it waited 45 s)."""
    layout = nats_cluster.layout
    central, car = layout.central, layout.car
    topics = Topics(car.spec.prefix)
    silent = SilentNode()
    await silent.start()
    lines = car.conf.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("address "))
    lines[at] = f"address 127.0.0.1:{silent.port} " + lines[at].removeprefix("address ")
    car.conf.write_text("\n".join(lines) + "\n")
    try:
        async with (
            spy(central.mqtt_url(DISPATCH, node=2), f"{topics.prefix}/#") as at_central,
            car_broker(nats_cluster),
            publisher(car.url_for(GW)) as gateway,
        ):
            queued = topics.activation(UNIT, "a-0000000000000001")
            await gateway.publish(queued, b"queued")
            await wait_until(lambda: silent.accepted >= 1, 10)
            taken = time.monotonic()
            # 1.5 keepalives (15 s), the next connect, and slack for a loaded machine.
            await wait_until(lambda: _payloads(at_central, queued) == [b"queued"], 25)
            print(f"the silent node held the bridge {time.monotonic() - taken:.1f} s")
    finally:
        silent.close()


async def test_the_bridge_fails_over_to_another_node(nats_cluster: RunningCluster) -> None:
    """(d) SIGKILL the node the bridge is connected to: it connects to another node of
    its address list; messages go up and come down again, and what the car queued while
    it was away arrives."""
    layout = nats_cluster.layout
    central, car = layout.central, layout.car
    topics = Topics(car.spec.prefix)
    async with (
        car_broker(nats_cluster),
        spy(central.mqtt_url(DISPATCH, node=2), f"{topics.prefix}/#") as at_central,
        spy(car.url_for(DISPATCH), f"{topics.prefix}/#") as in_car,
        publisher(car.url_for(GW)) as gateway,
        publisher(central.mqtt_url(DISPATCH, node=2)) as dispatch,
    ):
        await wait_until(lambda: _bridge_on(nats_cluster, 0), 30)
        first = topics.activation(UNIT, "a-0000000000000001")
        await gateway.publish(first, b"first")
        await wait_until(lambda: _payloads(at_central, first) == [b"first"], 15)

        nats_cluster.procs[0].kill()
        killed = time.monotonic()
        # Published at once: queued in the car until the bridge is up on another node.
        second = topics.activation(UNIT, "a-0000000000000002")
        await gateway.publish(second, b"second")
        await wait_until(lambda: _payloads(at_central, second) == [b"second"], 30)
        moved_s = time.monotonic() - killed
        assert _bridge_on(nats_cluster, 1) or _bridge_on(nats_cluster, 2)
        await dispatch.publish(topics.trigger(UNIT), b"after failover")
        await wait_until(lambda: _payloads(in_car, topics.trigger(UNIT)) == [b"after failover"], 20)
        assert _payloads(at_central, first) == [b"first"]
        print(f"node 1 killed: the car's queued message reached central after {moved_s:.2f} s")

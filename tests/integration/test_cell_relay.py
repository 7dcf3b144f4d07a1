"""The cell relay (docs/broker.md § The cell relay), on real brokers: three cars, each an
in-car mosquitto made by ``broker-config --bridge``, bridged to a central mosquitto made by
``broker-config`` too (TLS, a client certificate each, the generated ACL blocks), each with
a gateway whose relay has its own certificate at central, and one camera.

- Car B's gateway commands the cell where car A's camera is: A's relay brings the command
  into A, A's camera starts and answers B (through the bridges). Nothing loops: central
  sees each of B's cell commands once.
- Car C is 10 km away: its relay does not subscribe to that cell, and C's broker gets none
  of B's cell commands (with the old bridge, which imported every cell, it did).
- C's camera moves into the cell: C's relay follows, and B's next command reaches it.
- A stolen relay credential that subscribes to every cell at central gets only the cells
  of its car's region (the ACL grants them by name).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from bridge.broker.acl import FleetSpec, Principal
from bridge.broker.bridge import parse_bridge_spec, relay_user
from bridge.broker.config import BrokerBundle, write_broker_config
from bridge.broker.pki import CertPair, issue_client
from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess, free_port
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import TopicKind, Topics
from mesh.camera.agent import CameraAgent
from mesh.clock import SYSTEM_CLOCK
from mesh.decide.cells import cell_of
from mesh.decide.geo import offset
from mesh.decide.policy import Policy
from mesh.gateway.build import build_gateway, config_in_code
from mesh.gateway.cell_relay import OUT_MAX, CellRelay, RelaySettings
from mesh.gateway.daemon import Gateway
from mesh.ops.metrics import gateway_family
from mesh.protocol.codec import decode, encode
from mesh.protocol.models import CameraAck, GeoPoint, TriggerKind
from mesh.sim.camera_fleet import build_agents, wait_all_up
from tests.chaos_tools import ChaosProxy
from tests.conftest import require_mosquitto
from tests.harness import CENTER, event, spec, wait_until
from tests.integration.test_edge_central import publisher, spy
from tests.nats_tools import RunningCluster

REGION = cell_of(CENTER.lat, CENTER.lon)[:4]  # about 39 x 20 km around the scene


@dataclass(frozen=True)
class CarSpec:
    unit: str
    camera: str
    camera_north_m: float
    gateway_north_m: float | None = None  # None: the gateway has no position of its own

    @property
    def gateway(self) -> str:
        return f"gw-{self.unit}"

    def fleet(self, prefix: str) -> FleetSpec:
        return FleetSpec(
            prefix=prefix,
            gateways=(Principal(self.gateway, self.unit),),
            cameras=(Principal(self.camera, self.unit),),
            camera_cells=(REGION,),
        )


A = CarSpec("car-12", "dash-12", 0.0)
B = CarSpec("car-7", "bwc-7a", 60.0, gateway_north_m=30.0)
C = CarSpec("car-3", "bwc-3a", 10_000.0)


@dataclass
class Car:
    spec: CarSpec
    bundle: BrokerBundle
    relay_url: BrokerUrl
    gateway: Gateway | None = None
    camera: CameraAgent | None = None
    terminal: MqttLink | None = None

    def url(self, name: str) -> BrokerUrl:
        return self.bundle.url_for(name)


@dataclass
class Central:
    bundle: BrokerBundle
    ca: CertPair
    topics: Topics

    def url(self, cert: CertPair) -> BrokerUrl:
        return BrokerUrl(
            scheme="mqtts",
            host="localhost",
            port=self.bundle.port,
            ca_file=str(self.bundle.ca_cert),
            cert_file=str(cert.cert),
            key_file=str(cert.key),
        )


def _central(tmp: Path, prefix: str) -> Central:
    bundle = write_broker_config(
        tmp / "central",
        FleetSpec(prefix=prefix, dispatch=("dispatch-hq",)),
        port=free_port(),
        bind="127.0.0.1",
        run_as="root",
    )
    ca = CertPair(bundle.ca_cert, bundle.out_dir / "private" / "ca.key")
    return Central(bundle, ca, Topics(prefix))


def _car(tmp: Path, central: Central, car: CarSpec) -> Car:
    """The car's broker, bridged to central with a certificate from central's CA; the
    bridge's and the relay's ACL blocks appended to central's ACL (start central after)."""
    prefix = central.topics.prefix
    bridge_cert = issue_client(
        central.ca, tmp / car.unit / "certs", f"tm-bridge-{car.gateway}-central"
    )
    relay_cert = issue_client(central.ca, tmp / car.unit / "certs", relay_user(car.gateway))
    bridge = replace(
        parse_bridge_spec(f"central={central.url(bridge_cert).as_text()}"), restart_timeout=(1, 1)
    )
    bundle = write_broker_config(
        tmp / car.unit / "edge",
        car.fleet(prefix),
        port=free_port(),
        bind="127.0.0.1",
        run_as="root",
        bridges=(bridge,),
    )
    with central.bundle.acl.open("a") as acl:
        acl.write("\n" + bundle.bridge_acls["central"].read_text())
        acl.write("\n" + bundle.relay_acls[car.gateway].read_text())
    return Car(car, bundle, central.url(relay_cert))


@asynccontextmanager
async def brokers(bundles: list[BrokerBundle]) -> AsyncIterator[None]:
    binary = require_mosquitto()
    started: list[MosquittoProcess] = []
    try:
        for bundle in bundles:
            broker = MosquittoProcess(binary, bundle.port, bundle.out_dir, config=bundle.conf)
            broker.start()
            started.append(broker)
        yield
    finally:
        for broker in reversed(started):
            broker.stop()


@asynccontextmanager
async def running(car: Car, topics: Topics, tmp: Path) -> AsyncIterator[Car]:
    """The car's gateway (relay on, short hold) and camera, and the in-car terminal."""
    tag = uuid.uuid4().hex[:6]
    s = car.spec
    position = None
    if s.gateway_north_m is not None:
        lat, lon = offset(CENTER.lat, CENTER.lon, s.gateway_north_m, 0.0)
        position = GeoPoint(lat=lat, lon=lon)
    gateway = build_gateway(
        config_in_code(
            s.unit,
            tmp / f"{s.unit}-{tag}.db",
            gateway_id=s.gateway,
            topics=topics,
            position=position,
            relay={"url": car.relay_url.as_text(), "hold_s": 5.0},
        ),
        Policy(),
        url=car.url(s.gateway),
        client_id=f"t{tag}-gw",
    )
    [camera] = build_agents(
        [spec(s.camera, s.unit, s.camera_north_m)],
        url=car.url(s.gateway),
        url_of=lambda cs: car.url(cs.camera_id),
        topics=topics,
        client_prefix=f"t{tag}-",
        now_ns=time.time_ns(),
        record_s=1.0,
    )
    terminal = MqttLink(car.url(s.gateway), LinkOptions(f"t{tag}-term", persistent_session=False))
    tasks = [
        asyncio.create_task(gateway.run()),
        asyncio.create_task(camera.run()),
        asyncio.create_task(terminal.run(lambda _m: None)),
    ]
    try:
        await asyncio.wait_for(gateway.ready.wait(), 20)
        await wait_all_up([camera], 20)
        await terminal.wait_up(20)
        relay = gateway.relay
        assert relay is not None
        await relay.central.wait_up(20)
        # Its link in the car too: what it brings in is dropped while that link is down.
        await relay.local.wait_up(20)
        # The relay has subscribed at central to the cells around its camera.
        own = cell_of(camera.position.lat, camera.position.lon) if camera.position else ""
        await wait_until(lambda: own in relay.confirmed, 20)
        yield replace(car, gateway=gateway, camera=camera, terminal=terminal)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _acks_from(messages: list[Inbound], topics: Topics, camera: str) -> list[CameraAck]:
    found = []
    for m in messages:
        parsed = topics.parse(m.topic)
        if parsed is not None and parsed.kind is TopicKind.ACK and parsed.args[1] == camera:
            found.append(decode(CameraAck, m.payload))
    return found


def _cells(messages: list[Inbound], topics: Topics) -> list[Inbound]:
    return [
        m for m in messages if (p := topics.parse(m.topic)) and p.kind is TopicKind.COMMAND_CELL
    ]


async def test_cell_commands_reach_nearby_cars_only_and_follow_a_moving_car(
    tmp_path: Path,
) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}/mesh/v2"
    central = _central(tmp_path, prefix)
    topics = central.topics
    cars = {c.unit: _car(tmp_path, central, c) for c in (A, B, C)}
    hq = central.bundle.url_for("dispatch-hq")
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(
            brokers([central.bundle, *(c.bundle for c in cars.values())])
        )
        at_central = await stack.enter_async_context(spy(hq, f"{prefix}/#"))
        in_c = await stack.enter_async_context(
            spy(cars[C.unit].url("bwc-3a"), f"{prefix}/cmd/cell/+")
        )
        a = await stack.enter_async_context(running(cars[A.unit], topics, tmp_path))
        b = await stack.enter_async_context(running(cars[B.unit], topics, tmp_path))
        c = await stack.enter_async_context(running(cars[C.unit], topics, tmp_path))
        assert a.gateway is not None
        assert b.gateway is not None
        assert c.gateway is not None
        assert b.terminal is not None
        assert c.camera is not None
        a_relay, b_relay, c_relay = a.gateway.relay, b.gateway.relay, c.gateway.relay
        assert a_relay is not None
        assert b_relay is not None
        assert c_relay is not None
        here = cell_of(CENTER.lat, CENTER.lon)
        assert here in a_relay.confirmed
        assert here not in c_relay.cells.cells

        # B's gateway commands the cells around it: A's camera, 30 m away, hears it
        # through A's relay and answers B.
        first = event(TriggerKind.MANUAL, unit=B.unit)
        await b.terminal.publish(topics.trigger(B.unit), encode(first))
        await wait_until(lambda: _acks_from(at_central, topics, A.camera), 20)
        assert _acks_from(at_central, topics, A.camera)[0].status.value == "started"
        assert a_relay.counters["relay.in"] >= 1
        # What A's relay brought in was not sent back up; B's own command, delivered back
        # to B's relay by central, was not brought into B a second time.
        assert a_relay.counters["relay.not_sent_back"] >= 1
        assert b_relay.counters["relay.echo"] >= 1
        sent = _cells(at_central, topics)
        assert sent, "B's cell commands reach central"
        assert len({(m.topic, m.payload) for m in sent}) == len(sent), "a cell command looped"
        # Car C, 10 km away, got none of them.
        assert c_relay.counters["relay.in"] == 0
        assert _cells(in_c, topics) == []

        # C's camera drives into the cell: C's relay follows, B's next command reaches it.
        c.camera.move_to(GeoPoint(lat=CENTER.lat, lon=CENTER.lon))
        await wait_until(lambda: here in c_relay.confirmed, 20)
        second = event(TriggerKind.WEAPON_DRAW, unit=B.unit)
        await b.terminal.publish(topics.trigger(B.unit), encode(second))
        await wait_until(lambda: _acks_from(at_central, topics, C.camera), 20)
        assert _acks_from(at_central, topics, C.camera)[0].status.value == "started"
        assert any(m.topic == topics.command_cell(here) for m in in_c)
        assert c_relay.counters["relay.in"] >= 1
        # Every relay counter is exported as a metric (none lands in unmapped_counters).
        relay_keys = [k for k in c.gateway.all_counters() if k.startswith("relay.")]
        assert "relay.cells" in relay_keys
        assert all(gateway_family(k) is not None for k in relay_keys), relay_keys


async def test_a_stolen_relay_credential_reads_only_its_cars_region(tmp_path: Path) -> None:
    """The thief subscribes to every cell with car A's relay certificate: central delivers
    only the cells of A's region. A cell outside it, published first, never arrives."""
    prefix = f"t-{uuid.uuid4().hex[:8]}/mesh/v2"
    central = _central(tmp_path, prefix)
    topics = central.topics
    car = _car(tmp_path, central, A)
    grant = car.bundle.relay_acls[A.gateway].read_text()
    assert f"topic read {topics.command_cell('+')}" not in grant
    assert grant.count("topic read ") == 1024  # the 4-character region's cells, by name
    outside_lat, outside_lon = offset(CENTER.lat, CENTER.lon, 0.0, 60_000.0)
    outside = cell_of(outside_lat, outside_lon)
    inside = cell_of(CENTER.lat, CENTER.lon)
    assert not outside.startswith(REGION)
    thief_url = car.relay_url
    got: list[Inbound] = []
    thief = MqttLink(
        thief_url,
        LinkOptions(
            f"t-thief-{uuid.uuid4().hex[:8]}",
            # Every cell, and the outside one by name.
            subscriptions=((topics.command_cell("+"), 1), (topics.command_cell(outside), 1)),
            persistent_session=False,
        ),
    )
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(brokers([central.bundle]))
        task = asyncio.create_task(thief.run(got.append))
        try:
            await thief.wait_up(10)
            # Another car's relay may write any cell (as the thief may: a second connection).
            writer = await stack.enter_async_context(publisher(thief_url))
            await writer.publish(topics.command_cell(outside), b"elsewhere")
            await writer.publish(topics.command_cell(inside), b"here")
            # In order on one connection: "elsewhere" would have come first.
            await wait_until(lambda: any(m.payload == b"here" for m in got), 10)
            assert [m.payload for m in got] == [b"here"]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_what_waits_for_central_is_bounded_and_sent_in_order(
    own_mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    """Central unreachable (nothing listens on its port): the gateway's cell commands wait
    in the relay, at most OUT_MAX besides the one being sent, the oldest dropped first.
    Central comes up on that port: what waited arrives, in order, the newest OUT_MAX
    among it. (The relay's address is a proxy in front of central, listening only once
    the test's own subscriber is on: what the relay sends at once is not missed.)"""
    topics = Topics(f"t-{uuid.uuid4().hex[:8]}/mesh/v2")
    car_url = BrokerUrl(scheme="mqtt", host="127.0.0.1", port=own_mosquitto.port)
    central_port = free_port()
    front = ChaosProxy(("127.0.0.1", central_port))
    relay = CellRelay(
        RelaySettings(front.url),
        local_url=car_url,
        topics=topics,
        issuer="gw-car-12",
        points=list,
        clock=SYSTEM_CLOCK,
        local_client_id=f"t-relay-{uuid.uuid4().hex[:6]}",
    )
    sent = 300
    task = asyncio.create_task(relay.run())
    central: MosquittoProcess | None = None
    try:
        await relay.local.wait_up(10)
        async with publisher(car_url) as gateway:
            for i in range(sent):
                await gateway.publish(topics.command_cell("dr4e39"), f"{i:04d}".encode())
        dropped = sent - OUT_MAX - 1
        await wait_until(lambda: relay.counters["relay.out_dropped"] >= dropped, 10)
        assert len(relay._out) == OUT_MAX
        central = MosquittoProcess(require_mosquitto(), central_port, tmp_path / "central")
        central.start()
        central_url = BrokerUrl(scheme="mqtt", host="127.0.0.1", port=central_port)
        async with spy(central_url, topics.command_cell("+")) as at_central:
            await front.start()
            expected = sent - relay.counters["relay.out_dropped"]
            await wait_until(lambda: relay.counters["relay.out"] >= expected, 20)
            await wait_until(lambda: len(at_central) >= expected, 10)
        got = [int(m.payload) for m in at_central]
        assert got == sorted(got)
        assert len(got) == expected
        assert got[-OUT_MAX:] == list(range(sent - OUT_MAX, sent))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await front.close()
        if central is not None:
            central.stop()


async def test_on_a_nats_central_a_stolen_relay_password_reads_only_its_region(
    tmp_path: Path,
) -> None:
    """The same theft against the 3-node NATS cluster `broker-config --central nats`
    writes: the relay's user subscribes to every cell and to one outside its region by
    name; NATS refuses both subscriptions (permissions), and of two cell commands only the
    one inside the region arrives."""
    from tests.conftest import require_nats_server
    from tests.nats_tools import RunningCluster, loopback_layout

    require_nats_server()
    prefix = f"t-{uuid.uuid4().hex[:8]}/mesh/v2"
    topics = Topics(prefix)
    layout = loopback_layout(tmp_path / "car", prefix, camera_cells=(REGION,))
    outside = cell_of(*offset(CENTER.lat, CENTER.lon, 0.0, 60_000.0))
    inside = cell_of(CENTER.lat, CENTER.lon)
    assert not outside.startswith(REGION)
    cluster = RunningCluster(layout)
    cluster.start()
    try:
        thief_url = layout.central.mqtt_url(relay_user("gw-car-12"), node=1)
        got: list[Inbound] = []
        thief = MqttLink(
            thief_url,
            LinkOptions(
                f"t-thief-{uuid.uuid4().hex[:8]}",
                subscriptions=(
                    (topics.command_cell("+"), 0),
                    (topics.command_cell(outside), 0),
                    (topics.command_cell(inside), 0),
                ),
                persistent_session=False,
                protocol="3.1.1",
            ),
        )
        task = asyncio.create_task(thief.run(got.append))
        try:
            await thief.wait_up(30)
            writer_url = layout.central.mqtt_url(relay_user("gw-car-12"), node=0)
            async with publisher(writer_url) as writer:
                await writer.publish(topics.command_cell(outside), b"elsewhere")
                await writer.publish(topics.command_cell(inside), b"here")
                await wait_until(lambda: any(m.payload == b"here" for m in got), 20)
                # A marker on the inside cell after another outside one: still only "here"s.
                await writer.publish(topics.command_cell(outside), b"elsewhere again")
                await writer.publish(topics.command_cell(inside), b"marker")
                await wait_until(lambda: any(m.payload == b"marker" for m in got), 20)
            assert [m.payload for m in got] == [b"here", b"marker"]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        cluster.stop()


async def test_the_relay_on_a_nats_central(nats_cluster: RunningCluster, tmp_path: Path) -> None:
    """The car of `broker-config --central nats` (its mosquitto bridged to the 3-node
    cluster), its gateway relaying with the generated `tm-relay-G` user: a cell command
    published at central (on another node) for the cell of the car's camera comes into the
    car, and the gateway's own cell commands go out to central."""
    from tests.integration.test_nats_cluster import car_broker
    from tests.nats_tools import CAMERAS, DISPATCH, GW, UNIT, route_interest

    layout = nats_cluster.layout
    central, car = layout.central, layout.car
    topics = Topics(car.spec.prefix)
    relay_url = central.mqtt_url(relay_user(GW), node=0)
    tag = uuid.uuid4().hex[:6]
    gateway = build_gateway(
        config_in_code(
            UNIT,
            tmp_path / "gw.db",
            gateway_id=GW,
            topics=topics,
            position=CENTER,
            relay={"url": relay_url.as_text()},
        ),
        Policy(),
        url=car.url_for(GW),
        client_id=f"t{tag}-gw",
    )
    relay = gateway.relay
    assert relay is not None
    here = cell_of(CENTER.lat, CENTER.lon)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(car_broker(nats_cluster))
        at_central = await stack.enter_async_context(
            spy(central.mqtt_url(DISPATCH, node=1), topics.command_cell("+"))
        )
        in_car = await stack.enter_async_context(
            spy(car.url_for(CAMERAS[0]), topics.command_cell(here))
        )
        terminal = await stack.enter_async_context(publisher(car.url_for(GW)))
        task = asyncio.create_task(gateway.run())
        try:
            await asyncio.wait_for(gateway.ready.wait(), 30)
            await wait_until(lambda: here in relay.confirmed, 30)
            await relay.local.wait_up(30)
            # Another car's relay (the same grant) commands this cell at central, on a node
            # that has heard of the relay's subscription (made at node 0).
            subject = topics.command_cell(here).replace("/", ".")
            await wait_until(lambda: subject in route_interest(central, 2), 10)
            async with publisher(central.mqtt_url(relay_user(GW), node=2)) as other:
                await other.publish(topics.command_cell(here), b"from another car")
            await wait_until(lambda: any(m.payload == b"from another car" for m in in_car), 20)
            # The gateway's own command goes out through its relay.
            await terminal.publish(topics.trigger(UNIT), encode(event(TriggerKind.MANUAL)))
            await wait_until(
                lambda: any(
                    m.topic == topics.command_cell(here) and m.payload != b"from another car"
                    for m in at_central
                ),
                20,
            )
            assert relay.counters["relay.out"] >= 1
            assert relay.counters["relay.in"] >= 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

"""What sizing a deployment needs, measured on this machine (docs/deployment.md).

Parts (``--parts``, all by default):

- ``connections``: N idle cameras on one mosquitto (generated config, TCP_NODELAY), each
  as the camera agent connects: persistent session, keepalive 15 s, a retained last will,
  four command subscriptions (all, its unit, its cell, itself), its retained presence
  published once. The broker's RSS with no client (the floor) and with N; the connect
  rate. Then ``--steady-s`` seconds at the cameras' real rates (presence every 30 s, a
  PINGREQ between two presences, as paho sends one after 15 s without traffic): the
  broker's CPU and the bytes each camera sends and receives.
- ``tls``: the largest N again, on the broker `broker-config` writes (TLS, a client
  certificate per camera, the ACL): RSS and broker CPU per connection, against the plain
  listener above.
- ``qos1``: the broker's sustained rate of command + ack pairs at QoS 1 (a gateway's
  command to one camera's topic, the camera's ack back), with a window of commands in
  flight; the floor is the same traffic at QoS 0. And a fan-out: presence published to
  ``{p}/presence/C`` (QoS 1, retained) with S subscribers on ``{p}/presence/+``, as
  gateways and dispatch consoles subscribe. The broker's CPU per pair and per delivery is
  the figure that carries to a broker node elsewhere; the load generator shares the two
  cores.
- ``archive``: a real gateway, a unit's three cameras and an archiver on PostgreSQL run
  ``--activations`` activations, then the gateway's log is synced: the bytes each
  activation costs in PostgreSQL (tables with their indexes, against the empty schema),
  in the edge log and on the wire, by topic. Then the archiver's insert rate for acks
  arriving over MQTT and for log records arriving by ``log sync``, against the floor of
  the same SQL statements sent straight to PostgreSQL by one connection.
- ``archive_volume`` (about 45 s): ``--volume-cameras`` cameras' heartbeats for
  ``--volume-hours`` simulated hours, every one logged as a presence record, synced by the
  real ``log sync`` to a real archiver: the archive's bytes per camera-day, against the same
  records stored as the 003 schema stored them (every record a row). See
  ``archive_volume_part``.
- ``cells``: geo-cell commands into the cars at central, before and after the cell relay
  (docs/broker.md § The cell relay). For each ``--cell-scenarios`` CAMERAS@KM2: CAMERAS / 3
  cars spread uniformly over a square of KM2 around the scene, three cameras each (two
  within 100 m of the car); ``--cell-activations`` activations by random cars, at the car,
  radii from the shipped policy's kinds, each published on its cells. One raw MQTT
  connection per car to a real mosquitto: **before** each subscribes to ``{p}/cmd/cell/+``
  (the car's bridge as it was), **after** to its relay's cells (mesh/decide/relay_cells.py
  with the defaults). Every cell command is published once at QoS 1, then a barrier every
  car reads: the deliveries each car got, against the count the model
  (``modelled_deliveries``: for each publish, the cars whose cells include it) predicts,
  and the rates at 2 (10) activations per car-hour and 2.65 cells per activation.
  "Before" sends only the first ~300,000 deliveries' worth of publishes (every car gets
  every one, whatever the area) and runs once per fleet size.

The load generator for the first two parts speaks MQTT 3.1.1 over raw sockets (asyncio
protocols, pre-encoded packets), so that one Python process can hold thousands of
connections; payloads are the project's real, signed messages.

    python bench/fleet_scale.py [--json] [--quick]
        [--parts connections,tls,qos1,archive,archive_volume,cells]
        [--cameras 1400,5000] [--steady-s 30] [--seconds 10] [--activations 200]
        [--acks 20000] [--records 20000] [--volume-cameras 30] [--volume-hours 24]
        [--cell-scenarios 1400@400,50000@800,50000@20000] [--cell-activations 120] [--smoke]

Each run of all parts takes about five minutes; ``--parts connections,tls`` and
``--parts qos1,archive`` take about two each, ``--parts archive_volume`` under one.
PostgreSQL: ``TRIGGER_MESH_TEST_PG`` (default ``postgresql://127.0.0.1:5432/test``); each
part works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import logging
import os
import resource
import socket
import sqlite3
import ssl
import struct
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.mqtt.client import Inbound as LinkInbound
from bridge.mqtt.client import LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess, find_mosquitto, free_port
from bridge.topics import Topics
from mesh.ops import logs
from mesh.protocol.codec import encode
from mesh.protocol.models import (
    AckStatus,
    CameraAck,
    CameraPresence,
    CameraRole,
    GeoPoint,
    Position,
    RecordStart,
    Targets,
    TriggerKind,
    TriggerSummary,
)
from mesh.security.signing import PayloadSigner
from triggers.manual import manual_trigger

PREFIX = "mesh/v2"
KEEPALIVE_S = 15  # bridge/mqtt/client.py LinkOptions.keepalive_s
NS = 1_000_000_000
HEARTBEAT_S = 30.0  # the camera's presence interval (mesh/config.py heartbeat_s)
CAR = GeoPoint(lat=39.9526, lon=-75.1652)
SMOKE_HELP = "tiny sizes: proves the script runs (make bench-smoke), not its figures"

# --- MQTT 3.1.1, the few packets a camera needs ---------------------------------------------
CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP = 2, 3, 4, 9, 13
PINGREQ_PACKET = b"\xc0\x00"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect_packet(
    client_id: str, *, clean: bool, will: tuple[str, bytes] | None, keepalive: int
) -> bytes:
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will is not None:
        flags |= 0x04 | 0x08 | 0x20  # will, QoS 1, retained: the camera's offline presence
        payload += _str(will[0]) + _str(will[1])
    return _packet(0x10, _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload)


def subscribe_packet(pid: int, filters: list[str], qos: int = 1) -> bytes:
    body = struct.pack("!H", pid) + b"".join(_str(f) + bytes([qos]) for f in filters)
    return _packet(0x82, body)


def publish_packet(
    topic: str, payload: bytes, *, qos: int, pid: int = 0, retain: bool = False
) -> bytes:
    head = _str(topic) + (struct.pack("!H", pid) if qos else b"")
    return _packet(0x30 | (qos << 1) | int(retain), head + payload)


def puback_packet(pid: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", pid)


@dataclass
class Inbound:
    kind: int
    flags: int
    body: bytes

    def publish_parts(self) -> tuple[str, int, bytes]:
        """(topic, packet id or 0, payload) of a PUBLISH."""
        (length,) = struct.unpack_from("!H", self.body)
        topic = self.body[2 : 2 + length].decode()
        at = 2 + length
        pid = 0
        if (self.flags >> 1) & 3:
            (pid,) = struct.unpack_from("!H", self.body, at)
            at += 2
        return topic, pid, self.body[at:]


class Conn(asyncio.Protocol):
    """One raw MQTT connection: counts its bytes, hands every packet to ``on_packet``."""

    def __init__(self, on_packet: Callable[[Conn, Inbound], None]) -> None:
        self.on_packet = on_packet
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.sent = 0
        self.received = 0
        self.waiters: dict[int, asyncio.Future[Inbound]] = {}
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for waiter in self.waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.sent += len(data)
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        buf = self.buffer
        buf += data
        while len(buf) >= 2:
            length, multiplier, at = 0, 1, 1
            while True:
                if at >= len(buf):
                    return
                byte = buf[at]
                length += (byte & 0x7F) * multiplier
                multiplier *= 128
                at += 1
                if not byte & 0x80:
                    break
            if len(buf) < at + length:
                return
            packet = Inbound(buf[0] >> 4, buf[0] & 0x0F, bytes(buf[at : at + length]))
            del buf[: at + length]
            waiter = self.waiters.pop(packet.kind, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(packet)
            else:
                self.on_packet(self, packet)

    async def request(self, data: bytes, answer: int, timeout_s: float = 30.0) -> Inbound:
        """Send, and wait for the next packet of type ``answer`` (one outstanding per type)."""
        waiter = asyncio.get_running_loop().create_future()
        self.waiters[answer] = waiter
        self.send(data)
        return await asyncio.wait_for(waiter, timeout_s)


def _ignore(_conn: Conn, _packet: Inbound) -> None:
    return None


async def open_conn(
    port: int,
    on_packet: Callable[[Conn, Inbound], None] = _ignore,
    tls: ssl.SSLContext | None = None,
) -> Conn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(
        lambda: Conn(on_packet),
        "127.0.0.1",
        port,
        ssl=tls,
        server_hostname="localhost" if tls is not None else None,
    )
    return proto


async def mqtt_client(
    port: int,
    client_id: str,
    *,
    on_packet: Callable[[Conn, Inbound], None] = _ignore,
    clean: bool = True,
    will: tuple[str, bytes] | None = None,
    subscriptions: list[str] | None = None,
    qos: int = 1,
    tls: ssl.SSLContext | None = None,
    keepalive: int = KEEPALIVE_S,
) -> Conn:
    conn = await open_conn(port, on_packet, tls)
    connack = await conn.request(
        connect_packet(client_id, clean=clean, will=will, keepalive=keepalive), CONNACK
    )
    if connack.body[1] != 0:
        raise ConnectionError(f"{client_id}: CONNACK code {connack.body[1]}")
    if subscriptions:
        await conn.request(subscribe_packet(1, subscriptions, qos), SUBACK)
    return conn


# --- the broker process ----------------------------------------------------------------------
def raise_fd_limit(needed: int) -> int:
    """Raise the soft limit on open files towards the hard one (mosquitto inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < needed:
        raise SystemExit(f"open-file limit {soft} < {needed} needed (ulimit -n)")
    return soft


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def broker(tmp: Path, name: str) -> Iterator[MosquittoProcess]:
    binary = find_mosquitto()
    if binary is None:
        raise SystemExit("mosquitto is not installed (apt-get install -y mosquitto)")
    process = MosquittoProcess(binary, free_port(), tmp / name)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def broker_pid(process: MosquittoProcess) -> int:
    assert process.process is not None
    return process.process.pid


# --- realistic payloads ----------------------------------------------------------------------
@dataclass(frozen=True)
class Payloads:
    presence: Callable[[int], bytes]
    offline: Callable[[int], bytes]
    command: bytes
    ack: bytes
    signature_bytes: dict[str, int]


def payloads() -> Payloads:
    """Signed, as in a locked-down deployment (docs/security.md)."""
    now = time.time_ns()
    gw_signer = PayloadSigner(Ed25519PrivateKey.generate())
    cam_signer = PayloadSigner(Ed25519PrivateKey.generate())
    event = manual_trigger(TriggerKind.WEAPON_DRAW, "car-12", source_id="holster-12")
    command_unsigned = RecordStart(
        activation_id="a-0123456789abcdef",
        issuer="gw-car-12",
        trigger=TriggerSummary.of(event),
        issued_at_ns=now,
        origin=CAR,
        radius_m=150.0,
        pre_event_s=30,
        targets=Targets(units=("car-12",)),
        expires_at_ns=now + 30 * 10**9,
    )
    command = gw_signer.seal(command_unsigned).to_bytes()
    ack_unsigned = CameraAck(
        activation_id="a-0123456789abcdef",
        camera_id="bwc-0001",
        unit_id="car-12",
        status=AckStatus.STARTED,
        received_at_ns=now,
        recording_started_at_ns=now,
        pre_event_kept_s=30.0,
    )
    ack = cam_signer.seal(ack_unsigned).to_bytes()

    def presence_of(i: int, online: bool = True) -> bytes:
        return encode(
            CameraPresence(
                camera_id=f"bwc-{i:05d}",
                unit_id=f"car-{i // 3:05d}",
                role=CameraRole.DASH if i % 3 == 0 else CameraRole.BODY,
                online=online,
                recording=False,
                position=Position(lat=CAR.lat, lon=CAR.lon, accuracy_m=5.0, fix_at_ns=now),
                last_seen_ns=now,
                officer=f"Ofc. {i:05d}",
            )
        )

    return Payloads(
        presence=presence_of,
        offline=lambda i: presence_of(i, online=False),
        command=command,
        ack=ack,
        signature_bytes={  # what signing adds to a message (a JWS of the payload)
            "command": len(command) - len(encode(command_unsigned)),
            "ack": len(ack) - len(encode(ack_unsigned)),
        },
    )


def camera_filters(i: int) -> list[str]:
    return [
        f"{PREFIX}/cmd/all",
        f"{PREFIX}/cmd/unit/car-{i // 3:05d}",
        f"{PREFIX}/cmd/cell/dr4e3{i % 32:x}",
        f"{PREFIX}/cmd/camera/bwc-{i:05d}",
    ]


# --- part 1: idle cameras ----------------------------------------------------------------------
@dataclass
class Camera:
    index: int
    conn: Conn
    pid: int = 1
    puback_waiting: set[int] = field(default_factory=set)


async def connect_cameras(
    port: int,
    count: int,
    data: Payloads,
    concurrency: int = 100,
    tls_of: Callable[[int], ssl.SSLContext] | None = None,
) -> list[Camera]:
    cameras: list[Camera] = []
    limit = asyncio.Semaphore(concurrency)

    def on_packet(conn: Conn, packet: Inbound) -> None:
        if packet.kind == PUBLISH and (packet.flags >> 1) & 3:
            conn.send(puback_packet(packet.publish_parts()[1]))

    async def one(i: int) -> None:
        async with limit:
            conn = await mqtt_client(
                port,
                f"tm-cam-bwc-{i:05d}",
                on_packet=on_packet,
                clean=False,  # the camera agent keeps a persistent session
                will=(f"{PREFIX}/presence/bwc-{i:05d}", data.offline(i)),
                subscriptions=camera_filters(i),
                tls=tls_of(i) if tls_of is not None else None,
            )
            await conn.request(
                publish_packet(
                    f"{PREFIX}/presence/bwc-{i:05d}", data.presence(i), qos=1, pid=1, retain=True
                ),
                PUBACK,
            )
            cameras.append(Camera(i, conn, pid=2))

    await asyncio.gather(*(one(i) for i in range(count)))
    return cameras


async def steady(cameras: list[Camera], data: Payloads, seconds: float, pid: int) -> dict[str, Any]:
    """Presence every HEARTBEAT_S and a PINGREQ half-way between, per camera, staggered."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    heap: list[tuple[float, int, int]] = []  # (due, camera, 0 presence / 1 ping)
    half = HEARTBEAT_S / 2
    for n in range(len(cameras)):
        offset = HEARTBEAT_S * n / len(cameras)
        heapq.heappush(heap, (start + offset, n, 0))
        # Every camera says something within 15 s of the start: the broker drops a client
        # silent for 1.5 x its keepalive.
        ping = offset - half if offset >= half else offset + half
        heapq.heappush(heap, (start + ping, n, 1))
    sent0 = sum(c.conn.sent for c in cameras)
    received0 = sum(c.conn.received for c in cameras)
    cpu0, wall0 = cpu_s(pid), time.monotonic()
    counts: Counter[str] = Counter()
    end = start + seconds
    while True:
        now = loop.time()
        if now >= end:
            break
        while heap and heap[0][0] <= now:
            due, n, what = heapq.heappop(heap)
            cam = cameras[n]
            if what == 0:
                cam.pid = cam.pid % 65535 + 1
                topic = f"{PREFIX}/presence/bwc-{cam.index:05d}"
                cam.conn.send(
                    publish_packet(topic, data.presence(cam.index), qos=1, pid=cam.pid, retain=True)
                )
                counts["presence"] += 1
            else:
                cam.conn.send(PINGREQ_PACKET)
                counts["ping"] += 1
            heapq.heappush(heap, (due + HEARTBEAT_S, n, what))
        await asyncio.sleep(min(0.05, max(0.0, (heap[0][0] if heap else end) - now)))
    await asyncio.sleep(0.5)  # let the last PUBACKs and PINGRESPs arrive
    wall = time.monotonic() - wall0
    cpu = cpu_s(pid) - cpu0
    sent = sum(c.conn.sent for c in cameras) - sent0
    received = sum(c.conn.received for c in cameras) - received0
    per_cam_s = len(cameras) * wall
    return {
        "seconds": round(wall, 1),
        "presence_sent": counts["presence"],
        "pings_sent": counts["ping"],
        "broker_cpu_pct": round(100 * cpu / wall, 2),
        "broker_cpu_us_per_camera_s": round(1e6 * cpu / per_cam_s, 3),
        "mqtt_bytes_up_per_camera_s": round(sent / per_cam_s, 2),
        "mqtt_bytes_down_per_camera_s": round(received / per_cam_s, 2),
    }


async def connections_part(counts: list[int], steady_s: float, tmp: Path) -> list[dict[str, Any]]:
    data = payloads()
    out = []
    for count in counts:
        raise_fd_limit(count + 200)
        with broker(tmp, f"conn-{count}") as proc:
            pid = broker_pid(proc)
            await asyncio.sleep(1.0)
            floor_kb = rss_kb(pid)
            cpu0, t0 = cpu_s(pid), time.monotonic()
            cameras = await connect_cameras(proc.port, count, data)
            connect_s = time.monotonic() - t0
            connect_cpu = cpu_s(pid) - cpu0
            await asyncio.sleep(1.0)
            loaded_kb = rss_kb(pid)
            row: dict[str, Any] = {
                "cameras": count,
                "connect_s": round(connect_s, 2),
                "connects_per_s": round(count / connect_s),
                "broker_cpu_ms_per_connect": round(1000 * connect_cpu / count, 3),
                "broker_rss_floor_kb": floor_kb,
                "broker_rss_kb": loaded_kb,
                "broker_kb_per_camera": round((loaded_kb - floor_kb) / count, 2),
                "presence_bytes": len(data.presence(1)),
            }
            if steady_s > 0:
                row["steady"] = await steady(cameras, data, steady_s, pid)
                row["broker_rss_after_steady_kb"] = rss_kb(pid)
            alive = sum(1 for c in cameras if not c.conn.lost)
            if alive < count:
                # The figures would describe fewer cameras than claimed.
                raise RuntimeError(f"{count - alive} of {count} camera connections were lost")
            for cam in cameras:
                assert cam.conn.transport is not None
                cam.conn.transport.close()
            out.append(row)
            print_row("connections", row)
    return out


async def tls_part(count: int, tmp: Path) -> dict[str, Any]:
    """The same idle cameras on the broker `broker-config` writes: TLS, a client
    certificate per camera (its CN the username), the ACL."""
    from bridge.broker.acl import FleetSpec, Principal
    from bridge.broker.config import write_broker_config

    binary = find_mosquitto()
    if binary is None:
        raise SystemExit("mosquitto is not installed (apt-get install -y mosquitto)")
    raise_fd_limit(count + 200)
    data = payloads()
    spec = FleetSpec(
        cameras=tuple(Principal(f"bwc-{i:05d}", f"car-{i // 3:05d}") for i in range(count))
    )
    bundle = write_broker_config(
        tmp / "tls", spec, port=free_port(), bind="127.0.0.1", run_as="root"
    )
    contexts = {i: bundle.url_for(f"bwc-{i:05d}").tls_context() for i in range(count)}
    proc = MosquittoProcess(binary, bundle.port, tmp / "tls", config=bundle.conf)
    proc.start()
    try:
        pid = broker_pid(proc)
        await asyncio.sleep(1.0)
        floor_kb = rss_kb(pid)
        cpu0, t0 = cpu_s(pid), time.monotonic()
        cameras = await connect_cameras(
            proc.port, count, data, concurrency=50, tls_of=lambda i: _context(contexts[i])
        )
        connect_s = time.monotonic() - t0
        connect_cpu = cpu_s(pid) - cpu0
        await asyncio.sleep(1.0)
        loaded_kb = rss_kb(pid)
        for cam in cameras:
            assert cam.conn.transport is not None
            cam.conn.transport.close()
    finally:
        proc.stop()
    row = {
        "cameras": count,
        "connect_s": round(connect_s, 2),
        "connects_per_s": round(count / connect_s),
        "broker_cpu_ms_per_connect": round(1000 * connect_cpu / count, 3),
        "broker_rss_floor_kb": floor_kb,
        "broker_rss_kb": loaded_kb,
        "broker_kb_per_camera": round((loaded_kb - floor_kb) / count, 2),
    }
    print_row("connections tls", row)
    return row


def _context(context: ssl.SSLContext | None) -> ssl.SSLContext:
    assert context is not None
    return context


# --- part 2: QoS 1 pairs and fan-out ---------------------------------------------------------
async def pairs(
    port: int, data: Payloads, qos: int, cameras: int, window: int, seconds: float, pid: int
) -> dict[str, Any]:
    """A gateway sends commands to cameras' own topics; each camera acks; ``window`` pairs
    in flight. Counts completed pairs over ``seconds`` after a one-second warm-up."""
    done = 0
    next_pid = 0
    gw_pid = 0

    def camera_packet(conn: Conn, packet: Inbound) -> None:
        nonlocal next_pid
        if packet.kind != PUBLISH:
            return
        topic, pid_in, _ = packet.publish_parts()
        if pid_in:
            conn.send(puback_packet(pid_in))
        camera = topic.rsplit("/", 1)[1]
        next_pid = next_pid % 65535 + 1
        conn.send(
            publish_packet(f"{PREFIX}/ack/gw-car-12/{camera}", data.ack, qos=qos, pid=next_pid)
        )

    def send_command() -> None:
        nonlocal gw_pid, sent
        gw_pid = gw_pid % 65535 + 1
        sent += 1
        gateway.send(
            publish_packet(
                f"{PREFIX}/cmd/camera/bwc-{sent % cameras:05d}", data.command, qos=qos, pid=gw_pid
            )
        )

    def gateway_packet(conn: Conn, packet: Inbound) -> None:
        nonlocal done
        if packet.kind != PUBLISH:
            return
        _, pid_in, _ = packet.publish_parts()
        if pid_in:
            conn.send(puback_packet(pid_in))
        done += 1
        send_command()

    sent = 0
    cams = [
        await mqtt_client(
            port,
            f"pair-cam-{i}",
            on_packet=camera_packet,
            subscriptions=[f"{PREFIX}/cmd/camera/bwc-{i:05d}"],
            qos=qos,
        )
        for i in range(cameras)
    ]
    gateway = await mqtt_client(
        port,
        "pair-gw",
        on_packet=gateway_packet,
        subscriptions=[f"{PREFIX}/ack/gw-car-12/+"],
        qos=qos,
    )
    for _ in range(window):
        send_command()
    await asyncio.sleep(1.0)
    done0, cpu0, own0, t0 = done, cpu_s(pid), own_cpu_s(), time.monotonic()
    await asyncio.sleep(seconds)
    completed, wall = done - done0, time.monotonic() - t0
    broker_cpu, own_cpu = cpu_s(pid) - cpu0, own_cpu_s() - own0
    for conn in [*cams, gateway]:
        assert conn.transport is not None
        conn.transport.close()
    await asyncio.sleep(0.5)
    return {
        "qos": qos,
        "pairs_per_s": round(completed / wall),
        "broker_cpu_pct": round(100 * broker_cpu / wall, 1),
        "broker_cpu_us_per_pair": round(1e6 * broker_cpu / completed, 2),
        "generator_cpu_pct": round(100 * own_cpu / wall, 1),
        "command_bytes": len(data.command),
        "ack_bytes": len(data.ack),
        "signature_bytes": data.signature_bytes,
    }


async def fanout(
    port: int, data: Payloads, subscribers: int, window: int, seconds: float, pid: int
) -> dict[str, Any]:
    """Presence (QoS 1, retained) to ``subscribers`` clients on presence/+ (QoS 1)."""
    delivered = 0
    pub_pid = 0
    published = 0

    def subscriber_packet(conn: Conn, packet: Inbound) -> None:
        nonlocal delivered
        if packet.kind == PUBLISH:
            _, pid_in, _ = packet.publish_parts()
            if pid_in:
                conn.send(puback_packet(pid_in))
            delivered += 1

    def publish_one() -> None:
        nonlocal pub_pid, published
        pub_pid = pub_pid % 65535 + 1
        published += 1
        i = published % 1000
        publisher.send(
            publish_packet(
                f"{PREFIX}/presence/bwc-{i:05d}", data.presence(i), qos=1, pid=pub_pid, retain=True
            )
        )

    def publisher_packet(_conn: Conn, packet: Inbound) -> None:
        if packet.kind == PUBACK:
            publish_one()

    subs = [
        await mqtt_client(
            port, f"fan-gw-{i}", on_packet=subscriber_packet, subscriptions=[f"{PREFIX}/presence/+"]
        )
        for i in range(subscribers)
    ]
    publisher = await mqtt_client(port, "fan-pub", on_packet=publisher_packet)
    for _ in range(window):
        publish_one()
    await asyncio.sleep(1.0)
    d0, p0, cpu0, own0, t0 = delivered, published, cpu_s(pid), own_cpu_s(), time.monotonic()
    await asyncio.sleep(seconds)
    deliveries, pubs, wall = delivered - d0, published - p0, time.monotonic() - t0
    broker_cpu, own_cpu = cpu_s(pid) - cpu0, own_cpu_s() - own0
    for conn in [*subs, publisher]:
        assert conn.transport is not None
        conn.transport.close()
    await asyncio.sleep(0.5)
    return {
        "subscribers": subscribers,
        "publishes_per_s": round(pubs / wall),
        "deliveries_per_s": round(deliveries / wall),
        "broker_cpu_pct": round(100 * broker_cpu / wall, 1),
        "broker_cpu_us_per_delivery": round(1e6 * broker_cpu / max(deliveries, 1), 2),
        "generator_cpu_pct": round(100 * own_cpu / wall, 1),
    }


async def qos1_part(seconds: float, tmp: Path) -> dict[str, Any]:
    data = payloads()
    out: dict[str, Any] = {}
    for qos in (0, 1):
        with broker(tmp, f"pairs-{qos}") as proc:
            row = await pairs(
                proc.port, data, qos, cameras=200, window=400, seconds=seconds, pid=broker_pid(proc)
            )
        out[f"pairs_qos{qos}"] = row
        print_row(f"pairs qos{qos}", row)
    with broker(tmp, "fanout") as proc:
        row = await fanout(
            proc.port, data, subscribers=50, window=50, seconds=seconds, pid=broker_pid(proc)
        )
    out["fanout"] = row
    print_row("fanout", row)
    q1, q0 = out["pairs_qos1"], out["pairs_qos0"]
    out["qos1_vs_qos0_cpu_per_pair"] = round(
        q1["broker_cpu_us_per_pair"] / q0["broker_cpu_us_per_pair"], 2
    )
    return out


def print_row(name: str, row: dict[str, Any]) -> None:
    print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in row.items()), flush=True)


# --- part 3: the archive ----------------------------------------------------------------------
ENV_PG = "TRIGGER_MESH_TEST_PG"
DEFAULT_PG = "postgresql://127.0.0.1:5432/test"
PERIODIC = ("presence", "gateway")
TABLES = (
    "triggers",
    "receipts",
    "activations",
    "acks",
    "escalations",
    "logs",
    "log_records",
    "presence_repeats",
    "presence_bases",
)


@contextlib.asynccontextmanager
async def pg_schema() -> Any:
    """A DSN for a fresh schema of its own, dropped afterwards (as the tests' fixture)."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    base = os.environ.get(ENV_PG, DEFAULT_PG)
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        admin = await psycopg.AsyncConnection.connect(base, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise SystemExit(f"PostgreSQL is not reachable at {base} (set {ENV_PG}): {exc}") from None
    async with admin:
        await admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield make_conninfo(base, options=f"-csearch_path={schema}")
    finally:
        async with await psycopg.AsyncConnection.connect(base, autocommit=True) as admin:
            await admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


async def table_bytes(dsn: str) -> dict[str, int]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        out = {}
        for table in TABLES:
            out[table] = await relation_bytes(conn, table)
        return out


async def relation_bytes(conn: Any, table: str) -> int:
    """A table with its indexes and TOAST; a partitioned one with all its partitions (its
    own size is 0). 0 for a table the schema does not have."""
    cur = await conn.execute(
        "SELECT CASE WHEN c.relkind = 'p' THEN (SELECT"
        " coalesce(sum(pg_total_relation_size(t.relid)), 0) FROM pg_partition_tree(c.oid) t)"
        " ELSE pg_total_relation_size(c.oid) END"
        " FROM pg_class c WHERE c.oid = to_regclass(%s)",
        (table,),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def scalar(dsn: str, query: str, args: tuple[Any, ...] = ()) -> Any:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query, args)
        row = await cur.fetchone()
        return row[0] if row else None


async def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not reached within {timeout_s} s")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(*tasks_of: Any) -> Any:
    tasks = [asyncio.ensure_future(t) for t in tasks_of]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def activations_part(count: int, tmp: Path) -> dict[str, Any]:
    """A real gateway, a unit's three cameras, an archiver: ``count`` activations."""
    from mesh.archive.archiver import Archiver, ArchiverSettings
    from mesh.decide.geo import offset
    from mesh.decide.policy import Policy
    from mesh.dispatch.watch import ActivationWatcher
    from mesh.gateway.build import build_gateway, config_in_code
    from mesh.journal.sync import LogSync
    from mesh.protocol.models import ActivationState, ReceiptOutcome
    from mesh.sim.camera_fleet import CameraSpec, build_agents, wait_all_up

    topics = Topics(f"bench-{uuid.uuid4().hex[:8]}/{PREFIX}")
    unit = "car-12"
    specs = [
        CameraSpec("dash-12", unit, CameraRole.DASH, CAR),
        *(
            CameraSpec(name, unit, CameraRole.BODY, GeoPoint(lat=p[0], lon=p[1]))
            for name, p in (
                ("bwc-12a", offset(CAR.lat, CAR.lon, 20, 0)),
                ("bwc-12b", offset(CAR.lat, CAR.lon, 0, 30)),
            )
        ),
    ]
    wire: Counter[str] = Counter()
    wire_n: Counter[str] = Counter()

    def sniff(message: LinkInbound) -> None:
        parsed = topics.parse(message.topic)
        kind = parsed.kind.value if parsed is not None else "other"
        wire[kind] += len(message.payload) + len(message.topic)
        wire_n[kind] += 1

    log_path = tmp / "gateway.db"
    policy = Policy.model_validate({"kinds": {"weapon_draw": {"cooldown_s": 0}}})
    with broker(tmp, "archive") as proc:
        url = proc.url
        async with pg_schema() as dsn:
            archiver = Archiver(
                ArchiverSettings(dsn=dsn, archiver_id="bench-arch", topics=topics),
                url=url,
                client_id=f"bench-arch-{uuid.uuid4().hex[:6]}",
            )
            gateway = build_gateway(
                config_in_code(
                    unit,
                    log_path,
                    topics=topics,
                    position=CAR,
                    status_interval_s=1.0,  # several status messages, to measure their size
                ),
                policy,
                url=url,
                client_id=f"bench-gw-{uuid.uuid4().hex[:6]}",
            )
            agents = build_agents(
                specs, url=url, topics=topics, client_prefix="bench-", now_ns=time.time_ns()
            )
            watcher = ActivationWatcher(url, topics, client_id="bench-watch")
            driver = MqttLink(url, LinkOptions("bench-driver", persistent_session=False))
            sniffer = MqttLink(
                url,
                LinkOptions(
                    "bench-sniff",
                    subscriptions=((f"{topics.prefix}/#", 1),),
                    persistent_session=False,
                ),
            )
            async with running(archiver.run()):
                await asyncio.wait_for(archiver.ready.wait(), 30)
                empty = await table_bytes(dsn)
                async with running(
                    gateway.run(),
                    watcher.run(),
                    driver.run(lambda _m: None),
                    sniffer.run(sniff),
                    *(a.run() for a in agents),
                ):
                    await asyncio.wait_for(gateway.ready.wait(), 15)
                    await wait_all_up(agents, 15)
                    await watcher.link.wait_up(15)
                    await driver.wait_up(15)
                    await sniffer.wait_up(15)
                    while len(gateway.presence) < len(agents):
                        await asyncio.sleep(0.05)
                    wire.clear()
                    wire_n.clear()
                    edge_before = edge_used_bytes(log_path)
                    started = time.monotonic()
                    confirmed = 0
                    for _ in range(count):
                        trigger = manual_trigger(TriggerKind.WEAPON_DRAW, unit, source_id="bench")
                        await driver.publish(topics.trigger(unit), encode(trigger))
                        receipt = None
                        if await watcher.wait_for(
                            lambda t=trigger: t.event_id in watcher.receipts, 10
                        ):
                            receipt = watcher.receipts[trigger.event_id]
                        if receipt is None or receipt.outcome is not ReceiptOutcome.ACCEPTED:
                            raise RuntimeError(f"trigger not accepted: {receipt}")
                        assert receipt.activation_id is not None
                        record = await watcher.final_record(receipt.activation_id, 15)
                        if record is not None and record.state is ActivationState.CONFIRMED:
                            confirmed += 1
                    run_s = time.monotonic() - started
                    await asyncio.sleep(0.5)
                    live_wire = dict(wire)
                    live_n = dict(wire_n)
                    wire.clear()
                    wire_n.clear()
                    sync = LogSync(
                        log_path, url=url, topics=topics, unit_id=unit, gateway_id="gw-car-12"
                    )
                    t0 = time.monotonic()
                    result = await sync.sync(120)
                    sync_s = time.monotonic() - t0
                    if not result.complete:
                        raise RuntimeError(f"log sync incomplete: {result}")
                    await asyncio.sleep(0.5)
                    sync_wire = dict(wire)
                    sync_n = dict(wire_n)

                async def archived() -> bool:
                    n = await scalar(dsn, "SELECT count(*) FROM activations WHERE rank_stage > 0")
                    return bool(n >= count)

                await wait_for(archived, 30, "final activations archived")
                await asyncio.sleep(1.0)
                full = await table_bytes(dsn)
                kinds = await rows_of(
                    dsn,
                    "SELECT kind, count(*), avg(octet_length(body))::int FROM log_records"
                    " GROUP BY kind ORDER BY count(*) DESC",
                )
                counts = {t: await scalar(dsn, f"SELECT count(*) FROM {t}") for t in TABLES}
            edge_bytes = edge_used_bytes(log_path) - edge_before
            edge_records = edge_count(log_path)
    per = {t: round((full[t] - empty[t]) / count) for t in TABLES}
    return {
        "activations": count,
        "confirmed": confirmed,
        "activations_per_s": round(count / run_s, 1),
        "pg_bytes_per_activation": sum(per.values()),
        "pg_bytes_per_activation_by_table": per,
        "pg_rows": counts,
        "log_records_by_kind": [{"kind": k, "count": n, "avg_body_bytes": b} for k, n, b in kinds],
        "edge_log_records": edge_records,
        "edge_log_bytes_per_activation": round(edge_bytes / count),
        # Periodic traffic (presence, gateway status) is left out of the per-activation
        # figures; its message sizes are below.
        "wire_bytes_per_activation": {
            k: round(v / count) for k, v in live_wire.items() if k not in PERIODIC
        },
        "wire_messages_per_activation": {
            k: round(v / count, 2) for k, v in live_n.items() if k not in PERIODIC
        },
        "wire_message_bytes": {
            k: round(v / n)
            for src, counts_n in ((live_wire, live_n), (sync_wire, sync_n))
            for k, v in src.items()
            if (n := counts_n[k])
        },
        "log_sync_bytes_per_activation": round(sum(sync_wire.values()) / count),
        "log_sync_messages": sync_n,
        "log_sync_s": round(sync_s, 2),
    }


async def stored_rate(dsn: str, table: str) -> int:
    """Rows per second between the first and the last write (``archived_at`` is the
    writing transaction's start): the archiver's pace without the start-up around it."""
    n, span = await rows_of_one(
        dsn,
        f"SELECT count(*), extract(epoch FROM max(archived_at) - min(archived_at)) FROM {table}",
    )
    return round(n / float(span)) if span else 0


async def rows_of_one(dsn: str, query: str) -> tuple[Any, ...]:
    rows = await rows_of(dsn, query)
    return rows[0]


def edge_used_bytes(path: Path) -> int:
    """Pages in use in an activation log (its WAL included): the file itself is pre-sized."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)
    finally:
        conn.close()


def edge_count(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])
    finally:
        conn.close()


async def rows_of(dsn: str, query: str) -> list[tuple[Any, ...]]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query)
        return list(await cur.fetchall())


ACK_INSERT = (
    "INSERT INTO acks (activation_id, camera_id, attempt, received_at_ns, issuer,"
    " unit_id, status, reason, payload, archived_by)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)


def ack_messages(count: int) -> list[tuple[CameraAck, bytes]]:
    now = time.time_ns()
    out = []
    for i in range(count):
        ack = CameraAck(
            activation_id=f"a-{i:016x}",
            camera_id="bwc-12a",
            unit_id="car-12",
            status=AckStatus.STARTED,
            received_at_ns=now + i,
            recording_started_at_ns=now + i,
            pre_event_kept_s=30.0,
        )
        out.append((ack, encode(ack)))
    return out


async def archiver_rate_part(acks: int, records: int, tmp: Path) -> dict[str, Any]:
    """The archiver's insert rate (acks over MQTT; log records by log sync) and the floor:
    the same SQL, from one connection, without MQTT or decoding."""
    import psycopg

    from mesh.archive import store
    from mesh.archive.archiver import Archiver, ArchiverSettings
    from mesh.archive.migrate import migrate
    from mesh.journal.records import RecordKind
    from mesh.journal.signer import CheckpointSigner
    from mesh.journal.store import ActivationLog

    topics = Topics(f"bench-{uuid.uuid4().hex[:8]}/{PREFIX}")
    messages = ack_messages(acks)
    out: dict[str, Any] = {"acks": acks, "log_records": records}

    # The floor: the archiver's own statements, in its group size, straight to PostgreSQL.
    async with pg_schema() as dsn:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        try:
            await migrate(conn)
            t0 = time.monotonic()
            for start in range(0, acks, store.GROUP_MAX):
                async with conn.transaction():
                    for ack, raw in messages[start : start + store.GROUP_MAX]:
                        await conn.execute(
                            ACK_INSERT,
                            (
                                ack.activation_id,
                                ack.camera_id,
                                ack.attempt,
                                ack.received_at_ns,
                                "gw-car-12",
                                ack.unit_id,
                                ack.status.value,
                                ack.reason,
                                raw.decode(),
                                "floor",
                            ),
                        )
            out["floor_acks_per_s"] = round(acks / (time.monotonic() - t0))
        finally:
            await conn.close()

    with broker(tmp, "rate") as proc:
        async with pg_schema() as dsn:
            archiver = Archiver(
                ArchiverSettings(dsn=dsn, archiver_id="bench-rate", topics=topics),
                url=proc.url,
                client_id=f"bench-rate-{uuid.uuid4().hex[:6]}",
            )
            async with running(archiver.run()):
                await asyncio.wait_for(archiver.ready.wait(), 30)
                packets = [
                    publish_packet(
                        topics.ack("gw-car-12", "bwc-12a"), raw, qos=1, pid=i % 65535 + 1
                    )
                    for i, (_, raw) in enumerate(messages)
                ]
                outstanding = asyncio.Semaphore(500)

                def on_puback(_conn: Conn, packet: Inbound) -> None:
                    if packet.kind == PUBACK:
                        outstanding.release()

                publisher = await mqtt_client(proc.port, "bench-rate-pub", on_packet=on_puback)
                own0, t0 = own_cpu_s(), time.monotonic()
                for packet in packets:
                    await outstanding.acquire()
                    publisher.send(packet)

                async def stored() -> bool:
                    return bool(await scalar(dsn, "SELECT count(*) FROM acks") >= acks)

                await wait_for(stored, 300, "acks archived")
                wall = time.monotonic() - t0
                out["archiver_acks_per_s"] = round(acks / wall)
                out["archiver_acks_per_s_stored_span"] = await stored_rate(dsn, "acks")
                out["archiver_and_publisher_cpu_pct_acks"] = round(
                    100 * (own_cpu_s() - own0) / wall, 1
                )
                assert publisher.transport is not None
                publisher.transport.close()

                # Log records: a log of presence records (what a gateway logs most), synced.
                log_path = tmp / "rate.db"
                # Signed, with a checkpoint every 1,000 records (a gateway with an audit key
                # writes one a minute): their size is measured too.
                signer = CheckpointSigner(Ed25519PrivateKey.generate())
                log = ActivationLog(log_path, signer=signer, checkpoint_interval_s=3600)
                data = payloads()
                now = time.time_ns()
                # Moving cameras: each presence a change, stored as a full row (a repeat
                # would be folded, see the archive_volume part).
                base = [CameraPresence.model_validate_json(data.presence(i)) for i in range(1400)]
                for i in range(records):
                    cam = base[i % 1400]
                    assert cam.position is not None
                    moved = cam.position.model_copy(update={"lat": cam.position.lat + i * 1e-6})
                    body = cam.model_copy(update={"position": moved}).model_dump_json()
                    log.append_json(RecordKind.PRESENCE, None, body, now + i)
                    if i % 1000 == 999:
                        await log.checkpoint()
                await log.flush()
                log.close()
                conn_ro = sqlite3.connect(f"file:{log_path}?mode=ro", uri=True)
                try:
                    (out["checkpoint_body_bytes"],) = conn_ro.execute(
                        "SELECT CAST(avg(length(body)) AS INTEGER) FROM records"
                        " WHERE kind = 'checkpoint'"
                    ).fetchone()
                finally:
                    conn_ro.close()
                # What a presence record costs on the wire (the batches, counted by a raw
                # subscriber) and in PostgreSQL (the tables' growth).
                batch_bytes = 0

                def count_batches(_conn: Conn, packet: Inbound) -> None:
                    nonlocal batch_bytes
                    if packet.kind == PUBLISH:
                        batch_bytes += len(packet.publish_parts()[2])

                watcher = await mqtt_client(
                    proc.port,
                    "bench-rate-sniff",
                    on_packet=count_batches,
                    subscriptions=[topics.all_log_records()],
                    qos=0,
                )
                before = await table_bytes(dsn)
                # `trigger-mesh log sync` in its own process, as from a car: this process
                # then runs the archiver alone.
                own0, t0 = own_cpu_s(), time.monotonic()
                sync = await asyncio.create_subprocess_exec(
                    str(Path(sys.executable).with_name("trigger-mesh")),
                    *("log", "sync", str(log_path), "--broker", str(proc.url)),
                    *("--prefix", topics.prefix, "--gateway", "gw-rate", "--timeout", "300"),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                said, _ = await sync.communicate()
                wall = time.monotonic() - t0
                if sync.returncode != 0:
                    raise RuntimeError(f"log sync failed: {said.decode(errors='replace')}")
                out["archiver_log_records_per_s"] = round(records / wall)
                out["archiver_log_records_per_s_stored_span"] = await stored_rate(
                    dsn, "log_records"
                )
                out["archiver_cpu_pct_log_records"] = round(100 * (own_cpu_s() - own0) / wall, 1)
                await asyncio.sleep(0.5)
                after = await table_bytes(dsn)
                # Per record synced (presence, with the 1-in-1,000 checkpoints).
                synced = await scalar(dsn, "SELECT count(*) FROM log_records")
                out["presence_record_wire_bytes"] = round(batch_bytes / synced)
                out["presence_record_pg_bytes"] = round(
                    sum(after[t] - before[t] for t in ("log_records", "logs")) / synced
                )
                assert watcher.transport is not None
                watcher.transport.close()

            # Its floor: the batch statements alone, same batches, one connection.
            batch_rows = await rows_of(
                dsn,
                "SELECT seq, prev_seq, at_ns, kind, activation_id, body, prev_hash, hash"
                " FROM log_records ORDER BY seq",
            )
        async with pg_schema() as floor_dsn:
            conn = await psycopg.AsyncConnection.connect(floor_dsn, autocommit=True)
            try:
                await migrate(conn)
                t0 = time.monotonic()
                log_id = "f" * 32
                for start in range(0, len(batch_rows), 500):
                    chunk = batch_rows[start : start + 500]
                    async with conn.transaction():
                        await conn.execute(
                            store._UPSERT_LOG, (log_id, "car-12", None, len(batch_rows))
                        )
                        # The store's own statement for new records: one binary COPY.
                        async with conn.cursor() as cur, cur.copy(store._COPY_RECORDS) as copy:
                            copy.set_types(store._COPY_TYPES)
                            for row in chunk:
                                await copy.write_row((log_id, *row, "floor"))
                out["floor_log_records_per_s"] = round(len(batch_rows) / (time.monotonic() - t0))
            finally:
                await conn.close()
    # Compared at the archiver's own pace (first to last write), start-up left out.
    out["acks_vs_floor"] = round(
        out["archiver_acks_per_s_stored_span"] / out["floor_acks_per_s"], 2
    )
    out["log_records_vs_floor"] = round(
        out["archiver_log_records_per_s_stored_span"] / out["floor_log_records_per_s"], 2
    )
    print_row("archiver rate", out)
    return out


# --- part: geo-cell commands into the cars ----------------------------------------------------
# The shipped policy's kinds that reach beyond the unit (radius > 0), each equally often.
CELL_RADII_M = (150.0, 150.0, 300.0, 300.0, 500.0, 50.0, 300.0, 100.0, 300.0)
# Cell publishes per activation in the sizing model (bench/range.py's mean): the rates are
# given for it, whatever this run's radius mix gives.
CELLS_PER_ACTIVATION = 2.65
ACTIVATIONS_PER_CAR_HOUR = (2.0, 10.0)  # planning figure, busy hour (docs/deployment.md)
# Deliveries sent in a "before" round at most (each car gets each publish).
BEFORE_DELIVERIES = 300_000
OVERHEAD_B = 100  # TCP/IP, TLS and the PUBACK per message (an estimate, as in the docs)


@dataclass(frozen=True)
class CellFleet:
    """Cars spread uniformly over a square of ``area_km2`` around CAR, three cameras each
    (a dash camera at the car, two body cameras within 100 m), the gateway at the car."""

    cars: list[list[tuple[float, float]]]  # each car's points: gateway, then its cameras
    area_km2: float


def cell_fleet(cameras: int, area_km2: float, seed: int = 20) -> CellFleet:
    import random

    from mesh.decide.geo import offset

    rng = random.Random(seed)
    half = (area_km2**0.5) * 500.0
    cars = []
    for _ in range(max(1, cameras // 3)):
        car = offset(CAR.lat, CAR.lon, rng.uniform(-half, half), rng.uniform(-half, half))
        points = [car, car]
        for _ in range(2):
            points.append(offset(car[0], car[1], rng.uniform(-100, 100), rng.uniform(-100, 100)))
        cars.append(points)
    return CellFleet(cars, area_km2)


def relay_sets(fleet: CellFleet) -> list[frozenset[str]]:
    """Each car's relayed cells: mesh/decide/relay_cells.py with the gateway's defaults."""
    from mesh.decide.relay_cells import RelayCells

    sets = []
    for points in fleet.cars:
        cells = RelayCells()
        cells.update(points, 0)
        sets.append(cells.cells)
    return sets


def cell_commands(fleet: CellFleet, count: int, seed: int = 21) -> list[list[str]]:
    """``count`` activations by random cars, at the car, with the radius mix: each one's
    cells (mesh/decide/fanout.py: no circle here needs cmd/all)."""
    import random

    from mesh.decide.cells import covering_cells

    rng = random.Random(seed)
    out = []
    for i in range(count):
        lat, lon = rng.choice(fleet.cars)[0]
        out.append(covering_cells(lat, lon, CELL_RADII_M[i % len(CELL_RADII_M)]))
    return out


def modelled_deliveries(sets: list[frozenset[str]], commands: list[list[str]]) -> int:
    """What central delivers for these commands when each car reads its relay's cells."""
    readers: Counter[str] = Counter()
    for cells in sets:
        readers.update(cells)
    return sum(readers[cell] for cells in commands for cell in cells)


async def cell_round(
    port: int, filters: list[list[str]], publishes: list[str], payload: bytes, pid: int
) -> dict[str, Any]:
    """One connection per car with ``filters[car]`` (its bridge importing every cell, or
    its relay's cells), every cell command published once at QoS 1, a barrier after: what
    each car received, and the broker's CPU."""
    barrier = f"{PREFIX}/bench/barrier"
    received = [0] * len(filters)
    done = [False] * len(filters)
    all_done = asyncio.Event()

    def on_packet_of(i: int) -> Callable[[Conn, Inbound], None]:
        def on_packet(conn: Conn, packet: Inbound) -> None:
            if packet.kind != PUBLISH:
                return
            topic, pid_in, _ = packet.publish_parts()
            if pid_in:
                conn.send(puback_packet(pid_in))
            if topic == barrier:
                done[i] = True
                if all(done):
                    all_done.set()
            else:
                received[i] += 1

        return on_packet

    limit = asyncio.Semaphore(100)

    async def one(i: int) -> Conn:
        async with limit:
            # No keepalive: these connections send no PINGREQ, and connecting 16,666 of them
            # on a busy machine takes longer than a keepalive.
            return await mqtt_client(
                port,
                f"tm-car-{i:05d}",
                on_packet=on_packet_of(i),
                subscriptions=[*filters[i], barrier],
                keepalive=0,
            )

    conns = await asyncio.gather(*(one(i) for i in range(len(filters))))
    acked = 0
    window = asyncio.Event()

    def publisher_packet(_conn: Conn, packet: Inbound) -> None:
        nonlocal acked
        if packet.kind == PUBACK:
            acked += 1
            window.set()

    pub = await mqtt_client(port, "tm-bench-publisher", on_packet=publisher_packet, keepalive=0)
    before_cpu = cpu_s(pid)
    started = time.perf_counter()
    for n, topic in enumerate(publishes, start=1):
        pub.send(publish_packet(topic, payload, qos=1, pid=n % 65535 or 1))
        while n - acked > 50:
            window.clear()
            await window.wait()
    pub.send(publish_packet(barrier, b"", qos=1, pid=1))
    await asyncio.wait_for(all_done.wait(), 600)
    seconds = time.perf_counter() - started
    broker_cpu = cpu_s(pid) - before_cpu
    for conn in [*conns, pub]:
        assert conn.transport is not None
        conn.transport.close()
    total = sum(received)
    return {
        "cars": len(filters),
        "subscriptions_per_car": round(sum(len(f) for f in filters) / len(filters), 2),
        "publishes": len(publishes),
        "deliveries": total,
        "deliveries_per_publish": round(total / len(publishes), 2),
        "seconds": round(seconds, 2),
        "broker_cpu_s": round(broker_cpu, 3),
        # The barrier is one more delivery to every car.
        "broker_us_per_delivery": round(broker_cpu / (total + len(filters)) * 1e6, 2),
    }


def cell_rates(cars: int, per_publish: float, command_b: int) -> dict[str, Any]:
    """Per second, at 2 (and 10) activations per car-hour, CELLS_PER_ACTIVATION cells each."""
    out: dict[str, Any] = {}
    for rate in ACTIVATIONS_PER_CAR_HOUR:
        publishes_s = cars * rate / 3600 * CELLS_PER_ACTIVATION
        centre = publishes_s * per_publish
        out[f"at_{rate:g}_per_car_hour"] = {
            "central_deliveries_per_s": round(centre, 1),
            "per_car_deliveries_per_s": round(centre / cars, 4),
            "per_car_bytes_per_s": round(centre / cars * (command_b + OVERHEAD_B), 1),
        }
    return out


async def cells_part(
    scenarios: list[tuple[int, float]], publishes: int, tmp: Path
) -> dict[str, Any]:
    """Cell commands into the cars, before (each car's bridge imports ``{p}/cmd/cell/+``)
    and after (each car's relay reads the cells around it), on a real mosquitto; the
    model (modelled_deliveries) beside each measurement."""
    data = payloads()
    rows: list[dict[str, Any]] = []
    measured_before: dict[int, dict[str, Any]] = {}
    raise_fd_limit(max(c for c, _ in scenarios) // 3 + 200)
    for cameras, area in scenarios:
        fleet = cell_fleet(cameras, area)
        sets = relay_sets(fleet)
        commands = cell_commands(fleet, publishes)
        topics = [f"{PREFIX}/cmd/cell/{cell}" for cells in commands for cell in cells]
        row: dict[str, Any] = {
            "cameras": cameras,
            "cars": len(fleet.cars),
            "area_km2": area,
            "activations": publishes,
            "cells_per_activation": round(len(topics) / publishes, 2),
            "relay_cells_per_car": round(sum(len(s) for s in sets) / len(sets), 2),
            "relay_cells_max": max(len(s) for s in sets),
        }
        # Before, every car gets every publish whatever the area: the first BEFORE_DELIVERIES
        # or so are enough, and one run per fleet size.
        few = topics[: max(10, BEFORE_DELIVERIES // len(sets))]
        for name, filters, sent in (
            ("before", [[f"{PREFIX}/cmd/cell/+"]] * len(sets), few),
            ("after", [[f"{PREFIX}/cmd/cell/{c}" for c in sorted(s)] for s in sets], topics),
        ):
            if name == "before" and cameras in measured_before:
                row[name] = measured_before[cameras]
                continue
            with broker(tmp, f"cells-{cameras}-{area:g}-{name}") as process:
                measured = await cell_round(
                    process.port, filters, sent, data.command, broker_pid(process)
                )
            model = (
                len(sent) * len(sets) if name == "before" else modelled_deliveries(sets, commands)
            )
            measured["modelled_deliveries"] = model
            measured["rates"] = cell_rates(
                len(sets), measured["deliveries_per_publish"], len(data.command)
            )
            row[name] = measured
            if name == "before":
                measured_before[cameras] = measured
            print_row(f"cells {cameras} cameras / {area:g} km², {name}", measured)
        rows.append(row)
    return {"command_bytes": len(data.command), "scenarios": rows}


# --- main -------------------------------------------------------------------------------------
VOLUME_TABLES = ("logs", "log_records", "presence_repeats", "presence_bases")


async def archive_volume_part(cameras: int, hours: float, tmp: Path) -> dict[str, Any]:
    """Bytes per camera-day of presence in the archive, before and after heartbeat folding.

    ``cameras`` cameras, three a car, each car with its own gateway log, for ``hours``
    simulated hours (compressed in time): every camera's presence logged at every
    heartbeat (30 s; the worst case, what the sizing in docs/deployment.md assumed), each
    camera's recording switched on or off once an hour (a change), and a signed checkpoint
    a minute per car. After: each car's log synced by the real ``LogSync`` through mosquitto
    to a real archiver on the current schema. Before: the same records as the 003 schema
    stored them, every record a row (the 003 archiver's INSERT, in a schema migrated to
    003). Bytes: ``pg_total_relation_size`` of the log tables (every partition, indexes and
    TOAST included), less the empty schema's."""
    import psycopg

    from mesh.archive.archiver import Archiver, ArchiverSettings
    from mesh.archive.migrate import available
    from mesh.journal.records import RecordKind
    from mesh.journal.signer import CheckpointSigner
    from mesh.journal.store import ActivationLog, log_id_of, read_records
    from mesh.journal.sync import LogSync

    beats = int(hours * 3600 / HEARTBEAT_S)
    cars = max(1, cameras // 3)
    start = time.time_ns() - int((hours + 1) * 3600 * NS)
    data = payloads()
    logs_made: list[Path] = []
    counts: Counter[str] = Counter()
    for car in range(cars):
        path = tmp / f"volume-{car}.db"
        log = ActivationLog(
            path, signer=CheckpointSigner(Ed25519PrivateKey.generate()), checkpoint_interval_s=1e9
        )
        base = [CameraPresence.model_validate_json(data.presence(car * 3 + k)) for k in range(3)]
        per_hour = int(3600 / HEARTBEAT_S)
        for beat in range(beats):
            t = start + int(beat * HEARTBEAT_S * NS)
            for cam in base:
                assert cam.position is not None
                body = cam.model_copy(
                    update={
                        "last_seen_ns": t,
                        "recording": (beat // per_hour) % 2 == 1,
                        "position": cam.position.model_copy(update={"fix_at_ns": t}),
                    }
                ).model_dump_json()
                log.append_json(RecordKind.PRESENCE, None, body, t)
                counts["presence"] += 1
            if beat % 2 == 1:  # a minute
                await log.checkpoint()
                counts["checkpoint"] += 1
        await log.flush()
        log.close()
        logs_made.append(path)
    out: dict[str, Any] = {
        "cameras": cars * 3,
        "cars": cars,
        "simulated_hours": hours,
        "presence_records": counts["presence"],
        "checkpoints": counts["checkpoint"],
    }
    camera_days = cars * 3 * hours / 24

    # Before: the 003 schema, every record a row.
    async with pg_schema() as dsn:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for m in available():
                if m.version <= 3:
                    await conn.execute(m.sql.encode())
            empty = {t: await relation_bytes(conn, t) for t in VOLUME_TABLES}
            for path in logs_made:
                log_id = log_id_of(path)
                records = list(read_records(path))
                for i in range(0, len(records), 500):
                    chunk = records[i : i + 500]
                    async with conn.transaction():
                        await conn.execute(
                            "INSERT INTO logs (log_id, unit_id, head_seq) VALUES (%s, %s, %s)"
                            " ON CONFLICT (log_id) DO UPDATE SET head_seq = EXCLUDED.head_seq",
                            (log_id, "car", chunk[-1].seq),
                        )
                        await conn.execute(
                            OLD_INSERT_RECORDS,
                            (
                                log_id,
                                "before",
                                [r.seq for r in chunk],
                                [r.seq - 1 for r in chunk],
                                [r.at_ns for r in chunk],
                                [r.kind for r in chunk],
                                [r.activation_id for r in chunk],
                                [r.body for r in chunk],
                                [r.prev_hash for r in chunk],
                                [r.hash for r in chunk],
                            ),
                        )
            full = {t: await relation_bytes(conn, t) - empty[t] for t in VOLUME_TABLES}
        out["before_bytes"] = sum(full.values())
        out["before_by_table"] = full
    # After: the real archiver, fed by the real log sync over MQTT.
    with broker(tmp, "volume") as proc:
        async with pg_schema() as dsn:
            topics = Topics(f"bench-{uuid.uuid4().hex[:6]}/mesh/v2")
            archiver = Archiver(
                ArchiverSettings(dsn=dsn, archiver_id="bench-volume", topics=topics),
                url=proc.url,
                client_id=f"bench-volume-{uuid.uuid4().hex[:6]}",
            )
            async with running(archiver.run()):
                await asyncio.wait_for(archiver.ready.wait(), 30)
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                    empty = {t: await relation_bytes(conn, t) for t in VOLUME_TABLES}
                t0 = time.monotonic()
                for car, path in enumerate(logs_made):
                    sync = LogSync(
                        path,
                        url=proc.url,
                        topics=topics,
                        unit_id=f"car-{car}",
                        gateway_id=f"gw-{car}",
                    )
                    result = await sync.sync(600)
                    if not result.complete:
                        raise RuntimeError(f"log sync of car {car} incomplete: {result}")
                out["sync_s"] = round(time.monotonic() - t0, 1)
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                    full = {t: await relation_bytes(conn, t) - empty[t] for t in VOLUME_TABLES}
                    cur = await conn.execute(
                        "SELECT (SELECT count(*) FROM log_records),"
                        " (SELECT count(*) FROM presence_repeats)"
                    )
                    row = await cur.fetchone()
                    assert row is not None
            out["after_rows_full"], out["after_rows_folded"] = int(row[0]), int(row[1])
            out["after_bytes"] = sum(full.values())
            out["after_by_table"] = full
    out["before_bytes_per_camera_day"] = round(out["before_bytes"] / camera_days)
    out["after_bytes_per_camera_day"] = round(out["after_bytes"] / camera_days)
    out["after_vs_before"] = round(out["after_bytes"] / max(1, out["before_bytes"]), 3)
    print_row("archive volume", out)
    return out


# What the 003 archiver ran for a log batch (every record a row), for the "before".
OLD_INSERT_RECORDS = (
    "INSERT INTO log_records (log_id, seq, prev_seq, at_ns, kind, activation_id, body,"
    " prev_hash, hash, archived_by)"
    " SELECT %s, r.*, %s FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::text[],"
    " %s::text[], %s::text[], %s::text[], %s::text[])"
    " AS r (seq, prev_seq, at_ns, kind, activation_id, body, prev_hash, hash)"
    " ON CONFLICT (log_id, seq) DO NOTHING"
)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    parts = set(args.parts.split(","))
    report: dict[str, Any] = {"bench": "fleet_scale"}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as name:
        tmp = Path(name)
        if "connections" in parts:
            counts = [int(c) for c in args.cameras.split(",")]
            report["connections"] = await connections_part(counts, args.steady_s, tmp)
        if "tls" in parts:
            counts = [int(c) for c in args.cameras.split(",")]
            report["tls"] = await tls_part(max(counts), tmp)
        if "qos1" in parts:
            report["qos1"] = await qos1_part(args.seconds, tmp)
        if "archive_volume" in parts:
            report["archive_volume"] = await archive_volume_part(
                args.volume_cameras, args.volume_hours, tmp
            )
        if "cells" in parts:
            scenarios = [
                (int(c), float(a))
                for c, a in (item.split("@") for item in args.cell_scenarios.split(","))
            ]
            report["cells"] = await cells_part(scenarios, args.cell_activations, tmp)
        if "archive" in parts:
            row = await activations_part(args.activations, tmp)
            print_row("archive", row)
            report["archive"] = row
            report["archiver_rate"] = await archiver_rate_part(args.acks, args.records, tmp)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="last line: the report as JSON")
    parser.add_argument("--quick", action="store_true", help="small counts, for development")
    parser.add_argument("--parts", default="connections,tls,qos1,archive,archive_volume,cells")
    parser.add_argument("--cameras", default="1400,5000")
    parser.add_argument("--steady-s", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="each rate measurement")
    parser.add_argument("--activations", type=int, default=200)
    parser.add_argument("--acks", type=int, default=20_000)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument(
        "--cell-scenarios",
        default="1400@400,50000@800,50000@20000",
        help="cells part: CAMERAS@KM2, comma-separated (cars spread over that area)",
    )
    parser.add_argument("--cell-activations", type=int, default=120)
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    parser.add_argument("--volume-cameras", type=int, default=30, help="archive_volume: cameras")
    parser.add_argument(
        "--volume-hours", type=float, default=24.0, help="archive_volume: simulated hours"
    )
    args = parser.parse_args()
    if args.quick:
        args.cameras, args.steady_s, args.seconds = "200,500", 5.0, 3.0
        args.activations, args.acks, args.records = 20, 2000, 2000
    if args.smoke:
        args.cameras, args.steady_s, args.seconds = "20", 1.0, 0.5
        args.activations, args.acks, args.records = 3, 200, 200
        args.volume_cameras, args.volume_hours = 3, 0.5
        args.cell_scenarios, args.cell_activations = "60@4", 5
    logs.configure("console", "warning")
    # aiomqtt warns when publishes wait for their PUBACK, as the archiver's watermarks do
    # during a sync burst: expected here. (aiomqtt sets this level when imported: above.)
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    report = asyncio.run(run(args))
    if args.json:
        print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    sys.exit(main())

"""Tools for the fault-injection tests (docs/reliability.md, "Fault injection").

- ``ChaosProxy``: an asyncio TCP proxy put between one client and the broker, whose two
  directions can pass, drop (read and discard: a black hole), or delay (fixed or
  jittered per chunk) bytes, and which can cut every connection at once and then refuse
  new ones (nothing listens) or accept and reset them;
- ``GatewayRunner``: the real ``trigger-mesh gateway --config …`` daemon as a child
  process, with a config written for the test, killed with SIGKILL (or armed with
  failpoints, mesh/ops/failpoints.py) and started again on the same log and client id;
- ``Observer``, ``TriggerSender``, ``CameraFleet``: the test's side of the broker;
- ``account``: the "lost activations" check, from the cameras (what their recorders
  started) and from the gateway's activation log, and ``audit_verify``;
- ``fill``: a disk filled to the last byte (the ``small_disk`` fixture, tests/chaos/conftest.py,
  mounts one).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from bridge.mqtt.client import Inbound, LinkDown, LinkOptions, MqttLink
from bridge.mqtt.embedded import free_port
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import TopicKind, Topics
from mesh.camera.agent import CameraAgent
from mesh.decide.admission import activation_id_for
from mesh.journal.records import FinishedEntry, RecordKind
from mesh.journal.store import read_records
from mesh.protocol.codec import PayloadError, decode, encode
from mesh.protocol.models import (
    ActivationRecord,
    CameraRole,
    Escalation,
    GatewayStatus,
    OutcomeStatus,
    TriggerEvent,
    TriggerKind,
    TriggerReceipt,
)
from mesh.security.keys import new_gateway_key
from mesh.sim.camera_fleet import CameraSpec, build_agents, wait_all_up
from tests.harness import CENTER, UNIT, spec
from triggers.manual import manual_trigger

# Three cameras in a weapon draw's 150 m (two of the car's own, one of car-7's at ~126 m)
# and one 2 km away that must never start: every trigger must start the three.
IN_RANGE = (
    spec("dash-12", UNIT, 0, role=CameraRole.DASH),
    spec("bwc-12a", UNIT, 20),
    spec("bwc-7a", "car-7", 120, 40),
)
FAR = spec("bwc-far", "car-40", 2000)


# The small_disk fixture's tmpfs (tests/chaos/conftest.py): the log (its 8 MiB pre-sized
# WAL checkpointed into it) and some room.
DISK_MB = 24


def fill(directory: Path, leave: int = 0, name: str = "filler") -> Path:
    """Write a file until the disk refuses more, then give back ``leave`` bytes; returns
    it (delete it to free the space)."""
    filler = directory / name
    chunk = b"\0" * (1 << 16)
    with filler.open("wb") as out:
        try:
            while True:
                out.write(chunk)
                out.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    if leave:
        with filler.open("r+b") as out:
            out.truncate(max(0, filler.stat().st_size - leave))
    return filler


async def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check()`` every 20 ms; fail naming ``what`` if it is not true in time."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        await asyncio.sleep(0.02)


# --- the proxy ------------------------------------------------------------------------------
class Mode(StrEnum):
    PASS = "pass"
    DROP = "drop"  # read and discard: the peer's bytes vanish, nothing is closed
    DELAY = "delay"  # each chunk waits delay_s (+ up to jitter_s) before it is forwarded


UP, DOWN = "up", "down"  # client → upstream, upstream → client


@dataclass(eq=False)
class _Pair:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class ChaosProxy:
    """A TCP proxy on a free loopback port in front of ``upstream`` (host, port).

    ``counters``: accepted, reset, cut, chunks.<dir>, dropped_bytes.<dir>,
    delayed_chunks.<dir>, upstream_failed — so a test can show its chaos happened.
    """

    def __init__(self, upstream: tuple[str, int], *, seed: int = 0) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.modes = {UP: Mode.PASS, DOWN: Mode.PASS}
        self.delay_s = 0.0
        self.jitter_s = 0.0
        self.reset_new = False
        self.counters: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._pairs: set[_Pair] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> BrokerUrl:
        return BrokerUrl(scheme="mqtt", host="127.0.0.1", port=self.port)

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen (again, on the same port)."""
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def close(self) -> None:
        self.cut("refuse")
        await asyncio.sleep(0)

    # --- what happens to the bytes ---------------------------------------------------------
    def pass_through(self) -> None:
        self.modes = {UP: Mode.PASS, DOWN: Mode.PASS}
        self.reset_new = False

    async def restore(self) -> None:
        """Everything back to normal: bytes pass, new connections are accepted."""
        self.pass_through()
        await self.start()

    def drop(self, *directions: str) -> None:
        """Black-hole these directions (both if none given)."""
        for direction in directions or (UP, DOWN):
            self.modes[direction] = Mode.DROP

    def delay(self, delay_s: float, jitter_s: float = 0.0, *directions: str) -> None:
        self.delay_s, self.jitter_s = delay_s, jitter_s
        for direction in directions or (UP, DOWN):
            self.modes[direction] = Mode.DELAY

    def cut(self, then: str = "accept") -> int:
        """Close every connection now (abort: the peers see a reset). New connections are
        then accepted (``accept``), refused — nothing listens, connecting fails at once
        (``refuse``) — or accepted and reset before a byte passes (``reset``), until
        ``restore()``. Returns how many connections were cut."""
        assert then in ("accept", "refuse", "reset"), then
        self.reset_new = then == "reset"
        if then == "refuse" and self._server is not None:
            self._server.close()
            self._server = None
        pairs, self._pairs = list(self._pairs), set()
        for pair in pairs:
            pair.abort()
        self.counters["cut"] += len(pairs)
        return len(pairs)

    # --- plumbing -----------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.reset_new:
            self.counters["reset"] += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self.counters["upstream_failed"] += 1
            writer.transport.abort()
            return
        self.counters["accepted"] += 1
        _nodelay(writer)
        _nodelay(up_writer)
        pair = _Pair(writer, up_writer)
        self._pairs.add(pair)
        pair.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, UP, pair)),
            asyncio.create_task(self._pump(up_reader, writer, DOWN, pair)),
        ]
        await asyncio.gather(*pair.tasks, return_exceptions=True)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: str,
        pair: _Pair,
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                self.counters[f"chunks.{direction}"] += 1
                mode = self.modes[direction]
                if mode is Mode.DROP:
                    self.counters[f"dropped_bytes.{direction}"] += len(chunk)
                    continue
                if mode is Mode.DELAY:
                    self.counters[f"delayed_chunks.{direction}"] += 1
                    await asyncio.sleep(self.delay_s + self._rng.uniform(0, self.jitter_s))
                    if self.modes[direction] is Mode.DROP:  # changed while it waited
                        self.counters[f"dropped_bytes.{direction}"] += len(chunk)
                        continue
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # One side gone: the other goes too (MQTT has no use for half-closed streams).
            self._pairs.discard(pair)
            pair.abort()


# --- the gateway as a child process ------------------------------------------------------------
def write_gateway_config(
    path: Path,
    *,
    broker: BrokerUrl,
    topics: Topics,
    gateway_id: str,
    log_path: Path,
    policy: dict[str, Any] | None = None,
    metrics_port: int | None = None,
) -> Path:
    """A gateway config for unit car-12 at the harness's centre (docs/config.md), whose
    log is signed by a key of its own (its public half: ``public_key_of(path)``); with
    ``metrics_port``, serving /metrics and /health there."""
    keys = new_gateway_key(path.parent / "keys", path.stem)
    config = {
        "unit": UNIT,
        "gateway_id": gateway_id,
        "broker": f"mqtt://{broker.host}:{broker.port}",
        "topic_prefix": topics.prefix,
        "log": str(log_path),
        "position": {"lat": CENTER.lat, "lon": CENTER.lon},
        "status_interval_s": 30,
        "audit": {"retention_days": None, "signing_key": str(keys.private)},
    }
    if policy is not None:
        config["policy"] = policy
    if metrics_port is not None:
        config["metrics"] = {"port": metrics_port}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def public_key_of(config: Path) -> Path:
    """The public key that verifies the log of a gateway configured by write_gateway_config."""
    return config.parent / "keys" / f"{config.stem}.pub"


class GatewayRunner:
    """``trigger-mesh gateway --config`` as a child process: start, SIGKILL, start again.

    Every run appends its output (JSON logs) to ``output_path``; ``exit_codes`` keeps how
    each run ended (-9: killed by SIGKILL, by the test or by a failpoint)."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.output_path = workdir / "gateway-output.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_ns = 0
        self.starts = 0
        self.exit_codes: list[int] = []
        self.extra_env: dict[str, str] = {}

    def start(self, failpoints: str = "") -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        env = {k: v for k, v in os.environ.items() if k != "TRIGGER_MESH_FAILPOINTS"}
        env.update(self.extra_env)
        env["PYTHONUNBUFFERED"] = "1"
        if failpoints:
            env["TRIGGER_MESH_FAILPOINTS"] = failpoints
        self.starts += 1
        with self.output_path.open("ab") as out:
            out.write(f"=== start {self.starts} failpoints={failpoints!r}\n".encode())
            out.flush()
            self.started_ns = time.time_ns()
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mesh",
                    "gateway",
                    "--config",
                    str(self.config),
                    "--log-format",
                    "json",
                    "--log-level",
                    "info",
                ],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> int:
        """SIGKILL now (no goodbye, no checkpoint); returns the exit status (-9)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        return self._reap(self.process.wait(10))

    def terminate(self, timeout_s: float = 10.0) -> int:
        """SIGTERM (an orderly stop), SIGKILL if it does not stop in time."""
        assert self.process is not None
        self.process.terminate()
        try:
            return self._reap(self.process.wait(timeout_s))
        except subprocess.TimeoutExpired:
            return self.kill()

    async def wait_exit(self, timeout_s: float) -> int | None:
        """The exit status once the process has ended by itself, or None after the timeout."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        return self._reap(self.process.returncode)

    def _reap(self, code: int) -> int:
        self.exit_codes.append(code)
        return code

    def output(self) -> str:
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    def close(self) -> None:
        """An orderly stop if it still runs: the log's tail gets its closing checkpoint."""
        if self.running:
            self.terminate()


# --- the test's side of the broker -------------------------------------------------------------
class Observer:
    """Receipts, activation records, escalations and gateway status, as dispatch sees them."""

    def __init__(self, url: BrokerUrl, topics: Topics, gateway_id: str) -> None:
        self.topics = topics
        self.receipts: dict[str, TriggerReceipt] = {}
        self.records: dict[str, ActivationRecord] = {}
        self.escalations: list[Escalation] = []
        self.statuses: list[GatewayStatus] = []
        self.link = MqttLink(
            url,
            LinkOptions(
                f"chaos-obs-{uuid.uuid4().hex[:8]}",
                subscriptions=(
                    (topics.receipt(UNIT), 1),
                    (topics.activation(UNIT, "+"), 1),
                    (topics.all_escalations(), 1),
                    (topics.gateway(gateway_id), 1),
                ),
                persistent_session=False,
            ),
        )

    def on_message(self, message: Inbound) -> None:
        parsed = self.topics.parse(message.topic)
        if parsed is None or not message.payload:
            return
        with contextlib.suppress(PayloadError):
            match parsed.kind:
                case TopicKind.RECEIPT:
                    receipt = decode(TriggerReceipt, message.payload)
                    self.receipts[receipt.event_id] = receipt
                case TopicKind.ACTIVATION:
                    record = decode(ActivationRecord, message.payload, max_bytes=1 << 24)
                    self.records[record.activation_id] = record
                case TopicKind.ESCALATION:
                    self.escalations.append(decode(Escalation, message.payload))
                case TopicKind.GATEWAY:
                    self.statuses.append(decode(GatewayStatus, message.payload))

    def online_since(self, since_ns: int) -> bool:
        """A gateway started at or after ``since_ns`` said it is online (it is connected)."""
        return any(s.online and s.started_at_ns >= since_ns for s in self.statuses)

    async def wait_gateway_up(self, runner: GatewayRunner, timeout_s: float = 20.0) -> None:
        def up() -> bool:
            if not runner.running:
                raise AssertionError(
                    f"gateway exited ({runner.process and runner.process.returncode}) "
                    f"before connecting:\n{runner.output()[-3000:]}"
                )
            return self.online_since(runner.started_ns)

        await wait_for(up, timeout_s, "gateway online")


class TriggerSender:
    """Publishes triggers as `trigger-mesh trigger` does (QoS 1 to trigger/{unit})."""

    def __init__(self, url: BrokerUrl, topics: Topics) -> None:
        self.topics = topics
        self.link = MqttLink(
            url, LinkOptions(f"chaos-send-{uuid.uuid4().hex[:8]}", persistent_session=False)
        )
        self.sent: list[TriggerEvent] = []
        self.publish_retries = 0
        self.resends = 0
        self.resent: Counter[str] = Counter()  # event id → times sent again
        self._serial = 0

    def event(self, tag: str, kind: TriggerKind = TriggerKind.WEAPON_DRAW) -> TriggerEvent:
        """A new trigger from a source of its own (distinct sources: no cooldown merge)."""
        self._serial += 1
        return manual_trigger(kind, UNIT, source_id=f"chaos-{tag}-{self._serial}")

    async def publish(self, event: TriggerEvent, timeout_s: float = 30.0) -> None:
        """Publish until the broker acknowledges it (a publish cut short is sent again)."""
        if event not in self.sent:
            self.sent.append(event)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await self.link.publish(
                    self.topics.trigger(event.unit_id),
                    encode(event),
                    wait_s=max(0.1, deadline - time.monotonic()),
                )
                return
            except LinkDown:
                if time.monotonic() > deadline:
                    raise
                self.publish_retries += 1
                await asyncio.sleep(0.05)

    async def send_until_receipt(
        self, event: TriggerEvent, observer: Observer, *, resend_s: float, timeout_s: float
    ) -> TriggerReceipt:
        """At-least-once: send again (same event id: the gateway merges it) until a receipt
        names it — what a sender must do when the broker itself can lose a message."""
        deadline = time.monotonic() + timeout_s
        first = True
        while True:
            if not first:
                self.resends += 1
                self.resent[event.event_id] += 1
            first = False
            await self.publish(event, max(0.1, deadline - time.monotonic()))
            until = min(deadline, time.monotonic() + resend_s)
            while time.monotonic() < until:
                if event.event_id in observer.receipts:
                    return observer.receipts[event.event_id]
                await asyncio.sleep(0.02)
            if time.monotonic() >= deadline:
                raise AssertionError(f"no receipt for trigger {event.event_id} in {timeout_s} s")


class CameraFleet:
    """In-process camera agents (mesh/sim/camera_fleet.py), each recording what it started."""

    def __init__(
        self,
        specs: Sequence[CameraSpec],
        url: BrokerUrl,
        topics: Topics,
        *,
        url_of: Callable[[CameraSpec], BrokerUrl] | None = None,
    ) -> None:
        self.agents: dict[str, CameraAgent] = {
            a.identity.camera_id: a
            for a in build_agents(
                specs,
                url=url,
                topics=topics,
                client_prefix=f"chaos-{uuid.uuid4().hex[:6]}-",
                now_ns=time.time_ns(),
                url_of=url_of,
            )
        }
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, timeout_s: float = 15.0) -> None:
        self.tasks = [asyncio.create_task(a.run()) for a in self.agents.values()]
        await wait_all_up(list(self.agents.values()), timeout_s)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def started(self, camera_id: str, activation_id: str) -> bool:
        """The camera's recorder records for this activation (started, or already was)."""
        return activation_id in self.agents[camera_id].simulated.activations


@contextlib.asynccontextmanager
async def running(*links: MqttLink, handler: Callable[[Inbound], None] | None = None) -> Any:
    """Run MQTT links in tasks for the block (the first gets ``handler``), up at the start."""
    tasks = [
        asyncio.create_task(link.run(handler if i == 0 and handler else lambda _m: None))
        for i, link in enumerate(links)
    ]
    try:
        await asyncio.gather(*(link.wait_up(15) for link in links))
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- accounting ------------------------------------------------------------------------------
@dataclass
class LossReport:
    """What became of every trigger sent (docs/reliability.md defines "lost")."""

    sent: int = 0
    activations: int = 0  # distinct activations the triggers ended in
    merged: int = 0  # triggers merged into an activation (a redelivery, a resend)
    started: int = 0  # triggers whose every required camera started
    unlogged: int = 0  # started, but the log has no activation record for it
    missed_escalated: list[str] = field(default_factory=list)  # expired unsent, escalated
    started_late: list[str] = field(default_factory=list)  # a camera started after expiry
    lost: list[str] = field(default_factory=list)  # event id: why
    merged_ids: set[str] = field(default_factory=set)

    def summary(self) -> str:
        return (
            f"sent {self.sent}, activations {self.activations}, merged {self.merged}, "
            f"all cameras started {self.started}, started but unlogged {self.unlogged}, "
            f"missed+escalated {len(self.missed_escalated)}, started late "
            f"{len(self.started_late)}, LOST {len(self.lost)}"
        )


@dataclass
class _LogView:
    by_event: dict[str, str] = field(default_factory=dict)  # event id → activation id
    merged: set[str] = field(default_factory=set)
    finished: dict[str, ActivationRecord] = field(default_factory=dict)
    expires: dict[str, int] = field(default_factory=dict)
    published: set[str] = field(default_factory=set)
    escalated: set[tuple[str, str]] = field(default_factory=set)
    late_starts: set[tuple[str, str]] = field(default_factory=set)


def _read_log(log_path: Path) -> _LogView:
    view = _LogView()
    for row in read_records(log_path):
        body = json.loads(row.body) if row.kind != RecordKind.CHECKPOINT else {}
        match row.kind:
            case RecordKind.ACTIVATION:
                aid = body["command"]["activation_id"]
                view.by_event.setdefault(body["trigger"]["event_id"], aid)
                view.expires[aid] = int(body["command"]["expires_at_ns"])
            case RecordKind.SUPPRESSED if body.get("activation_id"):
                view.by_event.setdefault(body["trigger"]["event_id"], body["activation_id"])
                view.merged.add(body["trigger"]["event_id"])
            case RecordKind.FINISHED:
                record = FinishedEntry.model_validate_json(row.body).record
                view.finished[record.activation_id] = record
            case RecordKind.PUBLISHED if row.activation_id:
                view.published.add(row.activation_id)
            case RecordKind.ESCALATED if row.activation_id:
                view.escalated.add((row.activation_id, body["escalation"]["camera_id"]))
            case RecordKind.ACK if row.activation_id:
                ack = body["ack"]
                started = ack.get("recording_started_at_ns")
                expires = view.expires.get(row.activation_id)
                if started is not None and expires is not None and int(started) > expires:
                    view.late_starts.add((row.activation_id, ack["camera_id"]))
    return view


def account(
    sent: Iterable[TriggerEvent], log_path: Path, fleet: CameraFleet, required: Iterable[str]
) -> LossReport:
    """Check every sent trigger on the camera side and in the gateway's log.

    A trigger is fine when every ``required`` camera (in range, online) records for its
    activation (its own, or the one it was merged into), and the log holds that
    activation finished; a camera that did not start is acceptable only if the log shows
    its command was never sent (it expired first) and the camera `missed` and escalated.
    """
    view = _read_log(log_path)
    report = LossReport()
    required = list(required)
    seen: set[str] = set()
    for event in sent:
        report.sent += 1
        aid = view.by_event.get(event.event_id)
        logged = aid is not None
        if aid is None:
            aid = activation_id_for(event.event_id)
        if event.event_id in view.merged:
            report.merged += 1
            report.merged_ids.add(event.event_id)
        seen.add(aid)
        silent = [c for c in required if not fleet.started(c, aid)]
        late = [c for c in required if (aid, c) in view.late_starts]
        if late:
            report.started_late.append(f"{event.event_id}: {aid} started late by {late}")
        if not silent:
            report.started += 1
            if not logged:
                report.unlogged += 1
            elif aid not in view.finished:
                report.lost.append(f"{event.event_id}: {aid} never finished in the log")
            continue
        if not logged:
            report.lost.append(f"{event.event_id}: no activation in the log, none started")
            continue
        record = view.finished.get(aid)
        if record is None:
            report.lost.append(f"{event.event_id}: {aid} unfinished; silent: {silent}")
            continue
        outcome = {c.camera_id: c for c in record.cameras}
        excused = [
            c
            for c in silent
            if aid not in view.published
            and c in outcome
            and outcome[c].status is OutcomeStatus.MISSED
            and (aid, c) in view.escalated
        ]
        if excused == silent:
            report.missed_escalated.append(f"{event.event_id}: {aid} expired unsent")
        else:
            states = {c: outcome[c].status.value if c in outcome else "absent" for c in silent}
            report.lost.append(f"{event.event_id}: {aid} ({record.state}) cameras: {states}")
    report.activations = len(seen)
    return report


def settled(
    sent: Iterable[TriggerEvent], log_path: Path, fleet: CameraFleet, required: Iterable[str]
) -> bool:
    """Every trigger sent has an outcome: all started and finished, or missed+escalated."""
    report = account(sent, log_path, fleet, required)
    return not report.lost and report.unlogged == 0


async def wait_settled(
    sent: Sequence[TriggerEvent],
    log_path: Path,
    fleet: CameraFleet,
    required: Sequence[str],
    timeout_s: float,
) -> LossReport:
    """Wait (up to ``timeout_s``) until every trigger has an outcome; the final report."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if settled(sent, log_path, fleet, required):
            break
        await asyncio.sleep(0.1)
    return account(sent, log_path, fleet, required)


def snapshot(log_path: Path, dest: Path) -> Path:
    """A consistent copy of the log as it is now (SQLite's online backup), to verify while
    the gateway goes on writing the original."""
    source = sqlite3.connect(f"file:{log_path}?mode=ro", uri=True)
    target = sqlite3.connect(dest)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    return dest


async def audit_verify(log_path: Path, pubkey: Path) -> tuple[int, str]:
    """``trigger-mesh audit verify LOG --pubkey KEY``: (exit status, output). 0: intact
    and signed to the end by that key; 3: intact, its tail unsigned (a SIGKILL before the
    next checkpoint); 1: tampered or damaged."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mesh",
        "audit",
        "verify",
        str(log_path),
        "--pubkey",
        str(pubkey),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


def assert_chain_intact(code: int, output: str, *, signed: bool = True) -> None:
    """Verify's verdict: intact, and (``signed``) signed to the end: the gateway stopped in
    order last, so its closing checkpoint covers whatever earlier runs left unsigned."""
    expected = (0,) if signed else (0, 3)
    assert code in expected, f"audit verify exit {code}:\n{output}"

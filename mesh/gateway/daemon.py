"""The in-car gateway daemon: triggers in, activations out, acks and presence tracked.

Intake has three lanes, each its own MQTT connection, so that a flood on one cannot queue
ahead of, or make the broker drop (its per-client queue limit), another:
- the urgent link: ``{prefix}/trigger/{unit}`` (manual and dispatch triggers) and
  ``{prefix}/cancel/{unit}``; it also carries everything the gateway publishes;
- the ack link: ``{prefix}/ack/{gateway}/+`` (at most a rate per camera, exact repeats
  once; the rest counted and summarised in the log);
- the presence link: ``{prefix}/presence/+`` (retained camera presence, for range
  resolution) at QoS 0 into a bounded queue, oldest dropped first; at most
  ``MAX_PRESENCE_BYTES`` and a rate per camera, the newest over the rate held back.
Every malformed or mismatched payload is counted, and reported at most once per ten
seconds per reason; the daemon keeps serving. In-process trigger sources (BLE, CAN) are
drained into the same coordinator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from pydantic_core import from_json

from bridge.mqtt.client import Inbound, LastWill, LinkOptions, MqttLink, ProtocolChoice
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import TopicKind, Topics
from mesh.clock import SYSTEM_CLOCK, Clock
from mesh.decide.intake_limits import DropSummaries, KeyedRate
from mesh.decide.policy import Policy
from mesh.decide.presence import PresenceRegistry
from mesh.decide.proximity import Heard, RadioProximity
from mesh.gateway.cell_relay import CellRelay, RelaySettings
from mesh.gateway.coordinator import Coordinator
from mesh.gateway.forwarder import Forwarder
from mesh.gateway.observer import GatewayObserver, GatewayReadout
from mesh.gateway.outbox import Outbox
from mesh.journal.records import AcksDroppedEntry, RecordKind, StartedEntry
from mesh.journal.retention import RetentionPass
from mesh.journal.store import ActivationLog, LogError, RetentionRefused
from mesh.ops.failpoints import failpoint
from mesh.ops.sd_notify import SystemdNotifier
from mesh.ops.tasks import Background
from mesh.protocol.codec import PayloadError, decode, encode
from mesh.protocol.models import (
    ActivationRecord,
    CameraAck,
    CameraPresence,
    CancelAck,
    CancelRequest,
    GatewayStatus,
    GeoPoint,
    RecordingMessage,
    TriggerEvent,
    TriggerReceipt,
)
from mesh.security.checks import Received, Security, signed_envelope
from triggers.source import TriggerSource

if TYPE_CHECKING:
    from mesh.decide.rejection import Rejection
    from mesh.journal.signer import CheckpointSigner

# Triggers and acks are small; anything near this is an attack or a bug.
MAX_SMALL_PAYLOAD = 64 * 1024
# Presence limits a camera MUST respect (docs/protocol.md): larger ones are dropped unread;
# over the rate, the newest is held back until the camera's budget allows, the rest dropped.
MAX_PRESENCE_BYTES = 2048
PRESENCE_RATE_PER_S = 2.0
PRESENCE_BURST = 6
# The presence link: at most this many received messages wait for the handler, and at
# most this many are read a second (30,000 cameras heartbeating every 30 s) after a first
# burst within 5 s of connecting (the retained presence of a fleet, at start). Paho's
# parsing of each packet is most of what a flood costs the gateway: under one, the trigger
# receipt p99 was 220-310 ms reading 2,000/s, about 100 ms reading 1,000/s.
PRESENCE_QUEUE = 2000
PRESENCE_READS_PER_S = 1000
PRESENCE_READ_BURST = 20_000
# Acks a camera may send before the excess is dropped unread (a camera answers each
# command once, each retry once more); over it, an ack that would be the camera's first
# answer to a live activation still goes through, at most FIRST_ACK_RATE a second.
ACK_RATE_PER_S = 50.0
ACK_BURST = 200
FIRST_ACK_RATE_PER_S = 5.0
# Dropped acks are logged as one record per camera per window, with the count.
ACK_SUMMARY_WINDOW_S = 10.0
# Acks remembered to recognise exact repeats (oldest forgotten first: a repeat of one that
# old is taken, and logged, again).
MAX_ACKS_REMEMBERED = 20_000
# Per-device limiter state kept at most (least recently used forgotten first).
MAX_LIMITED_DEVICES = 50_000
# Payload rejections are reported at most once per reason in this many seconds.
WARN_EVERY_S = 10.0
# Presence held back over its rate, at most (one per camera); past it, dropped.
MAX_HELD_PRESENCE = 1024


@dataclass(frozen=True)
class GatewaySettings:
    unit_id: str
    log_path: Path
    gateway_id: str = ""
    topics: Topics = field(default_factory=Topics)
    position: GeoPoint | None = None
    policy: Policy = field(default_factory=Policy)
    status_interval_s: float = 30.0
    signer: CheckpointSigner | None = None
    checkpoint_interval_s: float = 60.0
    retention_days: float | None = None
    retention_check_s: float = 3600.0
    # Opt-in: send the log's records to the central archive whenever the broker is up.
    sync_log: bool = False
    sync_interval_s: float = 5.0
    # Signs its commands; checks acks, and triggers and cancels that come over MQTT.
    security: Security = field(default_factory=Security)
    # Messages waiting for the broker (mesh/gateway/outbox.py); beside the log unless given.
    outbox_path: Path | None = None
    # /metrics and /health over HTTP on this port (0: any free one); None serves neither.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # Tell systemd when ready and feed its watchdog (docs/observability.md).
    systemd_notify: bool = False
    # The cameras the gateway keeps (mesh/decide/presence.py): at most this many, and none not
    # heard for this long.
    max_cameras: int = 20_000
    camera_expiry_s: float = 6 * 3600.0
    # Relay the geo-cell commands of the cells around the car from and to the central
    # broker (mesh/gateway/cell_relay.py); None: no relay (one broker, or no other cars).
    relay: RelaySettings | None = None

    @property
    def resolved_outbox_path(self) -> Path:
        return self.outbox_path or self.log_path.with_name(self.log_path.name + ".outbox")

    @property
    def issuer(self) -> str:
        return self.gateway_id or f"gw-{self.unit_id}"


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        url: BrokerUrl,
        protocol: ProtocolChoice = "auto",
        clock: Clock = SYSTEM_CLOCK,
        sources: Sequence[TriggerSource] = (),
        on_finished: Callable[[ActivationRecord], None] | None = None,
        client_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.clock = clock
        self.sources = list(sources)
        self.counters: Counter[str] = Counter()
        self.presence = PresenceRegistry(
            max_cameras=settings.max_cameras,
            expire_after_s=settings.camera_expiry_s,
            journal=_PresenceJournal(self._log_presence),
            protected=self._awaited,
        )
        self.presence_rate = KeyedRate(PRESENCE_RATE_PER_S, PRESENCE_BURST, MAX_LIMITED_DEVICES)
        self._held_presence: dict[str, bytes] = {}
        self.ack_rate = KeyedRate(ACK_RATE_PER_S, ACK_BURST, MAX_LIMITED_DEVICES)
        self.first_ack_rate = KeyedRate(FIRST_ACK_RATE_PER_S, 1, MAX_LIMITED_DEVICES)
        self.ack_drops = DropSummaries(ACK_SUMMARY_WINDOW_S, MAX_LIMITED_DEVICES)
        # Acks taken lately (least recent first), to tell a repeat from a new answer.
        self._acks_seen: OrderedDict[tuple[str, str, str, int, str], None] = OrderedDict()
        self._warned: dict[str, tuple[int, int]] = {}  # reason -> (last report, suppressed)
        self.position = settings.position
        self.started_at_ns = clock.wall_ns()
        self.ready = asyncio.Event()
        self._log = structlog.get_logger("mesh.gateway").bind(gateway=settings.issuer)
        self._background = Background()
        issuer = settings.issuer
        self.link = MqttLink(
            url,
            LinkOptions(
                client_id=client_id or f"tm-{issuer}",
                subscriptions=(
                    (self.topics.trigger(settings.unit_id), 1),
                    (self.topics.cancel(settings.unit_id), 1),
                ),
                will=LastWill(self.topics.gateway(issuer), encode(self._status(False)), 1, True),
                protocol=protocol,
                yield_between_messages=True,
            ),
            logger=self._log,
        )
        # Acks on their own connection: a camera's ack flood fills (and at its limit makes
        # the broker drop from) this session's queue, never the one triggers come by.
        self.ack_link = MqttLink(
            url,
            LinkOptions(
                client_id=f"{client_id or f'tm-{issuer}'}-acks",
                subscriptions=(
                    (self.topics.acks_for(issuer), 1),
                    (self.topics.recordings_for(issuer), 1),
                ),
                # MQTT 3.1.1 for the presence link's reason: no per-message property parsing,
                # the larger part of a flooded message's cost in paho.
                protocol="3.1.1",
                # Each camera's ack rate is applied as the socket is read, before the queue.
                admit=self._admit_ack_read,
                yield_between_messages=True,
            ),
            logger=self._log.bind(link="acks"),
        )
        # Presence on its own connection: the broker queues (and at its limit drops) a
        # presence flood there, never ahead of a trigger. QoS 0 and no session: presence is
        # state, and every connect brings the retained copy of each camera's.
        self.presence_link = MqttLink(
            url,
            LinkOptions(
                client_id=f"{client_id or f'tm-{issuer}'}-presence",
                subscriptions=((self.topics.all_presence(), 0),),
                persistent_session=False,
                # MQTT 3.1.1: paho parses MQTT 5 properties on every message received, which
                # costs more than the rest of a presence's intake together; oversized ones
                # are dropped by length instead (MQTT 5's maximum packet size would have the
                # broker drop them, at that price on every other message).
                protocol="3.1.1",
                max_inbound=PRESENCE_QUEUE,
                max_reads_per_s=PRESENCE_READS_PER_S,
                max_reads_burst=PRESENCE_READ_BURST,
                yield_between_messages=True,
            ),
            logger=self._log.bind(link="presence"),
        )
        self.relay = (
            None
            if settings.relay is None
            else CellRelay(
                settings.relay,
                local_url=url,
                topics=self.topics,
                issuer=issuer,
                points=self._relay_points,
                clock=clock,
                local_client_id=f"{client_id or f'tm-{issuer}'}-relay",
            )
        )
        # Binds its port now: one in use fails the start, before the log is opened.
        self.observer = GatewayObserver(
            self,
            host=settings.metrics_host,
            port=settings.metrics_port,
            notifier=SystemdNotifier.from_env() if settings.systemd_notify else None,
        )
        self.log = ActivationLog(
            settings.log_path,
            signer=settings.signer,
            checkpoint_interval_s=settings.checkpoint_interval_s,
            wall_ns=clock.wall_ns,
        )
        if settings.signer is None:
            self._log.warning(
                "activation log is not signed: no audit.signing_key configured",
                log=str(settings.log_path),
            )
        # In memory if its file cannot be opened (a full disk): the gateway still starts,
        # and the forwarder says so and tries the file again (mesh/gateway/outbox.py).
        self.outbox = Outbox(settings.resolved_outbox_path)
        self.forwarder = Forwarder(self.link, self.outbox, clock)
        # Sources with a radio (BLE) also tell which cameras are at the car.
        self.radios = [
            radio
            for radio in (getattr(s, "proximity", None) for s in self.sources)
            if isinstance(radio, RadioProximity)
        ]
        self.coordinator = Coordinator(
            unit_id=settings.unit_id,
            issuer=issuer,
            policy=settings.policy,
            log=self.log,
            publisher=self.forwarder,
            topics=self.topics,
            presence=self.presence,
            position=lambda: self.position,
            clock=clock,
            on_finished=on_finished,
            heard=self.heard_cameras if self.radios else None,
            security=settings.security,
            on_ack_latency=self.observer.metrics.observe_ack_latency,
        )
        if not settings.security.enforcing:
            self._log.warning("acks and remote triggers are not checked: no trust store")
        unused = settings.policy.unused_defaults()
        if unused:
            self._log.warning(
                "policy defaults that change no kind: every kind sets its own, which wins; "
                "set them per kind (kinds.<kind>) instead",
                keys=[f"defaults.{name}" for name in unused],
            )

    def heard_cameras(self) -> dict[str, Heard]:
        """Cameras whose advertised address a radio of this car hears now (strongest)."""
        now = self.clock.mono_ns()
        found: dict[str, Heard] = {}
        for radio in self.radios:
            for address, reading in radio.near(now).items():
                camera = self.presence.by_ble_address(address)
                if camera is None:
                    continue
                known = found.get(camera.camera_id)
                if known is None or reading.rssi_dbm > known.rssi_dbm:
                    found[camera.camera_id] = reading
        return found

    # --- lifecycle ------------------------------------------------------------------
    async def run(self) -> None:
        """Serve until cancelled. Unfinished activations from a previous run are resumed."""
        # Who decides and by what policy: the first thing `audit replay` reads.
        self.log.append(
            RecordKind.STARTED,
            None,
            StartedEntry(
                gateway_id=self.settings.issuer,
                unit_id=self.settings.unit_id,
                topic_prefix=self.topics.prefix,
                policy=self.settings.policy,
            ),
            self.clock.wall_ns(),
        )
        self.coordinator.rebuild_admission()
        resumed = self.coordinator.load_unfinished()
        if resumed:
            self._log.info("resuming unfinished activations", count=resumed)
        # Driven now, link or not: each command goes out when the link is up, if it has
        # not expired by then; one that has is finished as missed and escalated.
        self.coordinator.start_resumed()
        if self.outbox.depth():
            self._log.info("messages queued by an earlier run", count=self.outbox.depth())
        self._background.spawn(self.forwarder.run())
        for source in self.sources:
            self._background.spawn(self._drain(source))
        self._background.spawn(self._status_loop())
        self._background.spawn(self._summary_loop())
        self._background.spawn(self.presence_link.run(self._on_presence_message))
        self._background.spawn(self.ack_link.run(self._on_ack_message, self._ack_link_up))
        self._background.spawn(self.observer.run())  # tells systemd it is ready
        if self.relay is not None:
            self._background.spawn(self.relay.run())
        if self.settings.retention_days is not None:
            self._background.spawn(self._retention_loop(self.settings.retention_days))
        if self.settings.sync_log:
            self._background.spawn(self._sync_log())
        try:
            await self.link.serve_until_cancelled(
                self._on_message, on_connect=self._on_connect, on_stop=self._say_goodbye
            )
        finally:
            # Whatever ended the run (even with the broker down, when no goodbye is said):
            # the ack and presence links stop with it, or a restarted gateway's links would
            # fight them for their client ids.
            with contextlib.suppress(Exception):
                await self._background.cancel_all()
            self._summarise_dropped_acks(everything=True)
            with contextlib.suppress(Exception):
                await self.log.flush()
            self.log.close()
            self._close_outbox()

    def _close_outbox(self) -> None:
        """Close the outbox; one held in memory tries its file a last time first, so that
        what it could not send is kept for the next start if the disk allows by now."""
        if not self.outbox.durable:
            self.forwarder.reopen()  # the forwarder's tasks are stopped: no batch is out
        if not self.outbox.durable and (self.outbox.depth() or self.outbox.finals()):
            self._log.error(
                "outbox held in memory: its undelivered messages are lost with this process",
                path=str(self.outbox.path),
                lost=self.outbox.depth(),
                outcomes_lost=self.outbox.finals(),
                error=self.outbox.fallback_error,
            )
        self.outbox.close()

    async def _sync_log(self) -> None:
        """Keep the central archive's copy of the log current (docs/archive.md). Its own
        connection: the gateway's subscriptions and session stay as they are."""
        from mesh.journal.sync import LogSync

        sync = LogSync(
            self.settings.log_path,
            url=self.link.url,
            topics=self.topics,
            unit_id=self.settings.unit_id,
            gateway_id=self.settings.issuer,
            protocol=self.link.options.protocol,
            client_id=f"{self.link.options.client_id}-sync",
        )
        await sync.run_forever(self.settings.sync_interval_s)

    async def _on_connect(self) -> None:
        await self._publish_status(online=True)
        self._ready_if_up()

    async def _ack_link_up(self) -> None:
        self._ready_if_up()

    def _ready_if_up(self) -> None:
        # Ready once acks can come back too: a command sent before would find no one
        # listening for its answers (the ack session does not exist yet on a first start).
        if self.link.is_up and self.ack_link.is_up:
            self.ready.set()

    async def _say_goodbye(self) -> None:
        # In-flight activations stay unfinished in the log: the next start resumes them.
        # What the outbox cannot send now stays in it for the next start.
        await self.forwarder.drain(1.0)
        await self._background.cancel_all()
        for source in self.sources:
            with contextlib.suppress(Exception):
                await source.stop()
        await self.coordinator.tasks.cancel_all()
        await self.link.drain()
        await self._publish_status(online=False)

    # --- status -----------------------------------------------------------------------
    def readout(self) -> GatewayReadout:
        """What the observer (health, metrics) reads, at this moment."""
        error = self.log.write_error
        return GatewayReadout(
            log_error=None if error is None else str(error),
            link_up=self.link.is_up,
            link_connects=self.link.connects,
            outbox_depth=self.outbox.depth(),
            outbox_oldest_queued_at_ns=self.outbox.oldest_queued_at_ns(),
            outbox_fallback_error=self.outbox.fallback_error,
            in_progress=len(self.coordinator.live),
            counters=self._observed_counters(),
            sources={source.name: source.health() for source in self.sources},
        )

    async def flush_log(self) -> None:
        await self.log.flush()

    def _parts_counters(self) -> Counter[str]:
        """The daemon's, the coordinator's and the forwarder's counters, added up."""
        merged = Counter(self.counters)
        merged.update(self.coordinator.counters)
        merged.update(self.forwarder.counters)
        if self.relay is not None:
            merged.update(self.relay.counters)
            merged["relay.cells"] = len(self.relay.cells.cells)
        return merged

    def _observed_counters(self) -> Counter[str]:
        """The parts' counters and the presence lane's (registry, intake queue)."""
        merged = self._parts_counters()
        merged["presence.dropped_queue"] = self.presence_link.inbound_dropped
        merged["presence.cameras"] = len(self.presence)
        for key, count in self.presence.counters.items():
            merged[f"presence.{key}"] = count
        return merged

    def all_counters(self) -> dict[str, int]:
        merged = self._observed_counters()
        merged["outbox.depth"] = self.outbox.depth()
        merged["link.connects"] = self.link.connects
        merged["presence_link.connects"] = self.presence_link.connects
        merged["ack_link.connects"] = self.ack_link.connects
        merged["link.on_connect_failures"] = self.link.on_connect_failures
        for source in self.sources:
            for key, value in source.health().items():
                if isinstance(value, int) and not isinstance(value, bool):
                    merged[f"{source.name}.{key}"] = value
        return dict(sorted(merged.items()))

    def _status(self, online: bool) -> GatewayStatus:
        now = self.clock.wall_ns()
        return GatewayStatus(
            gateway_id=self.settings.issuer,
            unit_id=self.settings.unit_id,
            online=online,
            started_at_ns=self.started_at_ns,
            last_seen_ns=now,
            counters=self.all_counters() if online else {},
        )

    async def _publish_status(self, *, online: bool) -> None:
        await self.link.publish(
            self.topics.gateway(self.settings.issuer), encode(self._status(online)), retain=True
        )

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.status_interval_s)
            if self.link.is_up:
                with contextlib.suppress(ConnectionError):
                    await self._publish_status(online=True)

    async def _retention_loop(self, days: float) -> None:
        """Remove expired records now and then; each pass is itself a record in the log."""
        while True:
            try:
                outcome = await self.log.prune(RetentionPass(days, self.clock.wall_ns()))
            except RetentionRefused as exc:
                self.counters["log.retention_refused"] += 1
                self._log.error("retention pass refused", error=str(exc))
            except LogError as exc:
                self._log.error("retention pass failed", error=str(exc))
            else:
                if outcome.get("removed"):
                    self._log.info("expired records removed", retention_days=days, **outcome)
            await asyncio.sleep(self.settings.retention_check_s)

    # --- inputs -------------------------------------------------------------------------
    async def submit(self, event: TriggerEvent) -> TriggerReceipt:
        """Submit a trigger from an in-process source."""
        return await self.coordinator.submit(event)

    async def _drain(self, source: TriggerSource) -> None:
        """Run a source and submit what it yields. A source that cannot start (a radio
        unplugged, a bus not up) is retried; the gateway keeps serving meanwhile."""
        delay = 1.0
        while True:
            try:
                await source.start()
                break
            except Exception as exc:
                self.counters[f"sources.{source.name}.start_failures"] += 1
                self._log.error(
                    "trigger source failed to start",
                    source=source.name,
                    error=str(exc),
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        async for event in source.events():
            await self.coordinator.submit(event)

    def _on_message(self, message: Inbound) -> None:
        received_mono = self.clock.mono_ns()
        parsed = self.topics.parse(message.topic)
        if parsed is None:
            self.counters["ignored.topic"] += 1
            return
        try:
            match parsed.kind:
                case TopicKind.ACK:  # on the ack link; here if the links are shared
                    self._on_ack(parsed.args[1], message, received_mono)
                case TopicKind.RECORDING:  # likewise
                    if self._ack_admitted(parsed.args[1], message.payload, received_mono):
                        self._on_recording(parsed.args[1], message)
                case TopicKind.TRIGGER:
                    failpoint("trigger.received")
                    received = self.settings.security.open(
                        TriggerEvent, message.payload, max_bytes=MAX_SMALL_PAYLOAD
                    )
                    event = received.model
                    if event.unit_id != self.settings.unit_id:
                        raise PayloadError(
                            "unit_mismatch",
                            f"trigger for unit {event.unit_id!r} "
                            f"sent to unit {self.settings.unit_id!r}",
                        )
                    untrusted = self._check_request(received)
                    # Acknowledged to the broker only once the activation is durable.
                    settle = message.defer()
                    self._background.spawn(
                        self._submit_remote(event, received_mono, untrusted, settle)
                    )
                case TopicKind.CANCEL:
                    opened = self.settings.security.open(
                        CancelRequest, message.payload, max_bytes=MAX_SMALL_PAYLOAD
                    )
                    cancel = opened.model
                    if cancel.unit_id != self.settings.unit_id:
                        raise PayloadError(
                            "unit_mismatch",
                            f"cancel for unit {cancel.unit_id!r} "
                            f"sent to unit {self.settings.unit_id!r}",
                        )
                    self.coordinator.on_cancel(cancel, untrusted=self._check_request(opened))
                case _:
                    self.counters["ignored.topic"] += 1
        except PayloadError as exc:
            self._rejected(parsed.kind.value, exc, message)

    def _rejected(self, kind: str, exc: PayloadError, message: Inbound) -> None:
        """Counted always; reported at most once per WARN_EVERY_S per reason, with how many
        went unreported since: a flood of bad input must not become a flood of log lines."""
        key = f"rejected.{kind}.{exc.code}"
        self.counters[key] += 1
        now = self.clock.mono_ns()
        last, suppressed = self._warned.get(key, (None, 0))
        if last is not None and now - last < WARN_EVERY_S * 1e9:
            self._warned[key] = (last, suppressed + 1)
            return
        self._warned[key] = (now, 0)
        self._log.warning(
            "payload rejected",
            topic=message.topic,
            code=exc.code,
            reason=exc.reason,
            size=len(message.payload),
            unreported_since_last=suppressed,
        )

    # --- acks: their own link, a rate per camera ------------------------------------------
    def _on_ack_message(self, message: Inbound) -> None:
        received_mono = self.clock.mono_ns()
        parsed = self.topics.parse(message.topic)
        if parsed is None or parsed.kind not in (TopicKind.ACK, TopicKind.RECORDING):
            self.counters["ignored.topic"] += 1
            return
        try:
            if parsed.kind is TopicKind.RECORDING:
                self._on_recording(parsed.args[1], message)
            else:
                self._on_ack(parsed.args[1], message, received_mono, admitted=True)
        except PayloadError as exc:
            self._rejected(parsed.kind.value, exc, message)

    def _admit_ack_read(self, topic: str, payload: bytes) -> bool:
        """The ack link's filter, run as each message is read: a camera over its ack rate
        is dropped there, so its flood never queues ahead of other cameras' acks."""
        parsed = self.topics.parse(topic)
        if parsed is None or parsed.kind not in (TopicKind.ACK, TopicKind.RECORDING):
            return True  # counted as ignored by the handler
        return self._ack_admitted(parsed.args[1], payload, self.clock.mono_ns())

    def _on_ack(
        self, camera_id: str, message: Inbound, received_mono: int, *, admitted: bool = False
    ) -> None:
        if not admitted and not self._ack_admitted(camera_id, message.payload, received_mono):
            return
        received = self._open_ack(camera_id, message.payload)
        if received is None:
            return  # a cancel ack, handled
        ack = received.model
        if ack.camera_id != camera_id:
            raise PayloadError(
                "id_mismatch",
                f"ack from camera {ack.camera_id!r} on the topic of camera {camera_id!r}",
            )
        if self._ack_repeated(received, received_mono, trusted=True):
            return
        untrusted = self.settings.security.check_ack(received, self.clock.wall_ns())
        if untrusted is not None:
            if self._ack_repeated(received, received_mono, trusted=False):
                return
            self._remember_ack(received, trusted=False)
            self.coordinator.on_untrusted_ack(ack, untrusted, received.jws)
            raise PayloadError(untrusted.code, untrusted.reason)
        self._remember_ack(received, trusted=True)
        self.coordinator.on_ack(ack, received_mono_ns=received_mono, jws=received.jws)

    def _on_recording(self, camera_id: str, message: Inbound) -> None:
        """A camera's `recording` message, on the ack link at the camera's ack rate:
        verified before it is parsed, its camera the topic's, signed by that camera's key
        (checked like an ack), then logged by the coordinator (an untrusted one that it
        can read, marked, as evidence)."""
        security = self.settings.security
        received = security.open(RecordingMessage, message.payload, max_bytes=MAX_SMALL_PAYLOAD)
        recording = received.model
        if recording.camera_id != camera_id:
            raise PayloadError(
                "id_mismatch",
                f"recording of camera {recording.camera_id!r} on the topic of camera {camera_id!r}",
            )
        untrusted = security.check_ack(received, self.clock.wall_ns())
        self.coordinator.on_recording(recording, untrusted=untrusted, jws=received.jws)
        if untrusted is not None:
            raise PayloadError(untrusted.code, untrusted.reason)

    def _ack_admitted(self, camera_id: str, payload: bytes, mono: int) -> bool:
        """Within the camera's ack rate; or over it, still its first answer to a live
        activation (a peek at the id, no signature check), at FIRST_ACK_RATE_PER_S. The
        rest is dropped unread, counted, and summarised in the log once per window."""
        if self.ack_rate.allow(camera_id, mono):
            return True
        activation_id = _peek_activation_id(payload)
        if (
            activation_id is not None
            and self.coordinator.awaits_ack(activation_id, camera_id)
            and self.first_ack_rate.allow(camera_id, mono)
        ):
            self.counters["acks.over_rate_first"] += 1
            return True
        self.counters["acks.dropped_rate"] += 1
        self.ack_drops.drop(camera_id, self.clock.wall_ns(), mono)
        return False

    def _ack_repeated(self, received: Received[CameraAck], mono: int, *, trusted: bool) -> bool:
        """The same answer (camera, activation, status, attempt) as one already taken:
        counted in the camera's summary, not logged again. A trusted one is only ever
        shadowed by a trusted one, so a forgery sent first cannot hide the genuine ack;
        a refused one only by the same bytes signed the same way."""
        key = _ack_key(received, trusted)
        if key not in self._acks_seen:
            return False
        self._acks_seen.move_to_end(key)
        self.counters["acks.repeated"] += 1
        self.ack_drops.drop(received.model.camera_id, self.clock.wall_ns(), mono)
        return True

    def _remember_ack(self, received: Received[CameraAck], *, trusted: bool) -> None:
        self._acks_seen[_ack_key(received, trusted)] = None
        while len(self._acks_seen) > MAX_ACKS_REMEMBERED:
            self._acks_seen.popitem(last=False)

    async def _summary_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._summarise_dropped_acks()

    def _summarise_dropped_acks(self, *, everything: bool = False) -> None:
        for window in self.ack_drops.due(self.clock.mono_ns(), everything=everything):
            self._log.warning(
                "acks dropped over the camera's rate", camera=window.key, dropped=window.dropped
            )
            entry = AcksDroppedEntry(
                camera_id=window.key,
                dropped=window.dropped,
                first_at_ns=window.started_ns,
                last_at_ns=window.last_ns,
                reason=(
                    f"over {ACK_RATE_PER_S:g} acks/s (burst {ACK_BURST}), "
                    "or repeating an ack already taken"
                ),
            )
            try:
                self.log.append(RecordKind.ACKS_DROPPED, None, entry, self.clock.wall_ns())
            except LogError as exc:
                self.counters["log.write_failures"] += 1
                self._log.error("log append failed", kind="acks_dropped", error=str(exc))

    def _open_ack(self, camera_id: str, message: bytes) -> Received[CameraAck] | None:
        """An ack, its signature verified before it is parsed; or None for a cancel ack,
        which goes to ``_on_cancel_ack``."""
        security = self.settings.security
        payload, jws, key = security.unwrap(message, max_bytes=MAX_SMALL_PAYLOAD)
        try:
            return Received(decode(CameraAck, payload, max_bytes=MAX_SMALL_PAYLOAD), jws, key)
        except PayloadError as exc:
            if exc.code != "wrong_type":
                raise
        cancel_ack = decode(CancelAck, payload, max_bytes=MAX_SMALL_PAYLOAD)
        self._on_cancel_ack(camera_id, Received(cancel_ack, jws, key))
        return None

    def _on_cancel_ack(self, camera_id: str, received: Received[CancelAck]) -> None:
        """A camera's answer to a record-cancel, on its ack topic: checked like an ack,
        then logged by the coordinator (an untrusted one too, marked, as evidence)."""
        ack = received.model
        if ack.camera_id != camera_id:
            raise PayloadError(
                "id_mismatch",
                f"cancel ack from camera {ack.camera_id!r} on the topic of camera {camera_id!r}",
            )
        untrusted = self.settings.security.check_ack(received, self.clock.wall_ns())
        self.coordinator.on_cancel_ack(ack, untrusted=untrusted, jws=received.jws)
        if untrusted is not None:
            raise PayloadError(untrusted.code, untrusted.reason)

    async def _submit_remote(
        self,
        event: TriggerEvent,
        received_mono: int,
        untrusted: Rejection | None,
        settle: Callable[[], None],
    ) -> None:
        """A trigger from MQTT. Its PUBACK waits until the activation is in the log, so a
        crash before that gets it again (same event id: merged if it did get logged).
        Cancelled (the gateway stopping) means not acknowledged: delivered again."""
        try:
            await self.coordinator.submit(
                event, received_mono_ns=received_mono, untrusted=untrusted
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            self._log.exception("trigger not handled", event_id=event.event_id)
        settle()

    def _check_request(
        self, received: Received[TriggerEvent] | Received[CancelRequest]
    ) -> Rejection | None:
        """A remote trigger or cancel: signed by dispatch or by this gateway's terminal.
        A refused one is still logged and answered (the coordinator refuses it)."""
        request = received.model
        problem = self.settings.security.check_request(
            received, self.settings.issuer, self.clock.wall_ns()
        )
        if problem is not None:
            self.counters[f"rejected.{request.type}.{problem.code}"] += 1
            self._log.warning(
                "request refused",
                type=request.type,
                unit=request.unit_id,
                code=problem.code,
                reason=problem.reason,
            )
        return problem

    # --- presence: its own link, a size and a rate per camera ------------------------------
    def _on_presence_message(self, message: Inbound) -> None:
        parsed = self.topics.parse(message.topic)
        if parsed is None or parsed.kind is not TopicKind.PRESENCE:
            self.counters["ignored.topic"] += 1
            return
        camera_id = parsed.args[0]
        try:
            if len(message.payload) > MAX_PRESENCE_BYTES:
                raise PayloadError(
                    "too_large",
                    f"presence of {len(message.payload)} bytes, over {MAX_PRESENCE_BYTES}",
                )
            now = self.clock.mono_ns()
            if not self.presence_rate.allow(camera_id, now):
                self._hold_presence(camera_id, message.payload, now)
                return
            if self._held_presence.pop(camera_id, None) is not None:
                self.counters["presence.dropped_rate"] += 1  # superseded by this newer one
            self._apply_presence(camera_id, message.payload, now)
        except PayloadError as exc:
            self._rejected("presence", exc, message)

    def _hold_presence(self, camera_id: str, payload: bytes, now: int) -> None:
        """Over the camera's rate: keep the newest aside, applied when the budget allows
        (presence is state: the newest is the one that matters)."""
        if camera_id in self._held_presence:
            self.counters["presence.dropped_rate"] += 1  # the one it replaces
        elif len(self._held_presence) >= MAX_HELD_PRESENCE:
            self.counters["presence.dropped_rate"] += 1
            return
        else:
            wait_s = self.presence_rate.wait_ns(camera_id, now) / 1e9
            asyncio.get_running_loop().call_later(wait_s, self._release_presence, camera_id)
        self.counters["presence.held"] += 1
        self._held_presence[camera_id] = payload

    def _release_presence(self, camera_id: str) -> None:
        payload = self._held_presence.pop(camera_id, None)
        if payload is None:
            return
        now = self.clock.mono_ns()
        if not self.presence_rate.allow(camera_id, now):
            self.counters["presence.held"] -= 1  # counted again as it goes back
            self._hold_presence(camera_id, payload, now)
            return
        try:
            self._apply_presence(camera_id, payload, now)
        except PayloadError as exc:
            self._rejected("presence", exc, Inbound(self.topics.presence(camera_id), payload, True))

    def _apply_presence(self, camera_id: str, payload: bytes, now: int) -> None:
        if not payload:  # a cleared retained message: the camera was removed
            self.presence.remove(camera_id)
            return
        presence = decode(CameraPresence, payload, max_bytes=MAX_PRESENCE_BYTES)
        if presence.camera_id != camera_id:
            raise PayloadError(
                "id_mismatch",
                f"presence of camera {presence.camera_id!r} on the topic of camera {camera_id!r}",
            )
        self.counters["presence.applied"] += 1
        self.presence.update(presence, now)

    def _relay_points(self) -> list[tuple[float, float]]:
        """Where the car is: its online cameras' last fixes, and the gateway's position."""
        points = [
            (p.position.lat, p.position.lon)
            for p in self.presence.snapshot()
            if p.online and p.position is not None
        ]
        if self.position is not None:
            points.append((self.position.lat, self.position.lon))
        return points

    def _awaited(self, camera_id: str) -> bool:
        """A live activation expects this camera: the registry keeps it whatever its age."""
        return any(camera_id in live.tracker.cameras for live in self.coordinator.live.values())

    def _log_presence(self, camera_id: str, body: str) -> None:
        try:
            self.log.append_json(RecordKind.PRESENCE, None, body, self.clock.wall_ns())
        except LogError as exc:
            self.counters["log.write_failures"] += 1
            self._log.error("log append failed", kind="presence", camera=camera_id, error=str(exc))


@dataclass(frozen=True)
class _PresenceJournal:
    """Range resolution reads presence, so the log keeps what it read, in order, for
    `audit replay` (mesh/decide/presence.py says when)."""

    write: Callable[[str, str], None]  # camera, record body

    def presence(self, presence: CameraPresence) -> None:
        self.write(presence.camera_id, presence.model_dump_json())

    def removed(self, camera_id: str, reason: str) -> None:
        self.write(
            camera_id, json.dumps({"camera_id": camera_id, "removed": True, "reason": reason})
        )


def _ack_key(received: Received[CameraAck], trusted: bool) -> tuple[str, str, str, int, str]:
    """What makes an ack the same answer again. A refused one is the same only with the
    same signature: each different one is evidence, logged."""
    ack = received.model
    if trusted:
        return (ack.camera_id, ack.activation_id, ack.status.value, ack.attempt, "")
    signature = received.signature or "unsigned"
    return (ack.camera_id, ack.activation_id, ack.status.value, ack.attempt, signature)


def _peek_activation_id(message: bytes) -> str | None:
    """The activation an ack names, read without validating it or its signature (small
    messages only): it only decides whether the ack is read, never what it means."""
    if len(message) > 8192:
        return None
    try:
        jws = signed_envelope(message)
        data = from_json(message if jws is None else jws.payload_bytes)
    except (ValueError, PayloadError):
        return None
    found = data.get("activation_id") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None

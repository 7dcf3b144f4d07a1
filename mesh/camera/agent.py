"""The camera side of protocol v2, as a library: presence, commands, recorder, acks.

Runs real cameras' gateways-to-recorder glue and, with SimulatedRecorder, the simulated
fleet used by the demo, the tests and the benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from bridge.mqtt.client import Inbound, LastWill, LinkOptions, MqttLink, ProtocolChoice
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import TopicKind, Topics
from mesh.camera import control
from mesh.camera.intake import (
    LANE_OF,
    MAX_COMMAND_BYTES,
    UNKNOWN_ISSUER,
    CommandIntake,
    IssuerBudget,
    Lane,
    Queued,
    claimed_issuer,
)
from mesh.camera.recording.base import (
    FaultChanged,
    FaultCode,
    Recorder,
    RecorderEvent,
    RecorderFault,
    Recording,
    RecordingStart,
    RecordingStarted,
    RecordingStopped,
    StopReason,
)
from mesh.camera.recording.manifest import DeviceInfo, write_manifest
from mesh.camera.recording.simulated import SimulatedRecorder
from mesh.clock import SYSTEM_CLOCK, Clock
from mesh.decide.camera import Action, Binding, CameraView, cancel_refusal, decide
from mesh.decide.cells import cell_of
from mesh.decide.rejection import Rejection
from mesh.protocol.codec import PayloadError, decode, encode
from mesh.protocol.jws import Jws
from mesh.protocol.models import (
    MAX_RECORDING_FILES,
    MAX_STOP_NOTE,
    AckStatus,
    CameraAck,
    CameraPresence,
    CameraRole,
    CancelAck,
    CancelOutcome,
    GeoPoint,
    Position,
    RecordCancel,
    RecorderFaultInfo,
    RecordingEvent,
    RecordingFile,
    RecordingMessage,
    RecordingStopReason,
    RecordStart,
)
from mesh.security.checks import (
    CommandProblem,
    Received,
    ReplayGuard,
    Security,
    signed_envelope,
)
from mesh.security.trust import KeyRole

# Remember this many recent activations, so a repeated command is recognised.
_HANDLED_MAX = 4096
# Claims (issuers) remembered per activation id; past it the oldest is forgotten: its
# recording goes on (the recorder keeps the claim), and its cancel is no longer obeyed.
# Each issuer needs a trusted key of its own, so a real id sees one or two.
_CLAIMS_PER_ACTIVATION = 8
# Acks kept for inspection (demo, tests); a fleet of simulated cameras must not hoard them.
_ACKS_KEPT = 256
# Presence changes wait this long and coalesce: acks are urgent, presence is not.
_PRESENCE_COALESCE_S = 0.5
# Refused commands are answered with a `rejected` ack, at most this many per second: a
# flood of forged broadcasts must not become a flood of acks from every camera.
_REJECT_ACKS_PER_S = 10.0
# Messages read off each connection and not yet sorted into lanes, at most (the client
# library's queue; past it the oldest is shed, acknowledged, and counted in the link's
# ``inbound_dropped``). The urgent connection carries a few commands a second in service.
_URGENT_INBOUND_MAX = 1024
_BROADCAST_INBOUND_MAX = 64
# A kind of warning (a refusal code, a full lane) is logged at most this often.
_WARN_EVERY_NS = 1_000_000_000
# `recording` messages not yet acknowledged by the broker (the link down), at most: past
# it the oldest is dropped, counted (``recordings.dropped_outbox``) and logged. A start
# and a stop per recording and issuer: 256 is a long outage's worth of recordings.
RECORDING_OUTBOX_MAX = 256
# A recorder that has not started within this long is taken as faulty (`rejected`): the
# commands behind the one that started it wait for it.
START_TIMEOUT_S = 10.0
# A recorder supervisor that failed is started again after this pause.
_RECORDER_RESTART_S = 1.0
# Recordings whose claims (who to tell when they stop) are remembered, at most.
_RECORDING_CLAIMS_KEPT = 16
# A recorder fault's reason in presence, at most (characters; the wire allows 256): 120
# characters escaped as JSON \uXXXX are 720 bytes, which a presence of 2,048 bytes holds.
_FAULT_REASON_MAX = 120
# Claims one recording names in its `recording` messages, at most (the wire's bound).
_CLAIMS_PER_RECORDING = 64


@dataclass
class _Acted:
    """A claim: an activation this camera started or joined a recording for, at the
    command of one issuer."""

    status: AckStatus
    binding: Binding  # who may cancel it, until when
    cancelled: bool = False


@dataclass(frozen=True)
class CameraIdentity:
    camera_id: str
    unit_id: str
    role: CameraRole
    officer: str | None = None
    groups: tuple[str, ...] = ()
    ble_address: str | None = None  # what the camera advertises from, if it does
    model: str = ""  # make and model, written into evidence manifests
    serial: str = ""  # the device's serial number, likewise


class CameraAgent:
    def __init__(
        self,
        identity: CameraIdentity,
        *,
        url: BrokerUrl,
        topics: Topics,
        position: GeoPoint | None,
        accuracy_m: float | None = 5.0,
        recorder: Recorder | None = None,
        clock: Clock = SYSTEM_CLOCK,
        protocol: ProtocolChoice = "auto",
        heartbeat_s: float = 30.0,
        client_id: str | None = None,
        asleep: bool = False,
        security: Security | None = None,
        control_socket: Path | None = None,
    ) -> None:
        self.identity = identity
        # The local API (mesh/camera/control.py): an officer's stop; None: no socket.
        self.control_socket = control_socket
        self.security = security or Security()
        self._replays = ReplayGuard()
        self._reject_budget = _REJECT_ACKS_PER_S
        self._reject_refill_mono = clock.mono_ns()
        self.asleep = asleep
        self.topics = topics
        self.clock = clock
        self.position = position
        self.accuracy_m = accuracy_m
        self.recorder: Recorder = recorder or SimulatedRecorder(
            powered_on_ns=clock.wall_ns(), camera_id=identity.camera_id
        )
        if isinstance(self.recorder, SimulatedRecorder) and not self.recorder.camera_id:
            self.recorder.camera_id = identity.camera_id
        self.recorder.listen(self._on_recorder_event)
        if asleep:
            self.recorder.standby()
        # Held while a command is decided and acted on (a start awaited): a second command
        # for the same activation waits for the first's start and is then a duplicate.
        self._deciding = asyncio.Lock()
        # Recording id -> the claims (activation id, issuer) it was started or joined for:
        # who is told when it stops.
        self._recording_claims: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()
        # `recording` messages (topic, payload) until the broker has them (QoS 1).
        self._recording_outbox: deque[tuple[str, bytes]] = deque()
        self._recording_outbox_changed = asyncio.Event()
        # Its sender runs only while there is something to send and the agent runs: a
        # fleet of idle cameras has no task for it.
        self._recording_sender: asyncio.Task[None] | None = None
        self._recorder_task: asyncio.Task[None] | None = None
        self._recorder_restart: asyncio.TimerHandle | None = None
        self._serving = False
        self.recordings_sent: list[RecordingMessage] = []
        self.heartbeat_s = heartbeat_s
        self.counters: Counter[str] = Counter()
        self.acks_sent: list[CameraAck] = []
        self.cancel_acks_sent: list[CancelAck] = []
        # Activation id -> issuer -> claim. Keyed by both: the same id from another issuer
        # is another claim, never a duplicate of this one.
        self._handled: OrderedDict[str, dict[str, _Acted]] = OrderedDict()
        self._intake = CommandIntake(clock.mono_ns())
        self._intake_ready = asyncio.Event()
        self._issuer_budget = IssuerBudget()
        # Own-topic messages admitted per claimed issuer, as they are read.
        self._own_budget = IssuerBudget()
        self._warned: dict[str, tuple[int | None, int]] = {}
        self._presence_task: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("mesh.camera").bind(camera=identity.camera_id)
        cid = identity.camera_id
        # Three connections: its unit's and cell's commands, its acks, presence and will
        # on the main one; its own topic, which any gateway credential may write (for
        # retries), on a second; everyone's ``cmd/all`` on a third. A connection is read
        # in order and the broker queues each client's messages apart, so a flood on one
        # cannot hold back a command on another.
        base_id = client_id or f"tm-cam-{cid}"
        self.link = MqttLink(
            url,
            LinkOptions(
                client_id=base_id,
                subscriptions=self._subscriptions(),
                will=self._will(),
                session_expiry_s=600,
                protocol=protocol,
                max_inbound=_URGENT_INBOUND_MAX,
                # Its session from versions that read these on this connection.
                unsubscribe=(topics.command_all(), topics.command_camera(cid)),
            ),
            logger=self._log,
        )
        self.own_link = MqttLink(
            url,
            LinkOptions(
                client_id=f"{base_id}-own",
                subscriptions=((topics.command_camera(cid), 1),),
                session_expiry_s=600,
                protocol="3.1.1" if protocol == "auto" else protocol,
                # Sorted into the fair lane as each message is read: a flood in one
                # issuer's name never waits in a queue ahead of another issuer's retry.
                take=self._take_own,
            ),
            logger=self._log.bind(link="own"),
        )
        self.broadcast_link = MqttLink(
            url,
            LinkOptions(
                client_id=f"{base_id}-all",
                subscriptions=((topics.command_all(), 1),),
                session_expiry_s=600,
                # MQTT 5 buys nothing here, and its per-message properties cost the
                # client library more to parse than the rest of a message.
                protocol="3.1.1" if protocol == "auto" else protocol,
                max_inbound=_BROADCAST_INBOUND_MAX,
            ),
            logger=self._log.bind(link="cmd/all"),
        )
        self._resubscribe_task: asyncio.Task[None] | None = None

    @property
    def simulated(self) -> SimulatedRecorder:
        """The recorder, known to be the simulation (tests, the demo, simulated fleets)."""
        assert isinstance(self.recorder, SimulatedRecorder), type(self.recorder)
        return self.recorder

    @property
    def cell(self) -> str | None:
        """The geo cell of the current fix: commands for it arrive on its topic."""
        return None if self.position is None else cell_of(self.position.lat, self.position.lon)

    def _subscriptions(self) -> tuple[tuple[str, int], ...]:
        ident = self.identity
        subs = [(self.topics.command_unit(ident.unit_id), 1)]
        if self.cell is not None:
            subs.append((self.topics.command_cell(self.cell), 1))
        return tuple(subs)

    # --- lifecycle --------------------------------------------------------------------
    async def run(self) -> None:
        """Serve until cancelled; on cancellation say goodbye (offline presence). A control
        socket that cannot be made raises ``control.ControlError`` before anything runs."""
        path = self.control_socket
        sock = None if path is None else control.bind_socket(path)
        local = (
            None
            if path is None
            else asyncio.create_task(
                control.serve(path, self.stop_recording, self.control_status, sock)
            )
        )
        self._run_recorder()
        heartbeat = asyncio.create_task(self._heartbeat())
        commands = asyncio.create_task(self._serve_commands())
        self._serving = True
        self._kick_sender()
        broadcast = asyncio.create_task(self.broadcast_link.run(self._on_message))
        own = asyncio.create_task(self.own_link.run(self._on_message))
        try:
            await self.link.serve_until_cancelled(
                self._on_message, on_connect=self._announce, on_stop=self._say_goodbye
            )
        finally:
            if local is not None:
                local.cancel()
                await asyncio.gather(local, return_exceptions=True)
            heartbeat.cancel()
            commands.cancel()
            self._serving = False
            if self._recording_sender is not None:
                self._recording_sender.cancel()
            broadcast.cancel()
            own.cancel()
            # The link was down at the end: the stop is still made (and its message lost
            # with the process; the recording itself is closed).
            with contextlib.suppress(Exception):
                await self._stop_recording(StopReason.SHUTDOWN, "")
            if self._recorder_restart is not None:
                self._recorder_restart.cancel()
            recorder = self._recorder_task
            if recorder is not None:
                recorder.cancel()
                await asyncio.gather(recorder, return_exceptions=True)
            with contextlib.suppress(asyncio.CancelledError):
                await broadcast
            with contextlib.suppress(asyncio.CancelledError):
                await own
            if self._presence_task is not None:
                self._presence_task.cancel()

    def _run_recorder(self) -> None:
        self._recorder_restart = None
        self._recorder_task = asyncio.create_task(self.recorder.run())
        self._recorder_task.add_done_callback(self._recorder_ended)

    def _recorder_ended(self, task: asyncio.Task[None]) -> None:
        """The recorder's supervisor returned (the simulation's does at once) or failed: a
        failure is logged, counted and the supervisor started again after a pause; the
        agent goes on answering meanwhile (its starts say what the recorder's fault is)."""
        if task.cancelled() or task.exception() is None:
            return
        self.counters["recorder.run_failed"] += 1
        self._log.error("recorder stopped working", error=repr(task.exception()))
        if self._serving:
            self._recorder_restart = asyncio.get_running_loop().call_later(
                _RECORDER_RESTART_S, self._run_recorder
            )

    async def _say_goodbye(self) -> None:
        await self.stop_recording(StopReason.SHUTDOWN)
        await self.recordings_flushed(2.0)
        await self.link.drain()
        await self._publish_presence(online=False)

    async def _announce(self) -> None:
        await self._publish_presence(online=True)
        # The will sent if this connection dies carries the position we just announced.
        self.link.set_will(self._will())

    def _will(self) -> LastWill:
        return LastWill(
            self.topics.presence(self.identity.camera_id),
            encode(self.presence(online=False)),
            qos=1,
            retain=True,
        )

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if self.link.is_up:
                with contextlib.suppress(ConnectionError):
                    await self._publish_presence(online=True)

    def presence(self, *, online: bool) -> CameraPresence:
        now = self.clock.wall_ns()
        position = None
        if self.position is not None:
            position = Position(
                lat=self.position.lat,
                lon=self.position.lon,
                accuracy_m=self.accuracy_m,
                fix_at_ns=now,
            )
        return CameraPresence(
            camera_id=self.identity.camera_id,
            unit_id=self.identity.unit_id,
            role=self.identity.role,
            online=online,
            recording=online and self.recorder.is_recording(now),
            position=position,
            last_seen_ns=now,
            officer=self.identity.officer,
            groups=self.identity.groups,
            asleep=self.asleep,
            ble_address=self.identity.ble_address,
            recorder_fault=self._fault_info(),
        )

    def _fault_info(self) -> RecorderFaultInfo | None:
        fault = self.recorder.fault
        if fault is None:
            return None
        # Short: a presence must stay within its 2,048 bytes (docs/protocol.md).
        return RecorderFaultInfo(code=fault.code.value, reason=fault.reason[:_FAULT_REASON_MAX])

    async def _publish_presence(self, *, online: bool) -> None:
        await self.link.publish(
            self.topics.presence(self.identity.camera_id),
            encode(self.presence(online=online)),
            qos=1,
            retain=True,
        )

    def move_to(self, position: GeoPoint | None) -> None:
        """A new GPS fix: remembered at once, announced shortly (coalesced). Entering
        another cell moves the cell subscription with it."""
        before = self.cell
        self.position = position
        if self.cell != before:
            self._resubscribe_task = asyncio.create_task(
                self.link.set_subscriptions(self._subscriptions())
            )
        self._presence_changed()

    async def settled(self) -> None:
        """Wait for a subscription change under way (tests, simulations)."""
        if self._resubscribe_task is not None:
            await self._resubscribe_task

    def set_asleep(self, asleep: bool) -> None:
        """Standby (asleep: no pre-event buffering) or ready: announced with the next
        presence."""
        self.asleep = asleep
        if asleep:
            self.recorder.standby()
        else:
            self.recorder.wake(self.clock.wall_ns())
        self._presence_changed()

    def _presence_changed(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # driven without an event loop (a unit test): nothing to announce
        if self._presence_task is None or self._presence_task.done():
            self._presence_task = asyncio.create_task(self._publish_presence_later())

    async def _publish_presence_later(self) -> None:
        await asyncio.sleep(_PRESENCE_COALESCE_S)
        with contextlib.suppress(ConnectionError):
            await self._publish_presence(online=True)

    # --- commands ---------------------------------------------------------------------
    def _on_message(self, message: Inbound) -> None:
        """Intake, called for every message as the link reads it: sort it into its lane
        and go back to reading. The checks run in ``_serve_commands``, urgent lane first."""
        parsed = self.topics.parse(message.topic)
        lane = None if parsed is None else LANE_OF.get(parsed.kind)
        if parsed is None or lane is None:
            self.counters["ignored.topic"] += 1
            return
        if self._too_large(lane, message.topic, message.payload):
            return
        self._queue(Queued(lane, parsed.kind, message.topic, message.payload, self.clock.wall_ns()))

    def _too_large(self, lane: Lane, topic: str, payload: bytes) -> bool:
        """Past the size limit: dropped unparsed, refused as the codec would refuse it."""
        if len(payload) <= MAX_COMMAND_BYTES:
            return False
        self.counters["rejected.command.too_large"] += 1
        self._warn(
            "command rejected",
            f"too_large.{lane.name}",
            topic=topic,
            code="too_large",
            reason=f"{len(payload)} bytes exceeds the {MAX_COMMAND_BYTES}-byte limit",
        )
        return True

    def _queue(self, item: Queued) -> None:
        dropped = self._intake.put(item)
        if dropped:
            name = item.lane.name.lower()
            self.counters[f"intake.dropped.{name}"] += dropped
            self._warn("command dropped: lane full, oldest shed", f"full.{name}", lane=name)
        self._intake_ready.set()

    def _take_own(self, topic: str, payload: bytes) -> None:
        """A message on this camera's own topic, as it is read: too big, or over its
        claimed issuer's budget, dropped at once; else queued under that issuer in the
        fair lane. An issuer the camera has no key for counts as one unknown issuer, so
        made-up names cannot buy fresh budgets."""
        if self._too_large(Lane.OWN, topic, payload):
            return
        key = self._claimed_issuer(payload)
        if not self._own_budget.allow(key, self.clock.mono_ns()):
            self.counters["intake.dropped.own_issuer_rate"] += 1
            self._warn("command dropped: issuer over its rate", "own_issuer_rate", issuer=key)
            return
        received = self.clock.wall_ns()
        self._queue(Queued(Lane.OWN, TopicKind.COMMAND_CAMERA, topic, payload, received, key))

    def _claimed_issuer(self, payload: bytes) -> str:
        """Whose queue and budget a message on the own topic goes to, before any check:
        with a trust store, the gateway or dispatch console its key speaks for (unsigned,
        or an unknown or other key: the one unknown issuer, for they will be refused);
        without one, the issuer its JSON names."""
        trust = self.security.trust
        try:
            jws = signed_envelope(payload)
        except PayloadError:
            return UNKNOWN_ISSUER
        if trust is None:
            issuer = claimed_issuer(payload if jws is None else _payload_of(jws))
            return UNKNOWN_ISSUER if issuer is None else issuer
        signer = None if jws is None else trust.known_subject(jws.kid)
        if signer is None or signer[0] not in (KeyRole.GATEWAY, KeyRole.DISPATCH):
            if jws is None and not self.security.require_signed:
                issuer = claimed_issuer(payload)
                if issuer is not None and self._may_issue(issuer):
                    return issuer
            return UNKNOWN_ISSUER
        return signer[1]

    def _may_issue(self, issuer: str) -> bool:
        """Whether ``issuer`` has a key this camera trusts for commands (any name does in
        an unsigned fleet)."""
        trust = self.security.trust
        if trust is None:
            return True
        return trust.has_subject(KeyRole.GATEWAY, issuer) or trust.has_subject(
            KeyRole.DISPATCH, issuer
        )

    @property
    def intake_depth(self) -> int:
        """Commands read but not yet checked (bounded by the lanes' capacities)."""
        return len(self._intake)

    @property
    def intake_deepest(self) -> int:
        return self._intake.deepest

    async def _serve_commands(self) -> None:
        """Check and act on queued commands, most urgent lane first, for ever."""
        while True:
            now = self.clock.mono_ns()
            item = self._intake.pop(now)
            if item is None:
                wait_s = self._intake.wait_s(now)
                self._intake_ready.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._intake_ready.wait()
                continue
            try:
                await self._check_in(item)
            except Exception:
                self._log.exception("command not handled", topic=item.topic)
            # Back to the loop after each one: the link may have read something more urgent.
            await asyncio.sleep(0)

    async def _check_in(self, item: Queued) -> None:
        """On a shared topic, the issuer's budget first; then the signature (with a trust
        store), and only then the payload; then the full check and the decision."""
        try:
            if item.lane > Lane.OWN and not self._within_budget(item):
                return
            received = self._open_command(item.payload)
        except PayloadError as exc:
            self.counters[f"rejected.command.{exc.code}"] += 1
            self._warn(
                "command rejected",
                f"{exc.code}.{item.lane.name}",
                topic=item.topic,
                code=exc.code,
                reason=exc.reason,
            )
            return
        model = received.model
        if isinstance(model, RecordCancel):
            await self.cancel(
                Received(model, received.jws, received.key), received_ns=item.received_ns
            )
            return
        if item.lane > Lane.OWN and self.clock.wall_ns() > model.expires_at_ns:
            # A late copy on a shared topic: silence (the camera's own topic answers it).
            self.counters["intake.dropped.expired"] += 1
            return
        await self.handle(
            Received(model, received.jws, received.key),
            direct=item.kind is TopicKind.COMMAND_CAMERA,
            received_ns=item.received_ns,
        )

    def _open_command(self, message: bytes) -> Received[RecordStart] | Received[RecordCancel]:
        """A command topic's message: a record-start, or a record-cancel. PayloadError for
        one refused before it was parsed, or that is neither."""
        payload, jws, key = self.security.unwrap(message, max_bytes=MAX_COMMAND_BYTES)
        try:
            return Received(decode(RecordStart, payload, max_bytes=MAX_COMMAND_BYTES), jws, key)
        except PayloadError as exc:
            if exc.code != "wrong_type":
                raise
        return Received(decode(RecordCancel, payload, max_bytes=MAX_COMMAND_BYTES), jws, key)

    def _within_budget(self, item: Queued) -> bool:
        """Before the Ed25519 check of a shared-topic command: the issuer its key speaks
        for within its budget of checks. A command on this camera's own or unit topic
        always gets the full check and an answer."""
        trust = self.security.trust
        if trust is None:
            return True
        jws = signed_envelope(item.payload)
        signer = None if jws is None else trust.known_subject(jws.kid)
        if signer is None:
            return True  # unsigned or an unknown key: refused without curve arithmetic
        if not self._issuer_budget.allow(signer[1], self.clock.mono_ns()):
            self.counters["intake.dropped.issuer_rate"] += 1
            self._warn("command dropped: issuer over its rate", "issuer_rate", issuer=signer[1])
            return False
        return True

    async def cancel(
        self,
        cancel: RecordCancel | Received[RecordCancel],
        *,
        received_ns: int | None = None,
    ) -> bool:
        """A cancelled claim: removed only if the cancel comes, signed, from the gateway
        whose command made it, before the deadline that command carried and not before
        the command itself; the recording stops when no claim is left on it. What was
        recorded is kept. Answered with a ``cancel_ack`` to the claim's issuer (a refusal
        of a cancel from an issuer without a claim: to each issuer with one). True if a
        recording stopped."""
        async with self._deciding:
            return await self._cancel(cancel, received_ns)

    async def _cancel(
        self, cancel: RecordCancel | Received[RecordCancel], received_ns: int | None
    ) -> bool:
        received_cancel = cancel if isinstance(cancel, Received) else Received(cancel)
        cancel = received_cancel.model
        aid = cancel.activation_id
        claims = self._handled.get(aid)
        if not claims:
            # Nothing this camera acted on: nothing to stop and no one to tell.
            self.counters["cancel.not_ours"] += 1
            return False
        own = claims.get(cancel.issuer)
        if own is not None and own.cancelled:
            self.counters["cancel.repeat"] += 1  # the same cancel on another of its topics
            return False
        now = self.clock.wall_ns()
        received = now if received_ns is None else received_ns
        # Without a claim of its own, checked against another's: refused, not_issuer.
        binding = (own or next(iter(claims.values()))).binding
        problem = self.security.check_command(received_cancel, now) or cancel_refusal(
            cancel, binding, now_ns=now
        )
        if problem is not None:
            self.counters[f"refused.cancel.{problem.code}"] += 1
            self._warn(
                "cancel refused",
                f"cancel.{problem.code}",
                activation=aid,
                issuer=cancel.issuer,
                code=problem.code,
                reason=problem.reason,
            )
            # Told to whoever's recording it tried to stop.
            for acted in [own] if own is not None else list(claims.values()):
                if self._reject_ack_allowed():
                    reason = f"{problem.code}: {problem.reason}"
                    self._send_cancel_ack(acted, cancel, CancelOutcome.REFUSED, reason, received)
                else:
                    self.counters["refused.ack_not_sent"] += 1
            return False
        assert own is not None  # cancel_refusal refuses an issuer without a claim
        acted = own
        acted.cancelled = True
        stopped = await self.recorder.cancel(aid, now, issuer=cancel.issuer)
        self.counters["cancel.stopped" if stopped else "cancel.kept_recording"] += 1
        if stopped:
            self._log.info("recording stopped: activation cancelled", activation=aid)
            outcome, why = CancelOutcome.STOPPED, "recording stopped; what was recorded is kept"
        else:
            outcome, why = (
                CancelOutcome.KEPT_RECORDING,
                "the recording is not this activation's alone, or no longer running",
            )
        self._send_cancel_ack(acted, cancel, outcome, why, received)
        return stopped

    def _send_cancel_ack(
        self,
        acted: _Acted,
        cancel: RecordCancel,
        outcome: CancelOutcome,
        reason: str,
        received_ns: int,
    ) -> None:
        """To the gateway whose command this camera acted on, whoever sent the cancel."""
        ack = CancelAck(
            activation_id=cancel.activation_id,
            camera_id=self.identity.camera_id,
            unit_id=self.identity.unit_id,
            outcome=outcome,
            reason=reason[:512],
            cancel_issuer=cancel.issuer,
            cancel_at_ns=cancel.at_ns,
            received_at_ns=received_ns,
        )
        topic = self.topics.ack(acted.binding.issuer, ack.camera_id)
        self.link.publish_soon(topic, self.security.seal(ack), qos=1)
        self.cancel_acks_sent.append(ack)
        if len(self.cancel_acks_sent) > _ACKS_KEPT:
            del self.cancel_acks_sent[: len(self.cancel_acks_sent) - _ACKS_KEPT]

    async def handle(
        self,
        command: RecordStart | Received[RecordStart],
        *,
        direct: bool,
        received_ns: int,
    ) -> CameraAck | None:
        """Decide, act on the recorder, and ack. Returns the ack sent, if any. A command
        given as a model alone counts as unsigned. One command at a time: a start is
        awaited (the `started` ack goes once the recorder says it runs) before the next
        command is decided, so a second command for the same activation finds the claim
        and starts nothing."""
        async with self._deciding:
            return await self._handle(command, direct=direct, received_ns=received_ns)

    async def _handle(
        self,
        command: RecordStart | Received[RecordStart],
        *,
        direct: bool,
        received_ns: int,
    ) -> CameraAck | None:
        received = command if isinstance(command, Received) else Received(command)
        command = received.model
        ident = self.identity
        me = CameraView(
            ident.camera_id, ident.unit_id, self.position, ident.role, ident.groups, self.asleep
        )
        aid = command.activation_id
        now = self.clock.wall_ns()
        problem = self.security.check_command(received, now)
        # This issuer's claim on the id, if any; another issuer's does not make it a repeat.
        acted = self._handled.get(aid, {}).get(command.issuer)
        # Every command that passed the checks is remembered, claim or not, ignored or not.
        repeat = problem is None and not self._first_time(received, now)
        replayed = Rejection(CommandProblem.REPLAYED, "this signed command was received before")
        if repeat and acted is None:
            # Acted on already (answered, ignored or refused): never acted on twice.
            problem = replayed
            if not direct:
                # The same command on two shared topics (its cell's and its unit's) is
                # normal; only a repeat sent to this camera directly is answered.
                self.counters["decision.repeat"] += 1
                self._log.info("repeated command not acted on", activation=aid, code=problem.code)
                return None
        if problem is not None:
            return self._refuse(command, problem, received_ns)
        decision = decide(
            command,
            me,
            direct=direct,
            already_handled=acted is not None,
            claim_cancelled=acted is not None and acted.cancelled,
            recording=self.recorder.is_recording(now),
            now_ns=now,
        )
        if repeat and decision.action is Action.START:
            # The claim's recording ended and the very same signed command came again: a
            # genuine retry is signed afresh (a new attempt), so this is a replay. Answering
            # a repeat (already_recording, or the cancelled claim's rejection) is harmless;
            # starting on it again is not.
            return self._refuse(command, replayed, received_ns)
        self.counters[f"decision.{decision.action.value}"] += 1
        if decision.action is Action.IGNORE:
            return None
        assert decision.status is not None
        started_at = kept = None
        if decision.action is Action.START:
            self.asleep = False  # woken by the command
            # The pre-event seconds count back from when the command arrived, not from when
            # its lane got to it.
            started = await self._start(command, min(received_ns, now))
            if isinstance(started, RecorderFault):
                problem = Rejection("recorder_fault", f"{started.code.value}: {started.reason}")
                return self._refuse(command, problem, received_ns, budgeted=False)
            started_at, kept = started.started_at_ns, started.pre_event_kept_s
        elif decision.status is AckStatus.ALREADY_RECORDING:
            # Joins the running recording as this issuer's claim (once).
            self.recorder.attach(aid, issuer=command.issuer)
        if decision.status in (AckStatus.STARTED, AckStatus.ALREADY_RECORDING):
            self._remember(command, decision.status)
        ack = CameraAck(
            activation_id=aid,
            camera_id=me.camera_id,
            unit_id=me.unit_id,
            status=decision.status,
            reason=decision.reason,
            attempt=command.attempt,
            received_at_ns=received_ns,
            recording_started_at_ns=started_at,
            pre_event_kept_s=kept,
        )
        self._send_ack(command.issuer, ack)
        if decision.status in (AckStatus.STARTED, AckStatus.ALREADY_RECORDING):
            # After the ack: the gateway hears that it started, then what it records.
            self._claim_recording(aid, command.issuer)
        self._log.debug("command handled", activation=aid, status=decision.status.value)
        return ack

    async def _start(self, command: RecordStart, now_ns: int) -> RecordingStart | RecorderFault:
        """The recorder started for this command, or the fault that kept it from it."""
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                return await self.recorder.start(
                    command.activation_id, command.pre_event_s, now_ns, issuer=command.issuer
                )
        except RecorderFault as fault:
            self.counters[f"recorder.fault.{fault.code.value}"] += 1
            self._log.error(
                "recorder could not start",
                activation=command.activation_id,
                code=fault.code.value,
                reason=fault.reason,
            )
            self._presence_changed()
            return fault
        except TimeoutError:
            self.counters["recorder.fault.start_timeout"] += 1
            self._log.error("recorder did not start in time", timeout_s=START_TIMEOUT_S)
            return RecorderFault(
                FaultCode.NO_FRAMES, f"not recording within {START_TIMEOUT_S:g} s of the command"
            )
        except Exception as exc:  # a recorder's bug must cost this start, not the agent
            self.counters["recorder.fault.recorder_error"] += 1
            self._log.exception("recorder failed to start", activation=command.activation_id)
            self._presence_changed()
            return RecorderFault(FaultCode.RECORDER_ERROR, f"{type(exc).__name__}: {exc}")

    # --- recordings: stops, and the `recording` messages ----------------------------------
    async def stop_recording(self, reason: StopReason, note: str = "") -> Recording | None:
        """Stop the running recording (an officer's stop: ``StopReason.OFFICER`` and what
        they said); None if none runs. Its `stop` message goes to every issuer it was for."""
        async with self._deciding:
            return await self._stop_recording(reason, note)

    async def _stop_recording(self, reason: StopReason, note: str) -> Recording | None:
        now = self.clock.wall_ns()
        if not self.recorder.is_recording(now):
            return None
        stopped = await self.recorder.stop(reason, now, note=note)
        if stopped is not None:
            self._log.info("recording stopped", recording=stopped.recording_id, reason=reason.value)
        return stopped

    def control_status(self) -> dict[str, Any]:
        """What the local API's ``status`` answers."""
        current = self.recorder.current
        fault = self._fault_info()
        return {
            "camera_id": self.identity.camera_id,
            "recording": self.recorder.is_recording(self.clock.wall_ns()),
            "recording_id": None if current is None else current.recording_id,
            "activation_ids": [] if current is None else list(current.activations),
            "recorder_fault": None if fault is None else fault.model_dump(),
            "recordings_pending": self.recordings_pending,
        }

    def _claim_recording(self, activation_id: str, issuer: str) -> None:
        """A claim on the running recording (it started it, or joined it): remembered for
        the stop, and told to its issuer now, if that issuer has not heard of it yet."""
        recording = self.recorder.current
        if recording is None:
            return
        claims = self._recording_claims.setdefault(recording.recording_id, [])
        self._recording_claims.move_to_end(recording.recording_id)
        while len(self._recording_claims) > _RECORDING_CLAIMS_KEPT:
            self._recording_claims.popitem(last=False)
        claim = (activation_id, issuer)
        if claim in claims or len(claims) >= _CLAIMS_PER_RECORDING:
            return
        claims.append(claim)
        self._publish_recording(recording, RecordingEvent.START, [issuer])

    def _on_recorder_event(self, event: RecorderEvent) -> None:
        """The recorder's events, in order: presence follows recording and faults; a
        stopped recording is reported to every issuer it was for."""
        if isinstance(event, RecordingStopped):
            recording = event.recording
            claims = self._recording_claims.pop(recording.recording_id, [])
            # A recording recovered after a crash: its issuers are those it wrote down.
            issuers = list(dict.fromkeys(issuer for _, issuer in claims)) or recording.issuers
            self.counters[f"recording.stopped.{recording.stop_reason}"] += 1
            self._write_manifest(recording)
            self._publish_recording(recording, RecordingEvent.STOP, issuers)
            self._presence_changed()
        elif isinstance(event, RecordingStarted):
            self._presence_changed()
        elif isinstance(event, FaultChanged):
            fault = event.fault
            if fault is None:
                self._log.info("recorder recovered")
            else:
                self._log.error("recorder fault", code=fault.code.value, reason=fault.reason)
            self._presence_changed()

    def _write_manifest(self, recording: Recording) -> None:
        """A recording with files gets its signed evidence manifest before its stop is
        reported, so that the stop message (and the gateway's log) carries its hash. One
        small file, written here in order rather than in a thread: a stop is rare, and the
        next start must not be reported before this stop. Without a camera key there is
        nothing to sign with: no manifest, and ``manifest_sha256`` stays null."""
        signer = self.security.signer
        if recording.directory is None:
            return
        if signer is None:
            self.counters["recording.manifest_unsigned"] += 1
            self._log.warning(
                "no manifest written: the camera has no signing key",
                recording=recording.recording_id,
            )
            return
        device = DeviceInfo.of(
            model=self.identity.model,
            serial=self.identity.serial,
            source=self.recorder.device_source,
        )
        try:
            _, recording.manifest_sha256 = write_manifest(recording, device, signer)
        except (OSError, ValueError) as exc:
            self.counters["recording.manifest_failed"] += 1
            self._log.error(
                "manifest not written", recording=recording.recording_id, error=str(exc)
            )
            return
        self.counters["recording.manifest_written"] += 1

    def recording_message(self, recording: Recording, event: RecordingEvent) -> RecordingMessage:
        """The `recording` message of a recording's start or stop (docs/protocol.md)."""
        stop = event is RecordingEvent.STOP
        listed = recording.segments[:MAX_RECORDING_FILES] if stop else []
        files = tuple(
            RecordingFile(
                name=segment.name,
                sha256=segment.sha256,
                first_frame_ns=segment.first_frame_ns,
                last_frame_ns=segment.last_frame_ns,
            )
            for segment in listed
        )
        reason = recording.stop_reason
        return RecordingMessage(
            camera_id=self.identity.camera_id,
            unit_id=self.identity.unit_id,
            recording_id=recording.recording_id,
            activation_ids=tuple(dict.fromkeys(recording.activations))[:_CLAIMS_PER_RECORDING],
            event=event,
            started_at_ns=recording.started_at_ns,
            first_frame_ns=recording.first_frame_ns,
            pre_event_kept_s=recording.pre_event_kept_s,
            stopped_at_ns=recording.stopped_at_ns if stop else None,
            reason=RecordingStopReason(reason.value) if stop and reason is not None else None,
            note=recording.stop_note[:MAX_STOP_NOTE] if stop else "",
            files=files,
            files_omitted=len(recording.segments) - len(files) if stop else 0,
            manifest_sha256=recording.manifest_sha256 if stop else None,
        )

    def _publish_recording(
        self, recording: Recording, event: RecordingEvent, issuers: list[str]
    ) -> None:
        """Signed like an ack, one copy per issuer, through the bounded outbox (sent in
        order, kept until the broker has it)."""
        issuers = [issuer for issuer in issuers if issuer]
        if not issuers:
            return
        try:
            message = self.recording_message(recording, event)
        except ValueError as exc:  # a file name the wire cannot carry, say
            self.counters["recordings.not_sent"] += 1
            self._log.error("recording message not made", error=str(exc))
            return
        payload = self.security.seal(message)
        for issuer in issuers:
            topic = self.topics.recording(issuer, self.identity.camera_id)
            self._recording_outbox.append((topic, payload))
            if len(self._recording_outbox) > RECORDING_OUTBOX_MAX:
                self._recording_outbox.popleft()
                self.counters["recordings.dropped_outbox"] += 1
                self._warn("recording message dropped: outbox full", "recording_outbox")
        self._recording_outbox_changed.set()
        self._kick_sender()
        self.recordings_sent.append(message)
        if len(self.recordings_sent) > _ACKS_KEPT:
            del self.recordings_sent[: len(self.recordings_sent) - _ACKS_KEPT]

    @property
    def recordings_pending(self) -> int:
        """`recording` messages the broker does not have yet."""
        return len(self._recording_outbox)

    def _kick_sender(self) -> None:
        """Start the outbox's sender if the agent runs, the outbox holds something, and no
        sender is at work."""
        idle = self._recording_sender is None or self._recording_sender.done()
        if self._serving and self._recording_outbox and idle:
            self._recording_sender = asyncio.create_task(self._send_recordings())

    async def _send_recordings(self) -> None:
        """The outbox's sender: the oldest first, each until the broker acknowledges it
        (a link that drops meanwhile: sent again once it is back); done when it is empty."""
        while self._recording_outbox:
            head = self._recording_outbox[0]
            try:
                await self.link.publish(head[0], head[1], qos=1, wait_s=None)
            except ConnectionError as exc:
                self.counters["recordings.publish_retried"] += 1
                self._warn("recording message not sent yet", "recording_retry", error=str(exc))
                if self.link.is_up:
                    await asyncio.sleep(0.1)  # the link flaps: do not spin
                continue
            except Exception:
                # Not the link: sending it again would fail again and hold up the rest.
                self.counters["recordings.publish_failed"] += 1
                self._log.exception("recording message not sent", topic=head[0])
            if self._recording_outbox and self._recording_outbox[0] is head:
                self._recording_outbox.popleft()
                self.counters["recordings.sent"] += 1
            self._recording_outbox_changed.set()

    async def recordings_flushed(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until every `recording` message is with the broker."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._recording_outbox:
                    self._recording_outbox_changed.clear()
                    await self._recording_outbox_changed.wait()
        except TimeoutError:
            return False
        return True

    def _first_time(self, received: Received[RecordStart], now_ns: int) -> bool:
        signature = received.signature
        if signature is None or not self.security.enforcing:
            return True
        return self._replays.first_time(signature, received.model.expires_at_ns, now_ns)

    def _refuse(
        self, command: RecordStart, problem: Rejection, received_ns: int, *, budgeted: bool = True
    ) -> CameraAck | None:
        """A command not trusted (or, ``budgeted`` False, a trusted one the recorder could
        not act on): counted, logged (at most once a second per reason), answered
        `rejected` (within the ack budget, for untrusted ones). Nothing in it is acted on,
        its scope included."""
        self.counters[f"refused.command.{problem.code}"] += 1
        self._warn(
            "command refused",
            f"command.{problem.code}",
            activation=command.activation_id,
            issuer=command.issuer,
            code=problem.code,
            reason=problem.reason,
        )
        if budgeted and not self._reject_ack_allowed():
            self.counters["refused.ack_not_sent"] += 1
            return None
        ack = CameraAck(
            activation_id=command.activation_id,
            camera_id=self.identity.camera_id,
            unit_id=self.identity.unit_id,
            status=AckStatus.REJECTED,
            reason=f"{problem.code}: {problem.reason}"[:512],
            attempt=command.attempt,
            received_at_ns=received_ns,
        )
        self._send_ack(command.issuer, ack)
        return ack

    def _warn(self, event: str, key: str, **fields: object) -> None:
        """A warning at most once a second per kind (``key``, from a fixed set of codes):
        a flood of forgeries must not become a flood of log lines. The counters count
        every one; ``suppressed`` says how many went unlogged since the last line."""
        now = self.clock.mono_ns()
        last, quiet = self._warned.get(key, (None, 0))
        if last is not None and now - last < _WARN_EVERY_NS:
            self._warned[key] = (last, quiet + 1)
            return
        self._warned[key] = (now, 0)
        self._log.warning(event, suppressed=quiet, **fields)

    def _reject_ack_allowed(self) -> bool:
        now = self.clock.mono_ns()
        elapsed_s = (now - self._reject_refill_mono) / 1e9
        self._reject_refill_mono = now
        self._reject_budget = min(
            _REJECT_ACKS_PER_S, self._reject_budget + elapsed_s * _REJECT_ACKS_PER_S
        )
        if self._reject_budget < 1.0:
            return False
        self._reject_budget -= 1.0
        return True

    def _send_ack(self, issuer: str, ack: CameraAck) -> None:
        topic = self.topics.ack(issuer, ack.camera_id)
        self.link.publish_soon(topic, self.security.seal(ack), qos=1)
        self.acks_sent.append(ack)
        if len(self.acks_sent) > _ACKS_KEPT:
            del self.acks_sent[: len(self.acks_sent) - _ACKS_KEPT]

    def _remember(self, command: RecordStart, status: AckStatus) -> None:
        """Bind the issuer's claim on the activation to its cancel deadline and issue
        time, the first time only: a later command from the same issuer changes neither,
        and one from another issuer makes a claim of its own."""
        aid = command.activation_id
        claims = self._handled.setdefault(aid, {})
        if command.issuer not in claims:
            binding = Binding(command.issuer, command.cancel_until_ns, command.issued_at_ns)
            claims[command.issuer] = _Acted(status, binding)
            while len(claims) > _CLAIMS_PER_ACTIVATION:
                del claims[next(iter(claims))]
        self._handled.move_to_end(aid)
        while len(self._handled) > _HANDLED_MAX:
            self._handled.popitem(last=False)


def _payload_of(jws: Jws) -> bytes:
    try:
        return jws.payload_bytes
    except ValueError:
        return b""

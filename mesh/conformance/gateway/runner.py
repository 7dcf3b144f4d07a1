"""One run of ``conformance gateway``: the scene's presence published, triggers and
cancels sent, every command answered live by the simulated cameras, everything the
gateway publishes kept; then each check judged from what was seen (``judge``).

Trigger A runs to its end (with the shipped policy, retries at 1, 3 and 7 s and the end at
15 s); B, the same kind 20 km away, is cancelled as soon as its command is seen; a cancel
of an activation that never was, and (signed runs) an unsigned trigger, go alongside.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.mqtt.urls import BrokerUrl
from bridge.topics import TopicKind, Topics
from mesh.conformance import wire
from mesh.conformance.gateway import catalog, judge
from mesh.conformance.gateway.fleet import Fleet, Reply
from mesh.conformance.gateway.observe import Observed, SeenCommand, Sent
from mesh.conformance.gateway.scene import B_NORTH_M, UNSIGNED_EAST_M, GatewayScene
from mesh.conformance.mqtt import KitLink, Seen, kit_link, read_retained
from mesh.conformance.verdict import Check, Result, out_of_scope
from mesh.protocol.codec import PayloadError, decode, encode
from mesh.protocol.models import (
    ActivationRecord,
    ActivationState,
    CameraAck,
    CancelRequest,
    Escalation,
    GatewayStatus,
    GeoPoint,
    RecordStart,
    TriggerEvent,
    TriggerKind,
    TriggerReceipt,
)

JUDGES: tuple[tuple[Check, judge.Judge], ...] = (
    (catalog.STATUS, judge.gateway_status_retained),
    (catalog.RECEIPT, judge.trigger_receipt_accepted),
    (catalog.REPEAT, judge.repeat_trigger_merged),
    (catalog.COMMAND, judge.command_fields),
    (catalog.CELLS, judge.command_to_covering_cells),
    (catalog.UNITS, judge.command_to_unit_topics),
    (catalog.CELLS_FEW, judge.command_cells_few),
    (catalog.STALE, judge.stale_fix_named),
    (catalog.RETRIED, judge.silent_cameras_retried),
    (catalog.RETRIES_ONLY, judge.retries_only_to_silent),
    (catalog.NOT_AFTER_EXPIRY, judge.no_command_after_expiry),
    (catalog.PENDING_FINAL, judge.record_pending_then_final),
    (catalog.ANSWERS, judge.answers_recorded),
    (catalog.LATE, judge.late_answer_recorded),
    (catalog.SILENT, judge.silent_camera_escalated),
    (catalog.OFFLINE, judge.offline_camera_escalated),
    (catalog.REJECTED, judge.rejected_camera_escalated),
    (catalog.OUT_OF_RANGE, judge.out_of_range_recorded),
    (catalog.BAD_ACKS, judge.bad_acks_ignored),
    (catalog.UNEXPECTED, judge.unexpected_start_recorded),
    (catalog.FAR, judge.far_camera_left_out),
    (catalog.STATE, judge.final_state),
    (catalog.ESCALATION_FIELDS, judge.escalation_fields),
    (catalog.CANCEL, judge.cancel_honoured),
    (catalog.RECORD_CANCEL, judge.record_cancel_sent),
    (catalog.CANCEL_UNKNOWN, judge.cancel_unknown_refused),
    (catalog.SIGNED_COMMANDS, judge.commands_signed),
    (catalog.UNSIGNED_TRIGGER, judge.unsigned_trigger_refused),
)

UNSIGNED_RUN = "an unsigned run: give --trust, --dispatch-key and --camera-keys for a signed one"
# After A's command expires, this long for its final record and escalations.
FINAL_GRACE_S = 15.0
MAX_RECORD_BYTES = 1 << 24


@dataclass(frozen=True)
class GatewayKeys:
    """A signed run's keys (none in an unsigned run)."""

    trust: wire.Trust | None = None  # checks the gateway's commands
    dispatch: wire.Signer | None = None  # signs triggers and cancels
    cameras: dict[str, wire.Signer] = field(default_factory=dict)  # signs each camera's acks
    attacker: wire.Signer | None = None

    @property
    def signed(self) -> bool:
        return self.trust is not None


@dataclass(frozen=True)
class GatewayOptions:
    unit_id: str
    prefix: str
    gateway_id: str
    origin: GeoPoint
    kind: TriggerKind = TriggerKind.WEAPON_DRAW
    timeout_s: float = 10.0
    settle_s: float = 1.5
    keys: GatewayKeys = field(default_factory=GatewayKeys)


@dataclass(frozen=True)
class RunReport:
    results: list[Result]
    seconds: float
    properties: dict[str, str]


class _Watch:
    """Sorts what the gateway publishes into ``Observed`` and has the fleet answer."""

    def __init__(self, link: KitLink, scene: GatewayScene, keys: GatewayKeys, fleet: Fleet) -> None:
        self.link, self.scene, self.keys, self.fleet = link, scene, keys, fleet
        self.obs = Observed()
        self.sending: set[asyncio.Task[None]] = set()

    def take(self, seen: Seen) -> None:
        parsed = self.scene.topics.parse(seen.topic)
        if parsed is None or not seen.payload:
            return
        try:
            self._take(seen, parsed.kind, parsed.args)
        except PayloadError as exc:
            self.obs.problems.append(f"{seen.topic}: {exc}")

    def _take(self, seen: Seen, kind: TopicKind, args: tuple[str, ...]) -> None:
        obs = self.obs
        if kind in (
            TopicKind.COMMAND_ALL,
            TopicKind.COMMAND_CELL,
            TopicKind.COMMAND_UNIT,
            TopicKind.COMMAND_CAMERA,
        ):
            self._command(seen, kind, args)
        elif kind is TopicKind.RECEIPT:
            obs.receipts.append((seen.mono_s, decode(TriggerReceipt, seen.payload)))
        elif kind is TopicKind.ACTIVATION:
            record = decode(ActivationRecord, seen.payload, max_bytes=MAX_RECORD_BYTES)
            obs.records.append((seen.mono_s, record))
        elif kind is TopicKind.ESCALATION:
            obs.escalations.append((seen.mono_s, args[0], decode(Escalation, seen.payload)))
        elif kind is TopicKind.GATEWAY and obs.status is None:
            obs.status = decode(GatewayStatus, seen.payload)
            obs.status_retained = seen.retain

    def _command(self, seen: Seen, kind: TopicKind, args: tuple[str, ...]) -> None:
        target = args[0] if args else None
        try:
            opened = wire.open_command(seen.payload, self.keys.trust, seen.at_ns)
        except PayloadError as exc:
            self.obs.commands.append(
                SeenCommand(kind, target, None, seen.at_ns, seen.mono_s, str(exc))
            )
            return
        command = opened.model
        self.obs.commands.append(
            SeenCommand(kind, target, command, seen.at_ns, seen.mono_s, untrusted=opened.problem)
        )
        if opened.problem is not None or command.issuer != self.scene.gateway_id:
            return  # the kit's cameras answer only their gateway, and only what they trust
        parsed = self.scene.topics.parse(seen.topic)
        assert parsed is not None
        for reply in self.fleet.on_command(parsed, command, time.time_ns()):
            self._send(reply)

    def _send(self, reply: Reply) -> None:
        keys = self.keys
        signer = {
            "own": keys.cameras.get(reply.topic_camera),
            "none": None,
            "attacker": keys.attacker,
        }.get(reply.seal, keys.cameras.get(reply.seal))
        answer = reply.answer
        if isinstance(answer, CameraAck):
            payload = wire.seal(answer, signer)
        else:
            payload = wire.seal(answer, signer)
        topic = self.scene.topics.ack(reply.issuer, reply.topic_camera)
        self.obs.replies.append((time.monotonic(), reply))
        task = asyncio.get_running_loop().create_task(self.link.publish(topic, payload))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)


async def run_gateway(url: BrokerUrl, options: GatewayOptions) -> RunReport:
    """Drive the gateway ``options`` names through the scene and judge it. Raises LinkDown
    if the broker cannot be reached."""
    began = time.monotonic()
    topics = Topics(options.prefix)
    tag = uuid.uuid4().hex[:8]
    scene = GatewayScene(
        topics, options.gateway_id, options.unit_id, options.origin, options.kind, tag
    )
    keys = options.keys
    now = time.time_ns()
    trigger_a = scene.trigger("a", now, scene.origin)
    fleet = Fleet(scene, signed=keys.signed, eager_event=trigger_a.event_id)
    subscriptions = (
        f"{topics.prefix}/cmd/#",
        topics.receipt(options.unit_id),
        topics.activation(options.unit_id, "+"),
        topics.all_escalations(),
        topics.gateway(options.gateway_id),
    )
    async with kit_link(url, subscriptions, name="gateway") as link:
        watch = _Watch(link, scene, keys, fleet)
        for seen in link.inbox.seen:
            watch.take(seen)
        link.inbox.listeners.append(watch.take)
        try:
            await _drive(link, scene, options, watch.obs, trigger_a)
        finally:
            for camera in scene.cameras:
                await link.publish(topics.presence(camera.camera_id), b"", retain=True)
            if watch.sending:
                await asyncio.wait(set(watch.sending), timeout=5)
    obs = watch.obs
    results = [
        Result(check, out_of_scope(UNSIGNED_RUN))
        if check.signed and not keys.signed
        else Result(check, rule(obs, scene))
        for check, rule in JUDGES
    ]
    properties = {
        "gateway_id": options.gateway_id,
        "unit": options.unit_id,
        "broker": f"{url.host}:{url.port}",
        "prefix": options.prefix,
        "kind": options.kind.value,
        "mode": "signed" if keys.signed else "unsigned",
    }
    return RunReport(results, time.monotonic() - began, properties)


async def _drive(
    link: KitLink,
    scene: GatewayScene,
    options: GatewayOptions,
    obs: Observed,
    trigger_a: TriggerEvent,
) -> None:
    topics, keys = scene.topics, options.keys
    await _until(lambda: obs.status is not None, options.timeout_s)
    if obs.status is not None and not obs.status_retained:
        # It came live (the gateway started after the kit subscribed): is it kept?
        kept = await read_retained(link.url, topics.gateway(scene.gateway_id))
        obs.status_retained = kept is not None and kept.retain
    now = time.time_ns()
    for camera in scene.cameras:
        presence = scene.presence(camera, now)
        await link.publish(topics.presence(camera.camera_id), encode(presence), retain=True)
    await asyncio.sleep(options.settle_s)

    async def send(
        role: str, model: TriggerEvent | CancelRequest, signer: wire.Signer | None = keys.dispatch
    ) -> None:
        obs.sent[role] = Sent(model, time.monotonic())
        topic = (
            topics.trigger(scene.unit_id)
            if isinstance(model, TriggerEvent)
            else topics.cancel(scene.unit_id)
        )
        if isinstance(model, TriggerEvent):
            payload = wire.seal(model, signer)
        else:
            payload = wire.seal(model, signer)
        await link.publish(topic, payload)

    now = time.time_ns()
    await send("a", trigger_a)
    await send("b", scene.trigger("b", now, scene.place(B_NORTH_M, 0.0)))
    await send("cancel-none", scene.cancel("cancel-none", f"conf-{scene.tag}-none", now))
    if keys.signed:
        unsigned = scene.trigger("unsigned", now, scene.place(0.0, UNSIGNED_EAST_M))
        await send("unsigned", unsigned, None)
    if await _until(lambda: obs.receipt("a") is not None, options.timeout_s):
        await send("a-again", trigger_a)
    if await _until(lambda: bool(obs.first_attempt(obs.activation("b"))), options.timeout_s):
        aid_b = obs.activation("b")
        assert aid_b is not None
        await send("cancel-b", scene.cancel("cancel-b", aid_b, time.time_ns()))
    first = obs.first_attempt(obs.activation("a"))
    if first and isinstance(first[0].command, RecordStart):
        left_s = (first[0].command.expires_at_ns - time.time_ns()) / 1e9 + FINAL_GRACE_S
        await _until(lambda: obs.final(obs.activation("a")) is not None, max(left_s, 1.0))
    await _until(
        lambda: any(
            r.state is ActivationState.CANCELLED for _, r in obs.records_of(obs.activation("b"))
        ),
        options.timeout_s,
    )
    await asyncio.sleep(1.0)  # the escalations and records that follow the final one


async def _until(done: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True

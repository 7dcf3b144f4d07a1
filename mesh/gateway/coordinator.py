"""The activation coordinator: accepted trigger → durable log → publish → acks → outcome.

Order matters and is the point of this module:
1. admit (pure) and plan (pure) from the presence snapshot;
2. append the activation to the log and wait until it is fsync'd;
3. broadcast the record-start command (QoS1) and collect acks until the deadline;
4. send the command directly to expected cameras still silent, with growing waits,
   within the command's expiry;
5. close the activation: per-camera outcome and latency, logged and published; every
   camera that did not start is escalated to the policy's audiences (dispatch first).

The command goes to the geo cells its circle meets, its targeted units and its named
cameras (``mesh.decide.fanout``): a bounded number of publishes, whatever the fleet. Within the
kind's cancellation window an activation can be cancelled (logged; cameras stop what it
alone started and keep it).

A crash anywhere after (2) is repaired on restart by ``load_unfinished`` +
``start_resumed``: the command is (re)sent, cameras that already started say so. The
outcome (final record, escalations) is queued in the outbox before the log says
`finished`; a crash between the two logs the queued outcome on restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from bridge.mqtt.client import LinkDown
from bridge.topics import Topics
from mesh.clock import NS, Clock
from mesh.decide.ack_pace import AckPace, next_step
from mesh.decide.activation import AckEffect, ActivationTracker
from mesh.decide.admission import Accepted, Admitter, Refused, Suppressed
from mesh.decide.fanout import command_topics
from mesh.decide.planning import plan_activation
from mesh.decide.policy import KindRules, Policy
from mesh.decide.proximity import Heard
from mesh.decide.rejection import Rejection
from mesh.decide.targeting import CameraIndex, TargetDecision
from mesh.journal.records import (
    AckEntry,
    ActivationEntry,
    CancelAckEntry,
    CancelEntry,
    DecisionInputs,
    EscalatedEntry,
    FinishedEntry,
    PublishedEntry,
    RecordingEntry,
    RecordKind,
    ResumedEntry,
    SignedCopy,
    TriggerEntry,
)
from mesh.journal.store import (
    ActivationLog,
    LogError,
)
from mesh.ops.failpoints import failpoint
from mesh.ops.tasks import Background
from mesh.protocol.codec import encode
from mesh.protocol.jws import Jws
from mesh.protocol.models import (
    ActivationRecord,
    CameraAck,
    CancelAck,
    CancelOutcome,
    CancelRequest,
    Escalation,
    EscalationReason,
    GeoPoint,
    OutcomeStatus,
    ReceiptOutcome,
    RecordCancel,
    RecordingEvent,
    RecordingMessage,
    TriggerEvent,
    TriggerReceipt,
)
from mesh.security.checks import Security

# How often a pending activation's progress is re-published for dispatch, at most: every
# 250 ms, or 1 ms per expected camera if longer. A record names every camera, so its cost
# grows with them; scaling the interval keeps progress updates below ~1 % of the gateway's
# time whatever the fleet size.
_PROGRESS_INTERVAL_NS = 250_000_000
_PROGRESS_NS_PER_CAMERA = 1_000_000
# Finished activations kept to recognise late acks (logged, but they change nothing):
# ids only, so thousands cost little (at 50 activations/s, 256 was five seconds).
_RECENT_MAX = 4096
_CANCEL_MEMORY_S = 60.0
_CANCELLABLE_MAX = 64
# Cancel acks logged per camera and activation (a genuine cancel makes one, each refused
# attempt one more), and how many camera-activation pairs are counted at once.
_CANCEL_ACKS_PER_CAMERA = 8
_CANCEL_ACKS_LOGGED_MAX = 4096
# `recording` messages remembered (camera, recording, event, trusted), so a repeat (QoS 1
# after a reconnect) is counted, not logged again.
_RECORDINGS_REMEMBERED = 4096
# `recording` rows logged per camera and activation (a genuine recording makes two, start and
# stop), and untrusted ones per activation whatever the camera: past these, counted
# (`recordings.over_cap`), not logged, so a stolen camera key or login cannot flood the log.
# How many pairs are counted at once: past it the least recently counted is forgotten.
_RECORDINGS_PER_CAMERA = 16
_UNTRUSTED_RECORDINGS_PER_ACTIVATION = 16
_RECORDING_COUNTS_MAX = 8192
# The over-cap warning, at most once in this many seconds (with how many since the last).
_OVER_CAP_WARN_EVERY_NS = 10 * NS


class Publisher(Protocol):
    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        wait_s: float | None = 10.0,
    ) -> None: ...

    def publish_soon(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None: ...

    def deliver(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expires_at_ns: int | None = None,
    ) -> None: ...

    def deliver_final(
        self, activation_id: str, outcome: bytes, messages: Sequence[tuple[str, bytes]]
    ) -> None: ...

    def queued_final(self, activation_id: str) -> bytes | None: ...

    def settle_final(self, activation_id: str) -> None: ...

    def keep_finals(self, activation_ids: Collection[str]) -> None: ...


class QueuedOutcome(BaseModel):
    """What dispatch was sent when an activation finished, kept in the outbox until the
    log says `finished` too: a restart in between logs this, not a second decision."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record: ActivationRecord
    escalations: tuple[Escalation, ...] = ()


@dataclass(eq=False)
class _Live:
    tracker: ActivationTracker
    rules: KindRules
    done: asyncio.Event = field(default_factory=asyncio.Event)
    attempt: int = 0
    published: bool = False
    last_update_mono: int = 0
    # In range or targeted, but offline too long to wait for: escalated as soon as the
    # command has gone out (or at the finish, if it never does), then removed from here.
    unreachable: list[TargetDecision] = field(default_factory=list)

    @property
    def progress_interval_ns(self) -> int:
        return max(_PROGRESS_INTERVAL_NS, _PROGRESS_NS_PER_CAMERA * len(self.tracker.cameras))


class Coordinator:
    def __init__(
        self,
        *,
        unit_id: str,
        issuer: str,
        policy: Policy,
        log: ActivationLog,
        publisher: Publisher,
        topics: Topics,
        presence: CameraIndex,
        position: Callable[[], GeoPoint | None],
        clock: Clock,
        on_finished: Callable[[ActivationRecord], None] | None = None,
        heard: Callable[[], Mapping[str, Heard]] | None = None,
        security: Security | None = None,
        on_ack_latency: Callable[[float | None], None] | None = None,
    ) -> None:
        self.unit_id = unit_id
        self.on_ack_latency = on_ack_latency  # a camera's first answer, in ms (metrics)
        self.security = security or Security()
        self.heard = heard
        self.issuer = issuer
        self.policy = policy
        self.log = log
        self.publisher = publisher
        self.topics = topics
        self.presence = presence
        self.position = position
        self.clock = clock
        self.on_finished = on_finished
        self.admitter = Admitter(policy)
        self.live: dict[str, _Live] = {}
        # Ids of recently finished activations, to tell a late ack from an unknown one.
        self.recent: OrderedDict[str, None] = OrderedDict()
        # Finished activations still inside their cancellation window, or just past it.
        self.cancellable: OrderedDict[str, _Live] = OrderedDict()
        self.counters: Counter[str] = Counter()
        self.tasks = Background()
        self.pace = AckPace()
        self._resumed: list[_Live] = []
        self._cancel_acks_logged: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._recordings_logged: OrderedDict[tuple[str, str, str, str], None] = OrderedDict()
        # Rows logged per (activation, camera) for trusted `recording` messages, and per
        # (activation, "") for untrusted ones: bounded, the least recently counted first out.
        self._recording_rows: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._over_cap_warned_ns: int | None = None
        self._over_cap_unreported = 0
        self._queued_before_stop: list[QueuedOutcome] = []
        self._log = structlog.get_logger("mesh.coordinator").bind(unit=unit_id)

    # --- triggers -------------------------------------------------------------------
    async def submit(
        self,
        event: TriggerEvent,
        *,
        received_mono_ns: int | None = None,
        untrusted: Rejection | None = None,
    ) -> TriggerReceipt:
        """Admit a trigger; if accepted, log it durably and start driving the activation.
        ``untrusted`` (its signature was refused) means it is refused, and logged as such.

        Returns once the activation is durable and its broadcast is under way (not when
        cameras have answered): the receipt says accepted, merged or refused, and why.
        """
        mono = received_mono_ns if received_mono_ns is not None else self.clock.mono_ns()
        now = self.clock.wall_ns()
        self.counters[f"triggers.{event.kind}.{event.source.type}"] += 1
        if untrusted is not None:
            return self._refuse(event, untrusted.code, untrusted.reason, now)
        admission = self.admitter.admit(event, now)
        if isinstance(admission, Refused):
            return self._refuse(event, admission.code, admission.reason, now)
        if isinstance(admission, Suppressed):
            self.counters["triggers.suppressed"] += 1
            live = self.live.get(admission.activation_id)
            if live is not None:
                live.tracker.merged_triggers += 1
            self._append(
                RecordKind.SUPPRESSED,
                admission.activation_id,
                TriggerEntry(
                    trigger=event,
                    received_at_ns=now,
                    code="suppressed",
                    reason=admission.reason,
                    activation_id=admission.activation_id,
                    activation_pending=live is not None,
                ),
            )
            # Whether the sender can still hear the final record (it is not retained).
            receipt = self._receipt(
                event,
                ReceiptOutcome.SUPPRESSED,
                admission.activation_id,
                admission.reason,
                now,
                pending=live is not None,
            )
            return self._announce(receipt)
        assert isinstance(admission, Accepted)
        return await self._activate(event, admission, now, mono)

    def _refuse(self, event: TriggerEvent, code: str, reason: str, now: int) -> TriggerReceipt:
        self.counters[f"triggers.refused.{code}"] += 1
        self._log.info("trigger refused", event_id=event.event_id, code=code, reason=reason)
        self._append(
            RecordKind.REFUSED,
            None,
            TriggerEntry(trigger=event, received_at_ns=now, code=code, reason=reason),
        )
        return self._announce(self._receipt(event, ReceiptOutcome.REJECTED, None, reason, now))

    async def _activate(
        self, event: TriggerEvent, admission: Accepted, now: int, mono: int
    ) -> TriggerReceipt:
        position = self.position()
        heard = self.heard() if self.heard is not None else None
        plan = plan_activation(
            event,
            activation_id=admission.activation_id,
            rules=admission.rules,
            issuer=self.issuer,
            gateway_position=position,
            cameras=self.presence,
            now_ns=now,
            offline_grace_s=self.policy.offline_grace_s,
            max_fix_age_s=self.policy.max_fix_age_s,
            own_unit=self.unit_id,
            heard=heard,
        )
        tracker = ActivationTracker(
            plan.command, plan.decisions, unit_id=self.unit_id, accepted_mono_ns=mono
        )
        live = _Live(tracker, admission.rules)
        live.unreachable = [d for d in plan.decisions if d.escalate is not None]
        self.live[tracker.activation_id] = live
        # With the presence records before it, these inputs let `audit replay` re-decide.
        inputs = DecisionInputs.json_of(position, heard)
        entry = ActivationEntry.json_of(event, now, plan.command, plan.decisions, inputs)
        try:
            await self.log.append_durable(RecordKind.ACTIVATION, tracker.activation_id, entry, now)
        except LogError as exc:
            # Recording matters more than the record: the cameras are still commanded,
            # and the failure is loud (counter, error log, and the gateway status).
            self.counters["log.write_failures"] += 1
            self._log.error(
                "activation not durable, sending anyway",
                error=str(exc),
                activation=tracker.activation_id,
            )
        failpoint("activation.logged")
        self.counters["activations.started"] += 1
        receipt = self._receipt(event, ReceiptOutcome.ACCEPTED, tracker.activation_id, "", now)
        self.tasks.spawn(self._drive(live, receipt))
        self._log.info(
            "activation",
            activation=tracker.activation_id,
            kind=event.kind,
            expected=len(tracker.cameras),
            radius_m=plan.command.radius_m,
        )
        return receipt

    def _receipt(
        self,
        event: TriggerEvent,
        outcome: ReceiptOutcome,
        activation_id: str | None,
        reason: str,
        now: int,
        *,
        pending: bool | None = None,
    ) -> TriggerReceipt:
        return TriggerReceipt.answering(event, outcome, activation_id, reason, now, pending=pending)

    def _announce(self, receipt: TriggerReceipt) -> TriggerReceipt:
        """Tell the trigger's sender (and dispatch) what became of it."""
        self.publisher.deliver(self.topics.receipt(self.unit_id), encode(receipt))
        return receipt

    # --- acks ---------------------------------------------------------------------------
    def on_ack(
        self, ack: CameraAck, *, received_mono_ns: int | None = None, jws: Jws | None = None
    ) -> None:
        """A camera's trusted ack (``jws``: as received, if it came signed; logged with it)."""
        mono = received_mono_ns if received_mono_ns is not None else self.clock.mono_ns()
        now = self.clock.wall_ns()
        live = self.live.get(ack.activation_id)
        if live is None:
            # Finished already (a late ack: logged, changes nothing) or not ours at all.
            late = ack.activation_id in self.recent
            effect = "late" if late else "unknown_activation"
            self.counters[f"acks.{effect}"] += 1
            if late:
                self._append_ack(ack, None, effect, now, jws)
            return
        tracker = live.tracker
        result = tracker.on_ack(ack, now, mono)
        self.counters[f"acks.{result.value}"] += 1
        self._append_ack(ack, tracker.cameras[ack.camera_id].latency_ms, result.value, now, jws)
        failpoint("ack.logged")
        if result is AckEffect.DUPLICATE:
            return
        latency_ms = tracker.cameras[ack.camera_id].latency_ms
        # Answers to the broadcast only: one to a retry is as late as the retry was, and
        # would ratchet the pace up by its own waiting.
        if result is AckEffect.RECORDED and ack.attempt == 0 and latency_ms is not None:
            self.pace.observe(ack.camera_id, latency_ms)
        if self.on_ack_latency is not None and result is not AckEffect.UPGRADED:
            self.on_ack_latency(tracker.cameras[ack.camera_id].latency_ms)
        if tracker.complete:
            live.done.set()
        elif mono - live.last_update_mono >= live.progress_interval_ns:
            self._publish_progress(live)

    def awaits_ack(self, activation_id: str, camera_id: str) -> bool:
        """True if the camera has not answered this live activation yet (intake lets such
        an ack through a camera's ack rate limit: a genuine first answer is never shed)."""
        live = self.live.get(activation_id)
        progress = None if live is None else live.tracker.cameras.get(camera_id)
        return progress is not None and progress.status is OutcomeStatus.PENDING

    def on_untrusted_ack(self, ack: CameraAck, problem: Rejection, jws: Jws | None = None) -> None:
        """An ack refused after its signature verified (another camera's key, a revoked
        key) or unsigned changes nothing, but the log keeps it: a "started" for one of our
        activations that the camera may not say is evidence."""
        if ack.activation_id in self.live or ack.activation_id in self.recent:
            effect = f"untrusted:{problem.code}"
            self._append_ack(ack, None, effect, self.clock.wall_ns(), jws)

    def _publish_progress(self, live: _Live) -> None:
        """Tell dispatch how a pending activation stands (at most every 250 ms: a record
        names every camera, so it is not rebuilt for every ack)."""
        if live.tracker.finished_at_ns is None:
            live.last_update_mono = self.clock.mono_ns()
            self._publish_record(live.tracker.record())

    # --- driving one activation ----------------------------------------------------------
    async def _drive(self, live: _Live, receipt: TriggerReceipt | None = None) -> None:
        # Cancellation (gateway shutdown) leaves the activation unfinished in the log on
        # purpose: the next start resumes it. Only a decided end is written as finished.
        reason = await self._collect(live, receipt)
        await self._finish(live, reason)

    async def _collect(self, live: _Live, receipt: TriggerReceipt | None) -> str:
        """Publish and collect acks, retrying the silent; returns why it ended early, if so.
        The receipt goes out once the command has (the command is what is urgent)."""
        tracker, rules = live.tracker, live.rules
        if not live.published:
            sent = await self._send(live, None)
            if receipt is not None:
                self._announce(receipt)
            if not sent:
                return "command could not be published before it expired"
            live.published = True
            # The first progress record goes out shortly after, off the path of the acks
            # (dispatch already has the receipt; most activations finish before this).
            live.last_update_mono = self.clock.mono_ns()
            asyncio.get_running_loop().call_later(
                live.progress_interval_ns / 1e9, self._publish_progress, live
            )
        # The command is out (now, or before a restart): dispatch hears at once of the
        # cameras nobody waits for.
        for decision in live.unreachable:
            assert decision.escalate is not None
            self._escalate(live, decision.camera_id, decision.escalate, decision.reason)
        live.unreachable = []
        while not tracker.complete:
            remaining_ms = (tracker.command.expires_at_ns - self.clock.wall_ns()) / 1e6
            # Not sooner than acks are coming back lately, within a cap, and the first
            # retry before the command expires whatever the pace (mesh/decide/ack_pace.py).
            step = next_step(rules, live.attempt, self.pace.retry_floor_ms(), remaining_ms)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(step.wait_ms / 1000):
                    await live.done.wait()
            if tracker.complete or not step.retry:
                break
            live.attempt += 1
            silent = tracker.silent()
            self.counters["retries"] += 1
            self._log.info(
                "retrying silent cameras",
                activation=tracker.activation_id,
                attempt=live.attempt,
                cameras=len(silent),
            )
            if not await self._send(live, silent):
                return "link down until the command expired"
        return ""

    async def _send(self, live: _Live, cameras: list[str] | None) -> bool:
        """Publish the command (broadcast if ``cameras`` is None), waiting out broker outages
        until the command expires. False if it could not be sent in time."""
        tracker = live.tracker
        command = tracker.command
        if live.attempt:
            command = command.model_copy(update={"attempt": live.attempt})
        payload = self.security.seal(command)
        topics = (
            command_topics(self.topics, command)
            if cameras is None
            else [self.topics.command_camera(c) for c in cameras]
        )
        while True:
            remaining_s = (command.expires_at_ns - self.clock.wall_ns()) / NS
            if remaining_s <= 0:
                return False
            tracker.sending(self.clock.wall_ns(), self.clock.mono_ns())
            try:
                # The whole send, PUBACKs included, ends with the command: a link that
                # swallows bytes must not hold it for the client's own (longer) timeout.
                async with asyncio.timeout(remaining_s):
                    await asyncio.gather(
                        *(
                            self.publisher.publish(t, payload, qos=1, wait_s=remaining_s)
                            for t in topics
                        )
                    )
            except (LinkDown, TimeoutError) as exc:
                self.counters["publish.link_down"] += 1
                self._log.warning(
                    "command not published, will retry",
                    error=str(exc) or "no PUBACK before the command expired",
                    activation=tracker.activation_id,
                )
                await asyncio.sleep(0.05)
                continue
            failpoint("command.published")
            tracker.on_published(cameras)
            self.counters["publish.commands"] += len(topics)
            self._append(
                RecordKind.PUBLISHED,
                tracker.activation_id,
                PublishedEntry(
                    attempt=live.attempt,
                    topic=self.topics.command_camera("+") if cameras else ",".join(topics),
                    cameras=None if cameras is None else tuple(cameras),
                ),
            )
            return True

    async def _finish(self, live: _Live, reason: str) -> None:
        tracker = live.tracker
        now = self.clock.wall_ns()
        tracker.finish(now, reason)
        record = tracker.record()
        aid = tracker.activation_id
        self.live.pop(aid, None)
        self._remember_finished(aid)
        # Kept for its window (and a minute): to cancel it, or to say why not.
        self.cancellable[aid] = live
        self._prune_cancellable(now)
        self.counters[f"activations.{record.state}"] += 1
        escalations: list[Escalation] = []
        escalated: list[tuple[str, EscalationReason, str]] = []
        if tracker.cancelled_by is None:
            # Not waited for, and not escalated yet: the command never went out.
            unreachable = {d.camera_id: d for d in live.unreachable}
            live.unreachable = []
            for outcome in record.cameras:
                detail = outcome.detail
                decision = unreachable.get(outcome.camera_id)
                if decision is not None and outcome.status is OutcomeStatus.MISSED:
                    assert decision.escalate is not None
                    why, detail = decision.escalate, decision.reason
                elif outcome.expected and outcome.status is OutcomeStatus.REJECTED:
                    why = EscalationReason.REJECTED
                elif (
                    outcome.status is OutcomeStatus.MISSED
                    and tracker.cameras[outcome.camera_id].waited
                ):
                    # Still silent after every retry: `no_ack`, even if its presence says
                    # offline (it was within offline_grace_s, so it was waited for); `offline`
                    # is only for the cameras not waited for (docs/protocol.md).
                    why = EscalationReason.NO_ACK
                    detail += self._offline_note(outcome.camera_id, now)
                else:
                    continue
                escalated.append((outcome.camera_id, why, detail))
                escalations += self._escalations(live, outcome.camera_id, why, detail)
        # Queued for dispatch before the log says `finished` (the two are separate stores):
        # a crash after this and before that is completed from the outbox on restart
        # (load_unfinished); a crash after both only has the outbox left to send.
        queued = QueuedOutcome(record=record, escalations=tuple(escalations))
        self.publisher.deliver_final(
            aid,
            queued.model_dump_json().encode(),
            [(self.topics.activation(self.unit_id, aid), encode(record))]
            + [(self.topics.escalation(e.audience), encode(e)) for e in escalations],
        )
        for camera_id, why, detail in escalated:
            self._note_escalated(aid, camera_id, why, detail)
        failpoint("activation.queued")
        await self._log_finished(queued, now)
        failpoint("activation.finished")
        missed = [c.camera_id for c in record.cameras if c.status == "missed"]
        self._log.info(
            "activation finished",
            activation=aid,
            state=record.state.value,
            all_acked_ms=record.all_acked_ms,
            missed=missed,
        )
        if self.on_finished is not None:
            self.on_finished(record)

    async def _log_finished(self, queued: QueuedOutcome, now: int) -> None:
        """The outcome and its escalations into the log, durably; once they are there, the
        copy kept in the outbox is not needed any more. All queued at once, before the
        wait: a shutdown while waiting still writes them."""
        aid = queued.record.activation_id
        durable = True
        try:
            self.log.append(RecordKind.FINISHED, aid, FinishedEntry(record=queued.record), now)
        except LogError as exc:
            durable = False
            self.counters["log.write_failures"] += 1
            self._log.error("activation outcome not durable", error=str(exc))
        for escalation in queued.escalations:
            self._append(RecordKind.ESCALATED, aid, EscalatedEntry(escalation=escalation))
        try:
            await self.log.flush()
        except LogError as exc:
            if durable:
                self.counters["log.write_failures"] += 1
                self._log.error("activation outcome not durable", error=str(exc))
            durable = False
        if durable:
            self.publisher.settle_final(aid)

    def _offline_note(self, camera_id: str, now: int) -> str:
        """What its presence says, for a camera that never answered and is offline."""
        presence = self.presence.get(camera_id)
        if presence is None or presence.online:
            return ""
        return f"; offline (last seen {(now - presence.last_seen_ns) / NS:.0f} s ago)"

    def _remember_finished(self, activation_id: str) -> None:
        self.recent[activation_id] = None
        while len(self.recent) > _RECENT_MAX:
            self.recent.popitem(last=False)

    # --- escalation ------------------------------------------------------------------------
    def _escalations(
        self, live: _Live, camera_id: str, reason: EscalationReason, detail: str
    ) -> list[Escalation]:
        """A camera that did not start, told to each of the policy's audiences."""
        tracker = live.tracker
        presence = self.presence.get(camera_id)
        progress = tracker.cameras.get(camera_id)
        now = self.clock.wall_ns()
        return [
            Escalation(
                activation_id=tracker.activation_id,
                issuer=self.issuer,
                unit_id=self.unit_id,
                kind=tracker.command.trigger.kind,
                priority=tracker.command.priority,
                camera_id=camera_id,
                camera_unit_id=presence.unit_id if presence is not None else None,
                officer=presence.officer if presence is not None else None,
                reason=reason,
                detail=detail[:512],
                attempts=progress.attempts if progress is not None else 0,
                audience=f"unit-{self.unit_id}" if audience == "own_unit" else audience,
                at_ns=now,
            )
            for audience in live.rules.escalate_to
        ]

    def _escalate(self, live: _Live, camera_id: str, reason: EscalationReason, detail: str) -> None:
        """Tell the policy's audiences now that a camera will not start, and log it."""
        for escalation in self._escalations(live, camera_id, reason, detail):
            self.publisher.deliver(self.topics.escalation(escalation.audience), encode(escalation))
            self._append(
                RecordKind.ESCALATED,
                escalation.activation_id,
                EscalatedEntry(escalation=escalation),
            )
        self._note_escalated(live.tracker.activation_id, camera_id, reason, detail)

    def _note_escalated(
        self, activation_id: str, camera_id: str, reason: EscalationReason, detail: str
    ) -> None:
        self.counters[f"escalations.{reason.value}"] += 1
        self._log.warning(
            "camera escalated",
            activation=activation_id,
            camera=camera_id,
            reason=reason.value,
            detail=detail,
        )

    # --- cancellation ------------------------------------------------------------------------
    def on_cancel(
        self, request: CancelRequest, *, untrusted: Rejection | None = None
    ) -> TriggerReceipt:
        """Cancel an activation within its window; refused (and logged) otherwise, and
        always if its signature was refused (``untrusted``)."""
        now = self.clock.wall_ns()
        self._prune_cancellable(now)
        aid = request.activation_id
        live = self.live.get(aid) or self.cancellable.get(aid)
        if untrusted is not None:
            problem = f"{untrusted.code}: {untrusted.reason}"
        else:
            problem = self._cancel_problem(live, request, now)
        self._append(
            RecordKind.CANCEL,
            aid,
            CancelEntry(cancel=request, accepted=not problem, reason=problem, received_at_ns=now),
        )
        if problem or live is None:
            self.counters["cancels.refused"] += 1
            self._log.info("cancel refused", activation=aid, by=request.by, reason=problem)
        else:
            self.counters["cancels.accepted"] += 1
            self._cancel(live, request, now)
        receipt = TriggerReceipt.answering_cancel(
            request,
            self.unit_id,
            accepted=not problem and live is not None,
            reason=problem,
            at_ns=now,
        )
        return self._announce(receipt)

    def _cancel_problem(self, live: _Live | None, request: CancelRequest, now: int) -> str:
        if live is None:
            return f"activation {request.activation_id} is not one of this gateway's recent ones"
        tracker, window = live.tracker, live.rules.cancel_window_s
        if tracker.cancelled_by is not None:
            return f"already cancelled by {tracker.cancelled_by}"
        if window <= 0:
            return f"the policy allows no cancelling of {tracker.command.trigger.kind} activations"
        # The deadline the cameras were given decides, so gateway and cameras agree.
        command = tracker.command
        if command.cancel_until_ns is None:
            return "its command carried no cancel deadline, so cameras would refuse a cancel"
        if now > command.cancel_until_ns:
            granted_s = (command.cancel_until_ns - command.issued_at_ns) / NS
            late_s = (now - command.cancel_until_ns) / NS
            return f"the {granted_s:g} s cancel window closed {late_s:.1f} s ago"
        return ""

    def _cancel(self, live: _Live, request: CancelRequest, now: int) -> None:
        tracker = live.tracker
        was_finished = tracker.finished_at_ns is not None
        tracker.cancel(now, request.by, request.reason)
        self.admitter.forget(tracker.activation_id)
        notice = self.security.seal(
            RecordCancel(
                activation_id=tracker.activation_id,
                issuer=self.issuer,
                reason=tracker.finish_reason,
                at_ns=now,
            )
        )
        for topic in command_topics(self.topics, tracker.command):
            self.publisher.deliver(topic, notice)
        self._log.info("activation cancelled", activation=tracker.activation_id, by=request.by)
        if was_finished:
            self._deliver_record(tracker.record())  # the outcome stands; the state changes
        else:
            live.done.set()  # _drive stops retrying and finishes it as cancelled

    def on_cancel_ack(
        self, ack: CancelAck, *, untrusted: Rejection | None = None, jws: Jws | None = None
    ) -> None:
        """A camera's answer to a record-cancel for one of our activations (ours, or one
        another issuer tried to cancel): logged, so the log says which cameras stopped
        and which refused whose cancel. An untrusted one (its signature refused) is
        logged as evidence, marked so. At most a few per camera and activation: more
        are counted, not logged."""
        aid = ack.activation_id
        if aid not in self.live and aid not in self.recent:
            self.counters["cancel_acks.unknown_activation"] += 1
            return
        effect = ack.outcome.value if untrusted is None else f"untrusted:{untrusted.code}"
        key = (aid, ack.camera_id)
        logged = self._cancel_acks_logged.get(key, 0)
        if logged >= _CANCEL_ACKS_PER_CAMERA:
            self.counters["cancel_acks.not_logged"] += 1
            return
        self._cancel_acks_logged[key] = logged + 1
        while len(self._cancel_acks_logged) > _CANCEL_ACKS_LOGGED_MAX:
            self._cancel_acks_logged.popitem(last=False)
        self.counters[f"cancel_acks.{effect.split(':')[0]}"] += 1
        entry = CancelAckEntry(ack=ack, effect=effect, jws=SignedCopy.of(jws))
        self._append(RecordKind.CANCEL_ACK, aid, entry)
        if ack.outcome is CancelOutcome.REFUSED and untrusted is None:
            self._log.warning(
                "camera refused a cancel",
                activation=aid,
                camera=ack.camera_id,
                cancel_issuer=ack.cancel_issuer,
                reason=ack.reason,
            )

    def on_recording(
        self,
        message: RecordingMessage,
        *,
        untrusted: Rejection | None = None,
        jws: Jws | None = None,
    ) -> bool:
        """A camera's recording started or stopped: appended to the log (a `recording`
        record) under the first of its activations this gateway knows (live or recently
        finished); one naming none of them is counted, not logged, trusted or not. Each
        (camera, recording, event) once (an untrusted one: once per signature), and at most
        ``_RECORDINGS_PER_CAMERA`` rows per camera and activation (untrusted ones:
        ``_UNTRUSTED_RECORDINGS_PER_ACTIVATION`` per activation), but for the stop of a
        recording whose start was logged; past that, counted (`recordings.over_cap`) and
        warned of at most every 10 s. True if logged."""
        trusted = untrusted is None
        # A trusted one is shadowed only by a trusted one; a refused one only by the same
        # bytes signed the same way (another forgery is other evidence).
        signature = "" if jws is None else jws.signature
        key = (
            message.camera_id,
            message.recording_id,
            message.event.value,
            "trusted" if trusted else f"untrusted:{signature}",
        )
        if key in self._recordings_logged:
            self._recordings_logged.move_to_end(key)
            self.counters["recordings.repeated"] += 1
            return False
        ours = [a for a in message.activation_ids if a in self.live or a in self.recent]
        if not ours:
            # Not about an activation of ours: a stolen key could name made-up ones at will.
            if trusted:
                self.counters["recordings.unknown_activation"] += 1
            else:
                self.counters["recordings.untrusted_unknown"] += 1
            return False
        activation = ours[0]
        count_key = (activation, message.camera_id if trusted else "")
        cap = _RECORDINGS_PER_CAMERA if trusted else _UNTRUSTED_RECORDINGS_PER_ACTIVATION
        # The stop of a recording whose start was logged is logged whatever the count (once:
        # the key above), so a flood under the camera's key cannot crowd out a genuine stop.
        start_key = (message.camera_id, message.recording_id, RecordingEvent.START.value, "trusted")
        closes_logged_start = (
            trusted
            and message.event is RecordingEvent.STOP
            and start_key in self._recordings_logged
        )
        if not closes_logged_start:
            rows = self._recording_rows.get(count_key, 0)
            if rows >= cap:
                self._recording_rows.move_to_end(count_key)
                self._over_cap(message, activation, trusted)
                return False
            self._recording_rows[count_key] = rows + 1
            self._recording_rows.move_to_end(count_key)
            while len(self._recording_rows) > _RECORDING_COUNTS_MAX:
                self._recording_rows.popitem(last=False)
        self._recordings_logged[key] = None
        while len(self._recordings_logged) > _RECORDINGS_REMEMBERED:
            self._recordings_logged.popitem(last=False)
        effect = "accepted" if untrusted is None else f"untrusted:{untrusted.code}"
        if not trusted:
            self.counters["recordings.untrusted"] += 1
        elif message.event is RecordingEvent.START:
            self.counters["recordings.start"] += 1
        else:
            self.counters["recordings.stop"] += 1
        entry = RecordingEntry(recording=message, effect=effect, jws=SignedCopy.of(jws))
        self._append(RecordKind.RECORDING, activation, entry)
        if trusted and message.event is RecordingEvent.STOP:
            self._log.info(
                "camera stopped recording",
                camera=message.camera_id,
                recording=message.recording_id,
                reason=None if message.reason is None else message.reason.value,
                activations=list(message.activation_ids),
            )
        return True

    def _over_cap(self, message: RecordingMessage, activation: str, trusted: bool) -> None:
        """Counted always; warned of at most every 10 s, with how many went unreported."""
        self.counters["recordings.over_cap"] += 1
        now = self.clock.mono_ns()
        last = self._over_cap_warned_ns
        if last is not None and now - last < _OVER_CAP_WARN_EVERY_NS:
            self._over_cap_unreported += 1
            return
        self._over_cap_warned_ns = now
        unreported, self._over_cap_unreported = self._over_cap_unreported, 0
        self._log.warning(
            "recording messages over the cap, not logged",
            camera=message.camera_id,
            activation=activation,
            trusted=trusted,
            cap=_RECORDINGS_PER_CAMERA if trusted else _UNTRUSTED_RECORDINGS_PER_ACTIVATION,
            unreported_since_last=unreported,
        )

    def _prune_cancellable(self, now: int) -> None:
        # Kept a minute past the window, so that a late cancel hears "window closed"; and
        # no more than a car's gateway could need (each holds its cameras' outcomes).
        while len(self.cancellable) > _CANCELLABLE_MAX:
            self.cancellable.popitem(last=False)
        while self.cancellable:
            aid, live = next(iter(self.cancellable.items()))
            age_s = (now - live.tracker.command.issued_at_ns) / NS
            if age_s <= live.rules.cancel_window_s + _CANCEL_MEMORY_S:
                break
            del self.cancellable[aid]

    def _publish_record(self, record: ActivationRecord) -> None:
        """A progress record: superseded by the next, so never queued."""
        self.publisher.publish_soon(
            self.topics.activation(self.unit_id, record.activation_id), encode(record), qos=1
        )

    def _deliver_record(self, record: ActivationRecord) -> None:
        """A final record: dispatch and the archive must get it, outage or not."""
        self.publisher.deliver(
            self.topics.activation(self.unit_id, record.activation_id), encode(record)
        )

    # --- restart --------------------------------------------------------------------------
    def rebuild_admission(self) -> None:
        """Refill the cooldown windows from recent activations in the log."""
        horizon = self.clock.wall_ns() - int(
            (self.policy.max_trigger_age_s + self.policy.longest_cooldown_s) * NS
        )
        for row in self.log.activations_since(horizon):
            entry = ActivationEntry.model_validate_json(row.body)
            self.admitter.remember(entry.trigger, entry.command.activation_id)

    def load_unfinished(self) -> int:
        """Rebuild activations that were logged but not finished (before connecting, so
        acks the broker kept for us find them). One whose outcome was already queued for
        dispatch when the gateway stopped is not decided again: that outcome is logged
        (``start_resumed``)."""
        # The latest activations of the log are known again: a camera's late ack, cancel ack
        # or recording stop for one of them is still logged after a restart.
        for activation_id in self.log.latest_activation_ids(_RECENT_MAX):
            self._remember_finished(activation_id)
        queued: list[QueuedOutcome] = []
        for activation_id in self.log.unfinished_activation_ids():
            outcome = self._queued_outcome(activation_id)
            if outcome is not None:
                queued.append(outcome)
                self._remember_finished(activation_id)
                continue
            live = self._restore(activation_id)
            if live is not None:
                self.live[activation_id] = live
                self._resumed.append(live)
        # The others are logged already (a crash after `finished`), or were never logged.
        self.publisher.keep_finals([q.record.activation_id for q in queued])
        self._queued_before_stop = queued
        return len(self._resumed) + len(queued)

    def start_resumed(self) -> None:
        """Drive the reloaded activations (call once the broker link is up)."""
        for live in self._resumed:
            self.counters["activations.resumed"] += 1
            self.tasks.spawn(self._drive(live))
        self._resumed = []
        if self._queued_before_stop:
            self.tasks.spawn(self._log_queued_before_stop(self._queued_before_stop))
            self._queued_before_stop = []

    def _queued_outcome(self, activation_id: str) -> QueuedOutcome | None:
        raw = self.publisher.queued_final(activation_id)
        if raw is None:
            return None
        try:
            queued = QueuedOutcome.model_validate_json(raw)
            if queued.record.activation_id != activation_id:
                raise ValueError(f"it is the outcome of {queued.record.activation_id}")
        except (ValidationError, ValueError) as exc:
            # Not to be trusted: decided again instead (dispatch may hear it twice).
            self._log.error(
                "queued outcome unreadable; resuming the activation",
                activation=activation_id,
                error=str(exc).splitlines()[0],
            )
            return None
        return queued

    async def _log_queued_before_stop(self, outcomes: list[QueuedOutcome]) -> None:
        for queued in outcomes:
            aid = queued.record.activation_id
            self.counters["activations.resumed"] += 1
            self._append(
                RecordKind.RESUMED,
                aid,
                ResumedEntry(
                    reason="gateway stopped after queuing this activation's outcome for "
                    "dispatch and before logging it: the outcome sent is logged",
                    acks_recovered=0,
                ),
            )
            self._log.info("queued outcome logged after a restart", activation=aid)
            await self._log_finished(queued, self.clock.wall_ns())

    def _restore(self, activation_id: str) -> _Live | None:
        rows = self.log.records_of(activation_id)
        entry: ActivationEntry | None = None
        acks = 0
        live: _Live | None = None
        escalated: set[str] = set()
        for row in rows:
            if row.kind == RecordKind.ACTIVATION:
                entry = ActivationEntry.model_validate_json(row.body)
                decisions = [t.decision() for t in entry.targets]
                tracker = ActivationTracker(
                    entry.command,
                    decisions,
                    unit_id=self.unit_id,
                    accepted_mono_ns=self.clock.mono_ns(),
                )
                live = _Live(tracker, self.policy.rules(entry.trigger.kind))
                live.unreachable = [d for d in decisions if d.escalate is not None]
                self.admitter.remember(entry.trigger, activation_id)
            elif row.kind == RecordKind.ESCALATED:
                escalated.add(EscalatedEntry.model_validate_json(row.body).escalation.camera_id)
            elif live is not None and row.kind == RecordKind.PUBLISHED:
                published = PublishedEntry.model_validate_json(row.body)
                live.published = True
                live.attempt = max(live.attempt, published.attempt)
                live.tracker.restore_published(
                    None if published.cameras is None else list(published.cameras), row.at_ns
                )
            elif live is not None and row.kind == RecordKind.ACK:
                ack_entry = AckEntry.model_validate_json(row.body)
                live.tracker.restore_ack(ack_entry.ack, row.at_ns, ack_entry.latency_ms)
                acks += 1
        if live is None or entry is None:
            return None
        # Those escalated before the restart are not told twice.
        live.unreachable = [d for d in live.unreachable if d.camera_id not in escalated]
        if live.tracker.complete:
            live.done.set()
        self._append(
            RecordKind.RESUMED,
            activation_id,
            ResumedEntry(
                reason="gateway restarted with this activation unfinished", acks_recovered=acks
            ),
        )
        self._log.info(
            "activation resumed",
            activation=activation_id,
            published=live.published,
            acks_recovered=acks,
        )
        return live

    # --- plumbing -------------------------------------------------------------------------
    def _append_ack(
        self,
        ack: CameraAck,
        latency_ms: float | None,
        effect: str,
        at_ns: int,
        jws: Jws | None = None,
    ) -> None:
        body = AckEntry.json_of(ack, latency_ms, effect, jws)
        try:
            self.log.append_json(RecordKind.ACK, ack.activation_id, body, at_ns)
        except LogError as exc:
            self.counters["log.write_failures"] += 1
            self._log.error("log append failed", kind="ack", error=str(exc))

    def _append(
        self,
        kind: RecordKind,
        activation_id: str | None,
        body: (
            TriggerEntry
            | PublishedEntry
            | ResumedEntry
            | EscalatedEntry
            | CancelEntry
            | CancelAckEntry
            | RecordingEntry
        ),
    ) -> None:
        try:
            self.log.append(kind, activation_id, body, self.clock.wall_ns())
        except LogError as exc:
            self.counters["log.write_failures"] += 1
            self._log.error("log append failed", kind=kind.value, error=str(exc))

"""The console's side of MQTT: everything dispatch watches, kept in ConsoleState and pushed
to every open page; and the dispatcher's remote activations and cancels going out."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from typing import Any

import structlog

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink, ProtocolChoice
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import TopicKind, Topics
from mesh.clock import SYSTEM_CLOCK, Clock
from mesh.dispatch.console.state import CameraLimits, ConsoleState, Update
from mesh.dispatch.watch import MAX_RECORD_BYTES
from mesh.protocol.codec import PayloadError, decode, encode
from mesh.protocol.models import (
    ActivationRecord,
    CameraPresence,
    CancelRequest,
    Escalation,
    GatewayStatus,
    Position,
    SourceRef,
    SourceType,
    TriggerEvent,
    TriggerKind,
    TriggerReceipt,
)
from mesh.security.signing import PayloadSigner

# A page that falls this far behind is told to reload the state instead.
_PAGE_QUEUE = 2000
# A remote activation or cancel is sent again this often until its receipt comes.
RESEND_EVERY_S = 2.0


class ConsoleHub:
    def __init__(
        self,
        url: BrokerUrl,
        topics: Topics,
        *,
        client_id: str | None = None,
        protocol: ProtocolChoice = "auto",
        clock: Clock = SYSTEM_CLOCK,
        signer: PayloadSigner | None = None,
        camera_limits: CameraLimits | None = None,
    ) -> None:
        self.topics = topics
        # Signs remote activations and cancels, for gateways that check them.
        self.signer = signer
        self.clock = clock
        self.state = ConsoleState(camera_limits=camera_limits or CameraLimits())
        self.counters: Counter[str] = Counter()
        self._pages: set[asyncio.Queue[Update]] = set()
        self._receipts: dict[str, asyncio.Future[TriggerReceipt]] = {}
        self._log = structlog.get_logger("mesh.console")
        self.link = MqttLink(
            url,
            LinkOptions(
                client_id=client_id or f"tm-console-{uuid.uuid4().hex[:8]}",
                subscriptions=(
                    (topics.all_activations(), 1),
                    (topics.all_receipts(), 1),
                    (topics.all_presence(), 1),
                    (topics.all_escalations(), 1),
                    (topics.all_gateways(), 1),
                ),
                persistent_session=False,
                protocol=protocol,
            ),
            logger=self._log,
        )

    async def run(self) -> None:
        await self.link.run(self._on_message)

    # --- pages ------------------------------------------------------------------------
    def attach(self) -> asyncio.Queue[Update]:
        """A page connects: it gets the state, then every update, in order."""
        queue: asyncio.Queue[Update] = asyncio.Queue(maxsize=_PAGE_QUEUE)
        queue.put_nowait(self.state.snapshot())
        self._pages.add(queue)
        return queue

    def detach(self, queue: asyncio.Queue[Update]) -> None:
        self._pages.discard(queue)

    def _push(self, update: Update | None) -> None:
        if update is None:
            return
        for queue in self._pages:
            if queue.full():
                # Too far behind to catch up by updates: start it over from the state.
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(self.state.snapshot())
                self.counters["pages.resynced"] += 1
            else:
                queue.put_nowait(update)

    # --- MQTT in ------------------------------------------------------------------------
    def _on_message(self, message: Inbound) -> None:
        parsed = self.topics.parse(message.topic)
        if parsed is None:
            return
        try:
            match parsed.kind:
                case TopicKind.ACTIVATION:
                    record = decode(ActivationRecord, message.payload, max_bytes=MAX_RECORD_BYTES)
                    self._push(self.state.apply_activation(record))
                case TopicKind.PRESENCE:
                    presence = decode(CameraPresence, message.payload) if message.payload else None
                    if presence is not None and presence.camera_id != parsed.args[0]:
                        raise PayloadError(
                            "wrong_camera",
                            f"presence of {presence.camera_id!r} on the topic of "
                            f"{parsed.args[0]!r}",
                        )
                    self._push(
                        self.state.apply_presence(parsed.args[0], presence, self.clock.wall_ns())
                    )
                case TopicKind.ESCALATION:
                    self._push(self.state.apply_escalation(decode(Escalation, message.payload)))
                case TopicKind.GATEWAY:
                    self._push(self.state.apply_gateway(decode(GatewayStatus, message.payload)))
                case TopicKind.RECEIPT:
                    receipt = decode(TriggerReceipt, message.payload)
                    waiting = self._receipts.pop(receipt.event_id, None)
                    if waiting is not None and not waiting.done():
                        waiting.set_result(receipt)
        except PayloadError as exc:
            self.counters[f"rejected.{parsed.kind.value}.{exc.code}"] += 1
            self._log.warning("payload rejected", topic=message.topic, reason=exc.reason)

    # --- a dispatcher's orders out -----------------------------------------------------------
    async def activate(
        self,
        user: str,
        unit_id: str,
        *,
        position: Position | None = None,
        note: str = "",
        timeout_s: float = 5.0,
    ) -> TriggerReceipt | None:
        """A remote activation: a ``dispatch`` trigger to the unit's gateway, naming the
        dispatcher; returns the gateway's receipt (None if none came in time)."""
        event = TriggerEvent(
            event_id=f"dispatch-{uuid.uuid4().hex}",
            kind=TriggerKind.DISPATCH,
            # Authenticated by the console's login; the cooldown is per dispatcher.
            source=SourceRef(type=SourceType.DISPATCH, id=user, authenticated=True),
            unit_id=unit_id,
            observed_at_ns=self.clock.wall_ns(),
            position=position,
            detail={"dispatcher": user, "note": note[:256]},
        )
        self._log.info("remote activation", user=user, unit=unit_id, event_id=event.event_id)
        return await self._send_and_wait(
            self.topics.trigger(unit_id), self._seal(event), event.event_id, timeout_s
        )

    async def cancel(
        self, user: str, unit_id: str, activation_id: str, reason: str, timeout_s: float = 5.0
    ) -> TriggerReceipt | None:
        request = CancelRequest(
            cancel_id=f"cancel-{uuid.uuid4().hex}",
            activation_id=activation_id,
            unit_id=unit_id,
            by=f"dispatch:{user}",
            reason=reason[:512],
            at_ns=self.clock.wall_ns(),
        )
        self._log.info("cancel requested", user=user, unit=unit_id, activation=activation_id)
        return await self._send_and_wait(
            self.topics.cancel(unit_id), self._seal(request), request.cancel_id, timeout_s
        )

    def _seal(self, payload: TriggerEvent | CancelRequest) -> bytes:
        """Signed with the console's key (a JWS), or the plain payload without one."""
        return encode(payload) if self.signer is None else self.signer.seal(payload).to_bytes()

    async def _send_and_wait(
        self, topic: str, payload: bytes, key: str, timeout_s: float
    ) -> TriggerReceipt | None:
        """Send until the gateway's receipt comes (same id: the gateway merges repeats), so
        that a copy lost with a broker that died, or sent before the gateway subscribed
        again, does not end in "no answer"; None after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        waiting: asyncio.Future[TriggerReceipt] = loop.create_future()
        self._receipts[key] = waiting
        deadline = loop.time() + timeout_s
        try:
            while (left := deadline - loop.time()) > 0:
                with contextlib.suppress(ConnectionError):
                    await self.link.publish(topic, payload, qos=1, wait_s=left)
                left = deadline - loop.time()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(RESEND_EVERY_S, left)):
                        return await asyncio.shield(waiting)
            return None
        finally:
            self._receipts.pop(key, None)

    def status(self) -> dict[str, Any]:
        return {
            "mqtt": self.link.is_up,
            "pages": len(self._pages),
            **self.counters,
            **self.state.dropped,
        }

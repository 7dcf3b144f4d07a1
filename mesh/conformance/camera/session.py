"""The kit's conversation with the camera: what it sent, what came back, and when.

Every message goes out on the kit's one link (QoS 1); every answer the camera publishes
on ``{p}/ack/+/{camera}`` is read, opened (``wire.open_answer``) and matched to the
message it answers: same activation id and kind (an ack answers a record_start, a
cancel_ack a record_cancel), after that message and before the next of the same id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from bridge.topics import TopicKind, Topics
from mesh.conformance import wire
from mesh.conformance.camera.judge import Answer
from mesh.conformance.camera.probes import Sent
from mesh.conformance.mqtt import Inbox, KitLink, Seen
from mesh.protocol.codec import PayloadError, decode
from mesh.protocol.models import CameraAck, CameraPresence, RecordCancel, RecordStart

# A camera's `rejected` acks and cancel refusals are budgeted at 10 a second: the kit
# sends what it expects refused no faster than this.
REFUSAL_GAP_S = 0.15


@dataclass(frozen=True)
class Keys:
    """A signed run's keys (all None in an unsigned run)."""

    gateway: wire.Signer | None = None  # the kit's issuer's, trusted by the camera
    other: wire.Signer | None = None  # another gateway's, trusted by the camera (optional)
    attacker: wire.Signer | None = None  # nobody's
    trust: wire.Trust | None = None  # the camera's trust store: its key checks its answers

    @property
    def signed(self) -> bool:
        return self.gateway is not None


class CameraSession:
    def __init__(
        self,
        link: KitLink,
        topics: Topics,
        camera_id: str,
        *,
        keys: Keys,
        timeout_s: float,
        quiet_s: float,
        id_prefix: str,
    ) -> None:
        self.link = link
        self.topics = topics
        self.camera_id = camera_id
        self.keys = keys
        self.timeout_s = timeout_s
        self.quiet_s = quiet_s
        self.id_prefix = id_prefix
        self.sent: list[Sent] = []
        self._answers: dict[int, Answer | None] = {}
        self._last_refusal = 0.0

    @property
    def inbox(self) -> Inbox:
        return self.link.inbox

    # --- sending ------------------------------------------------------------------------
    def seal(
        self,
        model: RecordStart | RecordCancel,
        *,
        signer: wire.Signer | str | None = "gateway",
        fields: dict[str, object] | None = None,
    ) -> bytes:
        """``signer``: "gateway" (the kit issuer's key, None in an unsigned run), "other",
        or a key; None sends it unsigned."""
        key = self._signer(signer)
        if isinstance(model, RecordStart):
            return wire.seal(model, key, fields=fields)
        return wire.seal(model, key, fields=fields)

    def _signer(self, signer: wire.Signer | str | None) -> wire.Signer | None:
        if signer == "gateway":
            return self.keys.gateway
        if signer == "other":
            return self.keys.other
        assert not isinstance(signer, str)
        return signer

    async def send(
        self,
        probe: str,
        model: RecordStart | RecordCancel,
        topic: str,
        *,
        payload: bytes | None = None,
        signer: wire.Signer | str | None = "gateway",
        refusal: bool = False,
    ) -> Sent:
        """Publish ``model`` (or ``payload``, bytes made of it) to ``topic``. ``refusal``:
        the camera is expected to refuse it, so it keeps to the camera's refusal budget."""
        if refusal:
            wait = self._last_refusal + REFUSAL_GAP_S - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_refusal = time.monotonic()
        body = payload if payload is not None else self.seal(model, signer=signer)
        sent = Sent(
            probe=probe,
            activation_id=model.activation_id,
            issuer=model.issuer,
            attempt=model.attempt if isinstance(model, RecordStart) else 0,
            topic=topic,
            payload=body,
            mono_s=time.monotonic(),
            cancel_at_ns=model.at_ns if isinstance(model, RecordCancel) else None,
        )
        self.sent.append(sent)
        await self.link.publish(topic, body)
        return sent

    # --- answers ------------------------------------------------------------------------
    def answer_of(self, seen: Seen) -> Answer | None:
        """The camera's answer in a message on an ack topic (None: not an ack topic of
        this camera)."""
        if seen.index in self._answers:
            return self._answers[seen.index]
        parsed = self.topics.parse(seen.topic)
        answer = None
        if parsed is not None and parsed.kind is TopicKind.ACK and parsed.args[1] == self.camera_id:
            answer = _open(seen, parsed.args[0], self.keys.trust)
        self._answers[seen.index] = answer
        return answer

    def answers(self, match: Callable[[Answer], bool] | None = None) -> list[Answer]:
        out = []
        for seen in self.inbox.seen:
            answer = self.answer_of(seen)
            if answer is not None and (match is None or match(answer)):
                out.append(answer)
        return out

    def run_answers(self) -> list[Answer]:
        """Every answer to this run's messages (or unreadable), in order."""
        return self.answers(
            lambda a: a.activation_id is None or a.activation_id.startswith(self.id_prefix)
        )

    def answers_to(self, sent: Sent) -> list[Answer]:
        """The answers to ``sent``: after it, before the next message of the same id and kind."""
        later = [
            s
            for s in self.sent
            if s.mono_s > sent.mono_s
            and s.activation_id == sent.activation_id
            and s.is_cancel == sent.is_cancel
        ]
        until = min((s.mono_s for s in later), default=float("inf"))
        return self.answers(
            lambda a: (
                a.activation_id == sent.activation_id
                and (a.cancel_ack is not None) == sent.is_cancel
                and sent.mono_s <= a.mono_s < until
            )
        )

    async def answer(self, sent: Sent, timeout_s: float | None = None) -> Answer | None:
        """The first answer to ``sent``, waiting up to the run's timeout for it."""
        wait = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + wait
        while True:
            found = self.answers_to(sent)
            if found:
                return found[0]
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            mark = self.inbox.mark()
            await self.inbox.wait(
                lambda s: self.answer_of(s) is not None, since=mark, timeout_s=min(left, 0.25)
            )

    async def quiet(self) -> None:
        """The window in which a camera that answers would have answered."""
        await asyncio.sleep(self.quiet_s)

    def pairs(self, *, cancels: bool) -> list[tuple[Sent, Answer]]:
        """Every message sent with each answer to it."""
        return [
            (sent, answer)
            for sent in self.sent
            if sent.is_cancel == cancels
            for answer in self.answers_to(sent)
        ]

    # --- presence -------------------------------------------------------------------------
    def presences(self, since: int = 0) -> list[tuple[Seen, CameraPresence | None]]:
        topic = self.topics.presence(self.camera_id)
        out: list[tuple[Seen, CameraPresence | None]] = []
        for seen in self.inbox.since(since, lambda s: s.topic == topic):
            try:
                presence: CameraPresence | None = decode(CameraPresence, seen.payload)
            except PayloadError:
                presence = None
            out.append((seen, presence))
        return out

    async def presence(
        self, match: Callable[[CameraPresence], bool], *, since: int, timeout_s: float
    ) -> CameraPresence | None:
        topic = self.topics.presence(self.camera_id)

        def fits(seen: Seen) -> bool:
            if seen.topic != topic:
                return False
            try:
                return match(decode(CameraPresence, seen.payload))
            except PayloadError:
                return False

        seen = await self.inbox.wait(fits, since=since, timeout_s=timeout_s)
        return None if seen is None else decode(CameraPresence, seen.payload)


def _open(seen: Seen, issuer: str, trust: wire.Trust | None) -> Answer:
    base = Answer(seen.topic, issuer, len(seen.payload), seen.mono_s)
    try:
        opened = wire.open_answer(seen.payload, trust, seen.at_ns)
    except PayloadError as exc:
        return replace(base, error=str(exc))
    if isinstance(opened.model, CameraAck):
        return replace(base, ack=opened.model, untrusted=opened.problem)
    return replace(base, cancel_ack=opened.model, untrusted=opened.problem)

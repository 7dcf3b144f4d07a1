"""The kit's side of the broker: one link that keeps every message it reads, in order,
with the time it came, and waits for the ones a check expects (or for their absence)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.urls import BrokerUrl

UP_WITHIN_S = 15.0


@dataclass(frozen=True)
class Seen:
    """A message the kit read: where, what, whether the broker sent it as retained, and
    when it arrived (wall clock, for the record; monotonic, for durations)."""

    index: int
    topic: str
    payload: bytes
    retain: bool
    at_ns: int
    mono_s: float


class Inbox:
    """Every message a link read, in order; ``wait`` returns the first match after a mark."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._arrived = asyncio.Event()
        self.listeners: list[Callable[[Seen], None]] = []

    def put(self, message: Inbound) -> None:
        seen = Seen(
            len(self.seen),
            message.topic,
            message.payload,
            message.retain,
            time.time_ns(),
            time.monotonic(),
        )
        self.seen.append(seen)
        self._arrived.set()
        for listener in self.listeners:
            listener(seen)

    def mark(self) -> int:
        """Where the messages from now on start."""
        return len(self.seen)

    def since(self, mark: int, match: Callable[[Seen], bool] | None = None) -> list[Seen]:
        return [s for s in self.seen[mark:] if match is None or match(s)]

    async def wait(
        self, match: Callable[[Seen], bool], *, since: int, timeout_s: float
    ) -> Seen | None:
        """The first message from ``since`` on that ``match``es, waiting up to
        ``timeout_s`` for it; None if none came."""
        deadline = time.monotonic() + timeout_s
        checked = since
        while True:
            for seen in self.seen[checked:]:
                if match(seen):
                    return seen
            checked = len(self.seen)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._arrived.wait()


class KitLink:
    """A clean-session MQTT client subscribed to what the kit watches."""

    def __init__(self, url: BrokerUrl, subscriptions: tuple[str, ...], *, name: str) -> None:
        self.url = url
        self.inbox = Inbox()
        self.link = MqttLink(
            url,
            LinkOptions(
                f"tm-conformance-{name}-{uuid.uuid4().hex[:8]}",
                subscriptions=tuple((topic, 1) for topic in subscriptions),
                persistent_session=False,
            ),
            logger=structlog.get_logger("mesh.conformance").bind(link=name),
        )

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        await self.link.publish(topic, payload, qos=1, retain=retain, wait_s=UP_WITHIN_S)


@contextlib.asynccontextmanager
async def kit_link(
    url: BrokerUrl, subscriptions: tuple[str, ...], *, name: str
) -> AsyncIterator[KitLink]:
    """A KitLink running for the block, connected and subscribed when the block starts.
    Raises bridge.mqtt.client.LinkDown if the broker cannot be reached."""
    kit = KitLink(url, subscriptions, name=name)
    task = asyncio.create_task(kit.link.run(kit.inbox.put))
    try:
        await kit.link.wait_up(UP_WITHIN_S)
        yield kit
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def read_retained(url: BrokerUrl, topic: str, *, timeout_s: float = 2.0) -> Seen | None:
    """What the broker keeps retained on ``topic``, as a new subscriber gets it (a fresh
    connection: a subscriber already connected is sent a retained publish as a plain one)."""
    async with kit_link(url, (topic,), name="retained") as probe:
        return await probe.inbox.wait(lambda s: s.topic == topic, since=0, timeout_s=timeout_s)

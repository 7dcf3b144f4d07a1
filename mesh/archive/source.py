"""Where the archiver's messages come from: the one small interface between the archiver
(decode, queue, write: mesh/archive/archiver.py) and the broker it reads.

Two sources exist: ``MqttSource``, a shared subscription ``$share/archivers/…`` at an MQTT
broker (mosquitto, single-node deployments), and ``JetStreamSource``
(mesh/archive/jetstream.py), the one durable pull consumer of the archive's stream on a
NATS JetStream cluster. A source hands each message to the archiver's ``Sink`` with a
``Receipt``, which the archiver settles once it knows the message's fate: stored (after
the PostgreSQL commit), refused for good (a bad payload), or not stored (to come again).
"""

from __future__ import annotations

import enum
from typing import Protocol

import structlog

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink, ProtocolChoice
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import shared


def at_first_or_a_thousandth(before: int, after: int) -> bool:
    """Whether a count going from ``before`` to ``after`` starts or passes a multiple of
    1,000: a flood is logged at its first drop and every 1,000th, not once per message."""
    return after > before and (before == 0 or before // 1000 != after // 1000)


class Taken(enum.Enum):
    """What the archiver did with a message handed to it."""

    QUEUED = "queued"  # to be written; its receipt is settled after the commit
    REJECTED = "rejected"  # a bad payload: never to be delivered again
    IGNORED = "ignored"  # a topic the archive does not keep
    FULL = "full"  # the queue is full: not taken


class Receipt(Protocol):
    """How a message is settled with the source that delivered it."""

    async def stored(self) -> None:
        """Committed to PostgreSQL (or deliberately not kept): done with it."""

    async def refused(self) -> None:
        """Never to be delivered again (a poison message)."""

    async def again(self) -> None:
        """Not stored: deliver it again (to this archiver or another)."""

    @property
    def last_chance(self) -> bool:
        """Whether the source will not deliver it again if ``again`` is called."""


class Sink(Protocol):
    """The archiver, as a source sees it."""

    def take(self, topic: str, payload: bytes, receipt: Receipt) -> Taken: ...

    def room(self) -> int:
        """How many more messages it takes now."""
        ...

    async def up(self, where: str) -> None: ...


class Source(Protocol):
    # Whether a message taken and not yet stored is delivered again if the archiver stops
    # or dies (JetStream: unacknowledged; MQTT: acknowledged on receipt, so no).
    redelivers: bool

    async def serve(self, sink: Sink) -> None:
        """Deliver messages to ``sink`` until cancelled, reconnecting as needed."""

    def publish_answer(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """Publish ``payload`` at QoS 1 (a log's watermark, retained; a refusal, not),
        without waiting."""

    async def close(self) -> None:
        """After ``serve`` is cancelled and the archiver has settled what it held."""


class _Settled:
    """A receipt with nothing to settle: MQTT acknowledged the message on receipt."""

    last_chance = True

    async def stored(self) -> None:
        return None

    async def refused(self) -> None:
        return None

    async def again(self) -> None:
        return None


SETTLED = _Settled()


class MqttSource:
    """The archived topics over a shared subscription (``$share/GROUP/…``) at an MQTT
    broker, in a persistent session: the broker gives each message to one member. MQTT
    acknowledges a QoS 1 message on receipt, so a message taken and then not stored is
    not delivered again (docs/archive.md, when PostgreSQL is down)."""

    redelivers = False

    def __init__(
        self,
        url: BrokerUrl,
        *,
        client_id: str,
        group: str,
        filters: tuple[str, ...],
        protocol: ProtocolChoice = "auto",
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.link = MqttLink(
            url,
            LinkOptions(
                client_id=client_id,
                subscriptions=tuple((shared(group, f), 1) for f in filters),
                protocol=protocol,
            ),
            logger=logger,
        )
        self._group = group

    async def serve(self, sink: Sink) -> None:
        def on_message(message: Inbound) -> None:
            sink.take(message.topic, message.payload, SETTLED)

        async def on_connect() -> None:
            await sink.up(f"{self.link.url} (shared subscription group {self._group})")

        await self.link.serve_until_cancelled(on_message, on_connect=on_connect)

    def publish_answer(self, topic: str, payload: bytes, *, retain: bool) -> None:
        self.link.publish_soon(topic, payload, qos=1, retain=retain)

    async def close(self) -> None:
        return None  # serve_until_cancelled closed the link

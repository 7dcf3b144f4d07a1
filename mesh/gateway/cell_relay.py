"""The cell relay: geo-cell commands between a car and the central broker, for the cells
around the car only (docs/broker.md § The cell relay).

The car's bridge does not carry ``{p}/cmd/cell/+`` (importing every cell of the fleet
into every car grows with the square of the fleet: docs/deployment.md). The gateway does,
over a connection of its own to central:

- **in**: it subscribes at central to ``{p}/cmd/cell/X`` for each cell X around its car
  (mesh/decide/relay_cells.py: the cells near its cameras' last fixes and its own
  position, at most ``max_cells``, kept ``hold_s`` after they are no longer wanted), and
  publishes what comes into the car's broker, where the car's cameras of cell X hear it;
- **out**: it reads ``{p}/cmd/cell/+`` on the car's broker (its gateway's own commands) and
  publishes them at central, for other cars' relays.

Loops and echoes. Every message it passes, either way, is remembered by a digest of its
topic and payload (the last ``SEEN_MAX``); a message it has passed is never passed again,
either way. So what it relays in, read back from the car's broker, does not go out; what
it sends out, delivered back by central to its own subscription, does not come in (an
echo of the car's own command: one delivery, dropped). A digest forgotten (SEEN_MAX newer
messages since) lets one more copy through, which cameras drop as a duplicate.

Bounds: what waits for central while it is unreachable, at most OUT_MAX messages besides
the one being sent (the oldest dropped first, counted ``relay.out_dropped``); what was read
from central and not yet handled, at most IN_MAX (the oldest dropped, counted); a payload
over MAX_PAYLOAD is dropped unread (``relay.too_large``); a message on a cell not relayed
now (a delivery after its unsubscribe, or a topic that is not a cell's) is dropped
(``relay.not_wanted``); so is one that comes while the car's broker is down
(``relay.in_dropped_car_down``): no camera could hear it, and a command is worth its time
only.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import TopicKind, Topics
from mesh.clock import Clock
from mesh.decide.relay_cells import RelayCells, RelayLimits
from mesh.ops.tasks import Background

SEEN_MAX = 8192
OUT_MAX = 256
IN_MAX = 1024
MAX_PAYLOAD = 64 * 1024
# How often the set of cells is worked out again from the cameras' fixes.
TICK_S = 1.0
# After a failed send to central, the pause before the same message is tried again.
RETRY_S = 0.5

Points = Callable[[], Iterable[tuple[float, float]]]


@dataclass(frozen=True)
class RelaySettings:
    """``relay:`` in gateway.yaml: central's URL (the relay's own credential there) and
    the bounds of its cell set."""

    url: BrokerUrl
    limits: RelayLimits = field(default_factory=RelayLimits)


def relay_client_id(issuer: str) -> str:
    """The relay's client id and user name at central (its certificate's common name)."""
    return f"tm-relay-{issuer}"


class CellRelay:
    def __init__(
        self,
        settings: RelaySettings,
        *,
        local_url: BrokerUrl,
        topics: Topics,
        issuer: str,
        points: Points,
        clock: Clock,
        local_client_id: str,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.points = points
        self.clock = clock
        self.cells = RelayCells(settings.limits)
        # The cells central has acknowledged a subscription to, as of the last change.
        self.confirmed: frozenset[str] = frozenset()
        self.counters: Counter[str] = Counter()
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._out: deque[tuple[str, bytes]] = deque()
        self._out_ready = asyncio.Event()
        self._log = structlog.get_logger("mesh.gateway.relay").bind(gateway=issuer)
        self._background = Background()
        self.central = MqttLink(
            settings.url,
            LinkOptions(
                client_id=relay_client_id(issuer),
                # The cell set is sent again at every connect: nothing to keep at central
                # while the car is away (what was for its cells then is stale by now).
                persistent_session=False,
                protocol="3.1.1",
                max_inbound=IN_MAX,
            ),
            logger=self._log.bind(link="central"),
        )
        self.local = MqttLink(
            local_url,
            LinkOptions(
                client_id=local_client_id,
                subscriptions=((topics.command_cell("+"), 1),),
                protocol="3.1.1",
                max_inbound=IN_MAX,
            ),
            logger=self._log.bind(link="relay-local"),
        )

    # --- running ------------------------------------------------------------------------
    async def run(self) -> None:
        self._background.spawn(self.local.run(self._from_car))
        self._background.spawn(self._send_out())
        self._background.spawn(self._follow())
        try:
            await self.central.run(self._from_central, self._central_up)
        finally:
            await self._background.cancel_all()

    async def _follow(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(TICK_S)

    async def refresh(self) -> None:
        """Work the cell set out again from the points now; move the subscriptions at
        central if it changed."""
        change = self.cells.update(self.points(), self.clock.mono_ns())
        self.counters["relay.cells_dropped"] += change.dropped
        self.counters["relay.points_ignored"] += change.points_ignored
        if not change:
            return
        self.counters["relay.subscribed"] += len(change.subscribe)
        self.counters["relay.unsubscribed"] += len(change.unsubscribe)
        self._log.info(
            "relayed cells moved",
            subscribe=list(change.subscribe),
            unsubscribe=list(change.unsubscribe),
            cells=len(self.cells.cells),
            dropped=change.dropped,
        )
        # QoS 0: the session at central is clean, so a QoS 1 delivery not acknowledged when
        # the link drops is discarded there anyway; and on a NATS central a QoS 0
        # subscription is a plain subject interest, where QoS 1 makes a JetStream consumer
        # (replicated) per cell per car, made and removed as cars move.
        wanted = tuple((self.topics.command_cell(cell), 0) for cell in sorted(self.cells.cells))
        await self.central.set_subscriptions(wanted)
        # Up: set_subscriptions waited for central's SUBACK (down: the next connect
        # subscribes to the new set).
        self.confirmed = self.cells.cells if self.central.is_up else frozenset()

    async def _central_up(self) -> None:
        # The link subscribed to its current set as it connected.
        subscribed = {self.topics.parse(t) for t, _ in self.central.options.subscriptions}
        self.confirmed = frozenset(p.args[0] for p in subscribed if p is not None)

    # --- the two directions -------------------------------------------------------------
    def _from_central(self, message: Inbound) -> None:
        if not self._acceptable(message, "in"):
            return
        parsed = self.topics.parse(message.topic)
        if parsed is None or parsed.args[0] not in self.cells.cells:
            self.counters["relay.not_wanted"] += 1
            return
        if not self._first_time(message):
            self.counters["relay.echo"] += 1
            return
        if not self.local.is_up:
            # No camera of the car can hear it now; a command is worth its time only.
            self.counters["relay.in_dropped_car_down"] += 1
            return
        self.counters["relay.in"] += 1
        self.local.publish_soon(message.topic, message.payload, qos=1)

    def _from_car(self, message: Inbound) -> None:
        if not self._acceptable(message, "out"):
            return
        if not self._first_time(message):
            self.counters["relay.not_sent_back"] += 1  # what this relay brought in
            return
        if len(self._out) >= OUT_MAX:
            self._out.popleft()
            self.counters["relay.out_dropped"] += 1
        self._out.append((message.topic, message.payload))
        self._out_ready.set()

    async def _send_out(self) -> None:
        while True:
            await self._out_ready.wait()
            while self._out:
                topic, payload = self._out.popleft()
                try:
                    await self.central.publish(topic, payload, qos=1, wait_s=None)
                except ConnectionError as exc:
                    self._log.warning("cell command not yet sent to central", error=str(exc))
                    self._out.appendleft((topic, payload))  # the same again, first
                    if len(self._out) > OUT_MAX:
                        self._out.popleft()
                        self.counters["relay.out_dropped"] += 1
                    await asyncio.sleep(RETRY_S)
                    continue
                self.counters["relay.out"] += 1
            self._out_ready.clear()

    def _acceptable(self, message: Inbound, way: str) -> bool:
        parsed = self.topics.parse(message.topic)
        if parsed is None or parsed.kind is not TopicKind.COMMAND_CELL:
            self.counters["relay.not_wanted"] += 1
            return False
        if len(message.payload) > MAX_PAYLOAD:
            self.counters["relay.too_large"] += 1
            self._log.warning(
                "cell command too large to relay",
                way=way,
                topic=message.topic,
                size=len(message.payload),
            )
            return False
        return True

    def _first_time(self, message: Inbound) -> bool:
        digest = hashlib.blake2b(
            message.topic.encode() + b"\0" + message.payload, digest_size=16
        ).digest()
        if digest in self._seen:
            self._seen.move_to_end(digest)
            return False
        self._seen[digest] = None
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        return True

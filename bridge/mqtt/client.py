"""MqttLink: one long-lived MQTT connection on aiomqtt that survives its broker.

What it adds to aiomqtt:
- TCP_NODELAY on every socket (without it a QoS1 round trip on loopback costs 44-88 ms);
- reconnect with jittered exponential backoff, re-subscribing every time;
- MQTT 5 when the broker speaks it, 3.1.1 otherwise (decided once, on refusal);
- persistent sessions (MQTT 5 session expiry, or 3.1.1 clean_session=false) so QoS1
  messages published while we were away are delivered when we return;
- publish() that waits for the link instead of failing while it is down;
- acknowledgement on the receiver's terms: a handler may ``defer()`` a QoS 1 message's
  PUBACK until it has made the message durable, so that a crash in between gets the
  message again from the persistent session instead of losing it.

A fresh aiomqtt.Client is made for every connection: aiomqtt's "reusable" client keeps
its connected-future resolved after an unexpected disconnect, which would make the next
connect return before CONNACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.mqtt.urls import BrokerUrl

NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
# A connection up at least this long before it was lost counts as having held: the
# reconnect starts again from the first back-off step.
STABLE_CONNECTION_S = 10.0
# A SUBACK return code (3.1.1) or reason code (5) from here up refuses the filter.
SUBACK_FAILURE = 0x80
# A refused filter is asked for again on the same connection after this long, doubling up
# to the most: a refusal can pass (nats-server short of a node times out making the
# filter's consumer), and a link that waited for a reconnect would stay deaf to it.
REFUSED_RETRY_INITIAL_S = 2.0
REFUSED_RETRY_MAX_S = 60.0
# CONNACK codes meaning "I do not speak this protocol version": 3.1.1 rc 1, MQTT 5 reason 0x84.
_UNSUPPORTED_PROTOCOL = {1, 0x84}

# How long a clean shutdown may spend saying goodbye before the link is closed anyway.
STOP_TIMEOUT_S = 3.0
# A paced link (``max_reads_per_s``) may read its first ``max_reads_burst`` packets at once
# within this long of its connect: the retained messages its subscriptions bring.
READ_BURST_WINDOW_S = 5.0
# How long the first MQTT 5 CONNECT may wait for its CONNACK before we try 3.1.1.
PROBE_TIMEOUT_S = 2.0

# While the broker cannot be reached, one warning per back-off step and broker, at most one
# a second: a process's links to one broker (a camera has three) fail together, and a
# warning per link and attempt buried the one line that matters.
MIN_UNREACHABLE_WARNING_GAP_S = 1.0
_last_unreachable_warning: dict[str, float] = {}

ProtocolChoice = Literal["auto", "5", "3.1.1"]
_PENDING_PUBLISHES_WARN = 10_000


Settle = Callable[[], None]


class _Acker:
    """The PUBACK of one received message: sent after the handler returns, unless the
    handler took it over with ``Inbound.defer()``."""

    __slots__ = ("_client", "_mid", "_qos", "deferred", "sent")

    def __init__(self, client: aiomqtt.Client, mid: int, qos: int) -> None:
        self._client, self._mid, self._qos = client, mid, qos
        self.deferred = False
        self.sent = False

    def send(self) -> None:
        if self.sent or self._qos == 0:
            return
        self.sent = True
        # On a connection that has since dropped this is a no-op: the broker keeps the
        # message in the session and sends it again after the reconnect.
        with contextlib.suppress(Exception):
            self._client._client.ack(self._mid, self._qos)


@dataclass(frozen=True)
class Inbound:
    """A received message, independent of the client library."""

    topic: str
    payload: bytes
    retain: bool
    _acker: _Acker | None = dataclasses.field(default=None, compare=False, repr=False)

    def defer(self) -> Settle:
        """Hold this message's acknowledgement until the returned callable is called.

        Call it once the message is safe (e.g. durable). Never calling it (a crash,
        a cancelled task) means the broker delivers the message again on reconnect."""
        acker = self._acker
        if acker is None:
            return _nothing
        acker.deferred = True
        return acker.send


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class LastWill:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class LinkOptions:
    client_id: str
    subscriptions: tuple[tuple[str, int], ...] = ()
    will: LastWill | None = None
    persistent_session: bool = True
    session_expiry_s: int = 3600
    keepalive_s: int = 15
    protocol: ProtocolChoice = "auto"
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 5.0
    timeout_s: float = 10.0
    # Messages read but not yet handled, at most (0: no limit). Past it the oldest is
    # dropped, and acknowledged so that the broker's in-flight window does not fill up
    # with messages no one will acknowledge (counted in ``MqttLink.inbound_dropped``).
    max_inbound: int = 0
    # Filters to remove from a persistent session on the next connect (what an older
    # version of this client subscribed to and this one no longer wants).
    unsubscribe: tuple[str, ...] = ()
    # A cheap filter (topic, payload) run as each message is read, before it is queued:
    # what it refuses is dropped and acknowledged (counted in ``MqttLink.inbound_dropped``),
    # so a flood does not wait in the queue ahead of what the filter lets through.
    admit: Callable[[str, bytes], bool] | None = None
    # Take each message (topic, payload) as it is read, instead of queueing it for the
    # handler, and acknowledge it at once: for a handler that only sorts messages into
    # bounded queues of its own, where a flood is shed by rules the link does not know.
    take: Callable[[str, bytes], None] | None = None
    # Read at most this many packets a second from the socket (0: no limit): past it the
    # link stops reading for a moment, and a flood waits in TCP and the broker (which
    # drops it at its own per-client limits) instead of costing this process CPU.
    max_reads_per_s: int = 0
    # Read at once within READ_BURST_WINDOW_S of a connect, before the rate applies.
    max_reads_burst: int = 0
    # Let other tasks (another link's handler) run between this link's messages: a backlog
    # on one link must not hold the event loop.
    yield_between_messages: bool = False


_log = structlog.get_logger("bridge.link")


class _BoundedInbox(asyncio.Queue[aiomqtt.Message]):
    """The client library's queue of received messages, with a limit that sheds the
    oldest (0: none) and an optional admission filter: it is filled as fast as the socket
    is read, whatever the handler's pace."""

    def __init__(
        self,
        limit: int,
        on_drop: Callable[[aiomqtt.Message], None],
        admit: Callable[[str, bytes], bool] | None = None,
        take: tuple[Callable[[str, bytes], None], Callable[[aiomqtt.Message], None]] | None = None,
    ) -> None:
        super().__init__()
        self.limit = limit
        self.on_drop = on_drop
        self.admit = admit
        self.take = take  # (the taker, the acknowledgement)
        self.filter_failures = 0

    def _put(self, item: aiomqtt.Message) -> None:
        # The filters run inside the client library's socket reader: an exception there
        # would drop the connection, leave the message unacknowledged, and a persistent
        # session would deliver it again at every reconnect (one bad message, a deaf
        # link). A filter that fails drops the message, counted and acknowledged.
        if self.take is not None:
            taker, ack = self.take
            try:
                taker(item.topic.value, _raw(item))
            except Exception:
                self.filter_failures += 1
                _log.exception("message dropped: the link's intake failed on it")
            ack(item)
            return
        if self.admit is not None:
            try:
                admitted = self.admit(item.topic.value, _raw(item))
            except Exception:
                self.filter_failures += 1
                _log.exception("message dropped: the link's admission check failed on it")
                admitted = False
            if not admitted:
                self.on_drop(item)
                return
        queue = self._queue  # type: ignore[attr-defined]
        if self.limit > 0 and len(queue) >= self.limit:
            self.on_drop(queue.popleft())
        queue.append(item)


def _raw(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    return payload if isinstance(payload, bytes) else str(payload).encode()


def _ack(holder: list[aiomqtt.Client], message: aiomqtt.Message) -> None:
    if holder and message.qos > 0:
        with contextlib.suppress(Exception):
            holder[0]._client.ack(message.mid, message.qos)


MessageHandler = Callable[[Inbound], None]
ConnectHook = Callable[[], Awaitable[None]]


class LinkDown(ConnectionError):
    """A publish could not be completed because the broker connection is down."""


class MqttLink:
    """Keeps one client connected; call ``run()`` in a task and ``publish()`` from anywhere."""

    def __init__(
        self,
        url: BrokerUrl,
        options: LinkOptions,
        *,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.url = url
        self.options = options
        # Which of the URL's addresses (its cluster's nodes) the link connects to.
        self._address = 0
        self._up_since = 0.0  # monotonic, of the last connection's CONNACK
        self._log = logger or structlog.get_logger("bridge.link")
        self._client: aiomqtt.Client | None = None
        self._up = asyncio.Event()
        self._lost: asyncio.Future[None] | None = None
        self._version = (
            aiomqtt.ProtocolVersion.V311
            if options.protocol == "3.1.1"
            else aiomqtt.ProtocolVersion.V5
        )
        self.connects = 0
        self.failed_connects = 0  # in a row: reset by a connection
        self._connect_error: str | None = None
        # Why the last connect failed, until one succeeds: what LinkDown says.
        self.last_connect_error: str | None = None
        self.inbound_dropped = 0  # shed by ``max_inbound``
        # Filters the broker refused in a SUBACK, in all (and the last connect's): logged.
        self.refused_subscriptions = 0
        self.last_refused: tuple[str, ...] = ()
        # The filters refused on this connection and not granted since: asked again.
        self._refused: dict[str, int] = {}
        self._retry_refused: asyncio.Future[None] | None = None
        self._unsubscribe_pending: set[str] = set(options.unsubscribe) - {
            topic for topic, _ in options.subscriptions
        }
        # The on-connect hook failed (a publish that timed out): handled as a lost link.
        self.on_connect_failures = 0
        # asyncio keeps only weak references to tasks; fire-and-forget publishes live here.
        self._background: set[asyncio.Future[None]] = set()

    async def serve_until_cancelled(
        self,
        handler: MessageHandler,
        on_connect: ConnectHook | None = None,
        on_stop: ConnectHook | None = None,
    ) -> None:
        """``run()`` until cancelled, then ``on_stop()`` while the link is still up (to say
        goodbye: offline status, pending publishes), then close the link."""
        link = asyncio.ensure_future(self.run(handler, on_connect))
        try:
            await asyncio.shield(link)
        finally:
            try:
                if on_stop is not None and self.is_up:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(STOP_TIMEOUT_S):
                            await on_stop()
            finally:
                link.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await link

    async def set_subscriptions(self, subscriptions: tuple[tuple[str, int], ...]) -> None:
        """Change what this link subscribes to: new filters first, then the old ones go,
        so that nothing published to both in between is missed. Applied at once if the
        link is up, and on every (re)connect from now on."""
        old = {topic for topic, _ in self.options.subscriptions}
        new = {topic for topic, _ in subscriptions}
        self.options = dataclasses.replace(self.options, subscriptions=subscriptions)
        # A persistent session remembers filters across reconnects: removals are kept
        # until they reach the broker.
        self._unsubscribe_pending = (self._unsubscribe_pending | (old - new)) - new
        client = self._client
        if client is None or not self._up.is_set():
            return
        added = [(t, q) for t, q in subscriptions if t not in old]
        try:
            if added:
                granted = await client.subscribe(added, timeout=self.options.timeout_s)
                self._check_granted(added, granted)
                self._ask_again_for_refused(client)
            await self._flush_unsubscribes(client)
        except aiomqtt.MqttError as exc:
            # The next connect subscribes to the new set (and flushes the removals).
            self._log.warning("subscription change failed", error=str(exc))

    async def _flush_unsubscribes(self, client: aiomqtt.Client) -> None:
        if self._unsubscribe_pending:
            gone = sorted(self._unsubscribe_pending)
            await client.unsubscribe(gone, timeout=self.options.timeout_s)
            self._unsubscribe_pending -= set(gone)

    def set_will(self, will: LastWill | None) -> None:
        """Use this last-will from the next connection on (the current one keeps its own)."""
        self.options = dataclasses.replace(self.options, will=will)

    # --- state ------------------------------------------------------------------
    @property
    def is_up(self) -> bool:
        return self._up.is_set()

    @property
    def inbound_backlog(self) -> int:
        """Messages read from the broker but not yet given to the handler (the client
        library's queue: unbounded, so a handler that keeps up is what bounds it)."""
        client = self._client
        return 0 if client is None else len(client.messages)

    @property
    def protocol(self) -> str:
        return "5" if self._version == aiomqtt.ProtocolVersion.V5 else "3.1.1"

    def _up_for_s(self) -> float:
        return time.monotonic() - self._up_since

    @property
    def refused(self) -> tuple[str, ...]:
        """The filters the broker refused on this connection and has not granted since."""
        return tuple(self._refused)

    @property
    def node(self) -> str:
        """``host:port`` of the address the link is on, or tries next."""
        host, port = self.url.addresses[self._address]
        return f"{host}:{port}"

    async def wait_up(self, timeout_s: float | None = None) -> None:
        """Wait until connected and subscribed; raise LinkDown after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._up.wait()
        except TimeoutError:
            error = self.last_connect_error
            why = f" (last error: {error})" if error else ""
            raise LinkDown(f"no connection to {self.url} within {timeout_s:g} s{why}") from None

    # --- the connection loop ------------------------------------------------------
    async def run(self, handler: MessageHandler, on_connect: ConnectHook | None = None) -> None:
        """Connect, subscribe, deliver messages to ``handler``; reconnect forever.

        ``handler`` is called inline for every message and must not block; exceptions it
        raises are logged and the message is dropped, the link keeps serving.
        """
        backoff = self.options.backoff_initial_s
        while True:
            raise_if_cancelled()
            connects = self.connects
            if await self._connect_and_serve(handler, on_connect):
                backoff = self.options.backoff_initial_s
                continue
            if self.connects > connects and self._up_for_s() >= STABLE_CONNECTION_S:
                # A connection that held is lost (its node, say): the first retry comes
                # soon. One dropped at once (a client id taken over) keeps backing off.
                backoff = self.options.backoff_initial_s
            delay = backoff * (0.5 + random.random())
            self._warn_unreachable(delay, backoff)
            # The next node of a clustered broker (the same one if the URL names one).
            self._address = (self._address + 1) % len(self.url.addresses)
            backoff = min(backoff * 2, self.options.backoff_max_s)
            await asyncio.sleep(delay)

    def _warn_unreachable(self, delay: float, backoff: float) -> None:
        error, self._connect_error = self._connect_error, None
        if error is None:
            return
        self.failed_connects += 1
        broker, now = str(self.url), time.monotonic()
        gap = max(backoff, MIN_UNREACHABLE_WARNING_GAP_S)
        if warning_due(_last_unreachable_warning.get(broker), now, gap):
            _last_unreachable_warning[broker] = now
            self._log.warning(
                "cannot reach the MQTT broker; retrying",
                broker=broker,
                node=self.node,
                error=error,
                retry_in_s=round(delay, 2),
                attempts=self.failed_connects,
            )

    async def _connect_and_serve(
        self, handler: MessageHandler, on_connect: ConnectHook | None
    ) -> bool:
        """One connection's life. True means "retry at once" (protocol downgraded)."""
        probing = self.options.protocol == "auto" and self._version == aiomqtt.ProtocolVersion.V5
        client = self._new_client(PROBE_TIMEOUT_S if probing and self.connects == 0 else None)
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            # A TCP connection that got no CONNACK, or a refusal of the protocol version,
            # from a broker we have never reached over MQTT 5: it speaks 3.1.1 only.
            # (amqtt, for one, cannot parse an MQTT 5 CONNECT and never answers it.)
            half_open = _abandon(client)
            code = getattr(exc, "rc", None)
            code = getattr(code, "value", code)
            if probing and self.connects == 0 and (half_open or code in _UNSUPPORTED_PROTOCOL):
                self._log.info("broker does not speak MQTT 5, using 3.1.1", broker=str(self.url))
                self._version = aiomqtt.ProtocolVersion.V311
                return True
            self._connect_error = str(exc)  # warned of by run(), with the back-off
            self.last_connect_error = self._connect_error
            return False
        try:
            await self._serve(client, handler, on_connect)
        except aiomqtt.MqttError as exc:
            self._log.warning(
                "mqtt connection lost", broker=str(self.url), node=self.node, error=str(exc)
            )
            self.last_connect_error = f"connection lost: {exc}"
        finally:
            self._mark_down()
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)
        return False

    async def _serve(
        self, client: aiomqtt.Client, handler: MessageHandler, on_connect: ConnectHook | None
    ) -> None:
        raise_if_cancelled()  # a cancel swallowed while connecting
        self._refused = {}
        subscribed: tuple[tuple[str, int], ...] = ()
        # Until the set is current: set_subscriptions() during a SUBSCRIBE here (the link is
        # not up yet) only changes the options, and would otherwise wait for a reconnect.
        while subscribed != self.options.subscriptions:
            wanted = self.options.subscriptions
            added = [s for s in wanted if s not in subscribed]
            if added:
                granted = await client.subscribe(added, timeout=self.options.timeout_s)
                self._check_granted(added, granted)
            await self._flush_unsubscribes(client)
            subscribed = wanted
        await self._flush_unsubscribes(client)
        raise_if_cancelled()
        self._client = client
        self._lost = asyncio.get_running_loop().create_future()
        self._up_since = time.monotonic()
        self._up.set()
        self._ask_again_for_refused(client)
        self.connects += 1
        self.failed_connects = 0
        self.last_connect_error = None
        self._log.debug(
            "mqtt connected",
            broker=str(self.url),
            node=self.node,
            protocol=self.protocol,
            connects=self.connects,
        )
        if on_connect is not None:
            try:
                await on_connect()
            except (LinkDown, TimeoutError) as exc:
                # Never an exit: a hook whose publish timed out (a broker busy sending a
                # backlog, a link that swallows bytes) is a lost link, and reconnects.
                self.on_connect_failures += 1
                raise aiomqtt.MqttError(f"on-connect failed: {exc}") from exc
        yielding = self.options.yield_between_messages
        raise_if_cancelled()
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = str(payload).encode()
            acker = _Acker(client, message.mid, message.qos)
            try:
                handler(Inbound(message.topic.value, bytes(payload), bool(message.retain), acker))
            except Exception:
                self._log.exception("message handler failed", topic=message.topic.value)
            if not acker.deferred:
                acker.send()
            if yielding:
                await asyncio.sleep(0)

    def _check_granted(self, asked: Sequence[tuple[str, int]], granted: Sequence[object]) -> None:
        """Count and log the filters the broker refused in its SUBACK (0x80 and up): an
        ACL's refusal, or a broker out of room or time for them (nats-server makes a
        JetStream consumer per QoS 1 filter, up to its consumer limit). The link stays up
        without them and asks for them again (REFUSED_RETRY_INITIAL_S)."""
        refused: list[tuple[str, int]] = []
        for (topic, qos), code in zip(asked, granted, strict=False):
            if int(getattr(code, "value", code)) >= SUBACK_FAILURE:  # type: ignore[call-overload]
                refused.append((topic, qos))
                self._refused[topic] = qos
            else:
                self._refused.pop(topic, None)
        if not refused:
            return
        self.refused_subscriptions += len(refused)
        self.last_refused = tuple(topic for topic, _ in refused)
        self._log.warning(
            "the broker refused subscriptions",
            broker=str(self.url),
            node=self.node,
            refused=list(self.last_refused),
            refused_total=self.refused_subscriptions,
        )

    def _ask_again_for_refused(self, client: aiomqtt.Client) -> None:
        if self._refused and (self._retry_refused is None or self._retry_refused.done()):
            self._retry_refused = asyncio.ensure_future(self._asking_again(client))

    async def _asking_again(self, client: aiomqtt.Client) -> None:
        delay = REFUSED_RETRY_INITIAL_S
        while True:
            await asyncio.sleep(delay)
            wanted = dict(self.options.subscriptions)
            again = [(t, q) for t, q in self._refused.items() if wanted.get(t) == q]
            self._refused = dict(again)
            if not again:
                return
            try:
                granted = await client.subscribe(again, timeout=self.options.timeout_s)
            except (aiomqtt.MqttError, TimeoutError):
                return  # the connection is going: the next one subscribes to them all
            self._check_granted(again, granted)
            delay = min(delay * 2, REFUSED_RETRY_MAX_S)

    def _mark_down(self) -> None:
        if self._retry_refused is not None:
            self._retry_refused.cancel()
            self._retry_refused = None
        self._up.clear()
        self._client = None
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def _new_client(self, timeout_s: float | None = None) -> aiomqtt.Client:
        opts = self.options
        will = None
        if opts.will is not None:
            will = aiomqtt.Will(opts.will.topic, opts.will.payload, opts.will.qos, opts.will.retain)
        host, port = self.url.addresses[self._address]
        common = {
            "hostname": host,
            "port": port,
            "username": self.url.username,
            "password": self.url.password,
            "identifier": opts.client_id,
            "will": will,
            "keepalive": opts.keepalive_s,
            "timeout": timeout_s or opts.timeout_s,
            "tls_context": self.url.tls_context(),
            "socket_options": (NODELAY,),
        }
        bounded = opts.max_inbound > 0 or opts.admit is not None or opts.take is not None
        holder: list[aiomqtt.Client] = []
        if bounded:
            take = None if opts.take is None else (opts.take, lambda m: _ack(holder, m))
            inbox = _BoundedInbox(
                opts.max_inbound, lambda m: self._shed(holder, m), opts.admit, take
            )
            common["queue_type"] = lambda maxsize=0: inbox
        if self._version == aiomqtt.ProtocolVersion.V5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if opts.persistent_session:
                properties.SessionExpiryInterval = opts.session_expiry_s
            client = aiomqtt.Client(
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=not opts.persistent_session,
                properties=properties,
                **common,  # type: ignore[arg-type]
            )
        else:
            client = aiomqtt.Client(
                protocol=aiomqtt.ProtocolVersion.V311,
                clean_session=not opts.persistent_session,
                **common,  # type: ignore[arg-type]
            )
        if bounded:
            holder.append(client)
        # We send every PUBACK ourselves (see Inbound.defer); aiomqtt has no option for it.
        client._client.manual_ack_set(True)
        # aiomqtt warns (stdlib logging, one line per publish) past 10 publishes awaiting
        # their PUBACK: a gateway fanning out to a fleet has hundreds in flight by design.
        client.pending_calls_threshold = _PENDING_PUBLISHES_WARN
        _fail_connect_on_disconnect(client)
        if opts.max_reads_per_s > 0:
            _pace_reads(client, opts.max_reads_per_s, opts.max_reads_burst)
        return client

    def _shed(self, holder: list[aiomqtt.Client], message: aiomqtt.Message) -> None:
        """A message dropped unread by the bounded inbox (over its limit, or refused by
        its filter): acknowledged all the same."""
        self.inbound_dropped += 1
        _ack(holder, message)

    # --- publishing -----------------------------------------------------------------
    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        wait_s: float | None = 10.0,
    ) -> None:
        """Publish once the link is up; for QoS1 return when the broker has acknowledged.

        Raises LinkDown if the link is not up within ``wait_s`` or drops before the
        broker's acknowledgement arrives (the message may or may not have been delivered).
        """
        if not self._up.is_set():
            await self.wait_up(wait_s)
        client, lost = self._client, self._lost
        if client is None or lost is None:
            raise LinkDown(f"connection to {self.url} dropped")
        sending = asyncio.ensure_future(
            client.publish(topic, payload, qos=qos, retain=retain, timeout=self.options.timeout_s)
        )
        try:
            done, _ = await asyncio.wait({sending, lost}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The caller gave up (its own deadline): so does the publish.
            sending.cancel()
            raise
        if sending not in done:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await sending
            raise LinkDown(f"connection to {self.url} dropped while publishing to {topic}")
        try:
            sending.result()
        except aiomqtt.MqttError as exc:
            raise LinkDown(f"publish to {topic} failed: {exc}") from exc

    def publish_soon(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Fire-and-forget publish for messages whose loss the protocol already repairs
        (acks are re-sent when the gateway retries); failures are logged, not raised."""
        client = self._client
        if client is not None and self._up.is_set():
            # Link up: hand it to the client now; aiomqtt's timeout bounds the wait for PUBACK.
            coro = client.publish(
                topic, payload, qos=qos, retain=retain, timeout=self.options.timeout_s
            )
        else:
            coro = self.publish(topic, payload, qos=qos, retain=retain)
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._publish_done)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for fire-and-forget publishes still under way (before a clean shutdown)."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=timeout_s)

    def _publish_done(self, task: asyncio.Future[None]) -> None:
        self._background.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.warning("publish failed", error=str(exc))


def raise_if_cancelled() -> None:
    """Raise CancelledError if the running task was asked to stop and is still running.

    Python 3.11's ``asyncio.wait_for`` swallows a cancellation that arrives in the same
    loop iteration as the awaited future's result (gh-86296, fixed in 3.12), and aiomqtt
    waits with it for the CONNACK, the SUBACK and the DISCONNECT. A link cancelled as a
    broker came back then went on connecting and served until the end of time, and its
    owner waited for it forever (seen in the broker-restart tests). The request stays
    counted on the task (``Task.cancelling``), so it is honoured here instead."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _fail_connect_on_disconnect(client: aiomqtt.Client) -> None:
    """A connection reset before the CONNACK (a load balancer with no back end, say) ends
    the connect at once: aiomqtt ignores a disconnect before it is connected, so the
    attempt would otherwise sit out the whole connect timeout (10 s) before the retry."""
    paho = client._client
    inner = paho.on_disconnect

    def on_disconnect(*args: Any) -> None:
        pending = client._connected
        if not pending.done():
            pending.set_exception(aiomqtt.MqttError("connection closed before CONNACK"))
        if inner is not None:
            inner(*args)

    paho.on_disconnect = on_disconnect


def _pace_reads(client: aiomqtt.Client, per_s: int, burst_reads: int) -> None:
    """Replace aiomqtt's socket reader with one that reads at most ``per_s`` packets a
    second (a token bucket of a tenth of a second's worth), after a first ``burst_reads``
    allowed within READ_BURST_WINDOW_S of the connect (what the broker sends on subscribe):
    over it, the reader is removed and put back once a packet's worth has returned."""
    paho = client._client
    opened = paho.on_socket_open
    loop = asyncio.get_running_loop()
    steady = max(1.0, per_s / 10)
    started = loop.time()
    budget = {"tokens": float(max(burst_reads, 1)), "at": started}

    def refill() -> float:
        now = loop.time()
        if budget["tokens"] > steady and now - started > READ_BURST_WINDOW_S:
            budget["tokens"] = steady  # the burst is for the connect, not for later
        if budget["tokens"] < steady:
            budget["tokens"] = min(steady, budget["tokens"] + (now - budget["at"]) * per_s)
        budget["at"] = now
        return budget["tokens"]

    def current(sock: Any) -> bool:
        return sock is not None and paho.socket() is sock

    def paced(sock: Any) -> None:
        if not current(sock):
            return  # closed meanwhile: aiomqtt removed the reader
        if refill() < 1:
            loop.remove_reader(sock.fileno())
            loop.call_later((1 - budget["tokens"]) / per_s, resume, sock)
            return
        budget["tokens"] -= 1
        try:
            paho.loop_read()
        except Exception as exc:  # a broken connection, as aiomqtt's own reader treats it
            disconnected = client._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)

    def resume(sock: Any) -> None:
        if current(sock):
            loop.add_reader(sock.fileno(), paced, sock)

    def on_socket_open(mqttc: Any, userdata: Any, sock: Any) -> None:
        if opened is not None:
            opened(mqttc, userdata, sock)
        # Queued after aiomqtt's own add_reader, so this one replaces it.
        loop.call_soon_threadsafe(resume, sock)

    paho.on_socket_open = on_socket_open


def warning_due(last: float | None, now: float, gap: float) -> bool:
    """Whether to warn again of an unreachable broker last warned of at ``last``."""
    return last is None or now - last >= gap


def _abandon(client: aiomqtt.Client) -> bool:
    """Close the socket of a client whose connect failed; True if TCP had connected.

    aiomqtt leaves the socket of a connect that timed out open and registered with the
    event loop; without this a broker that accepts TCP but never answers would leak one
    socket per retry. aiomqtt offers no public handle, hence the paho client below.
    """
    paho = client._client
    sock = paho.socket()
    if sock is None:
        return False
    loop = asyncio.get_running_loop()
    with contextlib.suppress(Exception):
        loop.remove_reader(sock.fileno())
        loop.remove_writer(sock.fileno())
    with contextlib.suppress(Exception):
        sock.close()
    return True

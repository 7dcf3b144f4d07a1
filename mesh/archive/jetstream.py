"""The archivers as a JetStream consumer group (docs/archive.md § On a NATS cluster).

The archive's stream (``MESH_ARCHIVE``) holds every message the archive keeps, by the NATS
subjects nats-server gives the archived MQTT topics (``mqtt_subjects``): what the cars'
bridges publish through the cluster's MQTT listeners lands there, replicated on 3 nodes.
It is a work queue: a message leaves the stream when an archiver acknowledges it, after
its PostgreSQL commit. All archivers share ONE durable pull consumer (``archivers``): each
fetch hands a message to one of them; one not acknowledged within ``ack_wait`` (an
archiver that died) is delivered again, to whichever fetches next, at most
``max_deliver`` times. ``stream_config``/``consumer_config`` are the pure settings;
``ensure_archive`` creates or updates both (``trigger-mesh archiver stream``, with the
operator's credential: an archiver's own may only consume).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from bridge.broker.nats import (
    ARCHIVE_CONSUMER,
    ARCHIVE_STREAM,
    MAX_PAYLOAD,
    NatsCluster,
    archiver_inbox,
    mqtt_subjects,
    subject_topic,
)
from bridge.mqtt.client import MqttLink
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.archive.intake import archived_filters
from mesh.archive.source import Sink, Taken, at_first_or_a_thousandth

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.js.api import ConsumerConfig, StreamConfig
    from nats.js.client import JetStreamContext

GIB = 1024**3
DAY_S = 86_400.0


@dataclass(frozen=True)
class StreamSettings:
    """The archive's stream and its consumer. Limits bound the backlog (what no archiver
    has stored yet): past ``max_bytes`` or ``max_age_s`` the OLDEST messages are discarded
    (discard old), so a backlog older than a week, or larger than 10 GiB, loses its
    oldest part while archivers are down (docs/archive.md)."""

    stream: str = ARCHIVE_STREAM
    consumer: str = ARCHIVE_CONSUMER
    replicas: int = 3
    max_bytes: int = 10 * GIB
    max_age_s: float = 7 * DAY_S
    # A publisher that sets Nats-Msg-Id and sends again within this window is stored once.
    duplicate_window_s: float = 120.0
    # Not acknowledged within this time: delivered again (an archiver holding a message
    # while PostgreSQL is down says so every ack_wait/3, so it is not).
    ack_wait_s: float = 30.0
    # Delivered at most this often; past it, the message stays in the stream (until
    # max_age) and is not delivered again; the archiver logs and counts the last attempt.
    max_deliver: int = 10
    # Delivered and not yet acknowledged, across all archivers, at most.
    max_ack_pending: int = 20_000


def archive_subjects(topics: Topics) -> list[str]:
    """The subjects of the archived topics, inside nats-server."""
    return [mqtt_subjects(f)[0] for f in archived_filters(topics)]


def stream_config(topics: Topics, settings: StreamSettings) -> StreamConfig:
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

    return StreamConfig(
        name=settings.stream,
        description="trigger-mesh: what the archive stores, until an archiver has stored it",
        subjects=archive_subjects(topics),
        retention=RetentionPolicy.WORK_QUEUE,
        discard=DiscardPolicy.OLD,
        max_bytes=settings.max_bytes,
        max_age=settings.max_age_s,
        max_msg_size=MAX_PAYLOAD,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_s,
    )


def consumer_config(settings: StreamSettings) -> ConsumerConfig:
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, ReplayPolicy

    return ConsumerConfig(
        name=settings.consumer,
        durable_name=settings.consumer,
        description="trigger-mesh archivers: one consumer, shared by all",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        max_ack_pending=settings.max_ack_pending,
        replay_policy=ReplayPolicy.INSTANT,
        num_replicas=settings.replicas,
    )


# How long the operator's requests (make or update the stream and its consumer) may take:
# placing a stream with 3 replicas waits for its Raft group, and on a loaded machine with
# a cluster just up that took longer than nats-py's default of 5 s (seen in CI).
ADMIN_TIMEOUT_S = 30.0


async def ensure_archive(
    js: JetStreamContext, topics: Topics, settings: StreamSettings
) -> tuple[str, str]:
    """Create the stream and its consumer, or bring them to ``settings`` (idempotent: run
    again, nothing changes). Returns what was done to each: created, updated."""
    from nats.js.errors import NotFoundError

    config = stream_config(topics, settings)
    try:
        await js.stream_info(settings.stream)
    except NotFoundError:
        await _placed(js, config)
        stream_done = "created"
    else:
        await js.update_stream(config)
        stream_done = "updated"
    try:
        await js.consumer_info(settings.stream, settings.consumer)
        consumer_done = "updated"
    except NotFoundError:
        consumer_done = "created"
    # Creating a durable with its name is create-or-update on the server.
    await js.add_consumer(settings.stream, consumer_config(settings))
    return stream_done, consumer_done


# JetStream's "no suitable peers for placement": a node the meta leader has not yet heard
# from since it started counts as offline, for a moment after the cluster is healthy.
_NO_PLACEMENT = 10005
PLACEMENT_WAIT_S = 30.0
PLACEMENT_POLL_S = 0.25


async def _placed(js: JetStreamContext, config: StreamConfig) -> None:
    """Add the stream, waiting up to PLACEMENT_WAIT_S for the meta leader to see enough
    peers online to place its replicas (seen under load right after a cluster start)."""
    from nats.js.errors import BadRequestError

    deadline = time.monotonic() + PLACEMENT_WAIT_S
    while True:
        try:
            await js.add_stream(config)
            return
        except BadRequestError as exc:
            if exc.err_code != _NO_PLACEMENT or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(PLACEMENT_POLL_S)


@dataclass(frozen=True)
class NatsLogin:
    """How an archiver reaches the cluster: its nodes' client URLs (tls://host:port), its
    user and password (the generated ``credentials/USER.password``), the CA; or, on a
    cluster of ``--central-auth cert``, its client certificate and key instead of the
    password (the certificate names the user; ``user`` still names its inbox)."""

    servers: tuple[str, ...]
    user: str
    password: str | None
    ca_file: str | None = None
    # The name the nodes' certificate is checked against (default: each URL's host).
    tls_hostname: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def tls(self) -> ssl.SSLContext | None:
        if not any(s.startswith("tls://") for s in self.servers):
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


async def connect(login: NatsLogin, **options: Any) -> NatsClient:
    """A NATS connection that reconnects forever, its inbox the user's own."""
    import nats

    credentials = {} if login.password is None else {"user": login.user, "password": login.password}
    settings: dict[str, Any] = {
        "servers": list(login.servers),
        **credentials,
        "tls": login.tls(),
        "tls_hostname": login.tls_hostname,
        "inbox_prefix": archiver_inbox(login.user),
        "connect_timeout": 5,
        "reconnect_time_wait": 0.5,
        "max_reconnect_attempts": -1,
        "allow_reconnect": True,
    }
    return await nats.connect(**(settings | options))


# At most this many messages per fetch. With nothing waiting, a fetch waits up to
# FETCH_WAIT_S for the first message, then takes what else comes within BATCH_WAIT_S: a
# pull request for N waits until all N came or it expired, so asking for 500 at once while
# messages trickle in held the first ones for the whole FETCH_WAIT_S (seen in
# bench/central.py: 130 messages, 2 s). After a fetch that filled up, the next asks for a
# full batch at once, waiting at most BATCH_WAIT_S.
FETCH_MAX = 500
FETCH_WAIT_S = 2.0
BATCH_WAIT_S = 0.05
# Fetched and not yet settled, per archiver, at most (besides the queue's own room).
INFLIGHT_MAX = 4_000
# ... and about this much payload: 4,000 log batches of 256 KiB would be 1 GiB, held by an
# archiver that comes back to a backlog. A fetch asks for what fits FETCH_BYTES (and the
# room left) at the size of the largest message of the fetch before (idle: of its first
# message). nats-py's fetch takes no byte limit, so this is an aim, not a hard bound:
# messages larger than those before, and any the server delivered after a fetch gave up
# waiting (the next fetch takes them), go past it until settled; the next fetch waits.
INFLIGHT_BYTES = 64 * 1024 * 1024
FETCH_BYTES = 4 * 1024 * 1024
# The event loop gets a turn after this much payload is decoded (one large log batch; a
# hundred-odd triggers).
YIELD_BYTES = 64 * 1024
RETRY_MAX_S = 5.0


def fetch_count(room: int, byte_room: int, fetch_bytes: int, msg_size: int) -> int:
    """How many messages to ask for: at most ``room``, and as many messages of
    ``msg_size`` bytes as fit ``fetch_bytes`` and ``byte_room``, at least one."""
    by_size = min(fetch_bytes, byte_room) // max(1, msg_size)
    return max(1, min(room, by_size))


async def _fetch_more(sub: Any, count: int) -> list[Msg]:
    """Up to ``count`` more messages, those there now or coming within BATCH_WAIT_S. A
    failure returns none: the one already fetched is handed over, the next fetch fails."""
    import nats.errors

    try:
        more: list[Msg] = await sub.fetch(count, timeout=BATCH_WAIT_S)
    except (TimeoutError, nats.errors.Error, OSError):
        return []
    return more


def _buffered(sub: Any) -> list[Msg]:
    """The messages the server delivered to a pull subscription that no fetch has taken
    yet (a fetch cancelled while they arrived). nats-py keeps them in the subscription's
    queue, public only as a count (``pending_msgs``); taken from there without asking the
    server for more (a fetch would, and get back what the stop just handed back)."""
    from nats.js.client import JetStreamContext

    found: list[Msg] = []
    if not sub.pending_msgs:
        return found
    queue = sub._sub._pending_queue  # nats-py 2.x (constraints.txt pins it)
    while not queue.empty():
        msg = queue.get_nowait()
        if msg.reply and not JetStreamContext.is_status_msg(msg):
            found.append(msg)
    return found


def delivery_count(reply: str) -> int:
    """How many times the server has delivered a message, read from its ack subject:
    ``$JS.ACK.<stream>.<consumer>.<delivered>.…`` (9 tokens) or, with domain and account,
    ``$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.…`` (11 or more). The
    same as nats-py's ``msg.metadata.num_delivered`` without building the rest of the
    metadata, which took a twelfth of an archiver's CPU on triggers. 1 for any other
    subject."""
    tokens = reply.split(".")
    if tokens[:2] != ["$JS", "ACK"] or not (len(tokens) == 9 or len(tokens) >= 11):
        return 1
    count = tokens[4] if len(tokens) == 9 else tokens[6]
    return int(count) if count.isascii() and count.isdecimal() else 1


class _Receipt:
    __slots__ = ("_msg", "_source", "delivered", "last_chance", "size")

    def __init__(self, msg: Msg, source: JetStreamSource, max_deliver: int) -> None:
        self._msg = msg
        self.size = len(msg.data)
        self._source = source
        self.delivered = delivery_count(msg.reply) if msg.reply else 1
        self.last_chance = 0 < max_deliver <= self.delivered

    async def _settle(self, how: str) -> None:
        if self._source.settled(self):
            try:
                if how == "ack":
                    await self._msg.ack()
                elif how == "term":
                    await self._msg.term()
                else:
                    await self._msg.nak()
            except Exception as exc:  # the connection is down: it will be delivered again
                counters = self._source.counters
                counters[f"settle_failed.{how}"] += 1
                failed = sum(v for k, v in counters.items() if k.startswith("settle_failed."))
                if at_first_or_a_thousandth(failed - 1, failed):
                    self._source.log.warning(
                        "could not settle a message; it will be delivered again",
                        how=how,
                        error=str(exc) or type(exc).__name__,
                        failed=failed,
                    )

    async def stored(self) -> None:
        await self._settle("ack")

    async def refused(self) -> None:
        await self._settle("term")

    async def again(self) -> None:
        await self._settle("nak")

    async def hold(self) -> None:
        with contextlib.suppress(Exception):
            await self._msg.in_progress()


class JetStreamSource:
    """The archive's stream through its shared durable pull consumer. Messages are
    fetched only while the archiver has room for them (queue, ``inflight_max`` messages and
    ``inflight_bytes`` of payload): a backlog waits in the stream, never in an archiver's
    memory. Watermarks go out over
    MQTT (``watermarks``, a link to a node's MQTT listener) because only MQTT publishes
    are retained for the cars."""

    redelivers = True

    def __init__(
        self,
        login: NatsLogin,
        settings: StreamSettings,
        watermarks: MqttLink,
        *,
        inflight_max: int = INFLIGHT_MAX,
        inflight_bytes: int = INFLIGHT_BYTES,
        fetch_max: int = FETCH_MAX,
        fetch_bytes: int = FETCH_BYTES,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        from collections import Counter

        self.login = login
        self.settings = settings
        self.watermarks = watermarks
        self.inflight_max = inflight_max
        self.inflight_bytes = inflight_bytes
        self.fetch_max = fetch_max
        self.fetch_bytes = fetch_bytes
        self.log = logger or structlog.get_logger("mesh.archive")
        self.counters: Counter[str] = Counter()
        self._outstanding: set[_Receipt] = set()
        self._outstanding_bytes = 0
        self._freed = asyncio.Event()
        self._ack_wait_s = settings.ack_wait_s
        self._max_deliver = settings.max_deliver
        self._nc: NatsClient | None = None
        self._sub: Any = None
        self._fetched: deque[Msg] = deque()  # fetched, not yet handed to the sink
        self._keep: asyncio.Future[None] | None = None
        self._link_task: asyncio.Future[None] | None = None

    def settled(self, receipt: _Receipt) -> bool:
        """Forget ``receipt``; False if it was already settled."""
        if receipt not in self._outstanding:
            return False
        self._outstanding.discard(receipt)
        self._outstanding_bytes -= receipt.size
        self._freed.set()
        return True

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    @property
    def outstanding_bytes(self) -> int:
        return self._outstanding_bytes

    async def serve(self, sink: Sink) -> None:
        """Fetch and hand over until cancelled. The connection stays open for ``close``:
        the archiver still acknowledges (or hands back) what it holds when it stops."""
        self._link_task = asyncio.ensure_future(self.watermarks.run(lambda _m: None))
        self._nc = await self._connect()
        sub = self._sub = await self._bind(self._nc)
        s = self.settings
        await sink.up(f"{','.join(self.login.servers)} (stream {s.stream}, consumer {s.consumer})")
        self._keep = asyncio.ensure_future(self._keep_alive())
        await self._fetch_loop(sub, sink)

    async def close(self) -> None:
        """After the archiver's stop: send what is left (acks, naks, watermarks), close."""
        with contextlib.suppress(Exception):
            await self.watermarks.drain(2.0)
        for task in (self._keep, self._link_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        sub, self._sub = self._sub, None
        if sub is not None and self._nc is not None:
            # Delivered to this client while the archiver stopped, never handed to it (a
            # fetch cut short): handed back too, not left to ack_wait.
            held, self._fetched = [*self._fetched, *_buffered(sub)], deque()
            for msg in held:
                with contextlib.suppress(Exception):
                    await msg.nak()
            if held:
                self.counters["returned.at_stop"] += len(held)
                self.log.warning("fetched messages handed back at stop", count=len(held))
        nc, self._nc = self._nc, None
        if nc is not None:
            # Flush (the acks and naks reach the server), then close: a drain would wait
            # for the pull subscription (up to 30 s).
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)
            with contextlib.suppress(Exception):
                await nc.close()

    async def _connect(self) -> NatsClient:
        delay = 0.1
        while True:
            try:
                return await connect(
                    self.login, error_cb=self._on_error, disconnected_cb=self._on_disconnected
                )
            except Exception as exc:
                self.log.error(
                    "NATS cluster unreachable; retrying",
                    servers=",".join(self.login.servers),
                    error=str(exc) or type(exc).__name__,
                    retry_in_s=round(delay, 2),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _bind(self, nc: NatsClient) -> Any:
        """The pull subscription of the shared consumer, once it exists (made by
        ``trigger-mesh archiver stream``; an archiver cannot make it)."""
        js = nc.jetstream()
        s = self.settings
        delay = 0.1
        while True:
            try:
                info = await js.consumer_info(s.stream, s.consumer)
                break
            except Exception as exc:
                self.log.error(
                    "the archive's consumer is not there (run `trigger-mesh archiver stream`); "
                    "retrying",
                    stream=s.stream,
                    consumer=s.consumer,
                    error=str(exc) or type(exc).__name__,
                    retry_in_s=round(delay, 2),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        # The consumer's own limits (the operator may have set them), not this process's.
        self._ack_wait_s = float(info.config.ack_wait or self.settings.ack_wait_s)
        self._max_deliver = int(info.config.max_deliver or -1)
        return await js.pull_subscribe_bind(
            durable=s.consumer,
            stream=s.stream,
            inbox_prefix=(archiver_inbox(self.login.user) + ".").encode(),
        )

    async def _fetch_loop(self, sub: Any, sink: Sink) -> None:
        import nats.errors

        delay = 0.1
        backlog = False  # the last fetch filled up: more is likely waiting
        msg_size = 0  # the largest message of the last fetch
        while True:
            room = min(self.inflight_max - len(self._outstanding), sink.room(), self.fetch_max)
            byte_room = self.inflight_bytes - self._outstanding_bytes
            if room <= 0 or byte_room <= 0:
                self.counters["waited.room" if room <= 0 else "waited.bytes"] += 1
                self._freed.clear()
                await self._freed.wait()
                continue
            try:
                if backlog:
                    want = fetch_count(room, byte_room, self.fetch_bytes, msg_size)
                    msgs = await sub.fetch(want, timeout=BATCH_WAIT_S)
                else:
                    msgs = await sub.fetch(1, timeout=FETCH_WAIT_S)
                    first = len(msgs[0].data)
                    want = fetch_count(room, byte_room, self.fetch_bytes, first)
                    if want > 1:
                        # Kept where a stop meanwhile finds it (and hands it back).
                        self._fetched = deque(msgs)
                        msgs += await _fetch_more(sub, want - 1)
                        self._fetched = deque()
            except TimeoutError:
                backlog = False
                continue  # nothing to archive just now
            except (nats.errors.Error, OSError) as exc:
                self.counters["fetch_failed"] += 1
                self.log.warning("fetch failed; retrying", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = 0.1
            backlog = len(msgs) >= want
            msg_size = max(len(m.data) for m in msgs)
            # Handed over in order, yielding after every YIELD_BYTES of payload: decoding a
            # fetch of large batches takes a while, and the writer's round trips to
            # PostgreSQL go on meanwhile. The rest stay where a stop finds them (and hands
            # them back).
            self._fetched, handed = deque(msgs), 0
            while self._fetched:
                msg = self._fetched.popleft()
                await self._hand(msg, sink)
                handed += len(msg.data)
                if handed >= YIELD_BYTES:
                    handed = 0
                    await asyncio.sleep(0)

    async def _hand(self, msg: Msg, sink: Sink) -> None:
        receipt = _Receipt(msg, self, self._max_deliver)
        if receipt.delivered > 1:
            self.counters["redelivered"] += 1
        self._outstanding.add(receipt)
        self._outstanding_bytes += receipt.size
        taken = sink.take(subject_topic(msg.subject), msg.data, receipt)
        if taken is Taken.REJECTED:
            await receipt.refused()  # a poison message: terminated, never delivered again
        elif taken is Taken.IGNORED:
            await receipt.stored()
        elif taken is Taken.FULL:
            await receipt.again()

    async def _keep_alive(self) -> None:
        """Tell the server every ack_wait/3 that the messages this archiver holds are
        being worked on (PostgreSQL may be down): they are not delivered to another."""
        while True:
            await asyncio.sleep(self._ack_wait_s / 3)
            for receipt in list(self._outstanding):
                await receipt.hold()

    async def _on_error(self, exc: Exception) -> None:
        self.counters["nats_errors"] += 1
        self.log.warning("NATS error", error=str(exc) or type(exc).__name__)

    async def _on_disconnected(self) -> None:
        self.log.warning("NATS connection lost; reconnecting")

    def publish_answer(self, topic: str, payload: bytes, *, retain: bool) -> None:
        self.watermarks.publish_soon(topic, payload, qos=1, retain=retain)


def archiver_source(login: NatsLogin, url: BrokerUrl, name: str) -> JetStreamSource:
    """The source of archiver ``name``: the archive's consumer, with its watermarks sent
    on ``url`` (a node's MQTT listener; the login's user and password unless it has its
    own, or the login's certificate)."""
    from bridge.mqtt.client import LinkOptions

    if login.password is None:
        if url.cert_file is None and login.cert_file is not None:
            url = dataclasses.replace(url, cert_file=login.cert_file, key_file=login.key_file)
    elif url.password is None and url.username in (None, login.user):
        url = dataclasses.replace(url, username=login.user, password=login.password)
    # No subscriptions: the watermarks go out here, retained (NATS keeps MQTT's retained).
    link = MqttLink(url, LinkOptions(client_id=f"tm-archiver-{name}", protocol="3.1.1"))
    return JetStreamSource(login, StreamSettings(), link)


def cluster_login(cluster: NatsCluster, user: str, first: int = 0) -> NatsLogin:
    """``user``'s login to the nodes ``write_nats_cluster`` configured, node ``first``
    tried first (an archiver per node spreads them)."""
    order = [first, *(i for i in range(len(cluster.nodes)) if i != first)]
    servers = tuple(cluster.nats_url(i) for i in order)
    if cluster.auth == "cert":
        pair = cluster.client_certs[user]
        return NatsLogin(
            servers,
            user,
            None,
            str(cluster.ca_cert),
            cert_file=str(pair.cert),
            key_file=str(pair.key),
        )
    return NatsLogin(servers, user, cluster.password(user), str(cluster.ca_cert))

"""A camera's command intake: bounded lanes, served by priority, and rate budgets.

What arrives on a camera's unit topic (its own car's triggers) is served first, then
what arrives on its own topic (retries, which any gateway may send), then the shared
topics (its cell's, then everyone's ``cmd/all``): a flood on one topic can delay only
that topic's traffic and the lanes below it. Every lane is bounded; a full lane drops
its *oldest* message (counted), since under a flood the oldest is the likeliest to be
stale. The own-topic lane is also *fair*: it keeps one small queue per claimed issuer
and serves them in turn, so a flood in one gateway's name sheds only that name's
messages. The shared lanes are served at a bounded rate, so that under a flood the
camera spends its time reading the connection (and reaching the urgent lanes) rather
than decoding forgeries; what they cannot serve they shed.

Pure bookkeeping (no I/O, time passed in): ``mesh.camera.agent`` does the reading and the
checking.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from enum import IntEnum

from pydantic_core import from_json

from bridge.topics import TopicKind
from mesh.clock import NS

# A record-start is well under 4 KiB, even naming dozens of cameras; anything bigger on a
# command topic is dropped before it is parsed.
MAX_COMMAND_BYTES = 16 * 1024


class Lane(IntEnum):
    """Served in this order (lowest first)."""

    UNIT = 0  # cmd/unit/{my unit}: only my unit's gateway may write it
    OWN = 1  # cmd/camera/{me}: retries, from any gateway
    CELL = 2  # cmd/cell/{my cell}
    ALL = 3  # cmd/all: very large circles only, rare


LANE_OF = {
    TopicKind.COMMAND_UNIT: Lane.UNIT,
    TopicKind.COMMAND_CAMERA: Lane.OWN,
    TopicKind.COMMAND_CELL: Lane.CELL,
    TopicKind.COMMAND_ALL: Lane.ALL,
}


@dataclass(frozen=True)
class LaneLimit:
    capacity: int  # messages waiting, at most; past it the oldest is dropped
    per_s: float | None  # served at most this many a second (None: as fast as they come)
    burst: int = 0
    # A fair lane: at most this many waiting per claimed issuer, and ``capacity //
    # per_issuer`` issuers at once (0: one queue for everyone).
    per_issuer: int = 0


# A camera hears a few commands a second at most in real service (one per activation
# per topic); these limits are orders of magnitude above that, and bound the cost of a
# flood: 256 + 256 + 256 + 64 messages of at most 16 KiB waiting, and at most 2,500
# decoded a second off the shared topics.
LANE_LIMITS = {
    Lane.UNIT: LaneLimit(capacity=256, per_s=None),
    Lane.OWN: LaneLimit(capacity=256, per_s=None, per_issuer=8),
    Lane.CELL: LaneLimit(capacity=256, per_s=2000.0, burst=200),
    Lane.ALL: LaneLimit(capacity=64, per_s=500.0, burst=50),
}

# Signature checks a second spent on one issuer's shared-topic commands (a gateway sends
# a camera a handful per activation), and how many issuers are tracked at once. The same
# figures bound the own-topic messages admitted per claimed issuer, as they are read.
ISSUER_CHECKS_PER_S = 50.0
ISSUER_BURST = 100
ISSUERS_TRACKED = 256
# Who an own-topic message claims to be from, when it names no issuer the camera trusts
# (all such messages share one budget and one queue).
UNKNOWN_ISSUER = "?"


@dataclass(frozen=True)
class Queued:
    """A command message as it arrived, waiting to be checked."""

    lane: Lane
    kind: TopicKind
    topic: str
    payload: bytes
    received_ns: int
    # The issuer it claims (unverified), on a fair lane: whose queue it waits in.
    claimed_issuer: str = ""


def claimed_issuer(payload: bytes) -> str | None:
    """The ``issuer`` a command's JSON names, read without validating the rest (None: not
    a JSON object with a string issuer). Cheap next to a signature check; nothing is
    trusted from it but which queue and budget the message waits in."""
    try:
        document = from_json(payload)  # a nesting limit, unlike json.loads (RecursionError)
    except ValueError:
        return None
    issuer = document.get("issuer") if isinstance(document, dict) else None
    return issuer if isinstance(issuer, str) else None


class FairQueue:
    """Bounded queues, one per key, served in turn (round robin), oldest first in each.

    A full key's queue drops its oldest; a new key when ``max_keys`` are waiting drops the
    longest queue whole, so that a flood under a few keys cannot keep a new key out."""

    def __init__(self, per_key: int, max_keys: int) -> None:
        self.per_key, self.max_keys = max(1, per_key), max(1, max_keys)
        self._queues: OrderedDict[str, deque[Queued]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def put(self, key: str, item: Queued) -> int:
        """Queue ``item`` under ``key``; returns how many waiting messages were dropped."""
        dropped = 0
        queue = self._queues.get(key)
        if queue is None:
            if len(self._queues) >= self.max_keys:
                longest = max(self._queues, key=lambda k: len(self._queues[k]))
                dropped += len(self._queues.pop(longest))
            queue = self._queues[key] = deque()
        if len(queue) >= self.per_key:
            queue.popleft()
            dropped += 1
        queue.append(item)
        self._size += 1 - dropped
        return dropped

    def pop(self) -> Queued | None:
        for key, queue in self._queues.items():
            item = queue.popleft()
            if queue:
                self._queues.move_to_end(key)
            else:
                del self._queues[key]
            self._size -= 1
            return item
        return None


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("_last_ns", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now_ns: int) -> None:
        self.rate, self.burst = rate, max(1, burst)
        self._tokens = float(self.burst)
        self._last_ns = now_ns

    def _refill(self, now_ns: int) -> None:
        elapsed_s = max(0, now_ns - self._last_ns) / NS
        self._last_ns = now_ns
        self._tokens = min(float(self.burst), self._tokens + elapsed_s * self.rate)

    def ready(self, now_ns: int) -> bool:
        self._refill(now_ns)
        return self._tokens >= 1.0

    def take(self, now_ns: int) -> bool:
        if not self.ready(now_ns):
            return False
        self._tokens -= 1.0
        return True

    def wait_s(self, now_ns: int) -> float:
        """How long until a token is there (0: now)."""
        self._refill(now_ns)
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate


class CommandIntake:
    """Bounded lanes of waiting commands; ``pop`` serves the most urgent one due."""

    def __init__(self, now_ns: int, limits: dict[Lane, LaneLimit] | None = None) -> None:
        self.limits = dict(limits or LANE_LIMITS)
        # A plain lane is a fair queue with one key.
        self._lanes = {
            lane: FairQueue(limit.per_issuer, limit.capacity // limit.per_issuer)
            if limit.per_issuer
            else FairQueue(limit.capacity, 1)
            for lane, limit in self.limits.items()
        }
        self._pace = {
            lane: TokenBucket(limit.per_s, limit.burst, now_ns)
            for lane, limit in self.limits.items()
            if limit.per_s is not None
        }
        self.dropped: dict[Lane, int] = dict.fromkeys(Lane, 0)
        self.deepest = 0  # the most messages ever waiting at once

    def __len__(self) -> int:
        return sum(len(q) for q in self._lanes.values())

    def depth(self, lane: Lane) -> int:
        return len(self._lanes[lane])

    def put(self, item: Queued) -> int:
        """Queue ``item``; returns how many waiting messages were dropped to make room."""
        dropped = self._lanes[item.lane].put(item.claimed_issuer, item)
        self.dropped[item.lane] += dropped
        self.deepest = max(self.deepest, len(self))
        return dropped

    def pop(self, now_ns: int) -> Queued | None:
        """The oldest message of the most urgent lane that may be served now."""
        for lane in Lane:
            queue = self._lanes[lane]
            if not queue:
                continue
            pace = self._pace.get(lane)
            if pace is not None and not pace.take(now_ns):
                continue
            return queue.pop()
        return None

    def wait_s(self, now_ns: int) -> float | None:
        """How long until ``pop`` can serve a waiting message (None: nothing waits)."""
        waits = [
            self._pace[lane].wait_s(now_ns) if lane in self._pace else 0.0
            for lane in Lane
            if self._lanes[lane]
        ]
        return min(waits) if waits else None


class IssuerBudget:
    """Messages a second per claimed issuer: signature checks on shared topics, messages
    admitted on the camera's own topic. The issuer is not yet proven (that is what the
    check is for), so this only spreads the cost: a flood naming one issuer cannot use
    more than its share, and past it that issuer's messages are dropped unchecked (its
    unit-topic ones never are)."""

    def __init__(
        self,
        rate: float = ISSUER_CHECKS_PER_S,
        burst: int = ISSUER_BURST,
        tracked: int = ISSUERS_TRACKED,
    ) -> None:
        self.rate, self.burst, self.tracked = rate, burst, tracked
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, issuer: str, now_ns: int) -> bool:
        bucket = self._buckets.get(issuer)
        if bucket is None:
            bucket = self._buckets[issuer] = TokenBucket(self.rate, self.burst, now_ns)
            while len(self._buckets) > self.tracked:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(issuer)
        return bucket.take(now_ns)

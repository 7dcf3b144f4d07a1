"""The camera's command intake: lanes, their order, their limits, and the rate budgets."""

from __future__ import annotations

import json
from collections import Counter

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.mqtt.urls import BrokerUrl
from bridge.topics import TopicKind, Topics
from mesh.camera.agent import CameraAgent, CameraIdentity
from mesh.camera.intake import (
    ISSUER_BURST,
    UNKNOWN_ISSUER,
    CommandIntake,
    FairQueue,
    IssuerBudget,
    Lane,
    LaneLimit,
    Queued,
    TokenBucket,
    claimed_issuer,
)
from mesh.clock import NS
from mesh.protocol.models import CameraRole
from mesh.security.checks import Security
from mesh.security.signing import PayloadSigner
from mesh.security.trust import KeyRole, TrustStore, trusted_key

T0 = 1_000 * NS


def item(lane: Lane, n: int, issuer: str = "") -> Queued:
    kind = {
        Lane.UNIT: TopicKind.COMMAND_UNIT,
        Lane.OWN: TopicKind.COMMAND_CAMERA,
        Lane.CELL: TopicKind.COMMAND_CELL,
        Lane.ALL: TopicKind.COMMAND_ALL,
    }[lane]
    return Queued(lane, kind, f"t/{lane.name}", str(n).encode(), T0, issuer)


def test_the_most_urgent_lane_is_served_first_oldest_first() -> None:
    intake = CommandIntake(T0)
    for n in range(3):
        intake.put(item(Lane.ALL, n))
        intake.put(item(Lane.CELL, n))
    intake.put(item(Lane.OWN, 0, "gw-car-7"))
    intake.put(item(Lane.UNIT, 0))
    served = [intake.pop(T0) for _ in range(8)]
    assert [(q.lane, q.payload) for q in served if q is not None] == [
        (Lane.UNIT, b"0"),
        (Lane.OWN, b"0"),
        (Lane.CELL, b"0"),
        (Lane.CELL, b"1"),
        (Lane.CELL, b"2"),
        (Lane.ALL, b"0"),
        (Lane.ALL, b"1"),
        (Lane.ALL, b"2"),
    ]
    assert intake.pop(T0) is None
    assert intake.wait_s(T0) is None


def test_a_full_lane_sheds_its_oldest_and_no_other_lanes() -> None:
    limits = {lane: LaneLimit(2, None) for lane in Lane}
    intake = CommandIntake(T0, limits)
    intake.put(item(Lane.UNIT, 0))
    dropped = [intake.put(item(Lane.ALL, n)) for n in range(5)]
    assert dropped == [0, 0, 1, 1, 1]
    assert intake.dropped == {Lane.UNIT: 0, Lane.OWN: 0, Lane.CELL: 0, Lane.ALL: 3}
    assert len(intake) == intake.deepest == 3
    assert [intake.pop(T0).payload for _ in range(3)] == [b"0", b"3", b"4"]  # type: ignore[union-attr]


def test_a_paced_lane_waits_and_the_urgent_lane_does_not() -> None:
    limits = {lane: LaneLimit(10, None) for lane in Lane}
    limits[Lane.ALL] = LaneLimit(10, per_s=10.0, burst=1)
    intake = CommandIntake(T0, limits)
    for n in range(3):
        intake.put(item(Lane.ALL, n))
    assert intake.pop(T0) is not None
    assert intake.pop(T0) is None  # the lane's token is spent
    assert intake.wait_s(T0) == 0.1
    intake.put(item(Lane.UNIT, 9))
    assert intake.wait_s(T0) == 0.0
    urgent = intake.pop(T0)
    assert urgent is not None
    assert urgent.lane is Lane.UNIT
    assert intake.pop(T0 + NS // 10) is not None  # a tenth of a second later


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now_ns=T0)
    assert [bucket.take(T0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(T0 + NS // 2)
    assert not bucket.take(T0 + NS // 2)
    assert [bucket.take(T0 + 100 * NS) for _ in range(4)] == [True, True, True, False]


def test_issuer_budget_is_per_issuer_and_bounded() -> None:
    budget = IssuerBudget(rate=1.0, burst=2, tracked=2)
    assert [budget.allow("gw-car-7", T0) for _ in range(3)] == [True, True, False]
    assert budget.allow("gw-car-12", T0)  # another issuer's budget is its own
    budget.allow("gw-car-4", T0)  # a third: the least recently seen is forgotten
    assert len(budget._buckets) == 2


def test_the_own_topic_lane_serves_claimed_issuers_in_turn() -> None:
    """A flood in one gateway's name fills only that name's queue (shedding its own
    oldest); another gateway's retry waits behind at most one of the flood's."""
    limits = {lane: LaneLimit(8, None) for lane in Lane}
    limits[Lane.OWN] = LaneLimit(capacity=8, per_s=None, per_issuer=4)
    intake = CommandIntake(T0, limits)
    dropped = sum(intake.put(item(Lane.OWN, n, "gw-car-7")) for n in range(100))
    assert dropped == 96
    intake.put(item(Lane.OWN, 1000, "gw-car-12"))
    served = [intake.pop(T0) for _ in range(5)]
    assert [(q.claimed_issuer, q.payload) for q in served if q is not None] == [
        ("gw-car-7", b"96"),
        ("gw-car-12", b"1000"),
        ("gw-car-7", b"97"),
        ("gw-car-7", b"98"),
        ("gw-car-7", b"99"),
    ]
    assert len(intake) == 0


def test_a_new_issuer_in_a_full_fair_lane_sheds_the_longest_queue() -> None:
    """Names enough to fill every slot cannot keep a new issuer out."""
    queue = FairQueue(per_key=4, max_keys=2)
    for n in range(4):
        queue.put("flood-a", item(Lane.OWN, n, "flood-a"))
    queue.put("flood-b", item(Lane.OWN, 0, "flood-b"))
    assert queue.put("gw-car-12", item(Lane.OWN, 9, "gw-car-12")) == 4  # flood-a's, whole
    assert len(queue) == 2
    assert {q.claimed_issuer for q in (queue.pop(), queue.pop()) if q} == {"flood-b", "gw-car-12"}
    assert queue.pop() is None


def test_claimed_issuer_reads_only_a_string_issuer_of_an_object() -> None:
    assert claimed_issuer(b'{"issuer": "gw-car-7", "sig": 1}') == "gw-car-7"
    for junk in (b"", b"\xff", b"[]", b'"gw"', b'{"issuer": 7}', b"{", b"null"):
        assert claimed_issuer(junk) is None


def test_made_up_issuer_names_share_one_budget_on_the_own_topic() -> None:
    """A flood on a camera's own topic under a fresh issuer name per message must not buy
    a fresh budget per name: messages not signed by a trusted gateway key (unsigned, or
    signed by a key the camera does not know) all count as one issuer, while a trusted
    gateway's retries keep a budget of their own, whatever name a forgery puts in them."""
    gateway = Ed25519PrivateKey.generate()
    trust = TrustStore([trusted_key(gateway.public_key(), KeyRole.GATEWAY, "gw-car-12")])
    topics = Topics("t/mesh/v2")
    camera = CameraAgent(
        CameraIdentity("bwc-12a", "car-12", CameraRole.BODY),
        url=BrokerUrl.parse("mqtt://127.0.0.1:1"),
        topics=topics,
        position=None,
        security=Security(trust=trust),
        clock=_StoppedClock(),  # the budgets do not refill while the flood is read
    )
    own = topics.command_camera("bwc-12a")
    stranger = PayloadSigner(Ed25519PrivateKey.generate())
    for n in range(1000):
        claim = json.dumps({"issuer": f"gw-made-up-{n}" if n % 2 else "gw-car-12"}).encode()
        # Unsigned, or signed by a key of nobody's: either way one unknown issuer.
        camera._take_own(own, claim if n % 3 else stranger.seal_bytes(claim).to_bytes())
    genuine = PayloadSigner(gateway).seal_bytes(json.dumps({"issuer": "gw-car-12"}).encode())
    camera._take_own(own, genuine.to_bytes())
    admitted = [camera._intake.pop(T0 * 10) for _ in range(ISSUER_BURST + 10)]
    claimed = Counter(q.claimed_issuer for q in admitted if q is not None)
    assert claimed == {UNKNOWN_ISSUER: 8, "gw-car-12": 1}  # 8: the lane's per-issuer queue
    assert camera.counters["intake.dropped.own_issuer_rate"] == 1000 - ISSUER_BURST


class _StoppedClock:
    def wall_ns(self) -> int:
        return T0

    def mono_ns(self) -> int:
        return T0

"""What the archive folds (mesh/archive/fold.py) and which months retention may drop
(mesh/archive/partitions.py): the pure halves, without a database."""

from __future__ import annotations

import json

from mesh.archive.fold import canonical_hex, delta, fold, presence_key, unfold
from mesh.archive.partitions import (
    PARTITIONED,
    Hold,
    Month,
    missing_partitions,
    month_of_partition,
    months_ahead,
    time_hold_covers,
    verdict,
)
from mesh.archive.store import _Base, split
from mesh.journal.chain import GENESIS, record_hash
from mesh.protocol.log_wire import LogBatchRecord
from mesh.protocol.models import CameraPresence, CameraRole, Position

NS = 1_000_000_000
T0 = 1_767_225_600 * NS + 3_600 * NS  # 2026-01-01T01:00Z


def presence(
    t_ns: int,
    *,
    camera: str = "bwc-1",
    online: bool = True,
    recording: bool = False,
    lat: float = 40.0,
    accuracy: float = 5.0,
) -> str:
    return CameraPresence(
        camera_id=camera,
        unit_id="car-1",
        role=CameraRole.BODY,
        online=online,
        recording=recording,
        position=Position(lat=lat, lon=-75.0, accuracy_m=accuracy, fix_at_ns=t_ns),
        last_seen_ns=t_ns,
    ).model_dump_json()


def chain(bodies: list[tuple[int, str]], kind: str = "presence") -> list[LogBatchRecord]:
    out: list[LogBatchRecord] = []
    prev = GENESIS
    for seq, (at_ns, body) in enumerate(bodies, start=1):
        h = record_hash(prev, seq, at_ns, kind=kind, activation_id=None, body=body)
        out.append(
            LogBatchRecord(
                seq=seq, prev_seq=seq - 1, at_ns=at_ns, kind=kind, body=body, prev_hash=prev, hash=h
            )
        )
        prev = h
    return out


def key(body: str) -> str:
    found = presence_key("presence", None, body)
    assert found is not None
    return found[1]


def test_a_heartbeat_has_the_key_of_the_presence_before_it_and_a_change_does_not() -> None:
    base = presence(T0)
    assert key(presence(T0 + 30 * NS, accuracy=7.5)) == key(base)
    for changed in (
        presence(T0, online=False),
        presence(T0, recording=True),
        presence(T0, lat=40.001),
        presence(T0, camera="bwc-2"),
    ):
        assert key(changed) != key(base)
    assert presence_key("activation", None, base) is None
    assert presence_key("presence", "a-1", base) is None
    removed = json.dumps({"camera_id": "bwc-1", "removed": True, "reason": "expired"})
    assert presence_key("presence", None, removed) is None
    assert presence_key("presence", None, "not json") is None


def test_a_fold_rebuilds_the_body_exactly_and_a_change_is_not_folded() -> None:
    base, beat = presence(T0), presence(T0 + 30 * NS, accuracy=12.0)
    folded = fold(key(base), base, key(beat), beat)
    assert folded is not None
    assert unfold(base, folded) == beat
    assert len(folded.middle) < len(beat) // 3
    moved = presence(T0 + 30 * NS, lat=40.01)
    assert fold(key(base), base, key(moved), moved) is None
    d = delta("abcXYZdef", "abcQdef")
    assert (d.head, d.tail, d.middle) == (3, 3, "Q")
    assert unfold("abcXYZdef", d) == "abcQdef"
    assert unfold("aaaa", delta("aaaa", "aa")) == "aa"  # overlapping head and tail


def test_split_folds_repeats_against_the_latest_full_record_of_each_camera() -> None:
    beats = [
        (T0, presence(T0)),  # 1 full: first of bwc-1
        (T0 + 1, presence(T0, camera="bwc-2")),  # 2 full: first of bwc-2
        (T0 + 30 * NS, presence(T0 + 30 * NS)),  # 3 folded against 1
        (T0 + 31 * NS, presence(T0 + 31 * NS, camera="bwc-2")),  # 4 folded against 2
        (T0 + 60 * NS, presence(T0 + 60 * NS, recording=True)),  # 5 full: a change
        (T0 + 90 * NS, presence(T0 + 90 * NS, recording=True)),  # 6 folded against 5
        (T0 + 95 * NS, json.dumps({"camera_id": "bwc-1", "removed": True, "reason": "x"})),
        (T0 + 120 * NS, presence(T0 + 120 * NS, recording=True)),  # 8 full: after removal
    ]
    plan = split(chain(beats), {})
    assert [r.seq for r in plan.full] == [1, 2, 5, 7, 8]
    assert [(r.seq, base) for r, base, *_ in plan.folded] == [(3, 1), (4, 2), (6, 5)]
    # Each links to the record before it in the batch: the link is not stored twice.
    assert [prev for _, _, _, prev, _ in plan.folded] == [None, None, None]
    assert plan.bases["bwc-1"].seq == 8
    assert plan.bases["bwc-2"].seq == 2


def test_split_uses_the_stored_base_only_within_the_same_month() -> None:
    stored = presence(T0)
    held = {"bwc-1": _Base(1, T0, stored, key(stored))}
    records = chain([(T0, "x"), (T0 + 30 * NS, presence(T0 + 30 * NS))])[1:]
    folded = split(records, held).folded
    assert [r.seq for r, *_ in folded] == [2]
    # Its predecessor came in an earlier batch: its link is stored with it.
    assert folded[0][3] == bytes.fromhex(records[0].prev_hash)
    # The base is in December: a repeat in January is stored in full (months are
    # dropped one at a time, and a repeat must never outlive its base).
    december = {"bwc-1": _Base(1, T0 - 2 * 3600 * NS, stored, key(stored))}
    assert [r.seq for r in split(records, december).full] == [2]


def test_a_hash_that_would_not_read_back_the_same_is_not_folded() -> None:
    assert canonical_hex("ab" * 32) == bytes([0xAB] * 32)
    assert canonical_hex("AB" * 32) is None
    assert canonical_hex("ab") is None


def test_months_and_their_bounds() -> None:
    december = Month.of_ns(T0 - 2 * 3600 * NS)
    assert december == Month(2025, 12)
    assert december.next() == Month(2026, 1)
    assert Month(2026, 1).from_ns == december.to_ns == 1_767_225_600 * NS
    assert months_ahead(T0 - 2 * 3600 * NS, 2) == [Month(2025, 12), Month(2026, 1), Month(2026, 2)]
    assert Month(2026, 3).partition("log_records") == "log_records_p202603"
    # A month's last ns is still in it (a float of the time would round it into the next).
    assert Month.of_ns(Month(2026, 1).to_ns - 1) == Month(2026, 1)
    assert Month.of_ns(Month(2026, 1).to_ns) == Month(2026, 2)


def test_partitions_are_named_by_table_and_month() -> None:
    assert month_of_partition("log_records_p202603") == Month(2026, 3)
    assert month_of_partition("acks_p202603", "acks") == Month(2026, 3)
    assert month_of_partition("acks_p202603") is None  # not log_records'
    assert month_of_partition("presence_repeats_p202603", "receipts") is None
    assert month_of_partition("acks_default", "acks") is None
    assert month_of_partition("acks_p202613", "acks") is None


def test_a_month_ahead_is_created_with_every_partition_it_lacks() -> None:
    jan, feb, mar = Month(2026, 1), Month(2026, 2), Month(2026, 3)
    have = {jan: frozenset(PARTITIONED), feb: frozenset({"log_records", "presence_repeats"})}
    assert missing_partitions(have, [jan, feb, mar]) == [
        (feb, ("receipts", "acks", "escalations")),
        (mar, PARTITIONED),
    ]
    assert missing_partitions(have, [jan]) == []


def test_a_month_goes_only_when_it_has_ended_before_the_cutoff_and_nothing_holds_it() -> None:
    january = Month(2026, 1)
    assert verdict(january, january.to_ns - 1, ()) is None  # its last ns is still kept
    gone = verdict(january, january.to_ns, ())
    assert gone is not None
    assert gone.drop
    kept = verdict(january, january.to_ns, (7,))
    assert kept is not None
    assert not kept.drop
    assert kept.held_by == (7,)


def test_a_time_hold_covers_the_months_it_overlaps() -> None:
    def hold(lo: int, hi: int) -> Hold:
        return Hold(1, None, None, lo, hi, "case 1", "me", "now")

    january = Month(2026, 1)
    assert time_hold_covers(hold(january.to_ns - 1, january.to_ns + 5), january)
    assert not time_hold_covers(hold(january.to_ns, january.to_ns + 5), january)
    assert not time_hold_covers(Hold(2, "a-1", None, None, None, "r", "me", "now"), january)


def test_the_archive_folds_exactly_what_the_gateway_does_not_call_a_change() -> None:
    """The archive reads the record's JSON (any version of it); the gateway decides on its
    model (mesh/decide/presence.py ``changed``): both ignore the same fields."""
    from mesh.decide.presence import changed

    base = presence(T0)
    variants = [
        presence(T0 + 30 * NS),
        presence(T0 + 30 * NS, accuracy=20.0),
        presence(T0, online=False),
        presence(T0, recording=True),
        presence(T0, lat=40.0001),
        presence(T0, camera="bwc-2"),
    ]
    for body in variants:
        gateway = changed(
            CameraPresence.model_validate_json(base), CameraPresence.model_validate_json(body)
        )
        assert (key(body) != key(base)) == gateway, body

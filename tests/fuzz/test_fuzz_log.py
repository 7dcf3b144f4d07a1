"""The activation log's record bodies, read back by a restarting gateway, `audit replay`,
`audit report` and `audit verify` (docs/fuzzing.md).

- What the codec accepts, the log writes in a form it reads back unchanged: the fast JSON
  writers (``ActivationEntry.json_of`` and friends) give what the models would, for any
  payload the codec lets in.
- A body of any shape is parsed by its entry model or refused with a ValidationError.
- ``verify_chain`` reads checkpoint and retention bodies as untrusted: whatever they hold,
  it reports a problem at that record and never raises.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from mesh.decide.proximity import Heard
from mesh.decide.targeting import TargetDecision
from mesh.journal.chain import GENESIS, Problem, record_hash, verify_chain
from mesh.journal.records import (
    AckEntry,
    ActivationEntry,
    CancelEntry,
    DecisionInputs,
    EscalatedEntry,
    FinishedEntry,
    HeardEntry,
    PublishedEntry,
    ResumedEntry,
    StartedEntry,
    TargetEntry,
    TriggerEntry,
)
from mesh.journal.signer import CheckpointSigner
from mesh.journal.store import LogRecord
from mesh.protocol.codec import decode, non_finite_field
from mesh.protocol.models import AckStatus, CameraAck, GeoPoint, RecordStart, TriggerEvent
from tests.fuzz_helpers import apply, batch, budget, dumps, instances, json_values, mutations

IDENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
FINITE = st.floats(allow_nan=False, allow_infinity=False)


def accepted(model: type[BaseModel]) -> st.SearchStrategy[Any]:
    """Payloads as the codec lets them in: valid ones, and mutated ones it accepts."""

    @st.composite
    def one(draw: st.DrawFn) -> Any:
        payload, mutation = draw(mutations(model))
        for raw in (apply(payload, mutation), dumps(payload)):
            try:
                return decode(model, raw)
            except ValueError:
                continue
        raise AssertionError("a valid payload was refused")

    return one()


DECISIONS = st.lists(
    st.builds(
        TargetDecision,
        camera_id=IDENT,
        unit_id=st.none() | IDENT,
        expected=st.booleans(),
        reason=st.text(max_size=40),
        distance_m=st.none() | st.floats(0, 1e7),
    ),
    max_size=4,
)
HEARD = st.none() | st.dictionaries(
    IDENT, st.builds(Heard, rssi_dbm=st.integers(-127, 20), age_s=st.floats(0, 1e6)), max_size=3
)


@budget(20)
@given(
    accepted(TriggerEvent),
    accepted(RecordStart),
    DECISIONS,
    st.none() | st.builds(GeoPoint, lat=st.floats(-90, 90), lon=st.floats(-180, 180)),
    HEARD,
    st.integers(0, 2**63 - 1),
)
def test_a_logged_activation_reads_back_as_it_was_decided(
    trigger: TriggerEvent,
    command: RecordStart,
    decisions: list[TargetDecision],
    position: GeoPoint | None,
    heard: dict[str, Heard] | None,
    received_at_ns: int,
) -> None:
    """What a restarting gateway and `audit replay` read is what the gateway decided."""
    inputs = DecisionInputs.json_of(position, heard)
    body = ActivationEntry.json_of(trigger, received_at_ns, command, decisions, inputs)
    expected = ActivationEntry(
        trigger=trigger,
        received_at_ns=received_at_ns,
        command=command,
        targets=tuple(TargetEntry.of(d) for d in decisions),
        inputs=DecisionInputs(
            gateway_position=position,
            heard={
                c: HeardEntry(rssi_dbm=h.rssi_dbm, age_s=h.age_s) for c, h in (heard or {}).items()
            },
        ),
    )
    assert json.loads(body) == json.loads(expected.model_dump_json())
    assert ActivationEntry.model_validate_json(body) == expected


@budget(40)
@given(accepted(CameraAck), st.none() | st.floats(), st.text(max_size=20))
def test_a_logged_ack_reads_back_as_it_came(
    ack: CameraAck, latency_ms: float | None, effect: str
) -> None:
    """Finding (hardened): the effect was written between quotes unescaped, and a
    non-finite latency as `inf`, neither of them JSON (today's effects are plain words)."""
    body = AckEntry.json_of(ack, latency_ms, effect)
    model = AckEntry(ack=ack, latency_ms=latency_ms, effect=effect)
    assert json.loads(body) == json.loads(model.model_dump_json())
    assert AckEntry.model_validate_json(body).ack == ack


def test_an_effect_with_a_quote_is_still_json() -> None:
    ack = CameraAck(
        activation_id="a-1", camera_id="bwc-1", status=AckStatus.STARTED, received_at_ns=1
    )
    body = AckEntry.json_of(ack, float("inf"), 'untrusted:"x"')
    assert AckEntry.model_validate_json(body) == AckEntry(
        ack=ack, latency_ms=None, effect='untrusted:"x"'
    )


ENTRIES: list[type[BaseModel]] = [
    StartedEntry,
    ActivationEntry,
    TriggerEntry,
    PublishedEntry,
    AckEntry,
    FinishedEntry,
    ResumedEntry,
    EscalatedEntry,
    CancelEntry,
    DecisionInputs,
]


@budget(20)
@given(st.sampled_from(ENTRIES), st.data())
def test_a_body_is_its_entry_or_a_validation_error(
    entry: type[BaseModel], data: st.DataObject
) -> None:
    body = data.draw(
        st.one_of(
            st.binary(max_size=100),
            json_values.map(dumps),
            st.builds(lambda pm: apply(*pm), mutations(entry)),
            instances(entry).map(dumps),
        )
    )
    try:
        parsed = entry.model_validate_json(body)
    except ValidationError:
        return
    # NaN and infinities (from NaN, Infinity, 1e400 or a 400-digit integer) are written
    # back as null: the codec refuses them on the way in, a log body can hold them only if
    # it was tampered with.
    if non_finite_field(parsed) is None:
        assert entry.model_validate_json(parsed.model_dump_json()) == parsed


# --- verify_chain ---------------------------------------------------------------------------------
def _signer() -> CheckpointSigner:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return CheckpointSigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))


def chain(rows: list[tuple[str, str]], log_id: str = "log-1") -> list[LogRecord]:
    out, prev = [], GENESIS
    for seq, (kind, body) in enumerate(rows, 1):
        digest = record_hash(prev, seq, 1000 + seq, kind=kind, activation_id=None, body=body)
        out.append(LogRecord(seq, 1000 + seq, kind, None, body, prev, digest))
        prev = digest
    return out


def signed(rows: list[tuple[str, str]], log_id: str = "log-1") -> list[LogRecord]:
    """The rows, then a checkpoint over them signed as the gateway signs."""
    records = chain(rows, log_id)
    head = records[-1] if records else None
    body = _signer().body(log_id, head.seq if head else 0, head.hash if head else GENESIS, "t")
    return chain([*rows, ("checkpoint", json.dumps(body))], log_id)


CHECKPOINT_FIELDS = ["head_seq", "head_hash", "key_id", "public_key", "signature", "reason"]
ODD = st.one_of(
    json_values,
    st.sampled_from([float("inf"), float("nan"), 10**400, -1, True, "", "zz", "0" * 64]),
)


@st.composite
def odd_bodies(draw: st.DrawFn, kind: str) -> str:
    """A checkpoint or retention body: anything, or a real one with one field changed."""
    if kind == "checkpoint":
        real = _signer().body("log-1", 1, "ab" * 32, "t")
        field = draw(st.sampled_from(CHECKPOINT_FIELDS))
    else:
        real = {"removed": [[2, 3, "cd" * 32]], "before_ns": 5}
        field = "removed"
    how = draw(st.sampled_from(["any", "change", "drop", "deep"]))
    if how == "any":
        return draw(st.text(max_size=60) | json_values.map(json.dumps))
    if how == "deep":
        depth = draw(st.integers(500, 5000))
        return "[" * depth + "]" * depth
    if how == "drop":
        real.pop(field)
    else:
        real[field] = draw(ODD if kind == "checkpoint" else st.lists(st.lists(ODD, max_size=4)))
    return json.dumps(real)


@budget(40)
@given(
    batch(st.sampled_from(["checkpoint", "retention", "ack"]), 4).flatmap(
        lambda kinds: st.tuples(*[st.tuples(st.just(k), odd_bodies(k)) for k in kinds])
    )
)
def test_verify_reports_any_checkpoint_or_retention_body_and_never_raises(
    rows: tuple[tuple[str, str], ...],
) -> None:
    records = chain(list(rows))
    report = verify_chain(records, log_id="log-1")
    seqs = {r.seq for r in records}
    linked = (Problem.MODIFIED, Problem.BROKEN_LINK, Problem.REORDERED)
    for problem in report.problems:
        assert problem.seq in seqs
        assert problem.problem not in linked, problem  # the chain itself is intact
        assert problem.detail
    assert not report.ok  # nothing here is validly signed: at least an unsigned tail


@budget(40)
@given(st.lists(st.text(max_size=30), min_size=1, max_size=5), st.data())
def test_a_changed_body_is_named_and_a_signed_log_verifies(
    bodies: list[str], data: st.DataObject
) -> None:
    rows = [("ack", b) for b in bodies]
    records = signed(rows)
    assert verify_chain(records, log_id="log-1").ok
    i = data.draw(st.integers(0, len(records) - 1))
    new = data.draw(st.text(max_size=30).filter(lambda b: b != records[i].body))
    records[i] = dataclasses.replace(records[i], body=new)
    report = verify_chain(records, log_id="log-1")
    assert (report.problems[0].seq, report.problems[0].problem) == (i + 1, Problem.MODIFIED)


@budget(40)
@given(
    st.lists(st.lists(ODD, max_size=5), max_size=4),
    st.one_of(ODD, st.integers(0, 2000)),
    st.lists(st.text(max_size=40) | json_values.map(json.dumps), max_size=3),
)
def test_a_signed_retention_record_with_any_runs_and_holds_never_raises(
    runs: list[list[object]], cutoff: object, holds: list[str]
) -> None:
    """The paths only a retention record signed by a retention checkpoint reaches (runs
    crossed, kept records checked against the cutoff and the holds), on any bodies."""
    rows = [("resumed", "{}")] * 4 + [("hold", body) for body in holds]
    body = json.dumps({"cutoff_ns": cutoff, "removed": runs}, allow_nan=True)
    rows.append(("retention", body))
    records = chain(rows)
    head = records[-1]
    sealed = _signer().body("log-1", head.seq, head.hash, "retention", retention=True)
    records = chain([*rows, ("checkpoint", json.dumps(sealed))])
    # Remove what each run names, as a pass would have (where it can be read as seqs).
    named = {
        seq
        for run in runs
        if len(run) >= 2 and all(type(v) is int for v in run[:2])
        for seq in range(max(int(run[0]), 1), min(int(run[1]), 3) + 1)  # type: ignore[call-overload]
    }
    kept = [r for r in records if r.seq not in named]
    report = verify_chain(kept, log_id="log-1")
    for problem in report.problems:
        assert problem.detail
    if not named:
        assert report.ok, report.summary()


# --- findings, each pinned by an explicit example ---------------------------------------------
@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            '{"head_seq": Infinity, "head_hash": "x", "signature": "00", "public_key": "00"}',
            "Infinity is not a JSON number",
        ),
        (
            '{"head_seq": 1e400, "head_hash": "x", "signature": "00", "public_key": "00"}',
            "head_seq is not an integer",
        ),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('"a string"', "expected a JSON object, got str"),
    ],
)
def test_an_unreadable_checkpoint_is_a_problem_not_a_crash(body: str, detail: str) -> None:
    """Finding: `audit verify` raised OverflowError (head_seq Infinity or 1e400) or
    RecursionError (deep nesting) on a tampered checkpoint body."""
    report = verify_chain(chain([("ack", "{}"), ("checkpoint", body)]), log_id="log-1")
    assert report.problems[0].seq == 2
    assert report.problems[0].problem is Problem.BAD_CHECKPOINT
    assert detail in report.problems[0].detail


@pytest.mark.parametrize(
    "body",
    ['{"removed": [[Infinity, 3, "x"]]}', '{"removed": [[1e400, 3, "x"]]}', "[" * 100_000],
)
def test_an_unreadable_retention_record_is_not_a_crash(body: str) -> None:
    """Finding: the same OverflowError and RecursionError from a retention record's body."""
    rows = [("ack", "{}"), ("retention", body), ("ack", "{}")]
    report = verify_chain(chain(rows), log_id="log-1")
    assert report.problems  # unsigned, at least; and no exception


def test_a_damaged_body_stops_audit_replay_naming_the_record() -> None:
    from mesh.audit.replay import Replayer
    from mesh.journal.store import LogError

    damaged = chain([("started", '{"gateway_id": 5}')])
    with pytest.raises(LogError, match="record 1"):
        Replayer().run(damaged)

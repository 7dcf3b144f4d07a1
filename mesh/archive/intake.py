"""What the archiver accepts (pure): a received message becomes a typed item to store, or
a PayloadError naming why not. No I/O here; the archiver counts and logs the rejections."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from bridge.topics import UNNAMED_SENDER, TopicKind, Topics, sender_level
from mesh.decide.rejection import Rejection
from mesh.journal.chain import record_hash
from mesh.protocol.codec import PayloadError, decode
from mesh.protocol.jws import Jws
from mesh.protocol.log_wire import BATCH_MAX_BYTES, LogBatch
from mesh.protocol.models import (
    ActivationRecord,
    ActivationState,
    CameraAck,
    CancelAck,
    Escalation,
    OutcomeStatus,
    TriggerEvent,
    TriggerReceipt,
)
from mesh.security.checks import signed_envelope
from mesh.security.trust import Distrust, KeyRole, TrustStore

# Triggers, receipts, acks and escalations are small; anything near this is a bug or worse.
MAX_SMALL_PAYLOAD = 64 * 1024
# An activation record names every camera it concerned (as mesh/dispatch/watch.py allows).
MAX_RECORD_BYTES = 16 * 1024 * 1024

ArchivedModel = TriggerEvent | TriggerReceipt | ActivationRecord | CameraAck | Escalation | LogBatch


@dataclass(frozen=True)
class Item:
    """One accepted message: its kind, the decoded payload, its topic's variable levels,
    and the JSON as received (stored as is, so fields newer than this code are kept)."""

    kind: TopicKind
    model: ArchivedModel
    args: tuple[str, ...]
    raw: str  # the payload's JSON as sent (a signed message's: its JWS payload, decoded)
    # A signed message (JWS) as received; checked only by ``check_ack`` under a trust store.
    jws: Jws | None = None
    # Acks under a trust store (``check_ack``): True, the signature is valid; a refusal,
    # stored among the conflicts and never as an ack. None: not checked.
    verified: bool | None = None
    refusal: Rejection | None = None
    # Whether the trust store holds a key for the camera a refused ack speaks for: the
    # refused acks of unknown cameras share one conflicts cap.
    camera_known: bool = False


# What the archiver subscribes to, and nothing else.
ARCHIVED_KINDS = (
    TopicKind.TRIGGER,
    TopicKind.RECEIPT,
    TopicKind.ACTIVATION,
    TopicKind.ACK,
    TopicKind.ESCALATION,
    TopicKind.LOG_RECORDS,
)


def archived_filters(topics: Topics) -> tuple[str, ...]:
    return (
        f"{topics.prefix}/trigger/+",
        topics.all_receipts(),
        topics.all_activations(),
        f"{topics.prefix}/ack/+/+",
        topics.all_escalations(),
        topics.all_log_records(),
    )


# What each archived kind may weigh (the payload; a signed one's JWS a third more).
_WIRE_LIMIT = {
    TopicKind.ACTIVATION: MAX_RECORD_BYTES,
    TopicKind.LOG_RECORDS: BATCH_MAX_BYTES,
}


def _unwrapped(kind: TopicKind, message: bytes) -> tuple[bytes, Jws | None]:
    """The payload of a message (a signed one's, read without its signature checked: the
    archive stores evidence, ``check_ack`` judges it) and its JWS. The kind's size limit
    applies before any parsing; a signed message may be 4/3 of its payload and a few
    hundred bytes more (the payload is held to the limit itself when decoded)."""
    limit = _WIRE_LIMIT.get(kind, MAX_SMALL_PAYLOAD)
    if len(message) > limit * 4 // 3 + 1024:
        raise PayloadError(
            "too_large", f"{len(message)} bytes exceeds the {limit}-byte limit of its kind"
        )
    if kind is TopicKind.LOG_RECORDS:
        # Never signed (the log's checkpoints are, inside it): not looked through for a
        # signature, which cost a fifth of a large batch's intake (its bodies' escapes).
        return message, None
    jws = signed_envelope(message)
    if jws is None:
        return message, None
    try:
        return jws.payload_bytes, jws
    except ValueError:
        raise PayloadError("bad_jws", "payload is not base64url") from None


def accept(topics: Topics, topic: str, payload: bytes) -> Item | None:
    """The item to store, or None for a topic the archive does not keep.
    Raises PayloadError (with a stable code) for a payload that cannot be accepted."""
    parsed = topics.parse(topic)
    if parsed is None or parsed.kind not in ARCHIVED_KINDS:
        return None
    args = parsed.args
    model: ArchivedModel
    payload, jws = _unwrapped(parsed.kind, payload)
    match parsed.kind:
        case TopicKind.TRIGGER:
            model = decode(TriggerEvent, payload, max_bytes=MAX_SMALL_PAYLOAD)
            _same("unit_mismatch", "trigger for unit", model.unit_id, "unit", args[0])
        case TopicKind.RECEIPT:
            model = decode(TriggerReceipt, payload, max_bytes=MAX_SMALL_PAYLOAD)
            _same("unit_mismatch", "receipt for unit", model.unit_id, "unit", args[0])
        case TopicKind.ACTIVATION:
            model = decode(ActivationRecord, payload, max_bytes=MAX_RECORD_BYTES)
            _same("id_mismatch", "activation", model.activation_id, "activation", args[1])
            _same("unit_mismatch", "activation of unit", model.unit_id, "unit", args[0])
        case TopicKind.ACK:
            try:
                model = decode(CameraAck, payload, max_bytes=MAX_SMALL_PAYLOAD)
            except PayloadError as exc:
                if exc.code == "wrong_type" and _is_cancel_ack(payload):
                    return None  # reaches the archive in the issuing gateway's log instead
                raise
            _same("id_mismatch", "ack from camera", model.camera_id, "camera", args[1])
        case TopicKind.ESCALATION:
            model = decode(Escalation, payload, max_bytes=MAX_SMALL_PAYLOAD)
            _same("id_mismatch", "escalation for", model.audience, "audience", args[0])
        case _:  # TopicKind.LOG_RECORDS
            model = decode(LogBatch, payload, max_bytes=BATCH_MAX_BYTES)
            _same("id_mismatch", "records of log", model.log_id, "log", args[0])
            # The broker lets a gateway send only under its own name (docs/broker.md): the
            # name on the topic is who sent it, and the batch must say the same.
            if model.gateway_id == UNNAMED_SENDER:
                raise PayloadError("reserved_id", f"gateway id {UNNAMED_SENDER!r} is reserved")
            sender = sender_level(model.gateway_id)
            _same("gateway_mismatch", "batch from gateway", sender, "gateway", args[1])
            check_batch(model)
    try:
        raw = payload.decode()
    except UnicodeDecodeError as exc:  # the JSON parser took it, PostgreSQL would not
        raise PayloadError("not_utf8", f"payload is not UTF-8 ({exc.reason})") from None
    return Item(parsed.kind, model, args, raw, jws)


def check_ack(item: Item, trust: TrustStore | None, now_ns: int) -> Item:
    """An ack checked as its gateway checks it: signed by a valid key of the camera it
    speaks for. Without a trust store nothing is checked (``verified`` stays None); with
    one, an unsigned or badly signed ack carries its refusal. Other items pass as they are."""
    if trust is None or not isinstance(item.model, CameraAck):
        return item
    problem: Rejection | None
    if item.jws is None:
        problem = Rejection(Distrust.UNSIGNED, "unsigned ack")
    else:
        key = trust.verify(item.jws)
        if isinstance(key, Rejection):
            problem = key
        else:
            signers = [(KeyRole.CAMERA, item.model.camera_id)]
            problem = trust.signer_problem(key, "ack", signers, now_ns=now_ns)
    if problem is not None:
        known = trust.has_subject(KeyRole.CAMERA, item.model.camera_id)
        return replace(item, verified=False, refusal=problem, camera_known=known)
    return replace(item, verified=True)


def check_log_unit(item: Item, units: Mapping[str, str] | None) -> None:
    """A log batch from a gateway of the fleet file (``units``: each gateway's unit) names
    that gateway's unit or none: the unit it names binds the log, and legal holds and
    `archiver verify` go by it. Raises PayloadError (unit_mismatch); without ``units``,
    and for a gateway the fleet file does not list, nothing is checked."""
    batch = item.model
    if units is None or not isinstance(batch, LogBatch) or batch.gateway_id is None:
        return
    expected = units.get(batch.gateway_id)
    if expected is not None and batch.unit_id not in (None, expected):
        raise PayloadError(
            "unit_mismatch",
            f"batch from gateway {batch.gateway_id!r} names unit {batch.unit_id!r}; "
            f"the fleet file gives it unit {expected!r}",
        )


def signer_of(item: Item) -> str | None:
    """The key id that signed the item (not checked here), if it came signed."""
    return None if item.jws is None else item.jws.kid


def _is_cancel_ack(payload: bytes) -> bool:
    try:
        decode(CancelAck, payload, max_bytes=MAX_SMALL_PAYLOAD)
    except PayloadError:
        return False
    return True


def _same(code: str, what: str, got: str, level: str, expected: str) -> None:
    if got != expected:
        raise PayloadError(code, f"{what} {got!r} on the topic of {level} {expected!r}")


def check_batch(batch: LogBatch) -> None:
    """A batch is a run of consecutive rows of the edge log: each record's prev_seq is
    the record before it (the watermark relies on it), and each record's hash is over its
    own content (the archive never changes a stored record, so it must not store one that
    could never verify). Whether the records link is the chain check's business: a
    retention gap between two rows is a legitimate break in the seq, not in the chain."""
    prev: int | None = None
    for record in batch.records:
        computed = record_hash(
            record.prev_hash,
            record.seq,
            record.at_ns,
            kind=record.kind,
            activation_id=record.activation_id,
            body=record.body,
        )
        if computed != record.hash:
            raise PayloadError(
                "bad_hash", f"record {record.seq}: its content does not match its hash"
            )
        if record.prev_seq >= record.seq:
            raise PayloadError("not_consecutive", f"record {record.seq} names a later predecessor")
        if prev is not None and record.prev_seq != prev:
            raise PayloadError(
                "not_consecutive",
                f"record {record.seq} follows {record.prev_seq}, but the batch has {prev} "
                "before it",
            )
        prev = record.seq


# --- which activation record wins ---------------------------------------------------------
_FINAL = frozenset({ActivationState.CONFIRMED, ActivationState.PARTIAL, ActivationState.MISSED})


def activation_rank(record: ActivationRecord) -> tuple[int, int]:
    """Orders the versions of one activation record; the archive keeps the highest.

    A gateway publishes a record many times: pending progress (cameras answer one by one,
    never un-answer), then the final state, and after a cancel in the window, cancelled.
    QoS 1 redelivery and shared subscriptions mean they can arrive in any order, so the
    archive must never let a late progress update replace a final state.
    """
    if record.state is ActivationState.CANCELLED:
        stage = 2
    elif record.state in _FINAL:
        stage = 1
    else:
        stage = 0
    answered = sum(1 for c in record.cameras if c.status is not OutcomeStatus.PENDING)
    return stage, answered

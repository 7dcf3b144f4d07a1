"""Every check ``conformance camera`` makes, in the order it makes them. Pure data:
docs/conformance.md lists the same (tests/unit/test_conformance_catalog.py compares)."""

from __future__ import annotations

from mesh.conformance.verdict import Check, Level

MUST, SHOULD = Level.MUST, Level.SHOULD

PRESENCE = "protocol.md#presence-and-last-will"
TOPICS = "protocol.md#topics"
FANOUT = "protocol.md#fan-out-cell-unit-and-named-camera-topics-cameras-decide"
MUST_DO = "protocol.md#what-a-camera-must-do-with-a-record_start"
REMEMBERS = "protocol.md#what-a-camera-remembers"
FLOOD = "protocol.md#a-camera-under-a-flood-of-commands"
CANCELLING = "protocol.md#cancelling-a-false-trigger"
CONVENTIONS = "protocol.md#conventions"
RECEIVER = "security.md#how-a-receiver-checks-a-signed-message"

PRESENCE_RETAINED = Check(
    "presence_retained", MUST, PRESENCE, "its presence is retained on {p}/presence/{id}, online"
)
PRESENCE_PAYLOAD = Check(
    "presence_payload",
    MUST,
    PRESENCE,
    "the presence is a valid payload of at most 2,048 bytes naming the camera and its unit",
)
WRONG_VERSION = Check(
    "wrong_version_refused",
    MUST,
    CONVENTIONS,
    "a command whose v is not the protocol's is refused: not acted on, not answered",
)
TIME_TYPE = Check(
    "time_type_refused",
    MUST,
    CONVENTIONS,
    "a command whose *_ns times have the wrong JSON type is refused: not acted on, not answered",
)
ACCEPTS_16K = Check(
    "accepts_16k_unknown_fields",
    MUST,
    FLOOD,
    "a command of 16,384 bytes, grown by a member the camera does not know, is read and answered",
)
TOO_LARGE = Check(
    "too_large_dropped", SHOULD, FLOOD, "a command over 16 KiB is dropped unparsed, unanswered"
)
UNSIGNED = Check(
    "unsigned_refused",
    MUST,
    RECEIVER,
    "an unsigned command is refused `rejected`, `unsigned: …`, and starts nothing",
    signed=True,
)
BAD_SIGNATURE = Check(
    "bad_signature_dropped",
    MUST,
    RECEIVER,
    "a command whose signature does not match its content starts nothing and is not answered",
    signed=True,
)
BAD_JWS = Check(
    "bad_jws_dropped",
    MUST,
    RECEIVER,
    "a genuine command under a protected header with `alg: none` starts nothing and is not "
    "answered",
    signed=True,
)
UNKNOWN_KEY = Check(
    "unknown_key_dropped",
    MUST,
    RECEIVER,
    "a command signed by a key the camera does not know starts nothing and is not answered",
    signed=True,
)
WRONG_SIGNER = Check(
    "wrong_signer_refused",
    MUST,
    RECEIVER,
    "a command signed by a trusted gateway key that is not its issuer's is refused `wrong_signer`",
    signed=True,
)
IN_FUTURE = Check(
    "issued_in_future_refused",
    MUST,
    MUST_DO,
    "a signed command issued further ahead than the clock skew allowed is refused "
    "`issued_in_future`",
    signed=True,
)
TOO_LONG = Check(
    "validity_too_long_refused",
    MUST,
    MUST_DO,
    "a signed command valid for longer than allowed is refused `validity_too_long`",
    signed=True,
)
REPLAYED = Check(
    "replayed_refused",
    MUST,
    REMEMBERS,
    "the very same signed command again on its own topic is refused `replayed`",
    signed=True,
)
CELL_TOPIC = Check(
    "cell_topic", MUST, TOPICS, "a command on the geohash-6 cell of its position reaches it"
)
STARTED = Check(
    "started_in_range",
    MUST,
    MUST_DO,
    "a command in range starts it: ack `started` with recording_started_at_ns and pre_event_kept_s",
)
STARTS_NOTHING = Check(
    "refused_commands_start_nothing",
    MUST,
    MUST_DO,
    "the commands refused or dropped before (bad version, time type, size, signatures) "
    "started no recording",
)
UNIT_TOPIC = Check("unit_topic", MUST, TOPICS, "a command on its unit's topic reaches it")
ALREADY_RECORDING = Check(
    "already_recording",
    MUST,
    MUST_DO,
    "a second activation while recording joins it: ack `already_recording`",
)
ALL_TOPIC = Check("all_topic", MUST, TOPICS, "a command on {p}/cmd/all reaches it")
DISTINCT_ISSUERS = Check(
    "distinct_issuers",
    MUST,
    MUST_DO,
    "the same activation id from another issuer is decided afresh (answered on a shared "
    "topic), not taken for a duplicate",
)
DUPLICATE_SHARED = Check(
    "duplicate_shared_ignored",
    MUST,
    MUST_DO,
    "the same command again on a shared topic is ignored: no ack, nothing started",
)
NOT_CONCERNED = Check(
    "silent_when_not_concerned",
    MUST,
    FANOUT,
    "a command it is not concerned by, on its cell, unit or cmd/all topic, gets no answer",
)
DUPLICATE_OWN = Check(
    "duplicate_own_answered",
    MUST,
    MUST_DO,
    "a retry of an activation it is recording, on its own topic, is answered `already_recording`",
)
OUT_OF_RANGE = Check(
    "out_of_range_direct",
    MUST,
    MUST_DO,
    "a command out of range sent to its own topic is answered `out_of_range` with the distance",
)
EXPIRED = Check(
    "expired_rejected",
    MUST,
    MUST_DO,
    "an expired command on its own topic is answered `rejected` with the reason, and starts "
    "nothing",
)
CANCEL_NOT_ACTED = Check(
    "cancel_not_acted_ignored",
    MUST,
    CANCELLING,
    "a record_cancel for an activation it did not act on is ignored silently",
)
CANCEL_OTHER_ISSUER = Check(
    "cancel_other_issuer_refused",
    MUST,
    CANCELLING,
    "a record_cancel from an issuer without a claim is refused: `cancel_ack` `refused` to the "
    "claim's issuer, recording goes on",
)
CANCEL_KEPT = Check(
    "cancel_kept_recording",
    MUST,
    CANCELLING,
    "an obeyed cancel while another claim remains keeps recording: `cancel_ack` `kept_recording`",
)
CANCEL_STOPPED = Check(
    "cancel_stopped",
    MUST,
    CANCELLING,
    "the issuer's cancel of the last claim within its window stops it: `cancel_ack` `stopped`",
)
CANCEL_REPEAT = Check(
    "cancel_repeat_silent",
    MUST,
    CANCELLING,
    "a cancel already obeyed, arriving again, is not answered again",
)
PRESENCE_ON_MOVE = Check(
    "presence_on_move", SHOULD, PRESENCE, "it publishes its presence again when it moves"
)
CELL_FOLLOWS_MOVE = Check(
    "cell_follows_move",
    MUST,
    FANOUT,
    "moved into another cell, it hears that cell's commands",
)
PRESENCE_RECORDING = Check(
    "presence_tracks_recording",
    SHOULD,
    PRESENCE,
    "it publishes its presence again when it starts recording (recording: true) and stops",
)
PRESENCE_RATE = Check(
    "presence_rate",
    MUST,
    PRESENCE,
    "at most 2 presence messages a second on average, at most 6 at once",
)
ACK_FORMAT = Check(
    "ack_format",
    MUST,
    MUST_DO,
    "every ack is valid, on {p}/ack/{issuer}/{camera}, echoes the attempt, carries the "
    "recording fields on `started` only, within 65,536 bytes",
)
CANCEL_ACK_FORMAT = Check(
    "cancel_ack_format",
    MUST,
    CANCELLING,
    "every cancel_ack is valid (type cancel_ack), names the camera and the cancel it answers, "
    "a refusal's reason starts with its code",
)
ACKS_SIGNED = Check(
    "acks_signed",
    MUST,
    MUST_DO,
    "every ack and cancel_ack, refusals included, verifies against the camera's key in the "
    "trust store",
    signed=True,
)
LAST_WILL = Check(
    "last_will_offline",
    MUST,
    PRESENCE,
    "its connection dropped, the broker publishes its last will: presence `online: false`, "
    "retained",
)

CHECKS: tuple[Check, ...] = (
    PRESENCE_RETAINED,
    PRESENCE_PAYLOAD,
    WRONG_VERSION,
    TIME_TYPE,
    ACCEPTS_16K,
    TOO_LARGE,
    UNSIGNED,
    BAD_SIGNATURE,
    BAD_JWS,
    UNKNOWN_KEY,
    WRONG_SIGNER,
    IN_FUTURE,
    TOO_LONG,
    REPLAYED,
    CELL_TOPIC,
    STARTED,
    STARTS_NOTHING,
    UNIT_TOPIC,
    ALREADY_RECORDING,
    ALL_TOPIC,
    DISTINCT_ISSUERS,
    DUPLICATE_SHARED,
    NOT_CONCERNED,
    DUPLICATE_OWN,
    OUT_OF_RANGE,
    EXPIRED,
    CANCEL_NOT_ACTED,
    CANCEL_OTHER_ISSUER,
    CANCEL_KEPT,
    CANCEL_STOPPED,
    CANCEL_REPEAT,
    PRESENCE_ON_MOVE,
    CELL_FOLLOWS_MOVE,
    PRESENCE_RECORDING,
    PRESENCE_RATE,
    ACK_FORMAT,
    CANCEL_ACK_FORMAT,
    ACKS_SIGNED,
    LAST_WILL,
)

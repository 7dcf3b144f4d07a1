"""Every check ``conformance gateway`` makes. Pure data: docs/conformance.md lists the
same (tests/unit/test_conformance_catalog.py compares)."""

from __future__ import annotations

from mesh.conformance.verdict import Check, Level

MUST, SHOULD = Level.MUST, Level.SHOULD

PRESENCE = "protocol.md#presence-and-last-will"
PAYLOADS = "protocol.md#payloads"
FANOUT = "protocol.md#fan-out-cell-unit-and-named-camera-topics-cameras-decide"
RANGE_RULE = "protocol.md#the-range-rule"
FLOW = "protocol.md#the-flow-of-one-activation"
ESCALATION = "protocol.md#escalation"
CANCELLING = "protocol.md#cancelling-a-false-trigger"
RETRIES = "policy.md#when-retries-go-out"
RANGE = "policy.md#how-range-is-resolved"
SECURITY = "security.md#threat-model"

STATUS = Check(
    "gateway_status_retained",
    MUST,
    PRESENCE,
    "its status is retained on {p}/gateway/{id}, online, naming its unit",
)
RECEIPT = Check(
    "trigger_receipt_accepted",
    MUST,
    PAYLOADS,
    "a trigger gets a receipt `accepted` naming its event and the activation",
)
REPEAT = Check(
    "repeat_trigger_merged",
    MUST,
    PAYLOADS,
    "the same trigger again (same event id) is merged: receipt `suppressed`, same activation",
)
COMMAND = Check(
    "command_fields",
    MUST,
    PAYLOADS,
    "the record_start is valid: issuer, the trigger, its origin, attempt 0, expiry and cancel "
    "deadline after its issue",
)
CELLS = Check(
    "command_to_covering_cells",
    MUST,
    FANOUT,
    "the command goes to every geohash-6 cell that meets the circle (or cmd/all for a big one)",
)
UNITS = Check(
    "command_to_unit_topics",
    MUST,
    FANOUT,
    "the command goes to {p}/cmd/unit/{u} of every unit it targets",
)
CELLS_FEW = Check(
    "command_cells_few",
    SHOULD,
    FANOUT,
    "the command goes to no cell that does not meet the circle",
)
STALE = Check(
    "stale_fix_named",
    MUST,
    RANGE_RULE,
    "a camera whose fix is stale is placed with its unit: named in the command and sent it on "
    "its own topic",
)
RETRIED = Check(
    "silent_cameras_retried",
    MUST,
    FLOW,
    "expected cameras still silent get the command again on {p}/cmd/camera/{id}: the next "
    "attempt, the same activation and issue time",
)
RETRIES_ONLY = Check(
    "retries_only_to_silent",
    SHOULD,
    RETRIES,
    "no retry goes to a camera that answered, that is not expected, or that is offline too long",
)
NOT_AFTER_EXPIRY = Check(
    "no_command_after_expiry",
    SHOULD,
    RETRIES,
    "no command goes out once it has expired",
)
PENDING_FINAL = Check(
    "record_pending_then_final",
    MUST,
    PAYLOADS,
    "the activation record is published `pending` while it runs, then once final",
)
ANSWERS = Check(
    "answers_recorded",
    MUST,
    PAYLOADS,
    "cameras that answered `started` (in range, of the unit, placed with their unit) are "
    "`started` in the record",
)
LATE = Check(
    "late_answer_recorded",
    MUST,
    FLOW,
    "a camera that answers only the retry is `started`, with the attempts it took",
)
SILENT = Check(
    "silent_camera_escalated",
    MUST,
    ESCALATION,
    "a camera silent through every retry is `missed` and escalated `no_ack`",
)
OFFLINE = Check(
    "offline_camera_escalated",
    MUST,
    ESCALATION,
    "a camera offline too long is escalated `offline` at once, not waited for, `missed`",
)
REJECTED = Check(
    "rejected_camera_escalated",
    MUST,
    ESCALATION,
    "a camera that answered `rejected` is `rejected` in the record and escalated `rejected`",
)
OUT_OF_RANGE = Check(
    "out_of_range_recorded",
    MUST,
    RANGE_RULE,
    "a camera that answers `out_of_range` to the retry is recorded so, and not escalated",
)
BAD_ACKS = Check(
    "bad_acks_ignored",
    MUST,
    SECURITY,
    "acks the gateway must refuse (another camera's id on the topic; in a signed run unsigned, "
    "unknown key, another camera's key) change nothing: the camera stays `missed`",
)
UNEXPECTED = Check(
    "unexpected_start_recorded",
    MUST,
    PAYLOADS,
    "a camera not expected that answers `started` is in the record, expected: false",
)
FAR = Check(
    "far_camera_left_out",
    MUST,
    PAYLOADS,
    "a camera out of range, not targeted, is neither in the record nor sent the command",
)
STATE = Check(
    "final_state",
    MUST,
    PAYLOADS,
    "the final state follows the outcomes (confirmed, partial or missed)",
)
ESCALATION_FIELDS = Check(
    "escalation_fields",
    MUST,
    ESCALATION,
    "every escalation names the activation, issuer, unit, kind, camera, its unit and attempts, "
    "on {p}/escalation/{audience}",
)
CANCEL = Check(
    "cancel_honoured",
    MUST,
    CANCELLING,
    "a cancel within the window is accepted (receipt) and the record republished `cancelled`",
)
RECORD_CANCEL = Check(
    "record_cancel_sent",
    MUST,
    CANCELLING,
    "a cancelled activation's record_cancel goes to its command's topics, from its issuer",
)
CANCEL_UNKNOWN = Check(
    "cancel_unknown_refused",
    MUST,
    CANCELLING,
    "a cancel of an activation the gateway does not have is answered `rejected`",
)
SIGNED_COMMANDS = Check(
    "commands_signed",
    MUST,
    SECURITY,
    "every record_start and record_cancel verifies against the gateway's key in the trust store",
    signed=True,
)
UNSIGNED_TRIGGER = Check(
    "unsigned_trigger_refused",
    MUST,
    SECURITY,
    "an unsigned trigger is refused: receipt `rejected`, `unsigned`, and no command",
    signed=True,
)

CHECKS: tuple[Check, ...] = (
    STATUS,
    RECEIPT,
    REPEAT,
    COMMAND,
    CELLS,
    UNITS,
    CELLS_FEW,
    STALE,
    RETRIED,
    RETRIES_ONLY,
    NOT_AFTER_EXPIRY,
    PENDING_FINAL,
    ANSWERS,
    LATE,
    SILENT,
    OFFLINE,
    REJECTED,
    OUT_OF_RANGE,
    BAD_ACKS,
    UNEXPECTED,
    FAR,
    STATE,
    ESCALATION_FIELDS,
    CANCEL,
    RECORD_CANCEL,
    CANCEL_UNKNOWN,
    SIGNED_COMMANDS,
    UNSIGNED_TRIGGER,
)

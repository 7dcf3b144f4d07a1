"""One run of ``conformance camera``: every check of the catalog, in its order, each a
small function of the run; then the silences looked at again (an answer that came late
still counts).

The order matters: the refusals go first, while the camera is idle, so that the first
genuine command tells whether any of them started it; then a recording is started and
joined; then the claims are cancelled one by one; then the camera is moved (if the kit
can), and last it is killed (if the kit started it) for its last will.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import structlog

from bridge.mqtt.client import LinkDown
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.conformance.camera import (
    catalog,
    steps_answers,
    steps_cancel,
    steps_presence,
    steps_recording,
    steps_refusals,
)
from mesh.conformance.camera.context import CameraOptions, CameraRun, NeedsError
from mesh.conformance.camera.process import CameraProcess
from mesh.conformance.camera.session import CameraSession
from mesh.conformance.mqtt import kit_link
from mesh.conformance.verdict import (
    Check,
    Finding,
    Outcome,
    Result,
    failed,
    not_run,
    out_of_scope,
)

Step = Callable[[CameraRun], Awaitable[Finding]]

STEPS: tuple[tuple[Check, Step], ...] = (
    (catalog.PRESENCE_RETAINED, steps_presence.presence_retained),
    (catalog.PRESENCE_PAYLOAD, steps_presence.presence_payload),
    (catalog.WRONG_VERSION, steps_refusals.wrong_version_refused),
    (catalog.TIME_TYPE, steps_refusals.time_type_refused),
    (catalog.ACCEPTS_16K, steps_refusals.accepts_16k_unknown_fields),
    (catalog.TOO_LARGE, steps_refusals.too_large_dropped),
    (catalog.UNSIGNED, steps_refusals.unsigned_refused),
    (catalog.BAD_SIGNATURE, steps_refusals.bad_signature_dropped),
    (catalog.BAD_JWS, steps_refusals.bad_jws_dropped),
    (catalog.UNKNOWN_KEY, steps_refusals.unknown_key_dropped),
    (catalog.WRONG_SIGNER, steps_refusals.wrong_signer_refused),
    (catalog.IN_FUTURE, steps_refusals.issued_in_future_refused),
    (catalog.TOO_LONG, steps_refusals.validity_too_long_refused),
    (catalog.REPLAYED, steps_refusals.replayed_refused),
    (catalog.CELL_TOPIC, steps_recording.cell_topic),
    (catalog.STARTED, steps_recording.started_in_range),
    (catalog.STARTS_NOTHING, steps_recording.refused_commands_start_nothing),
    (catalog.UNIT_TOPIC, steps_recording.unit_topic),
    (catalog.ALREADY_RECORDING, steps_recording.already_recording),
    (catalog.ALL_TOPIC, steps_recording.all_topic),
    (catalog.DISTINCT_ISSUERS, steps_recording.distinct_issuers),
    (catalog.DUPLICATE_SHARED, steps_recording.duplicate_shared_ignored),
    (catalog.NOT_CONCERNED, steps_recording.silent_when_not_concerned),
    (catalog.DUPLICATE_OWN, steps_recording.duplicate_own_answered),
    (catalog.OUT_OF_RANGE, steps_recording.out_of_range_direct),
    (catalog.EXPIRED, steps_recording.expired_rejected),
    (catalog.CANCEL_NOT_ACTED, steps_cancel.cancel_not_acted_ignored),
    (catalog.CANCEL_OTHER_ISSUER, steps_cancel.cancel_other_issuer_refused),
    (catalog.CANCEL_KEPT, steps_cancel.cancel_kept_recording),
    (catalog.CANCEL_STOPPED, steps_cancel.cancel_stopped),
    (catalog.CANCEL_REPEAT, steps_cancel.cancel_repeat_silent),
    (catalog.PRESENCE_ON_MOVE, steps_presence.presence_on_move),
    (catalog.CELL_FOLLOWS_MOVE, steps_presence.cell_follows_move),
    (catalog.PRESENCE_RECORDING, steps_presence.presence_tracks_recording),
    (catalog.PRESENCE_RATE, steps_presence.presence_rate),
    (catalog.ACK_FORMAT, steps_answers.ack_format),
    (catalog.CANCEL_ACK_FORMAT, steps_answers.cancel_ack_format),
    (catalog.ACKS_SIGNED, steps_answers.acks_signed),
    (catalog.LAST_WILL, steps_presence.last_will_offline),
)

# The checks that only look at what the camera already sent: they still run once the
# camera is gone.
AFTERWARDS = frozenset(
    c.name
    for c in (
        catalog.PRESENCE_RECORDING,
        catalog.PRESENCE_RATE,
        catalog.ACK_FORMAT,
        catalog.CANCEL_ACK_FORMAT,
        catalog.ACKS_SIGNED,
    )
)
UNSIGNED_RUN = "an unsigned run: give --trust and --gateway-key for a signed one"
ABSENT = "the camera never announced itself (presence_retained)"


@dataclass(frozen=True)
class RunReport:
    results: list[Result]
    seconds: float
    properties: dict[str, str]


async def run_camera(url: BrokerUrl, options: CameraOptions) -> RunReport:
    """Every check against the camera ``options`` names. Raises LinkDown if the broker
    cannot be reached at all."""
    began = time.monotonic()
    topics = Topics(options.prefix)
    camera = options.camera_id
    tag = uuid.uuid4().hex[:8]
    subscriptions = (topics.presence(camera), topics.ack("+", camera))
    async with kit_link(url, subscriptions, name="camera") as link:
        session = CameraSession(
            link,
            topics,
            camera,
            keys=options.keys,
            timeout_s=options.timeout_s,
            quiet_s=options.quiet_s,
            id_prefix=f"conf-{tag}-",
        )
        process = (
            CameraProcess(options.camera_cmd, options.camera_log)
            if options.camera_cmd is not None
            else None
        )
        run = CameraRun(options, url, topics, session, tag, process=process)
        try:
            results = [
                await _step(run, check, step, first=i == 0) for i, (check, step) in enumerate(STEPS)
            ]
        finally:
            if process is not None:
                await process.stop()
        results = _look_again(run, results)
    properties = {
        "camera_id": camera,
        "broker": f"{url.host}:{url.port}",
        "prefix": options.prefix,
        "mode": "signed" if run.signed else "unsigned",
        "issuer": options.issuer,
        "started_by_kit": str(process is not None).lower(),
    }
    return RunReport(results, time.monotonic() - began, properties)


async def _step(run: CameraRun, check: Check, step: Step, *, first: bool) -> Result:
    if check.signed and not run.signed:
        return Result(check, out_of_scope(UNSIGNED_RUN))
    if not first and run.presence_payload is None:
        return Result(check, not_run(ABSENT))
    gone = _gone(run)
    if gone is not None and check.name not in AFTERWARDS:
        return Result(check, not_run(gone))
    began = time.monotonic()
    try:
        finding = await step(run)
    except NeedsError as exc:
        finding = exc.finding
    except LinkDown as exc:
        finding = not_run(f"the broker connection dropped: {exc}")
    except Exception as exc:
        structlog.get_logger("mesh.conformance").exception("check failed", check=check.name)
        finding = not_run(f"the kit failed: {type(exc).__name__}: {exc}")
    return Result(check, finding, time.monotonic() - began)


def _gone(run: CameraRun) -> str | None:
    """Why the camera is no longer there (its presence said offline after it had
    announced itself), naming what the kit sent just before; None while it is there."""
    if run.presence_payload is None:
        return None
    for seen, presence in run.session.presences(run.start_mark):
        if presence is None or presence.online or seen.retain:
            continue
        before = [s for s in run.session.sent if s.mono_s <= seen.mono_s]
        last = f", just after the kit sent {before[-1].probe}" if before else ""
        return f"the camera went offline during the run (its presence said so{last})"
    return None


def _look_again(run: CameraRun, results: list[Result]) -> list[Result]:
    """A silence that passed is judged again with every answer the run received: one
    that came after its quiet window fails it."""
    by_check = {s.check.name: s for s in run.silences}
    out = []
    for result in results:
        silence = by_check.get(result.check.name)
        if silence is not None and result.outcome is Outcome.PASS:
            again = silence.rejudge(run.answers_to_all(silence.sent))
            if again.outcome is not Outcome.PASS:
                late = f"{again.detail} (late: after the {run.options.quiet_s:g} s quiet window)"
                result = replace(result, finding=failed(late))  # noqa: PLW2901
        out.append(result)
    return out

"""What peers say over MQTT is printed by `trigger` and `tail` as it is, never read by rich
as markup or emoji codes (mesh.dispatch.literal; the same through a log:
tests/unit/test_render_markup.py).

On a real mosquitto, with the commands run as processes: hostile cameras in front of the
real gateway (one acks with a reason full of markup and an ESC, one has a valid id that
rich showed as an emoji), and hostile gateways that answer a trigger with such a reason, or
publish a record whose ids rich would rewrite. Before, ``[/]`` raised rich's MarkupError
(a traceback, exit 1, the outcome never shown), ``[red]…`` and ``[link=…]`` restyled what
dispatch saw, and ``bwc:police_car:7`` was shown as ``bwc🚓7``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.protocol.codec import PayloadError, decode, encode
from mesh.protocol.models import (
    AckStatus,
    ActivationRecord,
    ActivationState,
    CameraAck,
    CameraOutcome,
    OutcomeStatus,
    ReceiptOutcome,
    RecordStart,
    SourceRef,
    SourceType,
    TriggerEvent,
    TriggerKind,
    TriggerReceipt,
    TriggerSummary,
)
from tests.coordinator_helpers import camera
from tests.harness import CENTER, UNIT, make_gateway, wait_until

HOSTILE = "[/] [red]x[/red] [link=http://evil]click[/link] [bold red]FORGED[/]"
ESCAPE = "\x1b[2J"
EMOJI_ID = "bwc:police_car:7"  # a valid camera id (A-Z a-z 0-9 . _ : -)
CLI = [sys.executable, "-m", "mesh"]


async def run_cli(*args: str, timeout_s: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


@contextlib.asynccontextmanager
async def peer(
    mosquitto: MosquittoProcess, subscriptions: tuple[str, ...], answer: object
) -> AsyncIterator[MqttLink]:
    """An MQTT client of the test's own: what a hostile camera or gateway runs."""
    link = MqttLink(
        mosquitto.url,
        LinkOptions(
            f"hostile-{uuid.uuid4().hex[:8]}",
            subscriptions=tuple((s, 1) for s in subscriptions),
            persistent_session=False,
        ),
    )
    tasks: set[asyncio.Task[None]] = set()

    def on_message(message: Inbound) -> None:
        assert callable(answer)
        task = asyncio.create_task(answer(link, message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    runner = asyncio.create_task(link.run(on_message))
    try:
        await link.wait_up(10)
        yield link
    finally:
        runner.cancel()
        await asyncio.gather(runner, *tasks, return_exceptions=True)


def assert_shown_as_is(out: str, *texts: str) -> None:
    for text in texts:
        assert text in out, out
    assert "🚓" not in out, out
    assert "\x1b" not in out, out  # not a terminal: no styling, and the ESC shown as \x1b


async def test_trigger_shows_what_the_cameras_said_as_it_is(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """The real gateway, two hostile cameras: the one named ``bwc:police_car:7`` starts,
    ``bwc-9`` says it is out of range with a reason of markup and an ESC. The gateway
    keeps what the camera said; ``trigger`` prints it as it is and exits 0 (confirmed)."""
    cameras = {
        EMOJI_ID: (AckStatus.STARTED, ""),
        "bwc-9": (AckStatus.OUT_OF_RANGE, HOSTILE + ESCAPE),
    }
    answered: set[tuple[str, str, int]] = set()

    async def ack(link: MqttLink, message: Inbound) -> None:
        try:
            command = decode(RecordStart, message.payload)
        except PayloadError:  # not a record-start (a cancel): nothing to answer
            return
        for camera_id, (status, reason) in cameras.items():
            if (key := (command.activation_id, camera_id, command.attempt)) in answered:
                continue
            answered.add(key)
            now = time.time_ns()
            answer = CameraAck(
                activation_id=command.activation_id,
                camera_id=camera_id,
                unit_id=UNIT,
                status=status,
                reason=reason,
                attempt=command.attempt,
                received_at_ns=now,
                recording_started_at_ns=now if status is AckStatus.STARTED else None,
            )
            await link.publish(topics.ack(command.issuer, camera_id), encode(answer))

    gateway = make_gateway(mosquitto.url, topics, tmp_path / "car-12.db")
    async with peer(mosquitto, (f"{topics.prefix}/cmd/#",), ack) as link:
        for north_m, camera_id in ((20.0, EMOJI_ID), (40.0, "bwc-9")):
            presence = camera(camera_id, north_m=north_m)
            await link.publish(topics.presence(camera_id), encode(presence), retain=True)
        running = asyncio.create_task(gateway.run())
        try:
            await asyncio.wait_for(gateway.ready.wait(), 15)
            await wait_until(lambda: all(gateway.presence.get(c) for c in cameras))
            code, out, err = await run_cli(
                "trigger", "--kind", "manual", "--unit", UNIT, "--lat", str(CENTER.lat),
                "--lon", str(CENTER.lon), "--broker", str(mosquitto.url),
                "--prefix", topics.prefix,
            )  # fmt: skip
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            for camera_id in cameras:
                await link.publish(topics.presence(camera_id), b"", retain=True)
    assert code == 0, out + err
    assert "Traceback" not in err, err
    assert_shown_as_is(out, f"│ {EMOJI_ID} ", f"{HOSTILE}\\x1b[2J", "confirmed")


async def _answer_triggers(
    mosquitto: MosquittoProcess, topics: Topics, unit: str, receipt: dict[str, object]
) -> tuple[int, str, str]:
    """A hostile gateway for ``unit`` answers a trigger with ``receipt``; what `trigger`
    made of it."""

    async def answer(link: MqttLink, message: Inbound) -> None:
        trigger = decode(TriggerEvent, message.payload)
        fields = {"event_id": trigger.event_id, "unit_id": unit, "at_ns": time.time_ns()}
        await link.publish(
            topics.receipt(unit), encode(TriggerReceipt.model_validate({**fields, **receipt}))
        )

    async with peer(mosquitto, (topics.trigger(unit),), answer):
        return await run_cli(
            "trigger", "--kind", "manual", "--unit", unit, "--broker", str(mosquitto.url),
            "--prefix", topics.prefix, "--timeout", "5",
        )  # fmt: skip


async def test_trigger_shows_a_gateways_refusal_as_it_is(
    mosquitto: MosquittoProcess, topics: Topics
) -> None:
    refused = {"outcome": ReceiptOutcome.REJECTED, "reason": HOSTILE + ESCAPE}
    code, out, err = await _answer_triggers(mosquitto, topics, "car-66", refused)
    assert code == 3, out + err  # refused by policy, as the gateway said
    assert "Traceback" not in err, err
    assert_shown_as_is(out, f"refused: {HOSTILE}\\x1b[2J")


async def test_trigger_shows_a_gateways_merge_as_it_is(
    mosquitto: MosquittoProcess, topics: Topics
) -> None:
    merged = {
        "outcome": ReceiptOutcome.SUPPRESSED,
        "activation_id": "a:police_car:1",
        "activation_pending": False,
        "reason": HOSTILE,
    }
    code, out, err = await _answer_triggers(mosquitto, topics, "car-67", merged)
    assert code == 0, out + err  # merged into an activation that had finished
    assert "Traceback" not in err, err
    assert_shown_as_is(out, f"merged into activation a:police_car:1: {HOSTILE}")


async def test_tail_shows_the_ids_of_a_record_as_they_are(
    mosquitto: MosquittoProcess, topics: Topics
) -> None:
    """A hostile gateway's retained record (so that `tail` gets it whenever it subscribes),
    with ids rich would have shown as emoji."""
    unit, aid, now = "car:cop:12", "a:police_car:1", time.time_ns()
    trigger = TriggerSummary(
        event_id="ev:fire:1",
        kind=TriggerKind.MANUAL,
        source=SourceRef(type=SourceType.MANUAL, id=HOSTILE, authenticated=True),
        unit_id=unit,
        observed_at_ns=now,
    )
    record = ActivationRecord(
        activation_id=aid,
        issuer="gw:cop:12",
        unit_id=unit,
        trigger=trigger,
        state=ActivationState.CONFIRMED,
        reason=HOSTILE,
        decided_at_ns=now,
        finished_at_ns=now,
        expires_at_ns=now + 30_000_000_000,
        origin=None,
        radius_m=150.0,
        pre_event_s=30,
        cameras=(
            CameraOutcome(
                camera_id=EMOJI_ID,
                unit_id=unit,
                expected=True,
                targeting=HOSTILE,
                status=OutcomeStatus.STARTED,
            ),
        ),
    )

    async def ignore(_link: MqttLink, _message: Inbound) -> None:
        return None

    async with peer(mosquitto, (), ignore) as link:
        await link.publish(topics.activation(unit, aid), encode(record), retain=True)
        try:
            proc = await asyncio.create_subprocess_exec(
                *CLI, "tail", "--broker", str(mosquitto.url), "--prefix", topics.prefix,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert proc.stdout is not None
            lines: list[str] = []

            async def until_the_row() -> None:
                while aid not in "".join(lines):
                    line = await proc.stdout.readline()  # type: ignore[union-attr]
                    assert line, "tail ended before printing the record"
                    lines.append(line.decode(errors="replace"))

            try:
                await asyncio.wait_for(until_the_row(), 30)
            finally:
                proc.send_signal(signal.SIGINT)
                rest, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            await link.publish(topics.activation(unit, aid), b"", retain=True)
    out = "".join(lines) + rest.decode(errors="replace")
    assert proc.returncode == 0, out + err.decode(errors="replace")
    assert_shown_as_is(out, f"│ {aid} │", f"│ {unit} ", "confirmed")

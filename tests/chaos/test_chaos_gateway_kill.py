"""Fault injection: the gateway daemon SIGKILLed at random points and restarted.

Each trial starts the real `trigger-mesh gateway` process, sends a burst of triggers over
MQTT and kills the process — either at a failpoint (mesh/ops/failpoints.py: a named step of
the coordinator, its Nth pass, chosen from a seeded RNG) or at a random moment of the
burst — then starts it again on the same log and client id and checks that no trigger
was lost (docs/reliability.md). ``CHAOS_TRIALS`` sets the number of trials (default 20;
`make chaos` runs more), ``CHAOS_SEED`` the seed.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.decide.geo import offset
from mesh.journal.records import EscalatedEntry, FinishedEntry, RecordKind
from mesh.journal.store import read_records
from mesh.protocol.codec import encode
from mesh.protocol.models import (
    ActivationState,
    CameraPresence,
    CameraRole,
    EscalationReason,
    OutcomeStatus,
    Position,
)
from tests.chaos_tools import (
    FAR,
    IN_RANGE,
    CameraFleet,
    GatewayRunner,
    LossReport,
    Observer,
    TriggerSender,
    account,
    assert_chain_intact,
    audit_verify,
    public_key_of,
    running,
    snapshot,
    wait_for,
    wait_settled,
    write_gateway_config,
)
from tests.harness import CENTER

TRIALS = int(os.environ.get("CHAOS_TRIALS", "20"))
SEED = int(os.environ.get("CHAOS_SEED", "20261122"))
BURST = 3  # triggers per trial
POINTS = (
    "trigger.received",
    "activation.logged",
    "command.published",
    "ack.logged",
    "activation.queued",
    "activation.finished",
)


@dataclass(frozen=True)
class Trial:
    index: int
    failpoint: str  # "point=N", or "" for a kill at a random moment
    kill_after_s: float  # for a random kill: this long after the first trigger was sent

    def __str__(self) -> str:
        how = self.failpoint or f"SIGKILL {self.kill_after_s * 1000:.0f} ms into the burst"
        return f"trial {self.index}: {how}"


def plan_trials(count: int, seed: int) -> list[Trial]:
    """Two in three trials die at a failpoint (every point in turn, its pass drawn from
    those the burst is sure to make), one in three at a random time."""
    rng = random.Random(seed)
    trials: list[Trial] = []
    for index in range(count):
        if index % 3 == 2:
            trials.append(Trial(index, "", rng.uniform(0.0, 0.4)))
            continue
        point = POINTS[(index - index // 3) % len(POINTS)]
        passes = BURST * len(IN_RANGE) if point == "ack.logged" else BURST
        trials.append(Trial(index, f"{point}={rng.randint(1, passes)}", 0.0))
    return trials


def test_trials_cover_every_failpoint_and_random_kills() -> None:
    trials = plan_trials(20, SEED)
    points = {t.failpoint.partition("=")[0] for t in trials if t.failpoint}
    assert points == set(POINTS)
    assert sum(1 for t in trials if not t.failpoint) >= 6
    assert plan_trials(20, SEED) == trials  # the seed decides, nothing else


async def _run_trial(
    trial: Trial,
    runner: GatewayRunner,
    observer: Observer,
    sender: TriggerSender,
    fleet: CameraFleet,
    log: Path,
) -> LossReport:
    runner.start(trial.failpoint)
    await observer.wait_gateway_up(runner)
    burst = [sender.event(f"t{trial.index}") for _ in range(BURST)]

    async def send_burst() -> None:
        for event in burst:
            await sender.publish(event)
            await asyncio.sleep(0.03)

    started = time.monotonic()
    sending = asyncio.create_task(send_burst())
    if trial.failpoint:
        code = await runner.wait_exit(20)
        assert code is not None, f"{trial}: the failpoint was never reached"
    else:
        await asyncio.sleep(max(0.0, trial.kill_after_s - (time.monotonic() - started)))
        assert runner.running, f"{trial}: the gateway died before it was killed"
        code = runner.kill()
    assert code == -9, f"{trial}: exit status {code}, not SIGKILL\n{runner.output()[-2000:]}"
    await sending

    runner.start()
    await observer.wait_gateway_up(runner)
    required = [s.camera_id for s in IN_RANGE]
    report = await wait_settled(burst, log, fleet, required, timeout_s=30)
    runner.terminate()
    return report


async def _verify_copy(copy: Path, pubkey: Path) -> tuple[int, str]:
    try:
        return await audit_verify(copy, pubkey)
    finally:
        copy.unlink()


async def test_gateway_sigkilled_at_random_points_loses_no_activation(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    gateway_id = f"gw-chaos-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "activations.db"
    config = write_gateway_config(
        tmp_path / "gateway.yaml",
        broker=mosquitto.url,
        topics=topics,
        gateway_id=gateway_id,
        log_path=log,
    )
    runner = GatewayRunner(config, tmp_path)
    observer = Observer(mosquitto.url, topics, gateway_id)
    sender = TriggerSender(mosquitto.url, topics)
    fleet = CameraFleet([*IN_RANGE, FAR], mosquitto.url, topics)
    required = [s.camera_id for s in IN_RANGE]
    trials = plan_trials(TRIALS, SEED)
    began = time.monotonic()
    problems: list[str] = []
    try:
        async with running(observer.link, sender.link, handler=observer.on_message):
            await fleet.start()
            # `audit verify` of a copy of the log as each trial left it (stopped in order:
            # signed to the end) runs while the next trial goes on.
            verifying: asyncio.Task[tuple[int, str]] | None = None
            for trial in trials:
                report = await _run_trial(trial, runner, observer, sender, fleet, log)
                if verifying is not None:
                    assert_chain_intact(*await verifying)
                copy = snapshot(log, tmp_path / "verify.db")
                verifying = asyncio.create_task(_verify_copy(copy, public_key_of(config)))
                print(f"{trial}: {report.summary()}")
                if report.lost or report.started_late:
                    problems.append(f"{trial}: {report.lost + report.started_late}")
            assert verifying is not None
            code, verdict = await verifying
            assert_chain_intact(code, verdict)
            print(f"audit verify: exit {code}: {verdict.strip()}")
            total = account(sender.sent, log, fleet, required)
    finally:
        runner.close()
        await fleet.stop()
    elapsed = time.monotonic() - began
    print(
        f"gateway kill chaos: {len(trials)} trials in {elapsed:.1f} s, seed {SEED}: "
        f"{total.summary()}; exits {runner.exit_codes.count(-9)} x SIGKILL"
    )
    # Every trial killed its gateway (a failpoint reached, or the test's SIGKILL).
    assert runner.exit_codes.count(-9) == len(trials)
    assert total.sent == len(trials) * BURST
    assert not fleet.agents[FAR.camera_id].simulated.activations  # 2 km away: never
    assert not problems, "\n".join(problems) + "\n" + runner.output()[-4000:]
    assert len(total.lost) == 0
    assert not total.started_late
    assert total.missed_escalated == []  # every restart came well within the expiry


# --- issue 15, item 8: killed between deciding the outcome and telling dispatch ---------------
SILENT = "bwc-silent"  # in range, online by its presence, never answers: escalated `no_ack`
FAST_POLICY = {"kinds": {"weapon_draw": {"ack_deadline_ms": 100, "command_ttl_s": 3}}}


@pytest.mark.parametrize(
    "point",
    [
        # The outcome durable in the log, the outbox not yet written (on the old order,
        # the crash that left dispatch with `pending` and no escalation).
        "activation.finished=1",
        # The outcome queued in the outbox, the log not yet saying `finished`.
        "activation.queued=1",
    ],
)
async def test_a_gateway_killed_as_an_activation_finishes_still_tells_dispatch(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, point: str
) -> None:
    gateway_id = f"gw-finish-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "activations.db"
    config = write_gateway_config(
        tmp_path / "gateway.yaml",
        broker=mosquitto.url,
        topics=topics,
        gateway_id=gateway_id,
        log_path=log,
        policy=FAST_POLICY,
    )
    runner = GatewayRunner(config, tmp_path)
    observer = Observer(mosquitto.url, topics, gateway_id)
    sender = TriggerSender(mosquitto.url, topics)
    fleet = CameraFleet(IN_RANGE, mosquitto.url, topics)
    try:
        async with running(observer.link, sender.link, handler=observer.on_message):
            await fleet.start()
            lat, lon = offset(CENTER.lat, CENTER.lon, 50, 0)
            silent = CameraPresence(
                camera_id=SILENT,
                unit_id="car-7",
                role=CameraRole.BODY,
                online=True,
                recording=False,
                position=Position(lat=lat, lon=lon, fix_at_ns=time.time_ns()),
                last_seen_ns=time.time_ns(),
            )
            await sender.link.publish(topics.presence(SILENT), encode(silent), retain=True)

            runner.start(point)
            await observer.wait_gateway_up(runner)
            trigger = sender.event("finish")
            await sender.publish(trigger)
            code = await runner.wait_exit(20)
            assert code == -9, f"{point} not reached ({code}):\n{runner.output()[-3000:]}"
            receipt = observer.receipts.get(trigger.event_id)
            assert receipt is not None
            assert receipt.activation_id is not None
            aid = receipt.activation_id
            logged = [r.kind for r in read_records(log, activation_id=aid)]
            if point.startswith("activation.queued"):
                # Killed before the log said `finished`, and before the outbox was sent
                # (the forwarder had no turn): dispatch does not know how it ended.
                assert RecordKind.FINISHED not in logged
                before = observer.records.get(aid)
                assert before is None or before.state is ActivationState.PENDING
                assert not [e for e in observer.escalations if e.activation_id == aid]
            else:
                assert RecordKind.FINISHED in logged

            runner.start()
            await observer.wait_gateway_up(runner)

            def told() -> bool:
                record = observer.records.get(aid)
                heard = [e for e in observer.escalations if e.activation_id == aid]
                return (
                    record is not None
                    and record.state is not ActivationState.PENDING
                    and (bool(heard))
                )

            await wait_for(told, 20, f"dispatch told the outcome of {aid} after the restart")
            runner.terminate()
            final = observer.records[aid]
            heard = [e for e in observer.escalations if e.activation_id == aid]
            code, verdict = await audit_verify(log, public_key_of(config))
    finally:
        runner.close()
        await fleet.stop()
    print(f"{point}: dispatch got {final.state.value}, escalations {[e.camera_id for e in heard]}")
    assert final.state is ActivationState.PARTIAL
    assert next(c for c in final.cameras if c.camera_id == SILENT).status is OutcomeStatus.MISSED
    # Once (QoS 1: a copy sent just before the kill may come again, identical).
    assert {(e.camera_id, e.reason, e.audience, e.at_ns) for e in heard} == {
        (SILENT, EscalationReason.NO_ACK, "dispatch", heard[0].at_ns)
    }
    # The log holds the outcome dispatch was told, once: it was not decided a second time.
    finished = [
        FinishedEntry.model_validate_json(r.body).record
        for r in read_records(log, activation_id=aid)
        if r.kind == RecordKind.FINISHED
    ]
    assert finished == [final]
    escalated = [
        EscalatedEntry.model_validate_json(r.body).escalation
        for r in read_records(log, activation_id=aid)
        if r.kind == RecordKind.ESCALATED
    ]
    assert escalated == heard[:1]
    assert_chain_intact(code, verdict)

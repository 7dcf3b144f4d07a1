"""`audit replay`: a real gateway's log re-decided by the pure policy and range code, and
re-published under a replay prefix (never as live commands)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bridge.mqtt.client import LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.audit.replay import Replayer
from mesh.audit.replay_publish import replay_topics
from mesh.cli.app import app
from mesh.decide.policy import Policy
from mesh.journal.records import RecordKind
from mesh.journal.store import read_records
from mesh.protocol.models import ReceiptOutcome, TriggerKind
from tests.harness import event, running_mesh, wait_until

runner = CliRunner()


async def make_log(url: object, topics: Topics, path: Path) -> None:
    """Two activations and one trigger merged by the cooldown, with the default cameras:
    three within the weapon draw's 150 m (one of them 126 m out), one 2 km away."""
    async with running_mesh(url, topics, path) as mesh:  # type: ignore[arg-type]
        await mesh.activate(event(TriggerKind.WEAPON_DRAW, source_id="holster-1"))
        again = event(TriggerKind.WEAPON_DRAW, source_id="holster-1")
        await mesh.send(again)
        assert (await mesh.receipt(again)).outcome is ReceiptOutcome.SUPPRESSED
        await mesh.activate(event(TriggerKind.MANUAL, source_id="button"))


@pytest.fixture
async def gateway_log(mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path) -> Path:
    path = tmp_path / "log.db"
    await make_log(mosquitto.url, topics, path)
    return path


async def test_replay_reproduces_every_decision(gateway_log: Path) -> None:
    kinds = [r.kind for r in read_records(gateway_log)]
    assert kinds[0] == RecordKind.STARTED
    # Presence is logged when a decision reads it (or it changes): the three cameras near
    # the triggers; the one 2 km away, never read and never changed, is not in the log.
    logged = {
        r.body.split('"camera_id":"')[1].split('"')[0]
        for r in read_records(gateway_log)
        if r.kind == RecordKind.PRESENCE
    }
    assert logged == {"dash-12", "bwc-12a", "bwc-7a"}
    result = Replayer().run(read_records(gateway_log))
    assert (result.triggers, result.activations) == (3, 2)
    assert result.same, [str(d) for d in result.differences]


async def test_a_smaller_radius_shows_which_cameras_would_not_have_started(
    gateway_log: Path, tmp_path: Path
) -> None:
    smaller = Policy.model_validate({"kinds": {"weapon_draw": {"radius_m": 100}}})
    result = Replayer(smaller).run(read_records(gateway_log))
    assert not result.same
    [difference] = result.differences  # the weapon draw; the manual trigger is unchanged
    text = str(difference)
    assert "command radius_m: logged 150.0, replay 100.0" in text
    assert "camera bwc-7a: logged expected" in text
    assert "replay not expected" in text
    assert "dash-12" not in text  # still in range: no difference to report

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("kinds:\n  weapon_draw:\n    radius_m: 100\n")
    cli = await asyncio.to_thread(
        runner.invoke, app, ["audit", "replay", str(gateway_log), "--policy", str(policy_file)]
    )
    assert cli.exit_code == 1, cli.output
    assert "1 differ" in cli.output
    assert "camera bwc-7a" in cli.output
    same = await asyncio.to_thread(runner.invoke, app, ["audit", "replay", str(gateway_log)])
    assert same.exit_code == 0, same.output
    assert "every decision reproduced" in same.output


async def test_no_cooldown_turns_the_merged_trigger_into_an_activation(gateway_log: Path) -> None:
    eager = Policy.model_validate({"kinds": {"weapon_draw": {"cooldown_s": 0}}})
    result = Replayer(eager).run(read_records(gateway_log))
    outcomes = [line for d in result.differences for line in d.what if line.startswith("outcome")]
    assert len(outcomes) == 1
    assert outcomes[0].startswith("outcome: logged merged into a-")
    assert ", replay activation a-" in outcomes[0]


async def test_publish_sends_history_under_the_replay_prefix_only(
    mosquitto: MosquittoProcess, topics: Topics, gateway_log: Path
) -> None:
    seen: list[str] = []
    listener = MqttLink(
        mosquitto.url,
        LinkOptions(
            "replay-listener-" + topics.prefix.split("/")[0],
            subscriptions=(
                ("replay/#", 1),
                *((f"{topics.prefix}/{live}", 1) for live in ("cmd/#", "trigger/+", "ack/#")),
            ),
            persistent_session=False,
        ),
    )
    task = asyncio.create_task(listener.run(lambda m: seen.append(m.topic)))
    try:
        await listener.wait_up(10)
        await asyncio.sleep(0.2)  # the subscription is in place
        args = ["audit", "replay", str(gateway_log), "--publish", "--speed", "1000"]
        args += ["--prefix", "replay/", "--broker", str(mosquitto.url)]
        cli = await asyncio.to_thread(runner.invoke, app, args)
        assert cli.exit_code == 0, cli.output
        head = f"replay/{topics.prefix}/"
        await wait_until(lambda: sum(t.startswith(head + "activation/") for t in seen) >= 4)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    replayed = [t[len(head) :].split("/")[0] for t in seen if t.startswith(head)]
    assert set(replayed) == {"presence", "receipt", "activation"}
    assert replayed.count("receipt") == 3
    # Nothing reached the live prefix: no command, trigger or ack was sent (the live run's
    # own went out before the listener subscribed, and none of them is retained).
    assert [t for t in seen if t.startswith(topics.prefix)] == []


def test_the_replay_prefix_can_never_be_the_live_one() -> None:
    assert replay_topics("replay/", "mesh/v2").prefix == "replay/mesh/v2"
    with pytest.raises(ValueError, match="never re-sent live"):
        replay_topics("/", "mesh/v2")


def test_replay_of_something_that_is_not_a_log_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", "replay", str(tmp_path / "none.db")])
    assert result.exit_code == 2
    assert "no such activation log" in result.output
    (tmp_path / "p.yaml").write_text("kinds: {weapon_draw: {radius_m: -5}}\n")
    result = runner.invoke(
        app, ["audit", "replay", str(tmp_path / "none.db"), "--policy", str(tmp_path / "p.yaml")]
    )
    assert result.exit_code == 2
    assert "radius_m" in result.output


async def test_a_damaged_record_stops_replay_naming_it(gateway_log: Path) -> None:
    """Regression (fuzzing): a body its entry model refuses ended `audit replay` and
    `--publish` in a traceback; now both exit 2 naming the record."""
    import sqlite3

    conn = sqlite3.connect(gateway_log)
    conn.execute("DROP TRIGGER records_append_only_update")
    seq = conn.execute("SELECT seq FROM records WHERE kind = 'activation' LIMIT 1").fetchone()[0]
    conn.execute("UPDATE records SET body = '{\"trigger\": 5}' WHERE seq = ?", (seq,))
    conn.commit()
    conn.close()
    result = runner.invoke(app, ["audit", "replay", str(gateway_log)])
    assert result.exit_code == 2
    assert f"record {seq} (activation) cannot be read" in result.output

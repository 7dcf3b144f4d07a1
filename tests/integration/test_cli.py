"""The command line, run as a user runs it: separate processes against a real broker."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess, free_port
from bridge.topics import Topics
from mesh.protocol.models import ActivationRecord
from mesh.protocol.schema import schemas

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "mesh"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO
    )


@contextmanager
def daemon(*args: str, cwd: Path = REPO) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_demo_json_summary_is_the_last_line_and_ok(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run("demo", "--json", "--log", str(tmp_path / "demo.db"), timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True
    # The demo's log is signed, verifies against the run's key, and replays the same.
    audit = summary["audit"]
    assert (audit["verified"], audit["verdict"]) == (True, "intact")
    assert audit["checkpoints"] >= 1
    assert (audit["triggers_replayed"], audit["replay_differences"]) == (4, 0)
    kinds = [(a["kind"], a["source"]) for a in summary["activations"]]
    assert kinds == [
        ("emergency_lights", "can"),
        ("weapon_draw", "ble"),
        ("taser_arm", "ble"),
        ("manual", "manual"),
    ]
    for activation in summary["activations"]:
        assert set(activation) >= {
            "activation_id",
            "kind",
            "source",
            "targeted",
            "started",
            "missed",
            "out_of_range",
            "latency_ms",
        }
        assert set(activation["targeted"]) <= set(activation["started"])
        assert activation["missed"] == []
        assert set(activation["latency_ms"]) == {"p50", "max"}
    assert summary["duplicate_burst"]["activations"] == 1
    assert summary["duplicate_burst"]["adverts"] > 10  # the holster repeats itself
    assert summary["replay"]["rejected"] > 0
    assert summary["replay"]["activations"] == 0
    assert summary["duplicate_command"] == {
        "redelivery_acks": 0,
        "direct_resend": ["dash-12:already_recording"],
        "new_recordings": 0,
    }
    assert summary["idle_out_of_range"] == ["dash-31", "bwc-31a", "dash-40", "bwc-40a"]
    assert elapsed < 30
    # --log kept the activation log, and it exports.
    exported = run("log", "export", str(tmp_path / "demo.db"), "--format", "jsonl")
    assert exported.returncode == 0
    kinds_logged = {json.loads(line)["kind"] for line in exported.stdout.splitlines()}
    assert {"activation", "published", "ack", "finished"} <= kinds_logged


async def _retained(
    broker: MosquittoProcess, topics: Topics, *, online_gateway: str, cameras: int
) -> None:
    """Wait (on retained messages) until the gateway is online and the cameras announced."""
    online: set[str] = set()
    present: set[str] = set()

    def seen(message: Inbound) -> None:
        body = json.loads(message.payload)
        if body.get("online"):
            (online if message.topic == topics.gateway(online_gateway) else present).add(
                message.topic
            )

    link = MqttLink(
        broker.url,
        LinkOptions(
            f"tour-wait-{os.getpid()}",
            subscriptions=((topics.gateway(online_gateway), 1), (topics.all_presence(), 1)),
            persistent_session=False,
        ),
    )
    task = asyncio.create_task(link.run(seen))
    try:
        deadline = time.monotonic() + 30
        while not (online and len(present) >= cameras):
            assert time.monotonic() < deadline, f"gateway {online}, cameras {len(present)}"
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_the_readme_tour_gateway_cameras_trigger_tail(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    broker = str(mosquitto.url)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "unit: car-12\n"
        f"broker: {broker}\n"
        f"topic_prefix: {topics.prefix}\n"
        f"log: {tmp_path / 'car-12.db'}\n"
        "position: {lat: 39.952583, lon: -75.165222}\n"
    )
    common = ["--broker", broker, "--prefix", topics.prefix]
    with (
        daemon("gateway", "--config", str(config), "--log-format", "json") as gw,
        daemon(
            "cameras", "--count", "9", "--spread-m", "100", "--unit-prefix", "car", *common
        ) as fleet,
        daemon("tail", "--json", *common) as tail,
    ):
        # The fleet connects and announces itself; the gateway subscribes and says so.
        asyncio.run(_retained(mosquitto, topics, online_gateway="gw-car-12", cameras=9))
        assert gw.poll() is None
        assert fleet.poll() is None
        assert tail.poll() is None
        result = run(
            "trigger",
            "--kind",
            "manual",
            "--unit",
            "car-12",
            "--lat",
            "39.952583",
            "--lon",
            "-75.165222",
            "--json",
            *common,
            timeout=30,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        record = ActivationRecord.model_validate_json(result.stdout.strip().splitlines()[-1])
        assert record.state == "confirmed"
        assert len(record.cameras) >= 3  # manual: 100 m around the given point
        time.sleep(0.5)
    tail_lines = [json.loads(line) for line in tail.stdout.read().splitlines() if line]
    assert any(
        line["activation_id"] == record.activation_id and line["state"] == "confirmed"
        for line in tail_lines
    )
    gateway_logs = [json.loads(line) for line in gw.stderr.read().splitlines() if line]
    assert any(e.get("event") == "activation finished" for e in gateway_logs)


async def test_demo_on_a_shared_broker_leaves_nothing_retained(
    mosquitto: MosquittoProcess,
) -> None:
    result = await asyncio.to_thread(run, "demo", "--json", "--broker", str(mosquitto.url))
    assert result.returncode == 0, result.stderr[-3000:]
    retained: list[str] = []
    link = MqttLink(
        mosquitto.url,
        LinkOptions("retained-check", persistent_session=False, subscriptions=(("mesh/v2/#", 1),)),
    )
    task = asyncio.create_task(link.run(lambda m: retained.append(m.topic)))
    await link.wait_up(10)
    await asyncio.sleep(1.0)  # retained messages arrive right after subscribing
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [t for t in retained if "/demo-" in t] == []


def test_trigger_without_a_gateway_says_so(mosquitto: MosquittoProcess, topics: Topics) -> None:
    result = run(
        "trigger",
        "--kind",
        "manual",
        "--unit",
        "car-404",
        "--timeout",
        "2",
        "--broker",
        str(mosquitto.url),
        "--prefix",
        topics.prefix,
    )
    assert result.returncode == 4
    assert "no gateway for unit car-404 answered" in " ".join(result.stdout.split())


def test_trigger_sends_again_until_a_gateway_answers(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """The first copy goes out before any gateway listens (as after a broker restart, or
    before the gateway has subscribed again): it is lost; a copy sent again is answered."""
    broker = str(mosquitto.url)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"unit: car-13\nbroker: {broker}\ntopic_prefix: {topics.prefix}\n"
        f"log: {tmp_path / 'car-13.db'}\nposition: {{lat: 39.952583, lon: -75.165222}}\n"
    )
    common = ["--broker", broker, "--prefix", topics.prefix]
    copies: list[Inbound] = []

    async def watch_then_start_gateway() -> subprocess.CompletedProcess[str]:
        spy = MqttLink(
            mosquitto.url,
            LinkOptions(
                f"resend-spy-{os.getpid()}",
                subscriptions=((topics.trigger("car-13"), 1),),
                persistent_session=False,
            ),
        )
        spying = asyncio.create_task(spy.run(copies.append))
        await spy.wait_up(10)
        sender = subprocess.Popen(
            [*CLI, "trigger", "--kind", "manual", "--unit", "car-13", "--timeout", "10", *common],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        try:
            deadline = time.monotonic() + 20
            while not copies:  # the first copy is out, and no gateway heard it
                assert time.monotonic() < deadline, "the trigger was never sent"
                await asyncio.sleep(0.02)
            with daemon("gateway", "--config", str(config), "--log-format", "json") as gw:
                out, err = await asyncio.to_thread(sender.communicate, timeout=30)
                assert gw.poll() is None
            return subprocess.CompletedProcess(sender.args, sender.returncode, out, err)
        finally:
            spying.cancel()
            await asyncio.gather(spying, return_exceptions=True)

    result = asyncio.run(watch_then_start_gateway())
    # Answered (refused, merged or an outcome), not 4, "no gateway answered".
    assert result.returncode != 4, result.stdout + result.stderr
    assert len(copies) >= 2
    assert len({json.loads(c.payload)["event_id"] for c in copies}) == 1  # the same trigger


def test_schema_export_matches_the_committed_schemas(tmp_path: Path) -> None:
    result = run("schema", "--out", str(tmp_path))
    assert result.returncode == 0
    for name, schema in schemas().items():
        written = json.loads((tmp_path / f"{name}.schema.json").read_text())
        assert written == schema
        committed = REPO / "docs" / "schemas" / f"{name}.schema.json"
        assert json.loads(committed.read_text()) == schema, (
            f"{committed} is out of date: run `make schema`"
        )


def test_log_export_of_a_missing_log_exits_2(tmp_path: Path) -> None:
    result = run("log", "export", str(tmp_path / "nope.db"))
    assert result.returncode == 2
    assert "no such activation log" in result.stderr


def test_dispatch_user_then_the_console_serves_that_user(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    users = tmp_path / "users.yaml"
    env = {**os.environ, "TRIGGER_MESH_PASSWORD": "s3cret-pass"}
    made = subprocess.run(
        [*CLI, "dispatch-user", "--users", str(users), "--name", "dana", "--role", "viewer"],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
        cwd=REPO,
    )
    assert made.returncode == 0, made.stderr
    assert "dana (viewer) written to" in made.stdout
    # No password in the environment and no terminal: a clear refusal, nothing written.
    refused = subprocess.run(
        [*CLI, "dispatch-user", "--users", str(tmp_path / "other.yaml"), "--name", "x"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "TRIGGER_MESH_PASSWORD"},
        stdin=subprocess.DEVNULL,
        check=False,
        cwd=REPO,
    )
    assert refused.returncode == 2
    assert "set TRIGGER_MESH_PASSWORD" in refused.stderr
    assert not (tmp_path / "other.yaml").exists()

    port = free_port()
    with daemon(
        "dispatch",
        "--users",
        str(users),
        "--broker",
        str(mosquitto.url),
        "--port",
        str(port),
        "--prefix",
        topics.prefix,
    ):
        token = base64.b64encode(b"dana:s3cret-pass").decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/state", headers={"Authorization": f"Basic {token}"}
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    state = json.loads(response.read())
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the console did not come up"
                time.sleep(0.1)
        assert (state["user"], state["role"]) == ("dana", "viewer")


def test_dispatch_with_a_bad_users_file_exits_2(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text("users:\n  dana: {role: chief, password: x}\n")
    result = run("dispatch", "--users", str(users), "--port", "0")
    assert result.returncode == 2
    assert "users.dana.role" in result.stderr

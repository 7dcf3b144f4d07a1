"""/metrics and /health of a real gateway on a real mosquitto, scraped over HTTP after real
activations, and parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import platform
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric

from bridge.mqtt.embedded import MosquittoProcess
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh import __version__ as MESH_VERSION
from mesh.decide.policy import Policy
from mesh.gateway.build import build_gateway, config_in_code
from mesh.gateway.daemon import Gateway
from mesh.journal.store import LogError
from mesh.ops.health import Health, Status
from mesh.ops.http import ListenError
from mesh.ops.metrics import (
    ACK_LATENCY_BUCKETS_S,
    ConsoleSnapshot,
    GatewaySnapshot,
    console_families,
    gateway_families,
)
from mesh.protocol.models import ActivationState, TriggerKind
from tests.harness import CENTER, UNIT, event, ghost, running_mesh, wait_until
from tests.http_helpers import get, parse_metrics, sample, send_raw

FAST = Policy.model_validate({"defaults": {"ack_deadline_ms": 150, "max_retries": 1}})
P = "trigger_mesh_"


def observed_gateway(url: BrokerUrl, topics: Topics, log_path: Path) -> Gateway:
    return build_gateway(
        config_in_code(UNIT, log_path, topics=topics, position=CENTER, metrics_port=0),
        FAST,
        url=url,
        client_id=f"gw-{uuid.uuid4().hex[:8]}",
    )


async def scrape(gw: Gateway) -> dict[str, Metric]:
    assert gw.observer.port is not None
    answer = await get(gw.observer.port, "/metrics")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return parse_metrics(answer.body.decode())


async def test_metrics_after_real_activations_match_the_gateway_counters(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    gw = observed_gateway(mosquitto.url, topics, tmp_path / "log.db")
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db", gateway=gw) as mesh:
        confirmed = await mesh.activate(event(TriggerKind.WEAPON_DRAW, source_id="holster-1"))
        assert confirmed.state is ActivationState.CONFIRMED
        await ghost(mesh, "bwc-silent", 50, online=True, offline_s=0)
        await ghost(mesh, "bwc-gone", 60, online=False, offline_s=3600)
        partial = await mesh.activate(event(TriggerKind.TASER_ARM, source_id="taser-1"))
        assert partial.state is ActivationState.PARTIAL
        # A malformed trigger: refused with its reason, and the gateway keeps serving.
        await mesh.driver.publish(topics.trigger(UNIT), b'{"type": "trigger", "kind": 7}')
        await wait_until(lambda: any(k.startswith("rejected.trigger.") for k in gw.counters))

        m = await scrape(gw)
        assert sample(m, P + "triggers", kind="weapon_draw", source="manual") == 1
        assert sample(m, P + "triggers", kind="taser_arm", source="manual") == 1
        assert sample(m, P + "activations_started") == 2
        assert sample(m, P + "activations_finished", state="confirmed") == 1
        assert sample(m, P + "activations_finished", state="partial") == 1
        assert sample(m, P + "activations_in_progress") == 0
        assert sample(m, P + "missed_cameras", reason="no_ack") == 1
        assert sample(m, P + "missed_cameras", reason="offline") == 1
        [(code, count)] = [
            (k.split(".")[2], v) for k, v in gw.counters.items() if k.startswith("rejected.trigger")
        ]
        assert sample(m, P + "rejected_inputs", input="trigger", reason=code) == count == 1
        assert sample(m, P + "mqtt_reconnects") == 0
        assert sample(m, P + "mqtt_connected") == 1
        assert sample(m, P + "outbox_depth") == gw.outbox.depth()
        assert sample(m, P + "health_status", status="ok") == 1
        assert sample(m, P + "health_status", status="unhealthy") == 0

        # The histogram saw each camera's first answer once: 3 + 3 started, no duplicates.
        acks = sum(1 for r in (confirmed, partial) for c in r.cameras if c.latency_ms is not None)
        assert acks == 6
        hist = P + "ack_latency_seconds"
        assert m[hist].type == "histogram"
        assert sample(m, hist, name=hist + "_count") == acks
        total_s = sum(c.latency_ms or 0 for r in (confirmed, partial) for c in r.cameras) / 1000
        assert sample(m, hist, name=hist + "_sum") == pytest.approx(total_s, rel=1e-6)
        assert sample(m, hist, name=hist + "_bucket", le="+Inf") == acks
        assert [float(s.labels["le"]) for s in m[hist].samples if s.name == hist + "_bucket"][
            :-1
        ] == list(ACK_LATENCY_BUCKETS_S)

        # Read from the same counters as the gateway status: equal, never counted twice.
        merged = gw.all_counters()
        assert sample(m, P + "acks", effect="recorded") == merged["acks.recorded"]
        assert sample(m, P + "commands_published") == merged["publish.commands"]
        assert "process_resident_memory_bytes" in m
        # Every counter the running gateway keeps has its family, and it says what runs.
        assert sample(m, P + "unmapped_counters") == 0
        [build] = m[P + "build_info"].samples
        assert (build.value, build.labels["version"]) == (1, MESH_VERSION)
        assert build.labels["python"] == platform.python_version()
        # Known label values are there at 0 before their first event.
        assert sample(m, P + "missed_cameras", reason="rejected") == 0
        assert sample(m, P + "presence_events", event="evicted") == 0


async def test_reconnects_and_health_follow_the_broker(
    own_mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    gw = observed_gateway(own_mosquitto.url, topics, tmp_path / "log.db")
    task = asyncio.create_task(gw.run())
    try:
        await asyncio.wait_for(gw.ready.wait(), 15)
        assert gw.observer.port is not None
        health = await get(gw.observer.port, "/health")
        assert (health.status, health.json()["status"]) == (200, "ok")

        own_mosquitto.stop()
        await wait_until(lambda: not gw.link.is_up, 15)
        health = await get(gw.observer.port, "/health")
        # Degraded, not dead: the gateway still logs and waits for the broker.
        assert health.status == 200
        body = health.json()
        assert body["status"] == "degraded"
        assert body["reasons"] == ["broker link is down"]
        m = await scrape(gw)
        assert sample(m, P + "mqtt_connected") == 0
        assert sample(m, P + "health_status", status="degraded") == 1

        own_mosquitto.start()
        await wait_until(lambda: gw.link.is_up, 20)
        m = await scrape(gw)
        assert sample(m, P + "mqtt_reconnects") == 1
        assert sample(m, P + "mqtt_connected") == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_log_that_cannot_be_written_makes_health_503(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    gw = observed_gateway(mosquitto.url, topics, tmp_path / "log.db")
    task = asyncio.create_task(gw.run())
    try:
        await asyncio.wait_for(gw.ready.wait(), 15)
        assert gw.observer.port is not None
        # Another process holds the log's write lock past SQLite's busy wait (5 s): the
        # writer's next commit fails, and the log refuses every append from then on.
        blocker = sqlite3.connect(tmp_path / "log.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(LogError, match="database is locked"):
                await asyncio.wait_for(gw.log.flush(), 15)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        health = await get(gw.observer.port, "/health")
        assert health.status == 503
        assert health.headers["content-type"] == "application/json"
        body = health.json()
        assert body["status"] == "unhealthy"
        assert body["reasons"] == [
            f"activation log cannot be written: could not write to activation log "
            f"{tmp_path / 'log.db'}: database is locked"
        ]
        m = await scrape(gw)
        assert sample(m, P + "health_status", status="unhealthy") == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_blocked_event_loop_shows_in_health(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    gw = observed_gateway(mosquitto.url, topics, tmp_path / "log.db")
    task = asyncio.create_task(gw.run())
    try:
        await asyncio.wait_for(gw.ready.wait(), 15)
        assert gw.observer.port is not None
        assert (await get(gw.observer.port, "/health")).json()["status"] == "ok"
        time.sleep(0.8)  # a handler that blocks the loop: acks and commands wait too
        await asyncio.sleep(0.3)  # the lag monitor wakes up, late
        body = (await get(gw.observer.port, "/health")).json()
        assert body["status"] == "degraded"
        [reason] = body["reasons"]
        assert str(reason).startswith("event loop lags by")
        checks = body["checks"]
        assert isinstance(checks, dict)
        assert checks["loop_lag_s"] >= 0.5
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_bad_requests_get_4xx_and_the_server_keeps_serving(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    gw = observed_gateway(mosquitto.url, topics, tmp_path / "log.db")
    task = asyncio.create_task(gw.run())
    try:
        await asyncio.wait_for(gw.ready.wait(), 15)
        port = gw.observer.port
        assert port is not None
        assert (await get(port, "/nope")).status == 404
        assert b"/metrics" in (await get(port, "/nope")).body  # says what exists
        post = await get(port, "/metrics", method="POST")
        assert (post.status, post.headers["allow"]) == (405, "GET, HEAD")
        assert (await send_raw(port, b"\x00\xff garbage\r\n\r\n")).status == 400
        assert (await send_raw(port, b"GET /metrics\r\n\r\n")).status == 400
        huge = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n"
        assert (await send_raw(port, huge)).status == 431
        assert (await send_raw(port, b"GET /metrics HTTP/1.1\r\n")).status == 400  # cut short
        head = await get(port, "/health", method="HEAD")
        assert head.status == 200
        assert head.body == b""
        assert int(head.headers["content-length"]) > 0
        om = await get(port, "/metrics", accept="application/openmetrics-text; version=1.0.0")
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.body.endswith(b"# EOF\n")
        ok = await get(port, "/metrics?name[]=x")
        assert ok.status == 200
        assert gw.observer.endpoints is not None
        assert gw.observer.endpoints.bad_requests == 7
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_port_in_use_is_a_clear_error(topics: Topics, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}"):
            build_gateway(
                config_in_code(UNIT, tmp_path / "log.db", metrics_port=port),
                Policy(),
                url=BrokerUrl.parse("mqtt://127.0.0.1:1"),
            )
    assert not (tmp_path / "log.db").exists()  # failed before the log was opened


# --- the pure mapping from counters to families ---------------------------------------------
def families_of(snapshot: GatewaySnapshot) -> dict[str, Metric]:
    from prometheus_client import CollectorRegistry, generate_latest

    class Fixed:
        def collect(self) -> list[Metric]:
            return gateway_families(snapshot)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    return parse_metrics(generate_latest(registry).decode())


def test_counter_keys_map_to_families_and_unknown_keys_are_counted() -> None:
    m = families_of(
        GatewaySnapshot(
            counters={
                "triggers.weapon_draw.ble": 4,
                "triggers.refused.stale": 2,
                "triggers.suppressed": 3,
                "activations.started": 5,
                "activations.missed": 1,
                "activations.resumed": 1,
                "escalations.rejected": 2,
                "rejected.ack.bad_signature": 6,
                "ignored.topic": 1,
                "outbox.expired": 2,
                "outbox.sent": 9,
                "outbox.memory_fallbacks": 1,
                "outbox.reopen_failures": 4,
                "sources.can.start_failures": 3,
                "something.new": 7,
            },
            link_up=False,
            link_connects=4,
            in_progress=2,
            health=Health(Status.DEGRADED, ("broker link is down",)),
            sources={
                "ble": {
                    "rejected.replay": 11,
                    "adverts": 900,
                    "sensors_seen": 3,
                    "scanning": True,
                    "mode": "x",
                }
            },
            queue_depth=12,
            queue_durable=False,
        )
    )
    assert sample(m, P + "triggers", kind="weapon_draw", source="ble") == 4
    assert sample(m, P + "triggers_refused", reason="stale") == 2
    assert sample(m, P + "triggers_suppressed") == 3
    assert sample(m, P + "activations_finished", state="missed") == 1
    assert sample(m, P + "activations_resumed") == 1
    assert sample(m, P + "missed_cameras", reason="rejected") == 2
    assert sample(m, P + "rejected_inputs", input="ack", reason="bad_signature") == 6
    assert sample(m, P + "rejected_inputs", input="topic", reason="unknown_topic") == 1
    assert sample(m, P + "rejected_inputs", input="ble", reason="replay") == 11
    assert sample(m, P + "outbox_messages", event="expired") == 2
    # The outbox's file is not message traffic: a family of its own.
    assert sample(m, P + "outbox_file_events", event="memory_fallbacks") == 1
    assert sample(m, P + "outbox_file_events", event="reopen_failures") == 4
    assert not [s for s in m[P + "outbox_messages"].samples if "memory" in str(s.labels)]
    assert sample(m, P + "source_start_failures", source="can") == 3
    # Counts and levels apart: a count is a counter, a level (or a flag) a gauge.
    assert sample(m, P + "source_events", source="ble", event="adverts") == 900
    assert sample(m, P + "source_level", source="ble", key="scanning") == 1
    assert sample(m, P + "source_level", source="ble", key="sensors_seen") == 3
    assert m[P + "source_events"].type == "counter"
    assert m[P + "source_level"].type == "gauge"
    # A key no family knows is not exported under a label; it is counted.
    assert sample(m, P + "unmapped_counters") == 1
    assert "something" not in str([s.labels for f in m.values() for s in f.samples])
    assert sample(m, P + "mqtt_reconnects") == 3
    assert sample(m, P + "outbox_depth") == 12
    assert sample(m, P + "outbox_durable") == 0
    assert sample(m, P + "activations_in_progress") == 2
    assert sample(m, P + "health_status", status="degraded") == 1
    # Families with no events yet are there, at 0 for each known label value (an
    # increase() needs the series before its first event).
    assert {s.labels["effect"] for s in m[P + "acks"].samples} >= {"recorded", "late"}
    assert {s.value for s in m[P + "acks"].samples} == {0}
    assert sample(m, P + "missed_cameras", reason="offline") == 0


def test_console_families() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    snapshot = ConsoleSnapshot(
        counters={"rejected.activation.invalid": 2, "pages.resynced": 1},
        link_up=True,
        link_connects=1,
        pages=3,
        health=Health(Status.OK),
        activations_by_state={"confirmed": 4, "pending": 1},
        gateways_online=2,
        gateways_known=3,
        escalations_shown=5,
    )

    class Fixed:
        def collect(self) -> list[Metric]:
            return console_families(snapshot)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    m = parse_metrics(generate_latest(registry).decode())
    assert sample(m, P + "rejected_inputs", input="activation", reason="invalid") == 2
    assert sample(m, P + "console_pages_resynced") == 1
    assert sample(m, P + "console_logins_refused", reason="busy") == 0
    assert sample(m, P + "console_activations", state="confirmed") == 4
    assert sample(m, P + "console_activations", state="missed") == 0
    assert sample(m, P + "console_gateways_online") == 2
    assert sample(m, P + "mqtt_reconnects") == 0


async def test_the_dispatch_console_serves_metrics_and_health_without_login(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    from mesh.dispatch.console.auth import Role, Users, add_user
    from mesh.dispatch.console.server import ConsoleServer

    users = tmp_path / "users.yaml"
    add_user(users, "ana", Role.DISPATCHER, "a long enough password")
    server = ConsoleServer(mosquitto.url, topics, Users.load(users), port=0)
    console = asyncio.create_task(server.run())
    try:
        await wait_until(lambda: server.started and server.hub.link.is_up, 15)
        async with running_mesh(mosquitto.url, topics, tmp_path / "log.db") as mesh:
            record = await mesh.activate(event(TriggerKind.WEAPON_DRAW))
            await wait_until(lambda: record.activation_id in server.hub.state.activations)
            await wait_until(lambda: any(g.online for g in server.hub.state.gateways.values()))
            assert (await get(server.port, "/api/state")).status == 401  # the rest needs login
            health = await get(server.port, "/health")
            assert (health.status, health.json()["status"]) == (200, "ok")
            answer = await get(server.port, "/metrics")
            assert answer.status == 200
            m = parse_metrics(answer.body.decode())
            assert sample(m, P + "console_activations", state="confirmed") == 1
            assert sample(m, P + "console_gateways_online") == 1
            assert sample(m, P + "mqtt_connected") == 1
            assert sample(m, P + "health_status", status="ok") == 1
            assert sample(m, P + "unmapped_counters") == 0
            assert m[P + "build_info"].samples[0].labels["version"] == MESH_VERSION
            # Nothing in it names a person, a place or an activation.
            assert record.activation_id not in answer.body.decode()
    finally:
        console.cancel()
        await asyncio.gather(console, return_exceptions=True)


def test_the_metrics_section_of_the_gateway_config(tmp_path: Path) -> None:
    from mesh.config import load_gateway_config
    from mesh.documents import ConfigError

    good = tmp_path / "good.yaml"
    good.write_text("unit: car-12\nmetrics: {port: 9820, host: '::1'}\n")
    cfg, _ = load_gateway_config(good)
    assert (cfg.metrics.port, cfg.metrics.host) == (9820, "::1")
    plain = tmp_path / "plain.yaml"
    plain.write_text("unit: car-12\n")
    assert load_gateway_config(plain)[0].metrics.port is None  # off by default
    for body, key in [
        ("metrics: {port: 70000}", "metrics.port"),
        ("metrics: {host: car.local}", "metrics.host"),
        ("metrics: {prot: 1}", "metrics.prot"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(f"unit: car-12\n{body}\n")
        with pytest.raises(ConfigError) as caught:
            load_gateway_config(bad)
        assert caught.value.key == key

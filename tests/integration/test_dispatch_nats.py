"""Dispatch on the NATS central tier (issue 20, item 3), through the nodes' MQTT listeners
with a dispatch credential: ``trigger-mesh tail`` (the real CLI, a process) on one node
sees an activation a car publishes through its mosquitto, bridged to another node; the
dispatch console's hub on one node sees it too, and its remote activation reaches the car's
gateway and comes back accepted."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from bridge.broker.nats import mqtt_subjects
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.protocol.codec import encode
from mesh.protocol.models import ActivationState
from tests.harness import wait_until
from tests.integration.test_archive import activation
from tests.integration.test_nats_cluster import _bridge_on, car_broker, publisher
from tests.nats_tools import DISPATCH, GW, UNIT, RunningCluster, connz

pytest.importorskip("nats")


def _url_text(url: BrokerUrl) -> str:
    return f"mqtts://{url.username}:{url.password}@localhost:{url.port}?ca={url.ca_file}"


def _tail_on(cluster: RunningCluster, node: int) -> bool:
    """Whether tail is connected to ``node`` and subscribed there to the activations and
    the receipts (it subscribes in that order)."""
    topics = Topics(cluster.layout.car.spec.prefix)
    wanted = {mqtt_subjects(topics.all_activations())[0], mqtt_subjects(topics.all_receipts())[0]}
    conns = connz(cluster.procs[node].node).get("connections") or []
    assert isinstance(conns, list)
    return any(
        str(c.get("mqtt_client", "")).startswith("tm-tail-")
        and wanted <= set(c.get("subscriptions_list") or [])
        for c in conns
    )


async def bridged_node(cluster: RunningCluster) -> int:
    """The node the car's bridge is connected and subscribed to (the first of its
    addresses, or under load another: it moves on when a CONNACK is late)."""
    await wait_until(lambda: any(_bridge_on(cluster, i) for i in range(3)), 90)
    return next(i for i in range(3) if _bridge_on(cluster, i))


async def test_tail_on_one_node_sees_a_car_bridged_to_another(
    nats_cluster: RunningCluster,
) -> None:
    layout = nats_cluster.layout
    central, car = layout.central, layout.car
    topics = Topics(car.spec.prefix)
    async with car_broker(nats_cluster), publisher(car.url_for(GW)) as gateway:
        other = (await bridged_node(nats_cluster) + 1) % 3
        # The password travels in the environment's broker URL, not on the command line.
        url = _url_text(central.mqtt_url(DISPATCH, node=other))
        tail = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mesh",
            "tail",
            "--json",
            "--prefix",
            topics.prefix,
            env={**os.environ, "TRIGGER_MESH_BROKER": url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await wait_until(lambda: _tail_on(nats_cluster, other), 30)
            assert not _bridge_on(nats_cluster, other)
            record = activation("a-00000000000000aa", ActivationState.CONFIRMED, 3)
            await gateway.publish(topics.activation(UNIT, record.activation_id), encode(record))
            assert tail.stdout is not None
            line = await asyncio.wait_for(tail.stdout.readline(), 30)
        finally:
            if tail.returncode is None:
                tail.terminate()
            await tail.wait()
    seen = json.loads(line)
    assert seen["activation_id"] == record.activation_id
    assert seen["state"] == "confirmed"
    assert seen["unit_id"] == UNIT


async def test_the_console_on_one_node_sees_and_commands_a_car_bridged_to_another(
    nats_cluster: RunningCluster, tmp_path: Path
) -> None:
    from mesh.dispatch.console.hub import ConsoleHub
    from mesh.protocol.models import ReceiptOutcome
    from tests.harness import make_gateway

    layout = nats_cluster.layout
    central, car = layout.central, layout.car
    topics = Topics(car.spec.prefix)
    gateway = make_gateway(car.url_for(GW), topics, tmp_path / "log.db")
    async with car_broker(nats_cluster), publisher(car.url_for(GW)) as recorder:
        other = (await bridged_node(nats_cluster) + 2) % 3
        hub = ConsoleHub(central.mqtt_url(DISPATCH, node=other), topics)
        tasks = [asyncio.create_task(hub.run()), asyncio.create_task(gateway.run())]
        try:
            await hub.link.wait_up(30)
            assert not _bridge_on(nats_cluster, other)
            record = activation("a-00000000000000bb", ActivationState.CONFIRMED, 3)
            await recorder.publish(topics.activation(UNIT, record.activation_id), encode(record))
            await wait_until(lambda: record.activation_id in hub.state.activations, 30)
            receipt = await hub.activate("alice", UNIT, timeout_s=30)
            assert receipt is not None
            assert receipt.outcome is ReceiptOutcome.ACCEPTED
            assert receipt.unit_id == UNIT
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

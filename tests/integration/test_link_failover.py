"""A link whose URL names several nodes (``mqtt://a:1,b:2``) moves to the next node when
its own is lost or cannot be reached (bridge/mqtt/client.py), on real mosquittos: the
console, ``tail``, the archivers' watermarks and the cell relay at a clustered central."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path

import pytest

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess, free_port
from mesh.cli.errors import BrokerUnreachable
from mesh.cli.reach import require_broker
from tests.conftest import require_mosquitto
from tests.harness import wait_until
from tests.integration.test_edge_central import publisher


def _listening_nowhere() -> tuple[str, int]:
    return ("127.0.0.1", free_port())


async def test_a_link_moves_to_the_next_node_when_its_node_dies(
    own_mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    second = MosquittoProcess(require_mosquitto(), free_port(), tmp_path / "second")
    second.start()
    try:
        url = dataclasses.replace(own_mosquitto.url, failover=(("127.0.0.1", second.url.port),))
        topic = f"t-{uuid.uuid4().hex[:8]}/feed"
        got: list[Inbound] = []
        link = MqttLink(
            url,
            LinkOptions(
                f"t-fo-{uuid.uuid4().hex[:8]}",
                subscriptions=((topic, 1),),
                persistent_session=False,
            ),
        )
        task = asyncio.create_task(link.run(got.append))
        try:
            await link.wait_up(10)
            assert link.node == f"127.0.0.1:{own_mosquitto.url.port}"
            own_mosquitto.kill()  # stays down
            # The link's subscription is on the second node now: what is published there
            # reaches it (on the first node's URL alone, it would retry the dead node).
            async with publisher(second.url) as pub:
                await wait_until(lambda: link.is_up and link.node.endswith(f":{second.url.port}"))
                await pub.publish(topic, b"after", qos=1)
                await wait_until(lambda: any(m.payload == b"after" for m in got))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        second.stop()


async def test_a_link_skips_a_node_that_is_down_at_its_start(
    own_mosquitto: MosquittoProcess,
) -> None:
    url = dataclasses.replace(
        own_mosquitto.url,
        host="127.0.0.1",
        port=_listening_nowhere()[1],
        failover=(("127.0.0.1", own_mosquitto.url.port),),
    )
    link = MqttLink(url, LinkOptions(f"t-fo-{uuid.uuid4().hex[:8]}", persistent_session=False))
    task = asyncio.create_task(link.run(lambda _m: None))
    try:
        await link.wait_up(10)
        assert link.node == f"127.0.0.1:{own_mosquitto.url.port}"
        assert link.connects == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_command_s_broker_check_needs_one_node_that_answers(
    own_mosquitto: MosquittoProcess,
) -> None:
    dead = _listening_nowhere()
    url = dataclasses.replace(own_mosquitto.url, host=dead[0], port=dead[1])
    live = dataclasses.replace(url, failover=(("127.0.0.1", own_mosquitto.url.port),))
    assert require_broker(live, timeout_s=5) is live
    other = _listening_nowhere()
    all_dead = dataclasses.replace(url, failover=(other,))
    with pytest.raises(BrokerUnreachable) as refused:
        require_broker(all_dead, timeout_s=5)
    # Each node is named with its own reason.
    assert f"{dead[0]}:{dead[1]}: connection refused" in str(refused.value)
    assert f"{other[0]}:{other[1]}: connection refused" in str(refused.value)

"""The cluster's consumer limit, on a real cluster: nats-server makes a JetStream consumer
for every QoS 1 filter of an MQTT session (9 for a car's bridge), so the node configs set
the account's limit (``max_consumers``; nats-server 2.15's own default holds each stream
to 1,000, about 111 cars). Past the limit a SUBACK refuses the filters, and our links say
so (``MqttLink.refused_subscriptions``, a warning) instead of waiting for messages that
never come, and ask for them again on the same connection until they are granted."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from bridge.broker.bridge import bridge_topics
from bridge.broker.nats import ADMIN_USER, NatsCluster, mqtt_subjects
from bridge.broker.nats_run import loopback_nodes, write_loopback
from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from mesh.archive.jetstream import cluster_login, connect
from tests.conftest import require_nats_server
from tests.harness import wait_until
from tests.nats_tools import RunningCluster, car_fleet

LIMIT = 12  # room for one car's bridge (9) and nats-server's own, not for a second


async def operator_publishes(central: NatsCluster, topic: str, payload: bytes) -> None:
    """``payload`` on ``topic``, sent natively by the operator (no MQTT user may publish on
    every car's in-topics)."""
    admin = await connect(cluster_login(central, ADMIN_USER))
    try:
        await admin.publish(mqtt_subjects(topic)[0], payload)
        await admin.flush()
    finally:
        await admin.close()


async def test_past_the_account_s_consumer_limit_subscriptions_are_refused_visibly(
    tmp_path: Path,
) -> None:
    require_nats_server()
    nodes, (car_port,) = loopback_nodes(3, extra=1)
    layout = write_loopback(
        tmp_path,
        car_fleet(f"t-{uuid.uuid4().hex[:8]}/mesh/v2"),
        nodes,
        car_port,
        run_as="root",
        max_consumers=LIMIT,
    )
    cluster = RunningCluster(layout)
    cluster.start()
    links: list[MqttLink] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        # As the car's mosquitto bridge subscribes: a persistent session, QoS 1.
        filters = tuple(
            (t.pattern, 1) for t in bridge_topics(layout.car.spec) if t.direction != "out"
        )
        assert len(filters) == 9
        url = layout.central.mqtt_url(layout.bridge.url.username or "", node=0)
        got: list[list[Inbound]] = [[], []]
        for i in range(2):
            link = MqttLink(
                url,
                LinkOptions(f"t-car-{i}", subscriptions=filters, protocol="3.1.1", timeout_s=30),
            )
            links.append(link)
            tasks.append(asyncio.create_task(link.run(got[i].append)))
            await link.wait_up(60)
        first, second = links
        assert first.refused_subscriptions == 0
        # The second car's session does not fit: part of its filters refused, and counted.
        assert 0 < second.refused_subscriptions < len(filters) + 1
        assert set(second.last_refused) <= {topic for topic, _ in filters}
        # A filter refused to the second is still served to the first.
        topic = second.last_refused[-1].replace("+", "x")
        await operator_publishes(layout.central, topic, b"for the car")
        await wait_until(lambda: any(m.topic == topic for m in got[0]), 30)
        assert not any(m.topic == topic for m in got[1])
        # Room is made (the first car's session ends: a clean connect with its id drops
        # it and its consumers): the second link asks again for what was refused, on the
        # same connection, and gets it.
        tasks[0].cancel()
        await asyncio.gather(tasks[0], return_exceptions=True)
        ender = MqttLink(url, LinkOptions("t-car-0", persistent_session=False, protocol="3.1.1"))
        ending = asyncio.create_task(ender.run(lambda _m: None))
        await ender.wait_up(30)
        ending.cancel()
        await asyncio.gather(ending, return_exceptions=True)
        connects = second.connects
        await wait_until(lambda: not second.refused, 60)
        assert second.connects == connects
        await operator_publishes(layout.central, topic, b"for the second car")
        await wait_until(lambda: any(m.topic == topic for m in got[1]), 30)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        cluster.stop()

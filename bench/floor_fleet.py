"""The floor's fleet: N bare MQTT clients that answer a command with an ack, nothing else.

Same client code as the cameras (MqttLink: TCP_NODELAY, MQTT 5, persistent session) so
that the only difference from the mesh is what the mesh does on top.
"""

from __future__ import annotations

import argparse
import asyncio

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.urls import BrokerUrl
from mesh.ops import logs
from mesh.ops.runtime import settle_heap, tune_gc


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    logs.configure("console", "warning")
    url = BrokerUrl.parse(args.broker)
    links = []
    for i in range(args.count):
        ack_topic = f"{args.prefix}/floor/ack/{i}"
        link = MqttLink(
            url,
            LinkOptions(
                f"{args.prefix}-floor-{i}",
                session_expiry_s=600,
                subscriptions=((f"{args.prefix}/floor/cmd", 1),),
            ),
        )

        def answer(_message: Inbound, link: MqttLink = link, topic: str = ack_topic) -> None:
            link.publish_soon(topic, b"ack", qos=1)

        links.append((link, answer))
    tune_gc()  # the same collector settings as `trigger-mesh cameras`, for a fair floor
    tasks = [asyncio.create_task(link.run(handler)) for link, handler in links]
    await asyncio.gather(*(link.wait_up(60) for link, _ in links))
    settle_heap()
    print("ready", flush=True)
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main())

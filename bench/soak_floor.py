"""The soak's floor fleet: groups of bare MQTT clients that echo each command as an ack.

Group g's clients subscribe to ``{prefix}/floor/cmd/{g}`` and answer every message with
its payload, QoS 1, on ``{prefix}/floor/ack/{g}/{i}``: the echo lets the publisher tell
overlapping rounds apart at 50 rounds/s. Same client code as the cameras (MqttLink:
TCP_NODELAY, MQTT 5, persistent session) and the same collector settings, so the floor is
what the mesh costs without the mesh.

    python bench/soak_floor.py --broker URL --prefix P --groups G --size K
"""

from __future__ import annotations

import argparse
import asyncio
from contextlib import suppress

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.urls import BrokerUrl
from mesh.ops import logs
from mesh.ops.runtime import settle_heap, tune_gc


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--groups", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    args = parser.parse_args()
    logs.configure("console", "warning")
    url = BrokerUrl.parse(args.broker)
    links = []
    for g in range(args.groups):
        for i in range(args.size):
            link = MqttLink(
                url,
                LinkOptions(
                    f"{args.prefix}-floor-{g}-{i}",
                    session_expiry_s=600,
                    subscriptions=((f"{args.prefix}/floor/cmd/{g}", 1),),
                ),
            )
            ack_topic = f"{args.prefix}/floor/ack/{g}/{i}"

            def echo(message: Inbound, link: MqttLink = link, topic: str = ack_topic) -> None:
                link.publish_soon(topic, message.payload, qos=1)

            links.append((link, echo))
    tune_gc()
    tasks = [asyncio.create_task(link.run(handler)) for link, handler in links]
    await asyncio.gather(*(link.wait_up(60) for link, _ in links))
    settle_heap()
    print("ready", flush=True)
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):  # SIGINT is how the soak stops us
        asyncio.run(main())

"""MqttLink.set_subscriptions while the link is connecting (the cell relay moves its cells at
central as its car moves, a camera its cell): a change made while the connect's SUBSCRIBE
is under way reaches the broker on that connection, not only after a reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess, free_port
from bridge.mqtt.urls import BrokerUrl
from tests.harness import wait_until
from tests.integration.test_edge_central import publisher

SUBSCRIBE = 0x82


class HoldingProxy:
    """A TCP relay to the broker that passes the client's bytes at once and the broker's
    CONNACK, then holds the broker's bytes (the SUBACK) until ``release()``."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.saw_subscribe = asyncio.Event()
        self._release = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    def release(self) -> None:
        self._release.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        for coro in (self._up(reader, up_writer), self._down(up_reader, writer)):
            task = asyncio.create_task(coro)
            self._tasks.add(task)

    async def _up(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                # The client sends SUBSCRIBE after the CONNACK: a write of its own.
                if data[0] == SUBSCRIBE:
                    self.saw_subscribe.set()
                writer.write(data)
                await writer.drain()

    async def _down(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            connack = await reader.readexactly(4)
            writer.write(connack)
            await writer.drain()
            await self._release.wait()
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


async def test_a_change_during_the_connects_subscribe_is_applied(
    own_mosquitto: MosquittoProcess,
) -> None:
    direct = BrokerUrl(scheme="mqtt", host="127.0.0.1", port=own_mosquitto.port)
    proxy = HoldingProxy(own_mosquitto.port)
    await proxy.start()
    tag = uuid.uuid4().hex[:8]
    first, second = f"t-{tag}/a", f"t-{tag}/b"
    got: list[Inbound] = []
    link = MqttLink(
        BrokerUrl(scheme="mqtt", host="127.0.0.1", port=proxy.port),
        LinkOptions(
            f"t-{tag}", subscriptions=((first, 1),), persistent_session=False, protocol="3.1.1"
        ),
    )
    task = asyncio.create_task(link.run(got.append))
    try:
        await asyncio.wait_for(proxy.saw_subscribe.wait(), 10)
        assert not link.is_up
        # The connect's SUBSCRIBE is at the broker, its SUBACK held: the link is not up.
        await link.set_subscriptions(((first, 1), (second, 1)))
        proxy.release()
        await link.wait_up(10)
        async with publisher(direct) as sender:
            await sender.publish(second, b"on the new filter")
            await sender.publish(first, b"marker")
        await wait_until(lambda: any(m.payload == b"marker" for m in got), 10)
        assert [m.payload for m in got] == [b"on the new filter", b"marker"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await proxy.close()

"""Virtual radios on bumble: controllers joined by a LocalLink carry real LE advertising
PDUs between devices, with no hardware.

- ``VirtualRadio``: in one process (tests, the demo, the benchmark) — make devices on it.
- ``serve_radio``: for several processes (``trigger-mesh ble-radio``) — each virtual
  controller is reachable as an HCI transport, e.g. ``tcp-server:127.0.0.1:7400``, so a
  gateway and a sensor simulator in other processes attach with ``tcp-client:…`` exactly
  as they would attach to a USB dongle with ``usb:0``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from bumble.controller import Controller
from bumble.device import Device
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink, Transport

from triggers.ble.bumble_backend import random_static_address


class VirtualRadio:
    def __init__(self) -> None:
        self.link = LocalLink()  # type: ignore[no-untyped-call]
        self._count = 0

    async def device(self, name: str = "") -> Device:
        """A powered-on device with its own virtual controller on this radio."""
        self._count += 1
        address = random_static_address()
        controller = Controller(name or f"C{self._count}", link=self.link, public_address=address)
        device = Device(address=address, host=Host(controller, AsyncPipeSink(controller)))
        await device.power_on()
        return device


async def serve_radio(transports: Sequence[str]) -> None:
    """Run one virtual controller per HCI transport spec on a shared link, until cancelled."""
    link = LocalLink()  # type: ignore[no-untyped-call]
    opened: list[Transport] = []
    try:
        for index, spec in enumerate(transports):
            transport = await open_transport(spec)
            opened.append(transport)
            Controller(
                f"radio-{index}", host_source=transport.source, host_sink=transport.sink, link=link
            )
        await asyncio.get_running_loop().create_future()
    finally:
        for transport in opened:
            with contextlib.suppress(Exception):
                await transport.close()

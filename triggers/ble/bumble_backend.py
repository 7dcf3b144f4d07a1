"""A bleak scanner backend on Google's bumble Bluetooth stack.

``BleakScanner(backend=BumbleScanner, bumble={...})`` scans through bumble instead of the
operating system, so one scanner runs on:
- any HCI controller bumble can open: ``{"transport": "usb:0"}``, ``"serial:/dev/ttyACM0"``,
  ``"hci-socket:0"``, ``"tcp-client:127.0.0.1:7400"`` (a `trigger-mesh ble-radio`) …;
- or an in-process bumble Device, typically on a virtual radio: ``{"device": device}``.
Adverts arrive as real LE advertising reports and are handed to bleak's detection
callbacks as AdvertisementData, exactly as the BlueZ backend would.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any, Literal, TypedDict

from bleak.backends.scanner import AdvertisementDataCallback, BaseBleakScanner
from bumble.device import Advertisement, Device
from bumble.hci import Address
from bumble.transport import open_transport
from bumble.transport.common import Transport

from triggers.ble.adparse import to_advertisement_data


class BumbleArgs(TypedDict, total=False):
    transport: str  # an HCI transport spec bumble understands
    device: Device  # or a device the caller owns (powered on)


def random_static_address() -> Address:
    """A random static address (the two top bits set, as the Core spec requires)."""
    raw = bytearray(secrets.token_bytes(6))
    raw[5] |= 0xC0
    return Address(bytes(raw), Address.RANDOM_DEVICE_ADDRESS)


class BumbleScanner(BaseBleakScanner):
    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        *,
        bumble: BumbleArgs | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        args = bumble or {}
        self._given_device = args.get("device")
        self._transport_spec = args.get("transport")
        if self._given_device is None and self._transport_spec is None:
            raise ValueError("BumbleScanner needs bumble={'transport': ...} or {'device': ...}")
        self._active = scanning_mode == "active"
        self._device: Device | None = None
        self._transport: Transport | None = None

    async def start(self) -> None:
        self.seen_devices = {}
        if self._given_device is not None:
            self._device = self._given_device
        else:
            assert self._transport_spec is not None
            self._transport = await open_transport(self._transport_spec)
            self._device = Device.with_hci(
                "trigger-mesh",
                random_static_address(),
                self._transport.source,
                self._transport.sink,
            )
            await self._device.power_on()
        self._device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        await self._device.start_scanning(active=self._active, filter_duplicates=False)

    async def stop(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            device.remove_listener(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
            with contextlib.suppress(Exception):
                await device.stop_scanning()
        transport, self._transport = self._transport, None
        if transport is not None:
            with contextlib.suppress(Exception):
                await transport.close()

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        adv = to_advertisement_data(advertisement.data_bytes, advertisement.rssi, (advertisement,))
        if not self.is_allowed_uuid(adv.service_uuids):
            return
        address = advertisement.address.to_string(False)
        device = self.create_or_update_device(address, address, adv.local_name, advertisement, adv)
        self.call_detection_callbacks(device, adv)

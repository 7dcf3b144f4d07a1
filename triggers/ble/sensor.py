"""A simulated sensor: advertises format-v1 adverts the way a holster or TASER would."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bumble.device import AdvertisingType, Device
from bumble.hci import OwnAddressType

from triggers.ble.format import SensorAdvert, SensorEvent, encode_advertising_data
from triggers.ble.keystore import SensorKeyFile

# Sensors repeat an advert 20-50 times a second; 20 ms is the shortest interval BLE allows.
DEFAULT_INTERVAL_MS = 20


class SimulatedSensor:
    def __init__(
        self,
        device: Device,
        key_file: SensorKeyFile,
        *,
        key_path: Path | None = None,
        battery_pct: int | None = 90,
    ) -> None:
        self.device = device
        self.key_file = key_file
        self.key_path = key_path
        self.battery_pct = battery_pct
        self.last_data: bytes = b""

    async def emit(
        self,
        event: SensorEvent,
        *,
        duration_s: float = 1.0,
        interval_ms: int = DEFAULT_INTERVAL_MS,
    ) -> SensorAdvert:
        """A new event: counter + 1 (saved before anything is sent), then the same advert
        repeated every ``interval_ms`` for ``duration_s``."""
        self.key_file.counter += 1
        if self.key_path is not None:
            self.key_file.save(self.key_path)
        advert = SensorAdvert(
            sensor_id=self.key_file.sensor_id,
            kind=self.key_file.kind,
            event=event,
            counter=self.key_file.counter,
            battery_pct=self.battery_pct,
            low_battery=self.battery_pct is not None and self.battery_pct < 15,
        )
        data = encode_advertising_data(advert, self.key_file.key, self.key_file.company_id)
        await self.broadcast(data, duration_s=duration_s, interval_ms=interval_ms)
        return advert

    async def broadcast(
        self, data: bytes, *, duration_s: float, interval_ms: int = DEFAULT_INTERVAL_MS
    ) -> None:
        """Advertise these exact bytes (also what an attacker replaying a capture does)."""
        self.last_data = data
        await self.device.start_advertising(
            advertising_type=AdvertisingType.UNDIRECTED,
            advertising_data=data,
            own_address_type=OwnAddressType.RANDOM,
            advertising_interval_min=interval_ms,
            advertising_interval_max=interval_ms,
        )
        try:
            await asyncio.sleep(duration_s)
        finally:
            await self.device.stop_advertising()

"""The ``ble:`` section of a gateway config (a light module: no Bluetooth stack imported)."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mesh.protocol.models import Ident, TriggerKind
from triggers.ble.decoders import LegacyDevice
from triggers.ble.format import DEV_COMPANY_ID, SensorKind
from triggers.ble.source import BleSourceSettings

RSSI_KEYS = {"default", "axon_signal"} | {k.name.lower() for k in SensorKind}


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LegacyDeviceConfig(_Strict):
    kind: TriggerKind
    unit: Ident
    officer: str = ""


class BleConfig(_Strict):
    enabled: bool = True
    # bumble: an HCI controller bumble opens itself (USB dongle, UART, TCP to a virtual
    # radio); the [bumble] extra. bluez: the operating system's stack, through bleak's
    # default backend; the [ble] extra (bleak only). The default stays bumble: with it, a
    # config that names a transport and no backend keeps meaning that transport.
    backend: Literal["bumble", "bluez"] = "bumble"
    transport: str | None = None  # bumble HCI transport, e.g. usb:0 or tcp-client:host:port
    adapter: str | None = None  # bluez adapter, e.g. hci0
    keystore: str  # relative to the gateway config file
    counters: str = "ble-counters.db"  # relative to the working directory (data)
    company_id: Annotated[int, Field(ge=0, le=0xFFFF)] = DEV_COMPANY_ID
    burst_window_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    min_rssi_dbm: dict[str, Annotated[int, Field(ge=-127, le=20)]] = Field(
        default_factory=lambda: {"default": -90}
    )
    silence_restart_s: Annotated[float, Field(gt=0)] = 60.0
    low_battery_pct: Annotated[int, Field(ge=0, le=100)] = 20
    # Serial → what it means, for agencies that must accept unauthenticated legacy
    # broadcasts (Axon Signal); empty: the legacy decoder is off. The policy must also
    # allow unauthenticated BLE (allow_unauthenticated.ble) for them to trigger.
    legacy_axon_signal: dict[str, LegacyDeviceConfig] = Field(default_factory=dict)
    # A camera whose advertised address (in its presence) is heard at least this strongly,
    # at most this long ago, is taken to be at the car when a trigger is resolved.
    proximity_min_rssi_dbm: Annotated[int, Field(ge=-127, le=20)] = -80
    proximity_max_age_s: Annotated[float, Field(gt=0, le=300)] = 10.0

    @property
    def extra(self) -> str:
        """The package extra this backend needs (docs/install.md)."""
        return "bumble" if self.backend == "bumble" else "ble"

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.backend == "bumble" and not self.transport:
            raise ValueError(
                "backend bumble (the default) needs a transport (usb:0, serial:…, "
                "tcp-client:…); the operating system's Bluetooth is backend: bluez"
            )
        unknown = set(self.min_rssi_dbm) - RSSI_KEYS
        if unknown:
            raise ValueError(
                f"min_rssi_dbm: unknown sensor kind(s) {sorted(unknown)}; use {sorted(RSSI_KEYS)}"
            )
        return self

    def settings(self) -> BleSourceSettings:
        return BleSourceSettings(
            company_id=self.company_id,
            burst_window_s=self.burst_window_s,
            min_rssi=dict(self.min_rssi_dbm),
            silence_restart_s=self.silence_restart_s,
            low_battery_pct=self.low_battery_pct,
            proximity_min_rssi_dbm=self.proximity_min_rssi_dbm,
            proximity_max_age_s=self.proximity_max_age_s,
            legacy_axon_signal={
                serial: LegacyDevice(d.kind, d.unit, d.officer)
                for serial, d in self.legacy_axon_signal.items()
            },
        )

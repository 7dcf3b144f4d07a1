"""Turn a gateway's ``ble:`` config into a running source. The bumble stack (~16 MB) is
imported only when a gateway actually scans through it."""

from __future__ import annotations

from pathlib import Path

from bleak import BleakScanner
from bleak.backends.scanner import AdvertisementDataCallback

from triggers.ble.freshness import CounterStore
from triggers.ble.keystore import Keystore
from triggers.ble.settings import BleConfig
from triggers.ble.source import BleTriggerSource, Scanner, ScannerFactory


def scanner_factory(config: BleConfig) -> ScannerFactory:
    def make(callback: AdvertisementDataCallback) -> Scanner:
        if config.backend == "bumble":
            from triggers.ble.bumble_backend import BumbleScanner

            assert config.transport is not None
            return BleakScanner(
                callback, backend=BumbleScanner, bumble={"transport": config.transport}
            )
        bluez = {"adapter": config.adapter} if config.adapter else {}
        return BleakScanner(callback, bluez=bluez)  # type: ignore[arg-type]

    return make


def build_source(config: BleConfig, config_path: Path) -> BleTriggerSource:
    """The source a gateway config describes (keystore path relative to the config file)."""
    keystore_path = Path(config.keystore)
    if not keystore_path.is_absolute():
        keystore_path = config_path.parent / keystore_path
    return BleTriggerSource(
        keystore=Keystore.load(keystore_path),
        scanner_factory=scanner_factory(config),
        settings=config.settings(),
        counters=CounterStore(config.counters),
    )

"""The BLE trigger source: a bleak scanner, the decoder registry, bursts and replays, health.

Every advert the scanner reports goes through, in order:
1. the decoders (not ours → ignored; malformed, unknown sensor, bad MAC → rejected with a
   counted, logged reason);
2. sensor health (last seen, RSSI, battery; a low battery is reported once);
3. the minimum RSSI for the sensor's kind (too far → dropped, counted);
4. freshness (repeat of the same event → dropped; replay → rejected);
5. the counter is persisted, then the event is emitted as a TriggerEvent (or, for
   information-only events such as "holstered", only counted).
A scanner that has heard nothing for ``silence_restart_s`` is restarted (counted). No
advert can raise out of this pipeline: the daemon never dies on radio input.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeAlias

import structlog

from mesh.clock import NS, SYSTEM_CLOCK, Clock
from mesh.decide.proximity import RadioProximity
from mesh.protocol.models import SourceRef, SourceType, TriggerEvent
from triggers.ble.decoders import (
    AdvertRejection,
    DecoderRegistry,
    LegacyDevice,
    Observation,
    axon_signal_decoder,
    sensor_decoder,
)
from triggers.ble.format import DEV_COMPANY_ID
from triggers.ble.freshness import CounterGate, CounterStore, QuietGate, Verdict
from triggers.ble.keystore import Keystore
from triggers.source import until_closed

if TYPE_CHECKING:  # bleak is the [ble] extra: a gateway config loads without it
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback

DEFAULT_MIN_RSSI = -90


class Scanner(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ScannerFactory: TypeAlias = "Callable[[AdvertisementDataCallback], Scanner]"


@dataclass
class SensorHealth:
    sensor_id: str
    unit_id: str
    kind: str
    last_seen_ns: int = 0
    rssi: int = 0
    battery_pct: int | None = None
    low_battery: bool = False
    adverts: int = 0


@dataclass(frozen=True)
class BleSourceSettings:
    company_id: int = DEV_COMPANY_ID
    # How long a sensor repeats one advert, at most: repeats inside it are one event.
    burst_window_s: float = 10.0
    min_rssi: Mapping[str, int] = field(default_factory=dict)  # sensor kind → dBm
    silence_restart_s: float = 60.0
    low_battery_pct: int = 20
    legacy_axon_signal: Mapping[str, LegacyDevice] = field(default_factory=dict)
    # Cameras heard this strongly, this recently, are at the car (mesh.decide.proximity).
    proximity_min_rssi_dbm: int = -80
    proximity_max_age_s: float = 10.0

    def min_rssi_for(self, kind: str) -> int:
        return self.min_rssi.get(kind, self.min_rssi.get("default", DEFAULT_MIN_RSSI))


class _ThrottledLog:
    """At most one line per reason code per second; the lines skipped are counted in."""

    def __init__(self, log: structlog.typing.FilteringBoundLogger, clock: Clock) -> None:
        self._log, self._clock = log, clock
        self._last: dict[str, int] = {}
        self._skipped: Counter[str] = Counter()

    def warning(self, code: str, message: str, **fields: object) -> None:
        now = self._clock.mono_ns()
        last = self._last.get(code)
        if last is not None and now - last < NS:
            self._skipped[code] += 1
            return
        self._last[code] = now
        skipped = self._skipped.pop(code, 0)
        self._log.warning(message, code=code, similar_since_last=skipped, **fields)


class BleTriggerSource:
    name = "ble"

    def __init__(
        self,
        *,
        keystore: Keystore,
        scanner_factory: ScannerFactory,
        settings: BleSourceSettings | None = None,
        counters: CounterStore | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings or BleSourceSettings()
        self.keystore = keystore
        self.clock = clock
        self.counter_store = counters
        decoders = [("tm-v1", sensor_decoder(keystore, self.settings.company_id))]
        if self.settings.legacy_axon_signal:
            decoders.append(("axon-signal", axon_signal_decoder(self.settings.legacy_axon_signal)))
        self.registry = DecoderRegistry(decoders)
        self.gate = CounterGate(
            self.settings.burst_window_s, counters.load() if counters is not None else None
        )
        self.quiet_gate = QuietGate(self.settings.burst_window_s)
        self.counters: Counter[str] = Counter()
        self.proximity = RadioProximity(
            min_rssi_dbm=self.settings.proximity_min_rssi_dbm,
            max_age_s=self.settings.proximity_max_age_s,
        )
        self.sensors: dict[str, SensorHealth] = {}
        self._scanner_factory = scanner_factory
        self._scanner: Scanner | None = None
        self._queue: asyncio.Queue[TriggerEvent | None] = asyncio.Queue()
        self._last_advert_mono = self.clock.mono_ns()
        self._watchdog: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("triggers.ble")
        self._throttled = _ThrottledLog(self._log, clock)

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._scanner = self._scanner_factory(self.on_advert)
        await self._scanner.start()
        self._last_advert_mono = self.clock.mono_ns()
        self._watchdog = asyncio.create_task(self._watch())
        self._log.info("ble scanner started", sensors=len(self.keystore))

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._scanner is not None:
            with contextlib.suppress(Exception):
                await self._scanner.stop()
        if self.counter_store is not None:
            self.counter_store.close()
        self._queue.put_nowait(None)

    def events(self) -> AsyncIterator[TriggerEvent]:
        return until_closed(self._queue)

    def health(self) -> dict[str, int | float | str | bool]:
        out: dict[str, int | float | str | bool] = dict(self.counters)
        out["sensors_seen"] = len(self.sensors)
        out["sensors_low_battery"] = sum(1 for s in self.sensors.values() if s.low_battery)
        return out

    async def _watch(self) -> None:
        """Restart a scanner that has gone quiet (a wedged controller or D-Bus session)."""
        limit = self.settings.silence_restart_s
        while True:
            await asyncio.sleep(max(0.05, limit / 4))
            if self.clock.mono_ns() - self._last_advert_mono < limit * NS or self._scanner is None:
                continue
            self.counters["scanner_restarts"] += 1
            self._log.warning("ble scanner silent, restarting", silent_s=limit)
            try:
                await self._scanner.stop()
                self._scanner = self._scanner_factory(self.on_advert)
                await self._scanner.start()
            except Exception as exc:
                self._log.error("ble scanner restart failed", error=str(exc))
            self._last_advert_mono = self.clock.mono_ns()

    # --- the pipeline ------------------------------------------------------------------
    def on_advert(self, device: BLEDevice, adv: AdvertisementData) -> None:
        """Bleak's detection callback. Never raises: an advert is untrusted input."""
        self._last_advert_mono = self.clock.mono_ns()
        self.counters["adverts"] += 1
        try:
            # Every advert, ours or not: a camera's says where it is (near the car).
            self.proximity.heard(device.address, adv.rssi, self.clock.mono_ns())
            self._process(device.address, adv)
        except Exception:
            self.counters["rejected.internal_error"] += 1
            self._log.exception("advert processing failed", address=device.address)

    def _process(self, address: str, adv: AdvertisementData) -> None:
        result = self.registry.decode(address, adv.rssi, adv)
        if result is None:
            self.counters["ignored"] += 1
            return
        if isinstance(result, AdvertRejection):
            self.counters[f"rejected.{result.code}"] += 1
            self._throttled.warning(
                result.code,
                "advert rejected",
                reason=result.reason,
                decoder=result.decoder,
                address=result.address,
                sensor=result.sensor_id,
            )
            return
        now = self.clock.wall_ns()
        self._note_health(result, now)
        if result.rssi < self.settings.min_rssi_for(result.sensor_kind):
            self.counters["weak_rssi"] += 1
            return
        if result.counter is None:
            verdict = self.quiet_gate.check(result.sensor_id, now)
        else:
            verdict = self.gate.check(result.sensor_id, result.counter, now)
        if verdict is Verdict.REPEAT:
            self.counters["repeats"] += 1
            return
        if verdict is Verdict.REPLAY:
            self.counters["rejected.replay"] += 1
            self._throttled.warning(
                "replay",
                "advert rejected",
                reason=(
                    f"counter {result.counter} of sensor {result.sensor_id} was already used "
                    f"(last accepted {self.gate.states[result.sensor_id].counter})"
                ),
                decoder=result.decoder,
                address=address,
                sensor=result.sensor_id,
            )
            return
        if result.counter is not None and self.counter_store is not None:
            state = self.gate.states[result.sensor_id]
            self.counter_store.save(result.sensor_id, result.counter, state.first_seen_ns)
        if result.trigger_kind is None:
            self.counters["info_only"] += 1
            self._log.info("sensor event", sensor=result.sensor_id, sensor_event=result.event)
            return
        self.counters["events"] += 1
        self._queue.put_nowait(self._event(result, now))

    def _note_health(self, obs: Observation, now: int) -> None:
        health = self.sensors.get(obs.sensor_id)
        if health is None:
            health = SensorHealth(obs.sensor_id, obs.unit_id, obs.sensor_kind)
            self.sensors[obs.sensor_id] = health
        health.last_seen_ns, health.rssi = now, obs.rssi
        health.adverts += 1
        if obs.battery_pct is not None:
            health.battery_pct = obs.battery_pct
        low = obs.low_battery or (
            obs.battery_pct is not None and obs.battery_pct < self.settings.low_battery_pct
        )
        if low and not health.low_battery:
            self.counters["low_battery"] += 1
            self._log.warning(
                "sensor battery low",
                sensor=obs.sensor_id,
                unit=obs.unit_id,
                battery_pct=obs.battery_pct,
                officer=obs.officer,
            )
        health.low_battery = low

    def _event(self, obs: Observation, now: int) -> TriggerEvent:
        assert obs.trigger_kind is not None
        detail: dict[str, str | int | float | bool] = {
            "decoder": obs.decoder,
            "sensor_id": obs.sensor_id,
            "sensor_kind": obs.sensor_kind,
            "event": obs.event,
            "rssi": obs.rssi,
            "address": obs.address,
        }
        if obs.counter is not None:
            detail["counter"] = obs.counter
        if obs.battery_pct is not None:
            detail["battery_pct"] = obs.battery_pct
        if obs.officer:
            detail["officer"] = obs.officer
        # Derived from the advert, so every gateway that hears it makes the same event id,
        # hence the same activation id: cameras treat the second command as a duplicate.
        suffix = str(obs.counter) if obs.counter is not None else str(now)
        return TriggerEvent(
            event_id=f"ble-{obs.sensor_id}-{suffix}".replace(":", "-"),
            kind=obs.trigger_kind,
            source=SourceRef(
                type=SourceType.BLE, id=f"ble:{obs.sensor_id}", authenticated=obs.authenticated
            ),
            unit_id=obs.unit_id,
            observed_at_ns=now,
            detail=detail,
        )

"""BLE sources: decoder throughput, and advert-on-air → record-start published latency.

1. decode_per_s: the format-v1 decoder, MAC check included, on bleak AdvertisementData
   (what a scanner backend hands it) of 31-byte adverts from 1,000 provisioned sensors,
   one core. Also from raw advertising bytes (the AD-structure parser included), and raw
   adverts that are not ours (the common case in a busy street).
2. air_to_publish: a simulated sensor starts advertising a new event on bumble's virtual
   radio → the gateway's bleak scanner (bumble backend) → decoders, burst and replay gate,
   persisted counter → coordinator: policy, plan, durable activation log → record-start
   published on mosquitto and received by a subscriber where a camera in the car hears it
   (its unit's and its cell's command topics). Timed from the advertising start to the
   subscriber's first receipt (one process, one clock).

    python bench/ble.py [--json] [--rounds 200] [--smoke]

With --json the last line is {"bench": "ble", "decode_per_s": …,
"air_to_publish_p50_ms": …, "air_to_publish_p99_ms": …} (and the radio floor,
air_to_scanner_*: advert start → the scanner's detection callback, same radio).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bleak import BleakScanner
from bleak.backends.scanner import AdvertisementData

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.embedded import EmbeddedBroker
from bridge.topics import Topics
from mesh.decide.cells import cell_of
from mesh.decide.policy import Policy
from mesh.decide.stats import percentile
from mesh.gateway.build import build_gateway, config_in_code
from mesh.ops import logs
from mesh.protocol.codec import decode
from mesh.protocol.models import GeoPoint, RecordStart
from triggers.ble.adparse import to_advertisement_data
from triggers.ble.bumble_backend import BumbleScanner
from triggers.ble.decoders import Observation, sensor_decoder
from triggers.ble.format import (
    DEV_COMPANY_ID,
    SensorAdvert,
    SensorEvent,
    SensorKind,
    encode_advertising_data,
)
from triggers.ble.freshness import CounterStore
from triggers.ble.keystore import Keystore, SensorKeyFile
from triggers.ble.sensor import SimulatedSensor
from triggers.ble.source import BleSourceSettings, BleTriggerSource
from triggers.ble.virtual import VirtualRadio

SMOKE_HELP = "tiny sizes: proves the script runs (make bench-smoke), not its figures"
UNIT = "car-12"
CAR = GeoPoint(lat=39.95, lon=-75.16)  # the gateway's position: the activation's origin


def decode_throughput(count: int = 200_000) -> dict[str, float]:
    keystore = Keystore()
    sensors = [keystore.provision(SensorKind.HOLSTER, "car-12") for _ in range(1000)]
    raws = [
        encode_advertising_data(
            SensorAdvert(s.sensor_id, s.kind, SensorEvent.DRAW, i + 1, 80), s.key, DEV_COMPANY_ID
        )
        for i, s in enumerate(sensors)
    ]
    foreign = [bytes([0x02, 0x01, 0x06, 0x0B, 0xFF, 0x4C, 0x00]) + bytes(8) for _ in raws]
    decode = sensor_decoder(keystore, DEV_COMPANY_ID)

    def rate(work: list[bytes], *, parsed: bool) -> float:
        items = [to_advertisement_data(r, -60) for r in work] if parsed else work
        n = len(items)
        start = time.perf_counter()
        for i in range(count):
            item = items[i % n]
            adv = item if parsed else to_advertisement_data(item, -60)  # type: ignore[arg-type]
            decode("AA:BB:CC:DD:EE:FF", -60, adv)  # type: ignore[arg-type]
        return count / (time.perf_counter() - start)

    accepted = decode("AA:BB:CC:DD:EE:FF", -60, to_advertisement_data(raws[0], -60))
    if not isinstance(accepted, Observation):  # the benchmark must time the accepting path
        raise RuntimeError(f"a valid advert was not accepted: {accepted}")
    return {
        # A decoder's input is bleak's AdvertisementData (the scanner backend builds it).
        "decode_per_s": round(rate(raws, parsed=True)),
        "from_raw_per_s": round(rate(raws, parsed=False)),
        "foreign_from_raw_per_s": round(rate(foreign, parsed=False)),
    }


async def air_to_scanner(rounds: int) -> list[float]:
    """The radio's own share: advertising start → the scanner's first detection callback
    for the new advert (no decoding, no gateway). Includes the sensor's HCI set-up on its
    virtual controller, as air_to_publish does."""
    radio = VirtualRadio()
    keystore = Keystore()
    key = keystore.provision(SensorKind.HOLSTER, "car-12", sensor_id=1001)
    scanner_device = await radio.device("scanner")
    heard: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    def on_advert(_device: object, adv: AdvertisementData) -> None:
        payload = adv.manufacturer_data.get(DEV_COMPANY_ID)
        if payload is not None:
            heard.put_nowait((time.perf_counter(), payload[8:12]))  # the counter bytes

    scanner = BleakScanner(on_advert, backend=BumbleScanner, bumble={"device": scanner_device})
    await scanner.start()
    sensor = SimulatedSensor(await radio.device("holster"), SensorKeyFile.of(key))
    samples = []
    try:
        for index in range(rounds + 3):
            want = sensor.key_file.counter + 1
            start = time.perf_counter()
            emitting = asyncio.create_task(sensor.emit(SensorEvent.DRAW, duration_s=0.1))
            while True:
                at, counter = await asyncio.wait_for(heard.get(), 10)
                if int.from_bytes(counter, "big") == want:
                    break
            await emitting
            while not heard.empty():
                heard.get_nowait()
            if index >= 3:
                samples.append((at - start) * 1000)
    finally:
        await scanner.stop()
    return samples


async def air_to_publish(rounds: int) -> list[float]:
    async with EmbeddedBroker() as broker:
        with tempfile.TemporaryDirectory() as tmp:
            radio = VirtualRadio()
            keystore = Keystore()
            key = keystore.provision(SensorKind.HOLSTER, UNIT, sensor_id=1001)
            scanner_device = await radio.device("gateway")
            source = BleTriggerSource(
                keystore=keystore,
                scanner_factory=lambda cb: BleakScanner(
                    cb, backend=BumbleScanner, bumble={"device": scanner_device}
                ),
                settings=BleSourceSettings(burst_window_s=0.5),
                counters=CounterStore(Path(tmp) / "counters.db"),
            )
            topics = Topics("bench-ble/mesh/v2")
            # Every draw is a new activation: no cooldown between rounds.
            policy = Policy.model_validate({"kinds": {"weapon_draw": {"cooldown_s": 0}}})
            gateway = build_gateway(
                config_in_code(UNIT, Path(tmp) / "log.db", topics=topics, position=CAR),
                policy,
                url=broker.url,
                sources=[source],
            )
            received: asyncio.Queue[float] = asyncio.Queue()
            # Where a camera in the car hears a command (mesh/decide/fanout.py): its unit's topic
            # and its cell's; cmd/all carries only circles too big for cells. The gateway
            # publishes to both, so only the first arrival of each activation counts.
            listener = MqttLink(
                broker.url,
                LinkOptions(
                    "bench-ble-listener",
                    persistent_session=False,
                    subscriptions=(
                        (topics.command_unit(UNIT), 1),
                        (topics.command_cell(cell_of(CAR.lat, CAR.lon)), 1),
                    ),
                ),
            )
            heard: set[str] = set()

            def on_command(message: Inbound) -> None:
                at = time.perf_counter()
                activation = decode(RecordStart, message.payload).activation_id
                if activation not in heard:
                    heard.add(activation)
                    received.put_nowait(at)

            tasks = [
                asyncio.create_task(gateway.run()),
                asyncio.create_task(listener.run(on_command)),
            ]
            sensor = SimulatedSensor(await radio.device("holster"), SensorKeyFile.of(key))
            samples = []
            try:
                await gateway.ready.wait()
                await listener.wait_up(10)
                for index in range(rounds + 3):
                    start = time.perf_counter()
                    emitting = asyncio.create_task(sensor.emit(SensorEvent.DRAW, duration_s=0.1))
                    arrived = await asyncio.wait_for(received.get(), 10)
                    await emitting
                    if index >= 3:
                        samples.append((arrived - start) * 1000)
                    await asyncio.sleep(0.6)  # past the burst window; the next is fresh
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    decodes = 200_000
    if args.smoke:
        args.rounds, decodes = 3, 2_000
    logs.configure("console", "warning")
    report: dict[str, Any] = {"bench": "ble", **decode_throughput(decodes)}
    radio = asyncio.run(air_to_scanner(args.rounds))
    report["air_to_scanner_p50_ms"] = round(percentile(radio, 50), 3)
    report["air_to_scanner_p99_ms"] = round(percentile(radio, 99), 3)
    samples = asyncio.run(air_to_publish(args.rounds))
    report["air_to_publish_p50_ms"] = round(percentile(samples, 50), 3)
    report["air_to_publish_p99_ms"] = round(percentile(samples, 99), 3)
    report["rounds"] = len(samples)
    print(f"decoder + MAC:                    {report['decode_per_s']:>9,} adverts/s, one core")
    print(f"from raw bytes (AD parse + above): {report['from_raw_per_s']:>8,} adverts/s")
    print(f"foreign raw adverts (not ours):   {report['foreign_from_raw_per_s']:>9,} adverts/s")
    print(
        f"advert on air → scanner callback (radio floor): p50 {report['air_to_scanner_p50_ms']} "
        f"ms, p99 {report['air_to_scanner_p99_ms']} ms"
    )
    print(
        f"advert on air → record-start published: p50 {report['air_to_publish_p50_ms']} ms, "
        f"p99 {report['air_to_publish_p99_ms']} ms ({len(samples)} rounds)"
    )
    if args.json:
        print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()

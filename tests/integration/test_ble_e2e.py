"""BLE end to end: real advertising PDUs through bumble's virtual radio → the gateway's
bleak scanner (bumble backend) → activation → mosquitto → camera acks. No scanner is
mocked; the radio is virtual, the stack and the PDUs are real."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bleak import BleakScanner
from bumble.device import AdvertisingType, Device
from bumble.hci import OwnAddressType
from structlog.testing import capture_logs

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.camera.agent import CameraAgent, CameraIdentity
from mesh.camera.recorder import SimulatedRecorder
from mesh.decide.policy import Policy
from mesh.journal.records import ActivationEntry, RecordKind
from mesh.journal.store import read_records
from mesh.protocol.models import (
    ActivationState,
    CameraRole,
    OutcomeStatus,
    ReceiptOutcome,
    TriggerKind,
)
from tests.ble_helpers import axon_like
from tests.harness import UNIT, Mesh, event, make_gateway, running_mesh, wait_until
from triggers.ble.bumble_backend import BumbleScanner
from triggers.ble.decoders import LegacyDevice
from triggers.ble.format import SensorEvent, SensorKind
from triggers.ble.freshness import CounterStore
from triggers.ble.keystore import Keystore, SensorKey, SensorKeyFile
from triggers.ble.sensor import SimulatedSensor
from triggers.ble.source import BleSourceSettings, BleTriggerSource
from triggers.ble.virtual import VirtualRadio


@dataclass
class Ble:
    radio: VirtualRadio
    source: BleTriggerSource
    holster_key: SensorKey

    async def sensor(self, key: SensorKey | None = None, **kw: object) -> SimulatedSensor:
        device = await self.radio.device()
        return SimulatedSensor(device, SensorKeyFile.of(key or self.holster_key), **kw)  # type: ignore[arg-type]

    def activations(self, mesh: Mesh) -> int:
        return mesh.gateway.coordinator.counters["activations.started"]


async def new_source(
    radio: VirtualRadio, keystore: Keystore, counters: Path, settings: BleSourceSettings
) -> BleTriggerSource:
    scanner = await radio.device("gateway")
    return BleTriggerSource(
        keystore=keystore,
        scanner_factory=lambda cb: BleakScanner(
            cb, backend=BumbleScanner, bumble={"device": scanner}
        ),
        settings=settings,
        counters=CounterStore(counters),
    )


@asynccontextmanager
async def ble_mesh(
    broker: MosquittoProcess,
    topics: Topics,
    tmp: Path,
    *,
    settings: BleSourceSettings | None = None,
    policy: Policy | None = None,
) -> AsyncIterator[tuple[Mesh, Ble]]:
    radio = VirtualRadio()
    keystore = Keystore()
    holster = keystore.provision(SensorKind.HOLSTER, UNIT, officer="Ofc. Rivera", sensor_id=1001)
    source = await new_source(
        radio, keystore, tmp / "counters.db", settings or BleSourceSettings(burst_window_s=3.0)
    )
    gateway = make_gateway(
        broker.url,
        topics,
        tmp / "log.db",
        policy=policy,
        sources=[source],
        client_id=f"ble-{topics.prefix}",
    )
    async with running_mesh(broker.url, topics, tmp / "log.db", gateway=gateway) as mesh:
        yield mesh, Ble(radio, source, holster)


async def test_a_draw_burst_of_many_adverts_is_one_authenticated_activation(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with ble_mesh(mosquitto, topics, tmp_path) as (mesh, ble):
        holster = await ble.sensor()
        advert = await holster.emit(SensorEvent.DRAW, duration_s=1.0)
        record = await mesh.watcher.final_record(
            (await mesh.watcher.receipt(f"ble-1001-{advert.counter}", 10)).activation_id or "",
            10,  # type: ignore[union-attr]
        )
        assert record is not None
        assert ble.source.sensors["1001"].adverts >= 50  # the burst really was a burst
        assert ble.source.counters["events"] == 1
        assert ble.activations(mesh) == 1
        assert record.state is ActivationState.CONFIRMED
        assert record.trigger.kind is TriggerKind.WEAPON_DRAW
        assert (record.trigger.source.type, record.trigger.source.authenticated) == ("ble", True)
        assert {c.camera_id for c in record.cameras} == {"dash-12", "bwc-12a", "bwc-7a"}
        assert mesh.gateway.all_counters()["ble.repeats"] >= 49


async def test_a_captured_advert_replayed_after_the_counter_moved_on_is_rejected(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    with capture_logs() as logged:
        async with ble_mesh(mosquitto, topics, tmp_path) as (mesh, ble):
            holster = await ble.sensor()
            await holster.emit(SensorEvent.DRAW, duration_s=0.3)
            captured = holster.last_data
            await holster.emit(SensorEvent.HOLSTERED, duration_s=0.3)  # counter moves on
            attacker = await ble.sensor()
            await attacker.broadcast(captured, duration_s=0.4)
            await wait_until(lambda: ble.source.counters["rejected.replay"] > 0)
            await asyncio.sleep(0.3)
            assert ble.activations(mesh) == 1  # the draw only
            assert ble.source.counters["info_only"] == 1  # holstered starts nothing
    replays = [e for e in logged if e.get("code") == "replay"]
    assert replays
    assert "counter 1 of sensor 1001 was already used (last accepted 2)" in replays[0]["reason"]


async def test_forged_and_unknown_sensors_are_rejected_and_start_nothing(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with ble_mesh(mosquitto, topics, tmp_path) as (mesh, ble):
        forged_key = SensorKey(1001, SensorKind.HOLSTER, UNIT, "", secrets.token_bytes(32))
        unknown_key = SensorKey(4242, SensorKind.HOLSTER, UNIT, "", secrets.token_bytes(32))
        await (await ble.sensor(forged_key)).emit(SensorEvent.DRAW, duration_s=0.3)
        await (await ble.sensor(unknown_key)).emit(SensorEvent.DRAW, duration_s=0.3)
        counters = mesh.gateway.all_counters()
        assert counters["ble.rejected.bad_mac"] > 0
        assert counters["ble.rejected.unknown_sensor"] > 0
        assert ble.source.counters["events"] == 0
        assert ble.activations(mesh) == 0


async def test_a_sensor_too_far_away_starts_nothing(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    # The virtual radio reports -50 dBm for every advert; ask for better than that.
    settings = BleSourceSettings(burst_window_s=3, min_rssi={"holster": -40})
    async with ble_mesh(mosquitto, topics, tmp_path, settings=settings) as (mesh, ble):
        await (await ble.sensor()).emit(SensorEvent.DRAW, duration_s=0.3)
        assert ble.source.counters["weak_rssi"] > 0
        assert ble.activations(mesh) == 0


async def test_low_battery_is_reported_once(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with ble_mesh(mosquitto, topics, tmp_path) as (_mesh, ble):
        sensor = await ble.sensor(battery_pct=9)
        await sensor.emit(SensorEvent.DRAW, duration_s=0.3)
        assert ble.source.sensors["1001"].battery_pct == 9
        assert ble.source.counters["low_battery"] == 1
        assert ble.source.health()["sensors_low_battery"] == 1


async def test_an_allow_listed_legacy_device_makes_an_unauthenticated_trigger(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    settings = BleSourceSettings(
        burst_window_s=3,
        legacy_axon_signal={"TESTSER01": LegacyDevice(TriggerKind.WEAPON_DRAW, UNIT, "Ofc. Kim")},
    )
    # An agency that accepts legacy devices must also let policy take unauthenticated BLE.
    policy = Policy.model_validate({"allow_unauthenticated": {"ble": True}})
    async with ble_mesh(mosquitto, topics, tmp_path, settings=settings, policy=policy) as (
        mesh,
        ble,
    ):
        await (await ble.sensor()).broadcast(axon_like(), duration_s=0.4)
        await wait_until(lambda: ble.activations(mesh) == 1)
        await mesh.gateway.coordinator.tasks.wait(10)
        rows = [r for r in mesh.watcher.records.values()]
        assert len(rows) == 1
        assert rows[0].trigger.source.authenticated is False
        assert rows[0].trigger.source.id == "ble:axon:TESTSER01"
        assert rows[0].state is ActivationState.CONFIRMED
        # A serial not on the allow-list is refused at the radio.
        await (await ble.sensor()).broadcast(axon_like(b"NOTLISTED"), duration_s=0.3)
        assert ble.source.counters["rejected.not_allowed"] > 0


async def test_legacy_devices_are_refused_by_the_default_policy(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    settings = BleSourceSettings(
        burst_window_s=3, legacy_axon_signal={"TESTSER01": LegacyDevice(TriggerKind.MANUAL, UNIT)}
    )
    async with ble_mesh(mosquitto, topics, tmp_path, settings=settings) as (mesh, ble):
        await (await ble.sensor()).broadcast(axon_like(), duration_s=0.3)
        await wait_until(
            lambda: mesh.gateway.coordinator.counters["triggers.refused.unauthenticated"] == 1
        )
        assert ble.activations(mesh) == 0
        # Regression: logging the refusal once raised (a clash with structlog's `event`
        # argument) and took the source's drain task down with it; the next genuine
        # trigger from the same radio must still activate.
        advert = await (await ble.sensor()).emit(SensorEvent.DRAW, duration_s=0.3)
        receipt = await mesh.watcher.receipt(f"ble-1001-{advert.counter}", 10)
        assert receipt is not None
        assert receipt.outcome is ReceiptOutcome.ACCEPTED


async def test_replay_protection_survives_a_gateway_restart(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    settings = BleSourceSettings(burst_window_s=0.5)
    async with ble_mesh(mosquitto, topics, tmp_path, settings=settings) as (mesh, ble):
        holster = await ble.sensor()
        await holster.emit(SensorEvent.DRAW, duration_s=0.2)
        captured = holster.last_data
        await wait_until(lambda: ble.activations(mesh) == 1)
        keystore = ble.source.keystore
        # The gateway process stops (its source closes the counter store) …
        gateway_task = mesh.tasks[len(mesh.agents)]
        gateway_task.cancel()
        await asyncio.gather(gateway_task, return_exceptions=True)
        await asyncio.sleep(0.6)  # past the burst window
        # … and a new one starts on the same files, with a new scanner on the radio.
        source = await new_source(ble.radio, keystore, tmp_path / "counters.db", settings)
        second = make_gateway(
            mosquitto.url,
            topics,
            tmp_path / "log.db",
            sources=[source],
            client_id=mesh.gateway.link.options.client_id,
        )
        mesh.tasks.append(asyncio.create_task(second.run()))
        await asyncio.wait_for(second.ready.wait(), 10)
        await (await ble.sensor()).broadcast(captured, duration_s=0.3)
        await wait_until(lambda: source.counters["rejected.replay"] > 0)
        assert second.coordinator.counters["activations.started"] == 0


async def test_a_silent_scanner_is_restarted_and_works_again(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    settings = BleSourceSettings(burst_window_s=3, silence_restart_s=0.3)
    async with ble_mesh(mosquitto, topics, tmp_path, settings=settings) as (mesh, ble):
        await wait_until(lambda: ble.source.counters["scanner_restarts"] >= 1, timeout_s=5)
        await (await ble.sensor()).emit(SensorEvent.DRAW, duration_s=0.3)
        await wait_until(lambda: ble.activations(mesh) == 1)
        assert mesh.gateway.all_counters()["ble.scanner_restarts"] >= 1


async def test_outcome_statuses_are_real(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """The far camera of the default layout stays out of a BLE activation, too."""
    async with ble_mesh(mosquitto, topics, tmp_path) as (mesh, ble):
        advert = await (await ble.sensor()).emit(SensorEvent.DRAW, duration_s=0.2)
        receipt = await mesh.watcher.receipt(f"ble-1001-{advert.counter}", 10)
        assert receipt is not None
        record = await mesh.watcher.final_record(receipt.activation_id or "", 10)
        assert record is not None
        assert all(c.status is OutcomeStatus.STARTED for c in record.cameras)
        assert mesh.agents["bwc-far"].simulated.recordings == 0


async def advertising_camera(mesh: Mesh, ble: Ble, camera_id: str) -> tuple[CameraAgent, Device]:
    """A body camera with no GPS fix (indoors), of another unit, advertising on the radio
    from the address its presence names."""
    device = await ble.radio.device(camera_id)
    address = device.random_address.to_string(False)
    agent = CameraAgent(
        CameraIdentity(
            camera_id, "car-55", CameraRole.BODY, officer="Ofc. Diaz", ble_address=address
        ),
        url=mesh.url,
        topics=mesh.topics,
        position=None,
        recorder=SimulatedRecorder(powered_on_ns=time.time_ns() - 600 * 10**9),
        client_id=f"t-{camera_id}-{secrets.token_hex(3)}",
    )
    await mesh.start_camera(agent)
    name = camera_id.encode()
    await device.start_advertising(
        advertising_type=AdvertisingType.UNDIRECTED,
        advertising_data=bytes([0x02, 0x01, 0x06, len(name) + 1, 0x09]) + name,
        own_address_type=OwnAddressType.RANDOM,
        advertising_interval_min=50,
        advertising_interval_max=50,
    )
    return agent, device


async def test_a_camera_the_cars_radio_hears_starts_without_a_fix(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with ble_mesh(mosquitto, topics, tmp_path) as (mesh, ble):
        agent, device = await advertising_camera(mesh, ble, "bwc-indoors")
        try:
            await wait_until(lambda: "bwc-indoors" in mesh.gateway.heard_cameras())
            record = await mesh.activate(event(TriggerKind.WEAPON_DRAW))
        finally:
            await device.stop_advertising()
        outcome = next(c for c in record.cameras if c.camera_id == "bwc-indoors")
        assert outcome.expected
        assert outcome.status is OutcomeStatus.STARTED
        # The virtual controller reports -50 dBm for every advert.
        assert outcome.targeting.startswith("heard by the car's radio at -50 dBm")
        assert "(no position fix)" in outcome.targeting
        assert agent.recorder.is_recording(time.time_ns())
    # The reason is in the log with the decision.
    entry = next(
        ActivationEntry.model_validate_json(r.body)
        for r in read_records(tmp_path / "log.db", kinds=(RecordKind.ACTIVATION.value,))
    )
    assert "bwc-indoors" in entry.command.targets.cameras
    assert any(t.camera_id == "bwc-indoors" and "-50 dBm" in t.reason for t in entry.targets)


async def test_a_camera_heard_too_weakly_is_not_placed_at_the_car(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    settings = BleSourceSettings(burst_window_s=3, proximity_min_rssi_dbm=-40)
    async with ble_mesh(mosquitto, topics, tmp_path, settings=settings) as (mesh, ble):
        agent, device = await advertising_camera(mesh, ble, "bwc-indoors")
        try:
            await wait_until(lambda: ble.source.counters["adverts"] > 5)
            assert mesh.gateway.heard_cameras() == {}
            record = await mesh.activate(event(TriggerKind.WEAPON_DRAW))
        finally:
            await device.stop_advertising()
        assert "bwc-indoors" not in {c.camera_id for c in record.cameras}
        assert not agent.recorder.is_recording(time.time_ns())

"""Simulated camera fleets: where the cameras are, and running many agents at once."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bridge.mqtt.client import ProtocolChoice
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.camera.agent import CameraAgent, CameraIdentity
from mesh.camera.recorder import SimulatedRecorder
from mesh.camera.recording.base import Recorder
from mesh.decide.geo import offset
from mesh.protocol.models import CameraRole, GeoPoint
from mesh.security.checks import Security


@dataclass(frozen=True)
class CameraSpec:
    camera_id: str
    unit_id: str
    role: CameraRole
    position: GeoPoint


def scatter(
    count: int,
    center: GeoPoint,
    *,
    radius_m: float,
    cameras_per_unit: int = 3,
    unit_prefix: str = "unit",
    seed: int = 1,
) -> list[CameraSpec]:
    """``count`` cameras in units (one dash camera plus body cameras within ~30 m of the
    car), the cars spread uniformly over a disc of ``radius_m``. Deterministic per seed."""
    rng = random.Random(seed)
    specs: list[CameraSpec] = []
    unit_index = 0
    while len(specs) < count:
        unit_index += 1
        unit = f"{unit_prefix}-{unit_index}"
        # sqrt makes the density uniform over the disc rather than bunched at the centre.
        r = radius_m * math.sqrt(rng.random())
        theta = rng.uniform(0, 2 * math.pi)
        car_lat, car_lon = offset(center.lat, center.lon, r * math.cos(theta), r * math.sin(theta))
        for k in range(min(cameras_per_unit, count - len(specs))):
            if k == 0:
                lat, lon, role, name = car_lat, car_lon, CameraRole.DASH, f"dash-{unit_index}"
            else:
                lat, lon = offset(car_lat, car_lon, rng.uniform(-30, 30), rng.uniform(-30, 30))
                role, name = CameraRole.BODY, f"bwc-{unit_index}-{k}"
            specs.append(CameraSpec(name, unit, role, GeoPoint(lat=lat, lon=lon)))
    return specs


def build_agents(
    specs: Sequence[CameraSpec],
    *,
    url: BrokerUrl,
    topics: Topics,
    protocol: ProtocolChoice = "auto",
    client_prefix: str = "tm-cam-",
    record_s: float = 300.0,
    heartbeat_s: float = 30.0,
    now_ns: int,
    url_of: Callable[[CameraSpec], BrokerUrl] | None = None,
    security_of: Callable[[CameraSpec], Security | None] | None = None,
    recorder_of: Callable[[CameraSpec], Recorder | None] | None = None,
) -> list[CameraAgent]:
    """One agent per spec; ``url_of`` and ``security_of`` give each camera its own
    credentials and keys (a locked-down broker), else all share ``url`` and sign nothing;
    ``recorder_of`` gives a camera a recorder of its own (else the simulation)."""
    # Powered on ten minutes ago: every simulated camera has a full pre-event buffer.
    return [
        CameraAgent(
            CameraIdentity(spec.camera_id, spec.unit_id, spec.role),
            url=url if url_of is None else url_of(spec),
            security=None if security_of is None else security_of(spec),
            topics=topics,
            position=spec.position,
            recorder=(None if recorder_of is None else recorder_of(spec))
            or SimulatedRecorder(powered_on_ns=now_ns - 600 * 10**9, record_s=record_s),
            protocol=protocol,
            heartbeat_s=heartbeat_s,
            client_id=f"{client_prefix}{spec.camera_id}",
        )
        for spec in specs
    ]


async def wait_all_up(agents: Sequence[CameraAgent], timeout_s: float = 30.0) -> None:
    await asyncio.gather(*(agent.link.wait_up(timeout_s) for agent in agents))

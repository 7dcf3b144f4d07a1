"""The soak's city: where its scenes and cameras are, and a process that runs part of them.

G *scenes* of K cameras (units of a dash and two body cameras, `mesh.sim.camera_fleet.scatter`, the
cars in a 40 m disc) stand at the centres of geohash-6 cells on a ring 2.5 km from the city
centre; the rest of the fleet are background units over a 6 km disc. Camera ids carry the
unit (``s0-1-dash-1``): `scatter` numbers cameras per call, so two calls would otherwise
make two ``dash-1`` — and two MQTT clients with one client id, which knock each other off.

    python bench/soak_fleet.py --broker URL --prefix P --cameras N --scenes G --scene-size K
        --part i --parts P      # run every P-th camera, starting at the i-th
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, replace

from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.camera.agent import CameraAgent
from mesh.decide.cells import cell_size_deg
from mesh.decide.geo import offset
from mesh.ops import logs
from mesh.ops.runtime import settle_heap, tune_gc
from mesh.protocol.models import GeoPoint
from mesh.sim.camera_fleet import CameraSpec, build_agents, scatter, wait_all_up

CITY = GeoPoint(lat=39.952583, lon=-75.165222)
SCENE_RING_M = 2500.0  # scenes sit on a ring this far from the city centre
SCENE_SPREAD_M = 40.0  # cars of a scene within this disc; body cameras ±30 m of their car
BACKGROUND_SPREAD_M = 6000.0


@dataclass(frozen=True)
class Scene:
    index: int
    center: GeoPoint
    cameras: tuple[CameraSpec, ...]

    @property
    def gateway_unit(self) -> str:
        return self.cameras[0].unit_id

    @property
    def gateway_position(self) -> GeoPoint:
        """Unit 1's dash camera is in its car, where the gateway is."""
        return self.cameras[0].position


def cell_centre(point: GeoPoint) -> GeoPoint:
    """The centre of the geohash-6 cell holding ``point``: a 150-300 m circle around it
    stays in that cell (0.61 x 1.2 km here), so a command reaches one cell's cameras."""
    d_lat, d_lon = cell_size_deg()
    lat = -90.0 + (math.floor((point.lat + 90.0) / d_lat) + 0.5) * d_lat
    lon = -180.0 + (math.floor((point.lon + 180.0) / d_lon) + 0.5) * d_lon
    return GeoPoint(lat=lat, lon=lon)


def _named(specs: list[CameraSpec]) -> tuple[CameraSpec, ...]:
    return tuple(replace(s, camera_id=f"{s.unit_id}-{s.camera_id}") for s in specs)


def scenes_for(count: int, size: int) -> list[Scene]:
    scenes = []
    for g in range(count):
        angle = 2 * math.pi * g / count
        lat, lon = offset(
            CITY.lat, CITY.lon, SCENE_RING_M * math.cos(angle), SCENE_RING_M * math.sin(angle)
        )
        centre = cell_centre(GeoPoint(lat=lat, lon=lon))
        specs = scatter(size, centre, radius_m=SCENE_SPREAD_M, unit_prefix=f"s{g}", seed=g + 1)
        scenes.append(Scene(g, centre, _named(specs)))
    return scenes


def city(cameras: int, scenes: int, scene_size: int) -> tuple[list[Scene], list[CameraSpec]]:
    """The scenes, and every camera of the fleet (the scenes' first)."""
    if scenes * scene_size > cameras:
        raise ValueError(f"{cameras} cameras are fewer than {scenes} scenes x {scene_size} cameras")
    placed = scenes_for(scenes, scene_size)
    everyone = [spec for scene in placed for spec in scene.cameras]
    rest = cameras - len(everyone)
    if rest:
        background = scatter(rest, CITY, radius_m=BACKGROUND_SPREAD_M, unit_prefix="bg", seed=0)
        everyone += _named(background)
    return placed, everyone


class GcPauses:
    """Collector pauses of this process: a full collection over hundreds of agents can hold
    every camera's event loop at once, which the soak must be able to tell from the mesh."""

    def __init__(self) -> None:
        self.started = 0.0
        self.count: Counter[int] = Counter()
        self.max_ms: dict[int, float] = {}
        self.long: list[tuple[float, int, float]] = []  # (monotonic s, generation, ms)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        ms = (time.perf_counter() - self.started) * 1000
        gen = info["generation"]
        self.count[gen] += 1
        self.max_ms[gen] = max(self.max_ms.get(gen, 0.0), ms)
        if ms >= 50:
            self.long.append((round(time.monotonic(), 3), gen, round(ms, 1)))


async def _run_from(agent: CameraAgent, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    await agent.run()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--cameras", type=int, required=True)
    parser.add_argument("--scenes", type=int, required=True)
    parser.add_argument("--scene-size", type=int, required=True)
    parser.add_argument("--part", type=int, default=0)
    parser.add_argument("--parts", type=int, default=1)
    parser.add_argument(
        "--stagger-s", type=float, default=0.0, help="spread the cameras' starts over this time"
    )
    args = parser.parse_args()
    logs.configure("json", "warning")
    tune_gc()  # as `trigger-mesh cameras` does
    _, specs = city(args.cameras, args.scenes, args.scene_size)
    mine = specs[args.part :: args.parts]
    agents = build_agents(
        mine,
        url=BrokerUrl.parse(args.broker),
        topics=Topics(args.prefix),
        now_ns=time.time_ns(),
    )
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    # Cameras powered on over a heartbeat period, not in one second: otherwise every
    # heartbeat of the fleet falls in the same instant, every 30 s for the whole run, a
    # burst no real fleet makes (measured: a 1-3 s stall of every activation each time).
    step = args.stagger_s / max(1, len(specs))
    tasks = [
        asyncio.create_task(_run_from(agent, (args.part + i * args.parts) * step))
        for i, agent in enumerate(agents)
    ]
    try:
        await wait_all_up(agents, 120 + args.stagger_s)
        settle_heap()
        print("ready", flush=True)
        await asyncio.gather(*tasks)
    finally:
        # What the cameras did, for the soak's cross-check (SIGINT cancels us here).
        counters: Counter[str] = Counter()
        for agent in agents:
            counters.update(agent.counters)
        gc_report = {
            "collections": dict(pauses.count),
            "max_ms": {g: round(ms, 1) for g, ms in pauses.max_ms.items()},
            "over_50ms": sorted(pauses.long, key=lambda p: p[2])[-20:],  # the longest
        }
        print(
            json.dumps({"counters": dict(counters), "cameras": len(agents), "gc": gc_report}),
            flush=True,
        )


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):  # SIGINT is how the soak stops us
        asyncio.run(main())

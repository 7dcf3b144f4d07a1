"""Geo cells and the presence index: pure, no broker."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.clock import NS
from mesh.decide.cells import cell_of, cell_size_deg, covering_cells, covering_count
from mesh.decide.geo import haversine_m, offset
from mesh.decide.presence import PresenceRegistry
from mesh.protocol.models import CameraPresence, CameraRole, Position


def test_known_geohashes() -> None:
    # The example of the geohash's own description (Wikipedia, "Geohash"): 57.64911, 10.40744.
    assert cell_of(57.64911, 10.40744, 11) == "u4pruydqqvj"
    # Odd and even bit counts interleave differently: every length is a prefix of it.
    for n in range(1, 12):
        assert cell_of(57.64911, 10.40744, n) == "u4pruydqqvj"[:n]
    assert cell_of(39.952583, -75.165222) == "dr4e39"  # Philadelphia City Hall
    assert cell_size_deg(6) == (180 / 2**15, 360 / 2**15)


@settings(max_examples=300, deadline=None)
@given(
    lat=st.floats(-80, 80),
    lon=st.floats(-180, 179.999),
    radius=st.floats(1, 3000),
    bearing=st.floats(0, 6.283),
    fraction=st.floats(0, 1),
)
def test_every_point_of_the_circle_is_in_a_covering_cell(
    lat: float, lon: float, radius: float, bearing: float, fraction: float
) -> None:
    north, east = radius * fraction * math.cos(bearing), radius * fraction * math.sin(bearing)
    plat, plon = offset(lat, lon, north, east)
    plon = (plon + 180) % 360 - 180
    cells = covering_cells(lat, lon, radius)
    assert cell_of(plat, plon) in cells
    assert len(cells) <= covering_count(lat, radius)


def test_the_cells_of_a_300_m_circle_are_few() -> None:
    assert len(covering_cells(39.95, -75.16, 300)) <= 4
    assert len(covering_cells(39.95, -75.16, 500)) <= 9


def _cam(cid: str, unit: str, lat: float, lon: float) -> CameraPresence:
    return CameraPresence(
        camera_id=cid,
        unit_id=unit,
        role=CameraRole.BODY,
        online=True,
        recording=False,
        position=Position(lat=lat, lon=lon, fix_at_ns=NS),
        last_seen_ns=NS,
    )


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), radius=st.floats(10, 8000))  # fine, coarse, all
def test_near_finds_every_camera_within_the_radius(seed: int, radius: float) -> None:
    rng = random.Random(seed)
    registry = PresenceRegistry()
    center = (39.95, -75.16)
    cams = []
    for k in range(300):
        lat, lon = offset(*center, rng.uniform(-4000, 4000), rng.uniform(-4000, 4000))
        cams.append(_cam(f"c{k}", f"u{k % 40}", lat, lon))
        registry.update(cams[-1])
    found = {c.camera_id for c in registry.near(*center, radius)}
    for cam in cams:
        assert cam.position is not None
        if haversine_m(*center, cam.position.lat, cam.position.lon) <= radius:
            assert cam.camera_id in found


def test_the_index_follows_moves_and_removals() -> None:
    registry = PresenceRegistry()
    here = (39.95, -75.16)
    there = offset(*here, 5000, 0)
    registry.update(_cam("a", "car-1", *here))
    assert [c.camera_id for c in registry.near(*here, 100)] == ["a"]
    registry.update(_cam("a", "car-1", *there))
    assert list(registry.near(*here, 100)) == []
    assert [c.camera_id for c in registry.near(*there, 100)] == ["a"]
    assert [c.camera_id for c in registry.of_unit("car-1")] == ["a"]
    registry.remove("a")
    assert list(registry.near(*there, 100)) == []
    assert registry.of_unit("car-1") == []
    assert len(registry) == 0

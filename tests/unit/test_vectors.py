"""docs/vectors/: the committed test vectors are what the code computes, and the code agrees
with an independent reading of the same rules (a textbook geohash; the camera's own range
decision)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mesh.decide.camera import CameraView, scope
from mesh.decide.vectors import all_vectors
from mesh.protocol.models import (
    GeoPoint,
    RecordStart,
    SourceRef,
    SourceType,
    Targets,
    TriggerEvent,
    TriggerKind,
    TriggerSummary,
)

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "vectors"
BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"


def committed(name: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((VECTORS / f"{name}.json").read_text())
    return loaded


@pytest.mark.parametrize("name", sorted(all_vectors()))
def test_the_committed_vectors_are_what_the_code_computes(name: str) -> None:
    """Regenerate with `trigger-mesh vectors --out docs/vectors`."""
    assert committed(name) == json.loads(json.dumps(all_vectors()[name]))


def textbook_geohash(lat: float, lon: float, precision: int) -> str:
    """Geohash as usually written: halve the longitude and latitude ranges in turn,
    longitude first, 5 bits a character."""
    lat_range, lon_range = [-90.0, 90.0], [-180.0, 180.0]
    bits, even, out, value = 0, True, [], 0
    while len(out) < precision:
        rng, x = (lon_range, lon) if even else (lat_range, lat)
        mid = (rng[0] + rng[1]) / 2
        value <<= 1
        if x >= mid:
            value |= 1
            rng[0] = mid
        else:
            rng[1] = mid
        even, bits = not even, bits + 1
        if bits == 5:
            out.append(BASE32[value])
            bits, value = 0, 0
    return "".join(out)


def test_every_cell_vector_is_a_textbook_geohash() -> None:
    positions = committed("cells")["positions"]
    assert isinstance(positions, list)
    for place in positions:
        for key, precision in (("cell", 6), ("cell_5", 5), ("cell_7", 7)):
            assert place[key] == textbook_geohash(place["lat"], place["lon"], precision), place


def test_every_circle_covers_the_cells_of_points_on_its_rim() -> None:
    """A camera anywhere in the circle must be on one of its cell topics."""
    circles = committed("cells")["circles"]
    ranges = committed("range")["cases"]
    assert isinstance(circles, list)
    assert isinstance(ranges, list)
    for circle in circles:
        inside = [
            case
            for case in ranges
            if case["in_range"]
            and case["origin"] == {"lat": circle["lat"], "lon": circle["lon"]}
            and case["radius_m"] == circle["radius_m"]
        ]
        assert inside, circle["name"]
        for case in inside:
            cell = textbook_geohash(case["camera"]["lat"], case["camera"]["lon"], 6)
            assert cell in circle["cells"], (circle["name"], case["name"])


def command(origin: dict[str, float], radius_m: float) -> RecordStart:
    now = time.time_ns()
    event = TriggerEvent(
        event_id="vector",
        kind=TriggerKind.MANUAL,
        source=SourceRef(type=SourceType.MANUAL, id="vector", authenticated=False),
        unit_id="car-1",
        observed_at_ns=now,
    )
    return RecordStart(
        activation_id="a-vector",
        issuer="gw-car-1",
        trigger=TriggerSummary.of(event),
        issued_at_ns=now,
        origin=GeoPoint(**origin),
        radius_m=radius_m,
        pre_event_s=30,
        targets=Targets(),
        expires_at_ns=now + 10**10,
    )


def test_every_range_vector_is_the_cameras_own_decision() -> None:
    cases = committed("range")["cases"]
    assert isinstance(cases, list)
    assert {case["in_range"] for case in cases} == {True, False}
    for case in cases:
        me = CameraView("bwc-x", "car-9", GeoPoint(**case["camera"]))
        concerned, why = scope(command(case["origin"], case["radius_m"]), me)
        assert concerned is case["in_range"], (case["name"], why)
        # 1 m either side of the rim, as the name says.
        assert abs(case["distance_m"] - case["radius_m"]) == pytest.approx(1.0, abs=0.01)

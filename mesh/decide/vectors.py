"""Test vectors of the geometry a camera implementation must reproduce exactly: the geo
cell of a position and of a circle (the topics commands go to), and the range decision
1 m inside and 1 m outside a command's circle. ``trigger-mesh vectors --out docs/vectors``
writes them; ``tests/unit/test_vectors.py`` checks the committed files against this code.

Pure: the vectors are computed, nothing is read or written here.
"""

from __future__ import annotations

from mesh.decide.cells import CELL_PRECISION, cell_of, covering_cells
from mesh.decide.geo import EARTH_RADIUS_M, haversine_m, offset

# Places chosen for their edges: the equator and the prime meridian (sign changes), both
# sides of the antimeridian, near the poles, a cell boundary, and a few cities.
_PLACES: tuple[tuple[str, float, float], ...] = (
    ("philadelphia", 39.952583, -75.165222),
    ("null island", 0.0, 0.0),
    ("just south-west of null island", -0.000001, -0.000001),
    ("antimeridian east", 10.0, 179.999999),
    ("antimeridian west", 10.0, -179.999999),
    ("near the north pole", 89.999, 45.0),
    ("near the south pole", -89.999, -45.0),
    ("sydney", -33.868820, 151.209290),
    ("reykjavik", 64.146582, -21.942635),
    ("quito", -0.180653, -78.467834),
)

# (name, latitude, longitude, radius in metres) of command circles.
_CIRCLES: tuple[tuple[str, float, float, float], ...] = (
    ("weapon draw, philadelphia", 39.952583, -75.165222, 150.0),
    ("manual, null island", 0.0, 0.0, 100.0),
    ("taser, across the antimeridian", -16.5, 179.9995, 150.0),
    ("light bar, reykjavik", 64.146582, -21.942635, 300.0),
)

# Bearings (north, east unit steps) the test cameras are placed along.
_BEARINGS: tuple[tuple[str, float, float], ...] = (
    ("north", 1.0, 0.0),
    ("east", 0.0, 1.0),
    ("south-west", -(0.5**0.5), -(0.5**0.5)),
)


def cell_vectors() -> dict[str, object]:
    return {
        "description": (
            "geohash cells (base32 alphabet 0123456789bcdefghjkmnpqrstuvwxyz) of positions, "
            f"at the protocol's precision {CELL_PRECISION} and at 5 and 7; and every cell a "
            "command's circle meets (its bounding box), which are the cell topics the "
            "command is published to"
        ),
        "precision": CELL_PRECISION,
        "positions": [
            {
                "name": name,
                "lat": lat,
                "lon": lon,
                "cell": cell_of(lat, lon),
                "cell_5": cell_of(lat, lon, 5),
                "cell_7": cell_of(lat, lon, 7),
            }
            for name, lat, lon in _PLACES
        ],
        "circles": [
            {
                "name": name,
                "lat": lat,
                "lon": lon,
                "radius_m": radius,
                "cells": covering_cells(lat, lon, radius),
            }
            for name, lat, lon, radius in _CIRCLES
        ],
    }


def range_vectors() -> dict[str, object]:
    cases = []
    for name, lat, lon, radius in _CIRCLES:
        for bearing, north, east in _BEARINGS:
            for label, along in (("1 m inside", radius - 1.0), ("1 m outside", radius + 1.0)):
                cam_lat, east_lon = offset(lat, lon, north * along, east * along)
                cam_lon = (east_lon + 180.0) % 360.0 - 180.0  # back into [-180, 180)
                distance = haversine_m(lat, lon, cam_lat, cam_lon)
                cases.append(
                    {
                        "name": f"{name}: camera {label}, {bearing}",
                        "origin": {"lat": lat, "lon": lon},
                        "radius_m": radius,
                        "camera": {"lat": cam_lat, "lon": cam_lon},
                        "distance_m": round(distance, 3),
                        "in_range": distance <= radius,
                    }
                )
    return {
        "description": (
            "the range decision: a camera is in range when the haversine distance from the "
            f"command's origin (Earth radius {EARTH_RADIUS_M} m) is at most radius_m; "
            "distance_m is rounded to the millimetre for reading, in_range is decided on "
            "the unrounded distance"
        ),
        "earth_radius_m": EARTH_RADIUS_M,
        "cases": cases,
    }


def all_vectors() -> dict[str, dict[str, object]]:
    """File name (without ``.json``) → its content."""
    return {"cells": cell_vectors(), "range": range_vectors()}

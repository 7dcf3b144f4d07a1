"""The console map's Web Mercator and tile maths (static/mapmath.js, issue 18 item 10),
run under Node.js and held against the slippy-map formulas written out here in Python
(OpenStreetMap wiki, "Slippy map tilenames")."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI

MAPMATH = (
    Path(__file__).resolve().parents[2] / "mesh" / "dispatch" / "console" / "static" / "mapmath.js"
)
PLACES = [(40.0, -75.0), (51.5, -0.12), (-33.87, 151.21), (64.1, -21.9), (0.0, 179.999)]


def _node(script: str) -> Any:
    node = shutil.which("node")
    if node is None:
        message = "node is not installed (apt-get install -y nodejs)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    program = f"const M = require({json.dumps(str(MAPMATH))});\n{script}"
    done = subprocess.run(
        [node, "-e", program], capture_output=True, text=True, timeout=30, check=True
    )
    return json.loads(done.stdout)


def _osm_tile(lat: float, lon: float, z: int) -> tuple[int, int]:
    n = 2**z
    rad = math.radians(lat)
    return int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(rad)) / math.pi) / 2 * n)


def test_projection_matches_the_slippy_map_formula_and_round_trips() -> None:
    found = _node(
        f"const places = {json.dumps(PLACES)};\n"
        "console.log(JSON.stringify(places.map(([lat, lon]) => {\n"
        "  const w = M.project(lat, lon); return [w, M.unproject(w.x, w.y)]; })));"
    )
    for (lat, lon), (world, back) in zip(PLACES, found, strict=True):
        for z in (0, 5, 12, 17, 19):
            assert (int(world["x"] * 2**z), int(world["y"] * 2**z)) == _osm_tile(lat, lon, z)
        assert back["lat"] == pytest.approx(lat, abs=1e-9)
        assert back["lon"] == pytest.approx(lon, abs=1e-9)


def test_the_tiles_cover_the_view_with_the_right_tile_under_its_centre() -> None:
    views = [
        {"lat": lat, "lon": lon, "scale": scale, "w": w, "h": h}
        for lat, lon in PLACES
        for scale in (256 * 2**12 * 1.3, 256 * 2**17 * 0.8)
        for w, h in ((600, 420), (300, 700))
    ]
    found = _node(
        f"const views = {json.dumps(views)};\n"
        "console.log(JSON.stringify(views.map((v) => {\n"
        "  const c = M.project(v.lat, v.lon);\n"
        "  return M.tilesFor({ cx: c.x, cy: c.y, scale: v.scale, w: v.w, h: v.h }); })));"
    )
    for view, tiles in zip(views, found, strict=True):
        z = tiles[0]["z"]
        # The zoom whose tiles are nearest 256 px: drawn between 181 and 362 px.
        assert 256 / math.sqrt(2) <= tiles[0]["size"] <= 256 * math.sqrt(2)
        assert z == round(math.log2(view["scale"] / 256))
        # The tile drawn under the view's centre is the OSM tile of that place.
        centre = [
            t
            for t in tiles
            if t["px"] <= view["w"] / 2 < t["px"] + t["size"]
            and t["py"] <= view["h"] / 2 < t["py"] + t["size"]
        ]
        assert [(t["x"], t["y"]) for t in centre] == [_osm_tile(view["lat"], view["lon"], z)]
        # Every corner of the view is under exactly one tile; none lies wholly outside.
        for cx, cy in ((0, 0), (view["w"] - 0.01, 0), (0, view["h"] - 0.01)):
            under = [
                t
                for t in tiles
                if t["px"] <= cx < t["px"] + t["size"] and t["py"] <= cy < t["py"] + t["size"]
            ]
            assert len(under) == 1, (view, cx, cy)
        for t in tiles:
            assert t["px"] < view["w"]
            assert t["py"] < view["h"]
            assert t["px"] + t["size"] > 0
            assert t["py"] + t["size"] > 0
            assert 0 <= t["x"] < 2**z
            assert 0 <= t["y"] < 2**z


def test_x_wraps_at_the_antimeridian_and_the_count_is_bounded() -> None:
    found = _node(
        "const c = M.project(0, 179.999);\n"
        "const wrapped = M.tilesFor({ cx: c.x, cy: c.y, scale: 256 * 2 ** 10, w: 600, h: 400 });\n"
        "const huge = M.tilesFor({ cx: 0.5, cy: 0.5, scale: 256 * 2 ** 10, w: 1e5, h: 1e5 });\n"
        "const url = M.tileUrl('https://t.example/{z}/{x}/{y}.png', { z: 3, x: 4, y: 5 });\n"
        "console.log(JSON.stringify({ xs: wrapped.map((t) => t.x), huge: huge.length, url }));"
    )
    assert 0 in found["xs"]  # east of 180° comes tile 0 again
    assert 2**10 - 1 in found["xs"]
    assert found["huge"] == 0
    assert found["url"] == "https://t.example/3/4/5.png"

// Web Mercator (EPSG:3857) maths of the console's map and its optional basemap tiles.
// Pure functions, no DOM: the page loads this file before console.js, and the unit test
// (tests/unit/test_console_map_math.py) runs it under Node.js.
"use strict";

const MapMath = (() => {
  const MAX_LAT = 85.0511287798066; // where Web Mercator's square world ends
  const EARTH_CIRCUMFERENCE_M = 40075016.686; // WGS 84 equator
  const TILE_PX = 256;

  // World coordinates: x from 0 (180° W) to 1 (180° E), y from 0 (85.05° N) to 1 (85.05° S).
  function project(lat, lon) {
    const clamped = Math.max(-MAX_LAT, Math.min(MAX_LAT, lat));
    const s = Math.sin((clamped * Math.PI) / 180);
    return { x: (lon + 180) / 360, y: 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI) };
  }

  function unproject(x, y) {
    const n = Math.PI * (1 - 2 * y);
    return { lat: (180 / Math.PI) * Math.atan(Math.sinh(n)), lon: x * 360 - 180 };
  }

  // Metres on the ground per world unit, at a latitude (the projection's scale factor).
  function metresPerWorld(lat) {
    return EARTH_CIRCUMFERENCE_M * Math.cos((lat * Math.PI) / 180);
  }

  // The tiles that cover a view of w × h px centred on world point (cx, cy) at `scale` px
  // per world unit: the zoom whose tiles come closest to 256 px, and for each tile its
  // z/x/y and where it goes in the view (px, py, size). x wraps round the antimeridian;
  // rows beyond the poles are left out. More than maxTiles (a view far larger than its
  // scale suggests): none, rather than a flood of requests.
  function tilesFor(view, { maxZoom = 19, maxTiles = 64 } = {}) {
    const z = Math.max(0, Math.min(maxZoom, Math.round(Math.log2(view.scale / TILE_PX))));
    const n = 2 ** z;
    const size = view.scale / n;
    const left = view.cx - view.w / 2 / view.scale;
    const top = view.cy - view.h / 2 / view.scale;
    const x0 = Math.floor(left * n);
    const x1 = Math.ceil((left + view.w / view.scale) * n) - 1;
    const y0 = Math.max(0, Math.floor(top * n));
    const y1 = Math.min(n - 1, Math.ceil((top + view.h / view.scale) * n) - 1);
    if ((x1 - x0 + 1) * (y1 - y0 + 1) > maxTiles) return [];
    const tiles = [];
    for (let y = y0; y <= y1; y += 1) {
      for (let x = x0; x <= x1; x += 1) {
        tiles.push({
          z,
          x: ((x % n) + n) % n,
          y,
          px: (x / n - left) * view.scale,
          py: (y / n - top) * view.scale,
          size,
        });
      }
    }
    return tiles;
  }

  function tileUrl(template, tile) {
    return template
      .replaceAll("{z}", String(tile.z))
      .replaceAll("{x}", String(tile.x))
      .replaceAll("{y}", String(tile.y));
  }

  return { MAX_LAT, TILE_PX, project, unproject, metresPerWorld, tilesFor, tileUrl };
})();

if (typeof module !== "undefined") module.exports = MapMath;

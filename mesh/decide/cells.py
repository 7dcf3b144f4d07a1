"""Geo cells: the geohash grid that command topics and the gateway's camera index use.

A geohash of ``n`` characters is a cell of a regular latitude/longitude grid: 5n bits,
alternately longitude and latitude, so cells of one length tile the globe in equal
angular steps. At the protocol's length (CELL_PRECISION = 6) a cell is 0.0110° of
longitude by 0.0055° of latitude: about 0.94 km by 0.61 km at 40° N. Cells are computed
from grid indices, so covering a circle needs no neighbour tables.
"""

from __future__ import annotations

import math

from mesh.decide.geo import EARTH_RADIUS_M, offset

CELL_PRECISION = 6
ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"  # a cell's 32 children: its geohash + one


def _grid(precision: int) -> tuple[int, int]:
    """Bits of longitude and of latitude in a geohash of ``precision`` characters."""
    bits = 5 * precision
    return (bits + 1) // 2, bits // 2


def cell_size_deg(precision: int = CELL_PRECISION) -> tuple[float, float]:
    """(degrees of latitude, degrees of longitude) of one cell."""
    lon_bits, lat_bits = _grid(precision)
    return 180.0 / (1 << lat_bits), 360.0 / (1 << lon_bits)


def _index(lat: float, lon: float, precision: int) -> tuple[int, int]:
    lon_bits, lat_bits = _grid(precision)
    lat = min(max(lat, -90.0), 90.0)
    i_lat = min(int((lat + 90.0) / 180.0 * (1 << lat_bits)), (1 << lat_bits) - 1)
    i_lon = int(((lon + 180.0) % 360.0) / 360.0 * (1 << lon_bits)) % (1 << lon_bits)
    return i_lat, i_lon


def _spread(x: int) -> int:
    """The bits of x (< 2**32) moved to the even positions (bit i to bit 2i)."""
    x = (x | (x << 16)) & 0x0000FFFF0000FFFF
    x = (x | (x << 8)) & 0x00FF00FF00FF00FF
    x = (x | (x << 4)) & 0x0F0F0F0F0F0F0F0F
    x = (x | (x << 2)) & 0x3333333333333333
    return (x | (x << 1)) & 0x5555555555555555


def _encode_index(i_lat: int, i_lon: int, precision: int) -> str:
    lon_bits, lat_bits = _grid(precision)
    # Interleaved from the most significant bit, longitude first: with an odd number of
    # bits longitude takes the even positions, with an even number the odd ones.
    if (lon_bits + lat_bits) % 2:
        value = _spread(i_lon) | (_spread(i_lat) << 1)
    else:
        value = (_spread(i_lon) << 1) | _spread(i_lat)
    chars = []
    for _ in range(precision):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def cell_of(lat: float, lon: float, precision: int = CELL_PRECISION) -> str:
    """The geohash of the cell that holds (lat, lon)."""
    i_lat, i_lon = _index(lat, lon, precision)
    return _encode_index(i_lat, i_lon, precision)


def covering_cells(
    lat: float, lon: float, radius_m: float, precision: int = CELL_PRECISION
) -> list[str]:
    """Every cell that meets the circle's bounding box: a camera within ``radius_m`` of
    (lat, lon) is in one of them. Sorted, no duplicates."""
    south, west = offset(lat, lon, -radius_m, -radius_m)
    north, east = offset(lat, lon, radius_m, radius_m)
    lo_lat, lo_lon = _index(south, west, precision)
    hi_lat, hi_lon = _index(north, east, precision)
    lon_bits, _ = _grid(precision)
    lon_span = (hi_lon - lo_lon) % (1 << lon_bits)  # across the antimeridian too
    cells = {
        _encode_index(i_lat, (lo_lon + k) % (1 << lon_bits), precision)
        for i_lat in range(lo_lat, hi_lat + 1)
        for k in range(lon_span + 1)
    }
    return sorted(cells)


def covering_count(lat: float, radius_m: float, precision: int = CELL_PRECISION) -> int:
    """An upper bound of ``len(covering_cells(...))`` without listing them."""
    dlat, dlon = cell_size_deg(precision)
    span_lat = 2 * math.degrees(radius_m / EARTH_RADIUS_M)
    cos_lat = max(math.cos(math.radians(min(abs(lat), 89.9))), 1e-6)
    span_lon = span_lat / cos_lat
    return (math.ceil(span_lat / dlat) + 1) * (math.ceil(span_lon / dlon) + 1)


def cell_center(cell: str) -> tuple[float, float]:
    """(lat, lon) of the centre of a cell given by its geohash. ValueError for a string
    that is not one."""
    if not cell or any(c not in ALPHABET for c in cell):
        raise ValueError(f"{cell!r} is not a geohash")
    value = 0
    for c in cell:
        value = (value << 5) | ALPHABET.index(c)
    lon_bits, lat_bits = _grid(len(cell))
    i_lon = i_lat = 0
    # Bits from the most significant: longitude, latitude, longitude, ...
    for k in range(lon_bits + lat_bits - 1, -1, -1):
        bit = (value >> k) & 1
        if (lon_bits + lat_bits - 1 - k) % 2 == 0:
            i_lon = (i_lon << 1) | bit
        else:
            i_lat = (i_lat << 1) | bit
    dlat, dlon = cell_size_deg(len(cell))
    return -90.0 + (i_lat + 0.5) * dlat, -180.0 + (i_lon + 0.5) * dlon

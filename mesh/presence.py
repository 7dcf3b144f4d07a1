"""The gateway's view of the cameras on the air, fed by retained presence messages,
indexed by geo cell and by unit so that resolving one trigger reads only the cameras
near it, not the whole fleet.

The index's cells are finer than the command topics' (geohash 7, about 120 m x 150 m at
40° N, against 6): a 150 m circle then reads about 1.3x the cameras inside it rather than
6x, which is most of the cost of resolving a trigger in a dense city (bench/range.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from mesh.cells import ALPHABET, CELL_PRECISION, cell_of, covering_cells, covering_count
from mesh.models import CameraPresence

INDEX_PRECISION = CELL_PRECISION + 1
# Past this many cells a circle is listed by the coarser cells, each standing for its 32
# children; past that too, it is read as "everyone": listing the cells would cost more.
_MAX_QUERY_CELLS = 256


class PresenceRegistry:
    def __init__(self) -> None:
        self._cameras: dict[str, CameraPresence] = {}
        self._cell: dict[str, str] = {}  # camera -> the cell of its last fix
        self._by_cell: dict[str, set[str]] = {}
        self._by_unit: dict[str, set[str]] = {}
        self._by_address: dict[str, str] = {}  # BLE address -> camera

    def update(self, presence: CameraPresence) -> None:
        current = self._cameras.get(presence.camera_id)
        # A last-will carries the time its connection was made (the broker sends it
        # unchanged); the latest heartbeat we had is the truer "last seen".
        if current is not None and current.last_seen_ns > presence.last_seen_ns:
            presence = presence.model_copy(update={"last_seen_ns": current.last_seen_ns})
        if current is not None:
            self._unindex(current)
        self._cameras[presence.camera_id] = presence
        self._index(presence)

    def remove(self, camera_id: str) -> None:
        current = self._cameras.pop(camera_id, None)
        if current is not None:
            self._unindex(current)

    def get(self, camera_id: str) -> CameraPresence | None:
        return self._cameras.get(camera_id)

    def snapshot(self) -> list[CameraPresence]:
        return list(self._cameras.values())

    def __len__(self) -> int:
        return len(self._cameras)

    # --- queries ------------------------------------------------------------------------
    def near(self, lat: float, lon: float, radius_m: float) -> Iterable[CameraPresence]:
        """Every camera whose last fix may be within ``radius_m`` (a superset: the cells
        that meet the circle's bounding box), or every camera for a very large circle."""
        if covering_count(lat, radius_m, INDEX_PRECISION) <= _MAX_QUERY_CELLS:
            cells = covering_cells(lat, lon, radius_m, INDEX_PRECISION)
        elif covering_count(lat, radius_m, INDEX_PRECISION - 1) <= _MAX_QUERY_CELLS:
            coarse = covering_cells(lat, lon, radius_m, INDEX_PRECISION - 1)
            cells = [parent + child for parent in coarse for child in ALPHABET]
        else:
            return self._cameras.values()
        cameras = self._cameras
        by_cell = self._by_cell
        return [cameras[c] for cell in cells for c in by_cell.get(cell, ())]

    def by_ble_address(self, address: str) -> CameraPresence | None:
        camera_id = self._by_address.get(address)
        return None if camera_id is None else self._cameras.get(camera_id)

    def of_unit(self, unit_id: str) -> list[CameraPresence]:
        return [self._cameras[c] for c in self._by_unit.get(unit_id, ())]

    # --- index ----------------------------------------------------------------------------
    def _index(self, presence: CameraPresence) -> None:
        self._by_unit.setdefault(presence.unit_id, set()).add(presence.camera_id)
        if presence.ble_address is not None:
            self._by_address[presence.ble_address] = presence.camera_id
        if presence.position is not None:
            cell = cell_of(presence.position.lat, presence.position.lon, INDEX_PRECISION)
            self._cell[presence.camera_id] = cell
            self._by_cell.setdefault(cell, set()).add(presence.camera_id)

    def _unindex(self, presence: CameraPresence) -> None:
        _discard(self._by_unit, presence.unit_id, presence.camera_id)
        if self._by_address.get(presence.ble_address or "") == presence.camera_id:
            del self._by_address[presence.ble_address or ""]
        cell = self._cell.pop(presence.camera_id, None)
        if cell is not None:
            _discard(self._by_cell, cell, presence.camera_id)


def _discard(index: dict[str, set[str]], key: str, camera_id: str) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(camera_id)
        if not members:
            del index[key]

"""The gateway's view of the cameras on the air, fed by retained presence messages,
indexed by geo cell and by unit so that resolving one trigger reads only the cameras
near it, not the whole fleet.

Bounded (for the gateway): at most ``max_cameras``, a camera not heard for
``expire_after_s`` is dropped, and at the cap a newcomer displaces the camera heard least
recently that no live activation is waiting for (``protected``); with none such among the
oldest, the newcomer is refused. Every camera leaving is counted.

Logged on change (for the gateway, through ``journal``): a presence is written to the
activation log when anything but its times (``last_seen_ns``, the fix's time and accuracy)
changes, and, if only its times changed since its last record, the moment a decision
reads it. So a heartbeat costs no record, yet every camera a decision read is in the log
as the decision saw it, for `audit replay` (mesh/audit/replay.py). Cameras first heard in this
run are not logged until they change or are read: replay starts each run empty.

The index's cells are finer than the command topics' (geohash 7, about 120 m x 150 m at
40° N, against 6): a 150 m circle then reads about 1.3x the cameras inside it rather than
6x, which is most of the cost of resolving a trigger in a dense city (bench/range.py).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol

from mesh.clock import NS
from mesh.decide.cells import ALPHABET, CELL_PRECISION, cell_of, covering_cells, covering_count
from mesh.protocol.models import CameraPresence

INDEX_PRECISION = CELL_PRECISION + 1
# Past this many cells a circle is listed by the coarser cells, each standing for its 32
# children; past that too, it is read as "everyone": listing the cells would cost more.
_MAX_QUERY_CELLS = 256
# At the cap, this many of the least recently heard cameras are looked at for one that
# no live activation waits for; past them the newcomer is refused (bounded work per message).
_EVICTION_SCAN = 64


class PresenceJournal(Protocol):
    """Where the gateway writes presence to its activation log."""

    def presence(self, presence: CameraPresence) -> None: ...

    def removed(self, camera_id: str, reason: str) -> None: ...


def without_times(presence: CameraPresence) -> CameraPresence:
    """What a heartbeat does not change: a presence without its times (and fix accuracy,
    which no decision reads)."""
    position = presence.position
    if position is not None:
        position = position.model_copy(update={"fix_at_ns": 0, "accuracy_m": None})
    return presence.model_copy(update={"last_seen_ns": 0, "position": position})


def changed(before: CameraPresence, after: CameraPresence) -> bool:
    """True if ``after`` says more than "still here" about the camera ``before`` described."""
    return without_times(before) != without_times(after)


class PresenceRegistry:
    def __init__(
        self,
        *,
        max_cameras: int | None = None,
        expire_after_s: float | None = None,
        journal: PresenceJournal | None = None,
        protected: Callable[[str], bool] | None = None,
    ) -> None:
        self._cameras: dict[str, CameraPresence] = {}
        self._cell: dict[str, str] = {}  # camera -> the cell of its last fix
        self._by_cell: dict[str, set[str]] = {}
        self._by_unit: dict[str, set[str]] = {}
        self._by_address: dict[str, str] = {}  # BLE address -> camera
        self.max_cameras = max_cameras
        self.expire_after_ns = None if expire_after_s is None else int(expire_after_s * NS)
        self.journal = journal
        self.protected = protected or _nobody
        # Least recently heard first: camera -> when we last heard it (monotonic ns).
        self._heard: OrderedDict[str, int] = OrderedDict()
        # Cameras whose latest presence (times only) is not in the log yet; and those
        # with a record in the log at all (whose leaving must be logged too).
        self._unlogged: set[str] = set()
        self._logged: set[str] = set()
        self.counters: Counter[str] = Counter()

    def update(self, presence: CameraPresence, heard_mono_ns: int = 0) -> bool:
        """Apply a received presence; False if it was refused (full of protected cameras)."""
        camera_id = presence.camera_id
        current = self._cameras.get(camera_id)
        if current is None:
            self._expire(heard_mono_ns)
            if not self._make_room():
                self.counters["refused_full"] += 1
                return False
        # A last-will carries the time its connection was made (the broker sends it
        # unchanged); the latest heartbeat we had is the truer "last seen".
        if current is not None and current.last_seen_ns > presence.last_seen_ns:
            presence = presence.model_copy(update={"last_seen_ns": current.last_seen_ns})
        if current is not None:
            self._unindex(current)
        self._cameras[camera_id] = presence
        self._index(presence)
        self._heard[camera_id] = heard_mono_ns
        self._heard.move_to_end(camera_id)
        if self.journal is None:
            return True
        if current is not None and changed(current, presence):
            self._write(presence)
        else:
            # New in this run, or a heartbeat: logged when it changes or a decision reads it.
            self.counters["unlogged"] += 1
            self._unlogged.add(camera_id)
        return True

    def remove(self, camera_id: str, reason: str = "removed") -> None:
        current = self._cameras.pop(camera_id, None)
        if current is None:
            return
        self._unindex(current)
        self._heard.pop(camera_id, None)
        self._unlogged.discard(camera_id)
        if camera_id in self._logged:
            self._logged.discard(camera_id)
            if self.journal is not None:
                self.journal.removed(camera_id, reason)

    def get(self, camera_id: str) -> CameraPresence | None:
        found = self._cameras.get(camera_id)
        if found is not None and camera_id in self._unlogged:
            self._write(found)
        return found

    def __contains__(self, camera_id: object) -> bool:
        """Known (without counting as a decision's read: nothing is logged)."""
        return camera_id in self._cameras

    def ids(self) -> list[str]:
        """The cameras known (not a decision's read: nothing is logged)."""
        return list(self._cameras)

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
            for camera_id in list(self._unlogged):
                self._write(self._cameras[camera_id])
            return self._cameras.values()
        cameras = self._cameras
        by_cell = self._by_cell
        return self._read([cameras[c] for cell in cells for c in by_cell.get(cell, ())])

    def by_ble_address(self, address: str) -> CameraPresence | None:
        camera_id = self._by_address.get(address)
        return None if camera_id is None else self.get(camera_id)

    def of_unit(self, unit_id: str) -> list[CameraPresence]:
        return self._read([self._cameras[c] for c in self._by_unit.get(unit_id, ())])

    # --- the log ------------------------------------------------------------------------
    def _read(self, found: list[CameraPresence]) -> list[CameraPresence]:
        """A decision is reading these: each goes into the log as it is now, if it is not."""
        if self._unlogged:
            for presence in found:
                if presence.camera_id in self._unlogged:
                    self._write(presence)
        return found

    def _write(self, presence: CameraPresence) -> None:
        assert self.journal is not None
        self._unlogged.discard(presence.camera_id)
        self._logged.add(presence.camera_id)
        self.counters["logged"] += 1
        self.journal.presence(presence)

    # --- bounds ---------------------------------------------------------------------------
    def _expire(self, now_mono_ns: int) -> None:
        if self.expire_after_ns is None:
            return
        horizon = now_mono_ns - self.expire_after_ns
        while self._heard:
            camera_id, heard = next(iter(self._heard.items()))
            if heard >= horizon or self.protected(camera_id):
                return
            self.counters["expired"] += 1
            self.remove(camera_id, "expired: not heard for a long time")

    def _make_room(self) -> bool:
        if self.max_cameras is None or len(self._cameras) < self.max_cameras:
            return True
        for scanned, camera_id in enumerate(self._heard):
            if scanned >= _EVICTION_SCAN:
                break
            if not self.protected(camera_id):
                self.counters["evicted"] += 1
                self.remove(camera_id, "evicted: the registry is full")
                return True
        return False

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


def _nobody(_camera_id: str) -> bool:
    return False


def _discard(index: dict[str, set[str]], key: str, camera_id: str) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(camera_id)
        if not members:
            del index[key]

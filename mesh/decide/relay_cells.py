"""Which geo cells a car's gateway relays from the central broker into its car. Pure.

A camera hears the commands of its own cell on its car's broker
(``{p}/cmd/cell/{cell}``). Other cars' commands for that cell reach the car only if the
car's gateway subscribes to the cell at central and relays what comes (mesh/gateway/
cell_relay.py): the car's bridge no longer imports every cell (docs/deployment.md).

The cells it relays are those that meet a square of ``margin_m`` around each of its
points (the last fixes of the car's cameras, and the gateway's own position): a camera
moving into the next cell is covered before its next presence says so. The set is bounded
and moves with hysteresis:

- **Bounded.** At most ``max_cells`` cells. Over it, the cells nearest a point (the
  distance from the point to the cell's centre) are kept and the rest left out, counted in
  ``dropped``: each point's own cell is at distance less than a cell's half-diagonal, so it
  goes before any margin cell of the same point. Points beyond ``max_points`` are not
  read (counted in ``points_ignored``).
- **Hysteresis.** A cell no point wants any more stays for ``hold_s`` (a car waiting at a
  cell's edge, a fix that jitters across it, does not churn subscriptions at central);
  while it stays it uses a place of the bound, given up first to a wanted cell.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mesh.decide.cells import cell_center, covering_cells
from mesh.decide.geo import haversine_m

NS = 1_000_000_000


@dataclass(frozen=True)
class RelayLimits:
    # 500 m: 30 s between two presences at 60 km/h.
    margin_m: float = 500.0
    hold_s: float = 60.0
    max_cells: int = 64
    max_points: int = 256

    def __post_init__(self) -> None:
        if not 0 <= self.margin_m <= 5_000:
            raise ValueError(f"margin_m {self.margin_m} must be 0 to 5000 m")
        if self.hold_s < 0:
            raise ValueError(f"hold_s {self.hold_s} must not be negative")
        if not 1 <= self.max_cells <= 1024:
            raise ValueError(f"max_cells {self.max_cells} must be 1 to 1024")
        if self.max_points < 1:
            raise ValueError(f"max_points {self.max_points} must be at least 1")


@dataclass(frozen=True)
class CellChange:
    """What one update changed: cells to subscribe to, cells to leave, and what the bound
    left out."""

    subscribe: tuple[str, ...] = ()
    unsubscribe: tuple[str, ...] = ()
    dropped: int = 0
    points_ignored: int = 0

    def __bool__(self) -> bool:
        return bool(self.subscribe or self.unsubscribe)


def wanted_cells(points: Iterable[tuple[float, float]], margin_m: float) -> dict[str, float]:
    """Every cell that meets the square of ``margin_m`` around a point, with the distance
    from the nearest point to the cell's centre."""
    wanted: dict[str, float] = {}
    for lat, lon in points:
        for cell in covering_cells(lat, lon, margin_m):
            c_lat, c_lon = cell_center(cell)
            d = haversine_m(lat, lon, c_lat, c_lon)
            if d < wanted.get(cell, float("inf")):
                wanted[cell] = d
    return wanted


class RelayCells:
    """The cells relayed now, and how they follow the points."""

    def __init__(self, limits: RelayLimits = RelayLimits()) -> None:
        self.limits = limits
        self._last_wanted: dict[str, int] = {}  # cell -> when a point last wanted it

    @property
    def cells(self) -> frozenset[str]:
        return frozenset(self._last_wanted)

    def update(self, points: Iterable[tuple[float, float]], now_ns: int) -> CellChange:
        limits = self.limits
        taken = list(points)
        ignored = max(0, len(taken) - limits.max_points)
        wanted = wanted_cells(taken[: limits.max_points], limits.margin_m)
        ranked = sorted(wanted, key=lambda cell: (wanted[cell], cell))
        chosen = ranked[: limits.max_cells]
        before = set(self._last_wanted)
        kept = {cell: now_ns for cell in chosen}
        room = limits.max_cells - len(kept)
        hold_ns = int(limits.hold_s * NS)
        lingering = sorted(
            (
                (at, cell)
                for cell, at in self._last_wanted.items()
                if cell not in kept and now_ns - at < hold_ns
            ),
            reverse=True,  # the most recently wanted first
        )
        for at, cell in lingering[: max(room, 0)]:
            kept[cell] = at
        self._last_wanted = kept
        return CellChange(
            subscribe=tuple(sorted(set(kept) - before)),
            unsubscribe=tuple(sorted(before - set(kept))),
            dropped=len(ranked) - len(chosen),
            points_ignored=ignored,
        )

"""Which cells a car's gateway relays from central (mesh/decide/relay_cells.py): the cells
around its points, bounded, moving with hysteresis."""

from __future__ import annotations

import random

import pytest

from mesh.decide.cells import cell_center, cell_of, cell_size_deg, covering_cells
from mesh.decide.geo import offset
from mesh.decide.relay_cells import NS, RelayCells, RelayLimits, wanted_cells

NYC = (40.7128, -74.0060)


def test_cell_center_is_inside_its_cell() -> None:
    rng = random.Random(7)
    dlat, dlon = cell_size_deg()
    for _ in range(2000):
        lat, lon = rng.uniform(-89.0, 89.0), rng.uniform(-180.0, 179.999)
        cell = cell_of(lat, lon)
        c_lat, c_lon = cell_center(cell)
        assert cell_of(c_lat, c_lon) == cell
        assert abs(c_lat - lat) <= dlat / 2 + 1e-9
        assert abs(c_lon - lon) <= dlon / 2 + 1e-9
    with pytest.raises(ValueError, match="not a geohash"):
        cell_center("dr5a")  # 'a' is not in the alphabet


def test_the_cells_around_a_point_with_its_own_first() -> None:
    wanted = wanted_cells([NYC], 500.0)
    assert set(wanted) == set(covering_cells(*NYC, 500.0))
    own = cell_of(*NYC)
    assert min(wanted, key=lambda c: wanted[c]) == own
    # Without a margin: its own cell only.
    assert set(wanted_cells([NYC], 0.0)) == {own}


def test_first_update_subscribes_to_the_cells_around_the_car() -> None:
    relay = RelayCells(RelayLimits(margin_m=500.0))
    change = relay.update([NYC], 0)
    assert set(change.subscribe) == set(covering_cells(*NYC, 500.0)) == relay.cells
    assert change.unsubscribe == ()
    assert change.dropped == 0
    # The same points again: nothing moves.
    assert not relay.update([NYC], NS)


def test_bounded_nearest_first() -> None:
    # 20 cameras 5 km apart, each wanting about 9 cells: 180 wanted, 10 kept.
    points = [offset(*NYC, 5000.0 * i, 0.0) for i in range(20)]
    relay = RelayCells(RelayLimits(margin_m=500.0, max_cells=20))
    change = relay.update(points, 0)
    assert len(relay.cells) == 20
    assert change.dropped == len(wanted_cells(points, 500.0)) - 20
    # Each point's own cell is nearer than any margin cell: they are the ones kept.
    assert relay.cells == {cell_of(lat, lon) for lat, lon in points}


def test_points_beyond_the_limit_are_not_read() -> None:
    points = [offset(*NYC, 5000.0 * i, 0.0) for i in range(5)]
    relay = RelayCells(RelayLimits(margin_m=0.0, max_points=3))
    change = relay.update(points, 0)
    assert change.points_ignored == 2
    assert relay.cells == {cell_of(lat, lon) for lat, lon in points[:3]}


def test_a_car_moving_away_keeps_the_old_cells_for_hold_s() -> None:
    relay = RelayCells(RelayLimits(margin_m=0.0, hold_s=60.0))
    here = cell_of(*NYC)
    relay.update([NYC], 0)
    far = offset(*NYC, 3000.0, 0.0)
    there = cell_of(*far)
    moved = relay.update([far], 10 * NS)
    assert moved.subscribe == (there,)
    assert moved.unsubscribe == ()  # still held
    assert relay.cells == {here, there}
    # Back and forth at the edge within hold_s: no churn at central.
    assert not relay.update([NYC], 20 * NS)
    assert not relay.update([far], 30 * NS)
    # hold_s after the old cell was last wanted (at 20 s), it goes.
    assert not relay.update([far], 79 * NS)
    gone = relay.update([far], 80 * NS)
    assert gone.unsubscribe == (here,)
    assert relay.cells == {there}


def test_a_held_cell_gives_way_to_a_wanted_one_at_the_bound() -> None:
    relay = RelayCells(RelayLimits(margin_m=0.0, hold_s=600.0, max_cells=2))
    a, b, c = (offset(*NYC, 3000.0 * i, 0.0) for i in range(3))
    relay.update([a], 0)
    relay.update([b], 1 * NS)
    assert relay.cells == {cell_of(*a), cell_of(*b)}  # a held
    change = relay.update([c], 2 * NS)
    # c wanted; of the held ones, the most recently wanted (b) stays.
    assert relay.cells == {cell_of(*b), cell_of(*c)}
    assert change.unsubscribe == (cell_of(*a),)
    assert change.dropped == 0


def test_no_points_lets_every_cell_go_after_hold_s() -> None:
    relay = RelayCells(RelayLimits(margin_m=500.0, hold_s=5.0))
    relay.update([NYC], 0)
    assert not relay.update([], 4 * NS)
    assert relay.update([], 5 * NS).unsubscribe
    assert relay.cells == frozenset()


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("margin_m", -1.0, "margin_m"),
        ("margin_m", 6000.0, "margin_m"),
        ("hold_s", -1.0, "hold_s"),
        ("max_cells", 0, "max_cells"),
        ("max_cells", 5000, "max_cells"),
        ("max_points", 0, "max_points"),
    ],
)
def test_limits_are_checked(field: str, value: float, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        RelayLimits(**{field: value})  # type: ignore[arg-type]

"""Which topics carry one command: bounded by the circle's size, not by the fleet.

A command goes to the geo cells that meet its circle (cameras subscribe to the cell they
are in), to the units it targets, and directly to the cameras it names. A circle too big
for that (more than MAX_CELLS cells: over about 1.4 km of radius at 40° N) goes to everyone
on ``{p}/cmd/all`` instead. Pure.
"""

from __future__ import annotations

from bridge.topics import Topics
from mesh.decide.cells import covering_cells, covering_count
from mesh.protocol.models import RecordStart

MAX_CELLS = 24


def command_topics(topics: Topics, command: RecordStart) -> list[str]:
    out: list[str] = []
    origin = command.origin
    if origin is not None and command.radius_m > 0:
        if covering_count(origin.lat, command.radius_m) > MAX_CELLS:
            out.append(topics.command_all())
        else:
            cells = covering_cells(origin.lat, origin.lon, command.radius_m)
            out.extend(topics.command_cell(cell) for cell in cells)
    out.extend(topics.command_unit(unit) for unit in command.targets.units)
    out.extend(topics.command_camera(camera) for camera in command.targets.cameras)
    return out

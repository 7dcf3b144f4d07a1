"""Who and where, for one run against a camera: its id, unit and position, the gateways
the kit speaks as, and the places it sends commands about. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.topics import Topics
from mesh.decide.cells import cell_of, cell_size_deg
from mesh.decide.geo import haversine_m, offset
from mesh.protocol.models import GeoPoint

# A command "far away" is centred this far north of the camera, with a 100 m radius.
FAR_M = 5000.0


@dataclass(frozen=True)
class Scene:
    topics: Topics
    camera_id: str
    unit_id: str | None
    position: GeoPoint | None
    issuer: str  # the gateway the kit speaks as
    other_issuer: str  # another gateway: a second claim, a cancel that is not the issuer's
    tag: str  # unique to the run: every activation id of the run carries it

    @property
    def cell(self) -> str | None:
        return None if self.position is None else cell_of(self.position.lat, self.position.lon)

    def activation(self, name: str) -> str:
        return f"{self.id_prefix}{name}"

    @property
    def id_prefix(self) -> str:
        return f"conf-{self.tag}-"

    def far(self) -> GeoPoint | None:
        if self.position is None:
            return None
        lat, lon = offset(self.position.lat, self.position.lon, FAR_M, 0.0)
        return GeoPoint(lat=lat, lon=lon)

    def moved(self) -> GeoPoint | None:
        """A point two cells east: another cell whatever the position in this one."""
        if self.position is None:
            return None
        _, dlon = cell_size_deg()
        lon = self.position.lon + 2 * dlon
        if lon > 180.0:
            lon -= 360.0
        return GeoPoint(lat=self.position.lat, lon=lon)

    def distance_m(self, point: GeoPoint) -> float | None:
        """From ``point`` (a command's origin) to the camera, as the range rule measures."""
        if self.position is None:
            return None
        return haversine_m(point.lat, point.lon, self.position.lat, self.position.lon)

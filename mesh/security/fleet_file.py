"""The fleet file of ``trigger-mesh broker-config``: who may use the broker (docs/broker.md).

```yaml
prefix: mesh/v2
gateways: [{id: gw-car-12, unit: car-12}]       # broadcast: true → may publish cmd/all
cameras: [{id: bwc-101, unit: car-12}]          # cells: [dr4e] → reads only that region
camera_cells: [dr4e, dr4s]                      # the region of cameras without their own
dispatch: [dispatch-1]
archivers: [archiver-1]
```

A bad file is a ConfigError naming the file and the key, like every other config file.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from bridge.broker.acl import FleetError, FleetSpec, Principal
from bridge.topics import DEFAULT_PREFIX, Topics
from mesh.documents import ConfigError, read_yaml, validate
from mesh.protocol.models import Ident


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Gateway(_Config):
    id: Ident
    unit: Ident
    # Its policy has circles over ~1.4 km of radius, which go to every camera on cmd/all.
    broadcast: bool = False


class _Camera(_Config):
    id: Ident
    unit: Ident
    # Geohash prefixes of the cells whose commands it may read (default: camera_cells).
    cells: tuple[str, ...] | None = None


class _Fleet(_Config):
    prefix: str = DEFAULT_PREFIX
    gateways: tuple[_Gateway, ...] = ()
    cameras: tuple[_Camera, ...] = ()
    camera_cells: tuple[str, ...] | None = None
    dispatch: tuple[Ident, ...] = ()
    archivers: tuple[Ident, ...] = ()

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        Topics(value)  # ValueError saying what is wrong
        return value


def load_fleet(path: Path | str) -> FleetSpec:
    raw = validate(_Fleet, read_yaml(path), path)
    if not (raw.gateways or raw.cameras or raw.dispatch or raw.archivers):
        raise ConfigError(path, "", "no gateways, cameras, dispatch or archivers: nobody to admit")
    try:
        return FleetSpec(
            prefix=raw.prefix,
            gateways=tuple(Principal(m.id, m.unit, broadcast=m.broadcast) for m in raw.gateways),
            cameras=tuple(Principal(m.id, m.unit, cells=m.cells) for m in raw.cameras),
            dispatch=raw.dispatch,
            archivers=raw.archivers,
            camera_cells=raw.camera_cells,
        )
    except FleetError as exc:
        raise ConfigError(path, exc.key, exc.problem) from None

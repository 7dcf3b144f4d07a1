"""The fleet file of ``trigger-mesh broker-config``: who may use the broker (docs/broker.md).

```yaml
prefix: mesh/v1
gateways: [{id: gw-car-12, unit: car-12}]
cameras: [{id: bwc-101, unit: car-12}]
dispatch: [dispatch-1]
archivers: [archiver-1]
```

A bad file is a ConfigError naming the file and the key, like every other config file.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from bridge.broker_acl import FleetError, FleetSpec, Principal
from bridge.topics import DEFAULT_PREFIX, Topics
from mesh.config import ConfigError, read_yaml, validate
from mesh.models import Ident


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Member(_Config):
    id: Ident
    unit: Ident


class _Fleet(_Config):
    prefix: str = DEFAULT_PREFIX
    gateways: tuple[_Member, ...] = ()
    cameras: tuple[_Member, ...] = ()
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
            gateways=tuple(Principal(m.id, m.unit) for m in raw.gateways),
            cameras=tuple(Principal(m.id, m.unit) for m in raw.cameras),
            dispatch=raw.dispatch,
            archivers=raw.archivers,
        )
    except FleetError as exc:
        raise ConfigError(path, exc.key, exc.problem) from None

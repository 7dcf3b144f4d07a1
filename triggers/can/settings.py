"""The ``can:`` section of a gateway config (a light module: no CAN stack imported)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field


class CanConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    # Any python-can interface: socketcan, virtual, udp_multicast, pcan, slcan, kvaser …
    interface: str
    channel: str
    bitrate: Annotated[int, Field(gt=0)] | None = None
    dbc: list[str] = Field(min_length=1)  # relative to the gateway config file
    rules: str  # relative to the gateway config file
    tick_s: Annotated[float, Field(gt=0, le=10)] = 0.25  # signal-loss check period
    options: dict[str, Any] = Field(default_factory=dict)  # more python-can Bus arguments

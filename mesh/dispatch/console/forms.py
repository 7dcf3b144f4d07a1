"""The bodies the console accepts (POST /api/activate, /api/cancel). The OpenAPI
document takes their JSON Schemas from here, so the two cannot drift apart."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from mesh.protocol.models import Ident, Latitude, Longitude


class ActivateForm(BaseModel):
    """Start the unit's cameras, as a ``dispatch`` trigger: at the given position (both or
    neither), otherwise where the unit's gateway is."""

    model_config = ConfigDict(extra="forbid")

    unit_id: Ident
    lat: Latitude | None = None
    lon: Longitude | None = None
    note: Annotated[str, Field(max_length=256)] = ""


class CancelForm(BaseModel):
    """Cancel one activation of the unit (within the policy's cancellation window)."""

    model_config = ConfigDict(extra="forbid")

    unit_id: Ident
    activation_id: Ident
    reason: Annotated[str, Field(max_length=512)] = ""

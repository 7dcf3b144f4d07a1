"""The JSON Schemas a camera maker implements from (docs/schemas/): what they require."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mesh.protocol.codec import PayloadError, decode
from mesh.protocol.models import RecordStart
from mesh.protocol.schema import SCHEMA_MODELS, schemas

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


@pytest.mark.parametrize("name", sorted(SCHEMA_MODELS))
def test_every_payload_schema_requires_type_and_v(name: str) -> None:
    """The models default them, but a sender MUST send both (docs/protocol.md)."""
    schema = schemas()[name]
    required = schema["required"]
    assert isinstance(required, list)
    assert required[:2] == ["type", "v"]
    committed = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    assert committed["required"][:2] == ["type", "v"]


def test_only_the_top_level_requires_them() -> None:
    """A nested object (a position, a trigger summary) gains no required field."""
    schema = schemas()["presence"]
    position = schema["$defs"]["Position"]  # type: ignore[index]
    assert position["required"] == ["lat", "lon", "fix_at_ns"]


def test_a_cancel_without_type_is_not_read_as_a_cancel() -> None:
    """Why a sender MUST send `type`: command topics carry two payloads, and a reader that
    expects a record_start takes a typeless record_cancel for a broken one."""
    typeless = b'{"v": 2, "activation_id": "a-1", "issuer": "gw-car-12", "at_ns": "1"}'
    with pytest.raises(PayloadError) as caught:
        decode(RecordStart, typeless)
    assert caught.value.code == "missing_field"

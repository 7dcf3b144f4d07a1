"""The JSON Schemas a camera maker implements from (docs/schemas/): what they require."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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

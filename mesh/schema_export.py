"""``trigger-mesh schema``: JSON Schemas of every protocol v1 payload."""

from __future__ import annotations

import json
from pathlib import Path

from mesh.models import WIRE_MODELS


def schemas() -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for name, model in WIRE_MODELS.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://trigger-mesh.example/schemas/v1/{name}.schema.json"
        out[name] = schema
    return out


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written

"""``trigger-mesh schema``: JSON Schemas of every protocol v2 payload.

``type`` and ``v`` have defaults in the models (a reader of this version fills them in),
but a sender MUST send both: the schemas list them first among the required fields.
"""

from __future__ import annotations

import json
from pathlib import Path

from mesh.protocol.jws import JwsMessage
from mesh.protocol.log_wire import LogBatch, LogSynced
from mesh.protocol.models import WIRE_MODELS, Frozen

# Every payload's own fields a sender must send although the models default them.
ALWAYS_SENT = ("type", "v")

# The log-sync payloads (docs/archive.md) live with the archive, not the core protocol.
SCHEMA_MODELS: dict[str, type[Frozen]] = {
    **WIRE_MODELS,
    "log_batch": LogBatch,
    "log_synced": LogSynced,
}


def schemas() -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for name, model in SCHEMA_MODELS.items():
        schema = model.model_json_schema()
        required = [str(field) for field in schema.get("required", ())]
        schema["required"] = [*ALWAYS_SENT, *(f for f in required if f not in ALWAYS_SENT)]
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://trigger-mesh.example/schemas/v2/{name}.schema.json"
        out[name] = schema
    # The envelope of a signed message (any of SIGNABLE's payloads inside).
    envelope = JwsMessage.model_json_schema()
    envelope["required"] = ["protected", "payload", "signature"]
    envelope["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    envelope["$id"] = "https://trigger-mesh.example/schemas/v2/jws.schema.json"
    out["jws"] = envelope
    return out


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written

"""JSON payload codec: pydantic models to bytes and back, with reasons a human can act on."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

# Default limit: triggers, commands, acks and presence are well under 4 KiB. Readers of
# activation records, which grow with the number of cameras, pass a larger limit.
DEFAULT_MAX_BYTES = 256 * 1024


class PayloadError(ValueError):
    """A payload that cannot be accepted. ``code`` is stable (for counters), ``reason`` is prose."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


def decode(model: type[M], payload: bytes | bytearray, *, max_bytes: int = DEFAULT_MAX_BYTES) -> M:
    """Validate ``payload`` as ``model`` or raise PayloadError naming what was wrong."""
    if len(payload) > max_bytes:
        raise PayloadError("too_large", f"{len(payload)} bytes exceeds the {max_bytes}-byte limit")
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise _explain(model, exc) from None


def _explain(model: type[BaseModel], exc: ValidationError) -> PayloadError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    kind = first["type"]
    loc = ".".join(str(part) for part in first["loc"])
    expected_type = _literal_default(model, "type")
    if kind == "json_invalid":
        return PayloadError("not_json", f"not valid JSON ({first['msg']})")
    if kind == "model_type" or (kind.endswith("_type") and not first["loc"]):
        return PayloadError("not_object", "payload must be a JSON object")
    if loc == "type":
        got = first.get("input")
        if kind == "missing":
            return PayloadError(
                "missing_field", f"missing field 'type' (expected {expected_type!r})"
            )
        return PayloadError("wrong_type", f"expected type {expected_type!r}, got {got!r}")
    if loc == "v":
        return PayloadError(
            "wrong_version", f"unsupported version v={first.get('input')!r}; v1 only"
        )
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if kind == "missing":
        return PayloadError("missing_field", f"missing field '{loc}'{more}")
    return PayloadError("invalid_field", f"field '{loc}': {first['msg']}{more}")


def _literal_default(model: type[BaseModel], name: str) -> object:
    field = model.model_fields.get(name)
    return None if field is None else field.default

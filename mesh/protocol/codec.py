"""JSON payload codec: pydantic models to bytes and back, with reasons a human can act on."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from mesh.protocol.models import WIRE

M = TypeVar("M", bound=BaseModel)

# Default limit: triggers, commands, acks and presence are well under 4 KiB. Readers of
# activation records, which grow with the number of cameras, pass a larger limit.
DEFAULT_MAX_BYTES = 256 * 1024


# The wire takes v2 only: times as strings, "v": 2 (a log reader takes v1 bodies too).
_WIRE_CONTEXT = {WIRE: True}


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
        value = model.model_validate_json(payload, context=_WIRE_CONTEXT)
    except ValidationError as exc:
        raise _explain(model, exc) from None
    bad = non_finite_field(value)
    if bad is not None:
        # NaN, Infinity or a literal too large for a double (1e400): encoded back they
        # would be null, so what was accepted could not be forwarded or logged as it came.
        raise PayloadError("invalid_field", f"field '{bad}': not a finite number")
    return value


def _explain(model: type[BaseModel], exc: ValidationError) -> PayloadError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    kind = first["type"]
    parts, problem = readable_loc(model, first)
    loc = ".".join(str(part) for part in parts)
    expected_type = _literal_default(model, "type")
    if kind == "json_invalid":
        return PayloadError("not_json", f"not valid JSON ({first['msg']})")
    if not parts and kind.endswith("_type"):
        return PayloadError("not_object", "payload must be a JSON object")
    if loc == "type":
        got = first.get("input")
        if kind == "missing":
            return PayloadError(
                "missing_field", f"missing field 'type' (expected {expected_type!r})"
            )
        return PayloadError("wrong_type", f"expected type {expected_type!r}, got {got!r}")
    if loc == "v":
        if kind == "missing":
            return PayloadError("missing_field", "missing field 'v' (expected 2)")
        return PayloadError("wrong_version", _without_prefix(first["msg"]))
    # Other fields that are wrong too (a union's members each report the same field).
    others = {".".join(str(p) for p in readable_loc(model, e)[0]) for e in errors[1:]} - {loc}
    more = f" (and {len(others)} more)" if others else ""
    if kind == "missing":
        return PayloadError("missing_field", f"missing field '{loc}'{more}")
    return PayloadError("invalid_field", f"field '{loc}': {_without_prefix(problem)}{more}")


def _without_prefix(message: str) -> str:
    """A validator's own words, without pydantic's "Value error, " in front."""
    return message.removeprefix("Value error, ")


def _literal_default(model: type[BaseModel], name: str) -> object:
    field = model.model_fields.get(name)
    return None if field is None else field.default


# --- numbers JSON cannot carry ---------------------------------------------------------------
def non_finite_field(value: object) -> str | None:
    """The dotted path of the first NaN or infinity in a decoded model, or None."""
    found = _first_non_finite(value)
    return None if found is None else ".".join(reversed(found))


def _first_non_finite(value: object) -> list[str] | None:
    """The path (innermost first) of the first non-finite float under ``value``. Only
    fields whose type can hold a float are visited; this runs on every payload, so a float
    field is checked in place rather than by a call per value."""
    if isinstance(value, BaseModel):
        for name in float_fields(type(value)):
            item = getattr(value, name)
            if item.__class__ is float:
                if not _isfinite(item):
                    return [name]
            elif item is not None:
                found = _first_non_finite(item)
                if found is not None:
                    found.append(name)
                    return found
        return None
    if isinstance(value, float):
        return None if _isfinite(value) else []
    if isinstance(value, tuple | list):
        items: Any = enumerate(value)
    elif isinstance(value, dict):
        items = value.items()
    else:
        return None
    for key, item in items:
        found = _first_non_finite(item)
        if found is not None:
            found.append(str(key))
            return found
    return None


_isfinite = math.isfinite


@cache
def float_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of a model that can hold a float, at any depth (where NaN could hide)."""
    return tuple(
        name for name, field in model.model_fields.items() if _holds_float(field.annotation)
    )


def _holds_float(annotation: Any) -> bool:
    if annotation is float:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return bool(float_fields(annotation))
    # Unions, tuples, lists, dicts and Annotated: whatever they are made of.
    return get_origin(annotation) is not None and any(
        _holds_float(arg) for arg in get_args(annotation)
    )


# --- validation errors, as the file's author would say them ------------------------------
def readable_loc(model: type[BaseModel], error: ErrorDetails) -> tuple[list[str | int], str]:
    """The key path of a pydantic error as the file spells it, and its problem.

    Pydantic names the member of a union it tried inside the path (``policy.Policy.
    defaults.radius_m``, ``rules.0.value.int``); those names are left out. A value that
    fits none of a union's members is described by what it could have been."""
    parts: list[str | int] = []
    annotation: Any = model
    loc = list(error["loc"])
    for i, part in enumerate(loc):
        members = _union_members(annotation)
        if members is not None:  # this part names the member pydantic tried
            annotation = next((m for m in members if _member_name(m) == part), None)
            if i == len(loc) - 1 and error["type"].endswith("_type"):
                wanted = " or ".join(dict.fromkeys(_describe(m) for m in members))
                return parts, f"expected {wanted}, not {type_name(error.get('input'))}"
            continue
        parts.append(part)
        annotation = _child(annotation, part)
    return parts, error["msg"]


def known_keys(model: type[BaseModel], parts: Sequence[str | int]) -> set[str]:
    """The keys a file may write at ``parts`` (a path as ``readable_loc`` gives it) in a
    ``model`` document: the fields of the model found there, or none."""
    annotation: Any = model
    for part in parts:
        annotation = _child(_model_member(annotation), part)
        if annotation is None:
            return set()
    base = _unwrap(_model_member(annotation))
    if isinstance(base, type) and issubclass(base, BaseModel):
        return {field.alias or name for name, field in base.model_fields.items()}
    return set()


def _model_member(annotation: Any) -> Any:
    """The one model of a union like ``Policy | str | None``; else the annotation."""
    members = _union_members(annotation)
    if members is None:
        return annotation
    models = [
        m for m in members if isinstance(_unwrap(m), type) and issubclass(_unwrap(m), BaseModel)
    ]
    return models[0] if len(models) == 1 else annotation


def _unwrap(annotation: Any) -> Any:
    """Annotated[X, …] → X; X | None → X."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _union_members(annotation: Any) -> tuple[Any, ...] | None:
    annotation = _unwrap(annotation)
    if get_origin(annotation) in (Union, UnionType):
        return tuple(a for a in get_args(annotation) if a is not type(None))
    return None


def _member_name(member: Any) -> str:
    base = _unwrap(member)
    origin = get_origin(base) or base
    return str(getattr(origin, "__name__", origin))


def _child(annotation: Any, part: str | int) -> Any:
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(part))
        return None if field is None else field.annotation
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin in (list, tuple, set, frozenset) and args:
        return args[0]
    return None


def _describe(member: Any) -> str:
    base = _unwrap(member)
    if isinstance(base, type) and issubclass(base, BaseModel):
        return "a mapping"
    origin = get_origin(base)
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    return {str: "text", bool: "true/false", int: "a number", float: "a number"}.get(
        base, "another value"
    )


def type_name(value: object) -> str:
    """How a YAML/JSON value's type reads in an error message."""
    names = {
        dict: "a mapping",
        list: "a list",
        str: "text",
        bool: "true/false",
        int: "a number",
        float: "a number",
    }
    if value is None:
        return "nothing (null)"
    return names.get(type(value), f"a {type(value).__name__}")

"""Reading the YAML and JSON files people write (configs, rules, keystores, scenarios):
a parsed document, or a DocumentError saying where and what is wrong with the file.

Each loader turns a DocumentError into its own error type with the file's name. Nothing
else escapes: not a UnicodeDecodeError from a file that is not text, not a RecursionError
from a document nested thousands deep, not the ValueError PyYAML lets through for a date
like ``2020-13-01`` (tests/fuzz/test_fuzz_config.py). Validation errors of what was read are
named with ``mesh.protocol.codec.readable_loc``, as payload errors are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from mesh.protocol.codec import readable_loc

C = TypeVar("C", bound=BaseModel)


class DocumentError(ValueError):
    """``problem`` (e.g. "not valid YAML"), ``where`` (``line 3, column 5``, ``byte 7`` or
    empty) and ``detail`` (what the reader said)."""

    def __init__(self, problem: str, detail: str, where: str = "") -> None:
        self.problem, self.detail, self.where = problem, detail, where
        at = f" at {where}" if where else ""
        super().__init__(f"{problem}{at}: {detail}")

    @property
    def summary(self) -> str:
        """The message without the place, for errors that show ``where`` on their own."""
        return f"{self.problem}: {self.detail}"


def read_text(path: Path | str) -> str:
    """The file's text (UTF-8)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError("not UTF-8 text", exc.reason, f"byte {exc.start}") from None
    except OSError as exc:
        raise DocumentError("cannot read", exc.strerror or str(exc)) from None


def load_yaml(path: Path | str) -> Any:
    """The file's YAML document (None for an empty file)."""
    text = read_text(path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        detail = getattr(exc, "problem", None) or str(exc)
        raise DocumentError("not valid YAML", detail, where) from None
    except RecursionError:
        raise DocumentError("not valid YAML", "nested too deeply") from None
    except (ValueError, TypeError, AttributeError) as exc:
        # PyYAML's constructors raise these for a scalar they cannot build: a date like
        # 2020-13-01, `!!float abc`, `!!timestamp x`.
        raise DocumentError("not valid YAML", f"a value cannot be read ({exc})") from None


def load_json(path: Path | str) -> Any:
    """The file's JSON document; NaN, Infinity and numbers too large for a double are
    refused (they would not survive being written back)."""
    text = read_text(path)
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise DocumentError("not valid JSON", exc.msg, where) from None
    except RecursionError:
        raise DocumentError("not valid JSON", "nested too deeply") from None
    except ValueError as exc:
        raise DocumentError("not valid JSON", str(exc)) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is too large for a number")
    return value


# --- configuration files --------------------------------------------------------------
class ConfigError(ValueError):
    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path, self.key, self.problem = str(path), key, problem
        where = f"key '{key}'" if key else "top level"
        super().__init__(f"{path}: {where}: {problem}")


def read_yaml(path: Path | str) -> Any:
    try:
        return load_yaml(path)
    except DocumentError as exc:
        raise ConfigError(path, "", str(exc)) from None


def validate(model: type[C], data: Any, path: Path | str) -> C:
    if not isinstance(data, dict):
        raise ConfigError(path, "", f"expected a mapping of keys, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        parts, problem = readable_loc(model, first)
        key = ".".join(str(p) for p in parts)
        if first["type"] == "extra_forbidden":
            problem = "unknown key"
        elif first["type"] == "missing":
            problem = "required key is missing"
        raise ConfigError(path, key, problem) from None

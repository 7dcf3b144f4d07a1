"""Reading the YAML and JSON files people write (configs, rules, keystores, scenarios):
a parsed document, or a DocumentError saying where and what is wrong with the file.

Each loader turns a DocumentError into its own error type with the file's name. Nothing
else escapes: not a UnicodeDecodeError from a file that is not text, not a RecursionError
from a document nested thousands deep, not the ValueError PyYAML lets through for a date
like ``2020-13-01`` (tests/fuzz/test_fuzz_config.py). Validation errors of what was read are
named with ``mesh.protocol.codec.readable_loc``, as payload errors are.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from mesh.protocol.codec import known_keys, readable_loc

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
# Unknown keys get a suggestion when one of the known keys at that level is this close
# (difflib's ratio): "retension_days" → "retention_days", not "audit" → "ble".
SUGGEST_CUTOFF = 0.7
# Bounds the report of a badly broken file (a list of 10,000 wrong entries).
MAX_PROBLEMS = 50


def did_you_mean(word: str, known: Iterable[str]) -> str | None:
    """The known key ``word`` is most likely a misspelling of, or None."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=SUGGEST_CUTOFF)
    if not close:
        # A difference of case only ("Unit") is below the cutoff for short words.
        close = [k for k in sorted(known) if k.lower() == word.lower()]
    return close[0] if close else None


class ConfigError(ValueError):
    """A config file's problems: ``key`` and ``problem`` are the first one's, ``problems``
    all of them (every error of the file is reported at once)."""

    def __init__(
        self,
        path: Path | str,
        key: str,
        problem: str,
        more: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.path, self.key, self.problem = str(path), key, problem
        self.problems: tuple[tuple[str, str], ...] = ((key, problem), *more)
        super().__init__("\n".join(self.lines))

    @property
    def lines(self) -> list[str]:
        """One line per problem: ``FILE: key 'a.b': problem``."""
        return [f"{self.path}: {_where(key)}: {problem}" for key, problem in self.problems]


def _where(key: str) -> str:
    return f"key '{key}'" if key else "top level"


def read_yaml(path: Path | str) -> Any:
    try:
        return load_yaml(path)
    except DocumentError as exc:
        raise ConfigError(path, "", str(exc)) from None


def validate(model: type[C], data: Any, path: Path | str) -> C:
    """``data`` as a ``model``, or a ConfigError with every problem pydantic found. Keys a
    model does not know are refused at every depth (models the wire shares ignore them
    there, for newer peers; a file is written for this version)."""
    if not isinstance(data, dict):
        raise ConfigError(path, "", f"expected a mapping of keys, got {type(data).__name__}")
    try:
        return model.model_validate(data, extra="forbid")
    except ValidationError as exc:
        found = _without_union_noise([_problem(model, e) for e in exc.errors(include_url=False)])
        shown = found[:MAX_PROBLEMS]
        if len(found) > MAX_PROBLEMS:
            shown.append(("", f"… and {len(found) - MAX_PROBLEMS} more problems"))
        (key, problem), *more = shown
        raise ConfigError(path, key, problem, more) from None


def _without_union_noise(found: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop repeats, and "expected a mapping or text" at a key with problems inside it:
    pydantic tried each member of a union (``policy: Policy | str``), and the mapping
    that was written is the one meant."""
    unique = list(dict.fromkeys(found))
    inside = {key for key, _ in unique}
    return [
        (key, problem)
        for key, problem in unique
        if not (
            problem.startswith("expected ") and any(other.startswith(f"{key}.") for other in inside)
        )
    ]


def _problem(model: type[BaseModel], error: ErrorDetails) -> tuple[str, str]:
    parts, problem = readable_loc(model, error)
    key = ".".join(str(p) for p in parts)
    if error["type"] == "extra_forbidden":
        problem = "unknown key"
        known = known_keys(model, parts[:-1])
        suggestion = did_you_mean(str(parts[-1]), known) if parts else None
        if suggestion is not None:
            problem += f" (did you mean '{suggestion}'?)"
        elif known:
            problem += f" (known here: {', '.join(sorted(known))})"
    elif error["type"] == "missing":
        problem = "required key is missing"
    return key, problem

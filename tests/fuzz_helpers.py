"""What the fuzz tests share (docs/fuzzing.md): budgets, JSON values, valid wire payloads
generated from the models' own JSON schemas, and single mutations of them.

Budgets: ``budget(n)`` is ``n`` examples in the test run (the "ci" profile, tests/conftest.py),
the "fuzz" profile's ``FUZZ_EXAMPLES`` under ``make fuzz``, and at most the "fast" profile's
``FAST_EXAMPLES`` under ``make test-fast``. Cheap properties test a
batch of inputs per example, as tests/fuzz/test_ble_fuzz.py does: hypothesis costs ~1 ms an
example, most parsers here a few microseconds an input.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from pydantic import BaseModel

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
QUICK = os.environ.get("HYPOTHESIS_PROFILE") == "fast"
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


def budget(examples: int) -> settings:
    """``examples`` in the test run; under ``make fuzz``, the fuzz profile's count; under
    ``make test-fast``, no more than the fast profile's."""
    if LONG:
        return settings(deadline=None, suppress_health_check=_QUIET)
    if QUICK:
        examples = min(examples, settings().max_examples)  # the loaded profile: "fast"
    return settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=_QUIET
    )


def batch(strategy: st.SearchStrategy[Any], size: int) -> st.SearchStrategy[list[Any]]:
    return st.lists(strategy, min_size=size, max_size=size)


# --- JSON ------------------------------------------------------------------------------------
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and the infinities too: json.dumps writes NaN / Infinity tokens
    | st.text(max_size=12)
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


# --- valid payloads, from the models' JSON schemas ---------------------------------------------
# Strings are kept short (the "huge" mutation covers long ones) so that an example is cheap.
_TEXT_CAP = 16
_LIST_CAP = 3


_TIME_PATTERN = "^(0|[1-9][0-9]{0,18})$"


def instances(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects (as Python values) the model accepts: built from its JSON schema, so a
    field added to a model is generated without touching this file."""
    schema = model.model_json_schema(mode="validation")
    return _from_schema(schema, schema.get("$defs", {}))  # type: ignore[no-any-return]


def _from_schema(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return st.deferred(lambda: _from_schema(defs[name], defs))
    if "anyOf" in schema:
        return st.one_of([_from_schema(s, defs) for s in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -(2**64) - 1) + 1)
        high = schema.get("maximum", schema.get("exclusiveMaximum", 2**64 + 1) - 1)
        return st.integers(low, high)
    if kind == "number":
        return st.floats(
            min_value=schema.get("minimum", schema.get("exclusiveMinimum")),
            max_value=schema.get("maximum", schema.get("exclusiveMaximum")),
            exclude_min="exclusiveMinimum" in schema,
            exclude_max="exclusiveMaximum" in schema,
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        if schema.get("pattern") == _TIME_PATTERN:
            # A time: decimal text of 0 .. 2^63 - 1 (the bound is in the description;
            # JSON Schema has no numeric bound for a string).
            return st.integers(0, 2**63 - 1).map(str)
        if "pattern" in schema:
            return _pattern(schema["pattern"], low, high)
        return st.text(min_size=low, max_size=min(high or _TEXT_CAP, max(low, _TEXT_CAP)))
    if kind == "array":
        low = schema.get("minItems", 0)
        high = min(schema.get("maxItems", _LIST_CAP), max(low, _LIST_CAP))
        return st.lists(_from_schema(schema.get("items", {}), defs), min_size=low, max_size=high)
    if kind == "object":
        if "properties" not in schema:
            values = _from_schema(schema.get("additionalProperties", {"type": "null"}), defs)
            names = schema.get("propertyNames")
            keys = st.text(max_size=8) if names is None else _from_schema(names, defs)
            return st.dictionaries(keys, values, max_size=_LIST_CAP)
        return _object(schema, defs)
    return json_values  # an unconstrained field (Any)


_SIMPLE = re.compile(r"^\^\[([^\]]+)\]\{(\d+)(?:,(\d+))?\}\$$")


def _pattern(pattern: str, low: int, high: int | None) -> st.SearchStrategy[str]:
    """Strings matching a JSON schema pattern. ``^[class]{m,n}$`` (identifiers, hashes) is
    drawn as text over the class's alphabet, many times faster than from_regex."""
    simple = _SIMPLE.match(pattern)
    if simple is None:
        return st.from_regex(pattern, fullmatch=True).filter(
            lambda s: low <= len(s) <= (high or len(s))
        )
    alphabet = _char_class(simple.group(1))
    least = max(low, int(simple.group(2)))
    most = int(simple.group(3) or simple.group(2))
    if high is not None:
        most = min(most, high)
    return st.text(alphabet=alphabet, min_size=least, max_size=max(least, min(most, _TEXT_CAP)))


def _char_class(spec: str) -> str:
    chars, i = [], 0
    while i < len(spec):
        if i + 2 < len(spec) and spec[i + 1] == "-":
            chars += [chr(c) for c in range(ord(spec[i]), ord(spec[i + 2]) + 1)]
            i += 3
        else:
            chars.append(spec[i + 1] if spec[i] == "\\" else spec[i])
            i += 2 if spec[i] == "\\" else 1
    return "".join(chars)


def _object(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    required = set(schema.get("required", ()))
    fields = {name: _from_schema(sub, defs) for name, sub in schema["properties"].items()}

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out = {}
        for name, strategy in fields.items():
            if name in required or draw(st.booleans()):
                out[name] = draw(strategy)
        return out

    return build()


# --- one mutation of a valid payload ----------------------------------------------------------
Path = tuple[str | int, ...]
OPS = ("drop", "retype", "huge", "unicode", "nested", "non_finite")


@dataclass(frozen=True)
class Mutation:
    op: str
    path: Path  # where, in the payload
    value: Any = None  # what was put there (not for drop)

    @property
    def dotted(self) -> str:
        """The path as the codec's reasons name it (``cameras.0.status``)."""
        return ".".join(str(p) for p in self.path)


def paths(value: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every place in a JSON value that holds a value (dict keys and list indices)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield (*prefix, i)
            yield from paths(item, (*prefix, i))


def _retyped(old: Any) -> st.SearchStrategy[Any]:
    """A JSON value of another JSON type than ``old``."""
    options = {
        "null": st.none(),
        "bool": st.booleans(),
        "int": st.integers(-(2**40), 2**40),
        "float": st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f)),
        "str": st.text(max_size=8),
        "list": st.lists(st.integers(), max_size=2),
        "dict": st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    }
    current = {
        type(None): "null",
        bool: "bool",
        int: "int",
        float: "float",
        str: "str",
        list: "list",
        dict: "dict",
    }[type(old)]
    return st.one_of([s for name, s in options.items() if name != current])


_HUGE = st.one_of(
    st.integers(300_000, 400_000).map(lambda n: "x" * n),  # past the codec's size limit
    st.integers(1_000, 5_000).map(lambda n: "é" * n),
    st.just(10**400),
    st.just(-(10**400)),
    st.just(1.7976931348623157e308),
    st.integers(1_000, 3_000).map(lambda n: list(range(n))),
)


@dataclass(frozen=True)
class Raw:
    """A JSON literal written as is (``1e400``, which json.dumps cannot produce)."""

    text: str

    def json(self) -> str:
        return self.text


NON_FINITE = st.sampled_from(
    [float("nan"), float("inf"), float("-inf"), Raw("1e400"), Raw("-1e999"), Raw("9" * 400 + ".5")]
)


@st.composite
def mutations(draw: st.DrawFn, model: type[BaseModel]) -> tuple[dict[str, Any], Mutation]:
    """A valid payload for ``model`` and one change to one place in it."""
    payload = draw(instances(model))
    op = draw(st.sampled_from(OPS))
    every = list(paths(payload))
    assume(every)  # an empty object has nothing to change
    # Where the change says most: a NaN where a float (else a number) was, unicode where
    # text was; anywhere if there is no such place.
    kinds = {"non_finite": [(float,), (int,)], "unicode": [(str,)]}.get(op, [])
    for wanted in kinds:
        fitting = [p for p in every if type(get(payload, p)) in wanted]
        if fitting:
            every = fitting
            break
    path = draw(st.sampled_from(every))
    old = get(payload, path)
    value: Any = None
    if op == "retype":
        value = draw(_retyped(old))
    elif op == "huge":
        value = draw(_HUGE)
    elif op == "unicode":
        value = draw(st.text(min_size=1, max_size=40))  # surrogates included
    elif op == "nested":
        value = Nested(draw(st.integers(2, 3000)), draw(st.sampled_from("[{")))
    elif op == "non_finite":
        value = draw(NON_FINITE)
    return payload, Mutation(op, path, value)


@dataclass(frozen=True)
class Nested:
    """A value nested ``depth`` deep (written as text: json.dumps would recurse)."""

    depth: int
    bracket: str  # "[": [[[0]]]; "{": {"a":{"a":0}}

    def json(self) -> str:
        if self.bracket == "[":
            return "[" * self.depth + "0" + "]" * self.depth
        return '{"a":' * self.depth + "0" + "}" * self.depth


def get(value: Any, path: Path) -> Any:
    for part in path:
        value = value[part]
    return value


def apply(payload: dict[str, Any], mutation: Mutation) -> bytes:
    """The payload with the mutation made, as JSON bytes (NaN and Infinity as tokens)."""
    copy = json.loads(json.dumps(payload))
    parent = get(copy, mutation.path[:-1])
    last = mutation.path[-1]
    if mutation.op == "drop":
        del parent[last]
        return json.dumps(copy).encode()
    if isinstance(mutation.value, Nested | Raw):
        parent[last] = _PLACEHOLDER
        text = json.dumps(copy).replace(json.dumps(_PLACEHOLDER), mutation.value.json(), 1)
        return text.encode()
    parent[last] = mutation.value
    return json.dumps(copy).encode()


_PLACEHOLDER = "\x00nested\x00"


def subset(sent: Any, received: Any) -> bool:
    """Is everything ``sent`` said still in ``received``, unchanged (which may add the
    defaults of what was left out)? A key of a model it does not know is ignored, at any
    depth; every field a model knows is always encoded, so a missing key is such a one."""
    if isinstance(sent, dict):
        return isinstance(received, dict) and all(
            k not in received or subset(v, received[k]) for k, v in sent.items()
        )
    if isinstance(sent, list):
        return (
            isinstance(received, list)
            and len(sent) == len(received)
            and all(subset(a, b) for a, b in zip(sent, received, strict=True))
        )
    if isinstance(sent, bool) or isinstance(received, bool):
        return sent is received
    return bool(sent == received)


def as_model_dict(model: BaseModel) -> Any:
    return json.loads(model.model_dump_json())

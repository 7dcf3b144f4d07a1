"""Every counter key the gateway and the console can produce lands in a real metric family
(mesh/ops/metrics.py), never in a catch-all: the keys are read from the source code itself
(each ``counters[...]`` and ``dropped[...]``), their ``{placeholders}`` expanded over the
values each can take. A new key, or a placeholder this test does not know, fails it."""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.topics import TopicKind
from mesh.decide.activation import AckEffect
from mesh.decide.admission import REFUSAL_CODES
from mesh.ops.metrics import console_family, gateway_family
from mesh.protocol.models import (
    ActivationState,
    CancelOutcome,
    EscalationReason,
    SourceType,
    TriggerKind,
)

REPO = Path(__file__).resolve().parents[2]
ANY_CODE = "any_code"  # refusal codes are open (each check names its own)

# What each placeholder expression in a counter key can be, as the code computes it.
DOMAINS: dict[str, tuple[str, ...]] = {
    "event.kind": tuple(k.value for k in TriggerKind),
    "event.source.type": tuple(s.value for s in SourceType),
    "code": (ANY_CODE,),
    "exc.code": (ANY_CODE,),
    "problem.code": (ANY_CODE,),
    "effect": ("late", "unknown_activation"),  # coordinator.on_ack, a finished activation
    "result.value": tuple(e.value for e in AckEffect),
    "record.state": tuple(s.value for s in ActivationState if s is not ActivationState.PENDING),
    "reason.value": tuple(r.value for r in EscalationReason),
    "effect.split(':')[0]": (*(o.value for o in CancelOutcome), "untrusted"),
    "source.name": ("ble", "can", "queue"),
    "request.type": ("trigger", "cancel"),
    "kind": tuple(k.value for k in TopicKind),
    "parsed.kind.value": tuple(k.value for k in TopicKind),
    "exc.status": ("429", "503"),
}

GATEWAY = {
    "mesh/gateway/daemon.py": "",
    "mesh/gateway/coordinator.py": "",
    "mesh/gateway/forwarder.py": "",
    "mesh/gateway/cell_relay.py": "",
    "mesh/decide/presence.py": "presence.",  # the daemon reads them as presence.<key>
}
CONSOLE = {
    "mesh/dispatch/console/hub.py": "",
    "mesh/dispatch/console/app.py": "",
    "mesh/dispatch/console/state.py": "",
}


def _expand(node: ast.expr, where: str) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    assert isinstance(node, ast.JoinedStr), f"{where}: a counter key that is not a literal"
    parts: list[tuple[str, ...]] = []
    for value in node.values:
        if isinstance(value, ast.Constant):
            parts.append((str(value.value),))
        else:
            assert isinstance(value, ast.FormattedValue)
            expr = ast.unparse(value.value)
            assert expr in DOMAINS, f"{where}: placeholder {{{expr}}} has no known values"
            parts.append(DOMAINS[expr])
    return ["".join(p) for p in itertools.product(*parts)]


def _keys(path: str) -> Iterator[tuple[str, str]]:
    tree = ast.parse((REPO / path).read_text())
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        assigned: dict[str, ast.expr] = {}
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name):
                    assigned[target.id] = node.value
        for node in ast.walk(function):
            if not isinstance(node, ast.Subscript):
                continue
            counted = isinstance(node.value, ast.Attribute) and node.value.attr in (
                "counters",
                "dropped",
            )
            # The daemon adds the presence lane's counters to the ones it reads.
            counted |= function.name == "_observed_counters" and (
                isinstance(node.value, ast.Name) and node.value.id == "merged"
            )
            if not counted:
                continue
            where = f"{path}:{node.lineno}"
            key = node.slice
            if ast.unparse(key) == "f'presence.{key}'":
                continue  # the registry's own keys: mesh/decide/presence.py is scanned
            if isinstance(key, ast.Name):
                assert key.id in assigned, f"{where}: key {key.id} is not assigned here"
                key = assigned[key.id]
            for expanded in _expand(key, where):
                yield expanded, where


def _all(files: dict[str, str]) -> dict[str, str]:
    return {prefix + key: where for path, prefix in files.items() for key, where in _keys(path)}


def test_every_gateway_counter_key_has_a_family() -> None:
    keys = _all(GATEWAY)
    assert len(keys) > 100  # the scan found them (11 trigger kinds x 4 sources alone)
    assert {"escalations.offline", "presence.cameras", "cancel_acks.untrusted"} <= set(keys)
    unmapped = {key: where for key, where in keys.items() if gateway_family(key) is None}
    assert unmapped == {}


def test_every_console_counter_key_has_a_family() -> None:
    keys = _all(CONSOLE)
    assert {"pages.resynced", "logins.refused.429", "cameras.evicted"} <= set(keys)
    unmapped = {key: where for key, where in keys.items() if console_family(key) is None}
    assert unmapped == {}


@pytest.mark.parametrize("key", ["something.new", "acks.invented", "escalations", "x"])
def test_an_unknown_key_has_no_family(key: str) -> None:
    assert gateway_family(key) is None
    assert console_family(key) is None


def test_admission_refusal_codes_are_all_listed() -> None:
    """``triggers_refused`` shows REFUSAL_CODES at 0 from the start: they must be all of
    admission's codes."""
    tree = ast.parse((REPO / "mesh/decide/admission.py").read_text())
    used = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "Refused"
        and isinstance(node.args[0], ast.Constant)
    }
    assert used == set(REFUSAL_CODES)

"""docs/asyncapi.yaml: generated from the wire models and the topics, committed, and valid
for the AsyncAPI parser (tools/asyncapi/validate.mjs: @asyncapi/parser, pinned by its
package-lock.json, installed by `make test` with `npm ci`).

Under CI=true a missing validator (no node, or no `npm ci` in tools/asyncapi) fails the
tests that need it; elsewhere they skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.topics import Topics
from mesh.protocol.asyncapi import FLOWS, asyncapi, render
from mesh.protocol.schema import SCHEMA_MODELS
from tests.conftest import IN_CI

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "docs" / "asyncapi.yaml"
TOOLS = REPO / "tools" / "asyncapi"
VALIDATOR = TOOLS / "validate.mjs"


@pytest.fixture(scope="module")
def node() -> str:
    """node, with the pinned parser installed in tools/asyncapi/node_modules."""
    binary = shutil.which("node")
    installed = (TOOLS / "node_modules" / "@asyncapi" / "parser" / "package.json").is_file()
    if binary is None or not installed:
        message = (
            "node is not installed (apt-get install -y nodejs npm)"
            if binary is None
            else "the AsyncAPI validator is not installed: run `npm ci` in tools/asyncapi "
            "(`make test` does)"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return binary


def validate(node: str, path: Path) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [node, str(VALIDATOR), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return result.returncode, report


def test_asyncapi_export_matches_the_committed_document(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "asyncapi", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    generated = render(asyncapi())
    assert out.read_text() == generated
    assert COMMITTED.read_text() == generated, f"{COMMITTED} is out of date: run `make schema`"


def test_the_document_has_every_topic_and_payload() -> None:
    document = asyncapi()
    topics = Topics()
    channels = document["channels"]
    assert len(channels) == len(FLOWS)
    for kind, flow in FLOWS.items():
        channel = channels[kind.value]
        assert channel["address"] == flow.address(topics)
        # Every variable level of the address is a parameter, described.
        levels = [level[1:-1] for level in channel["address"].split("/") if level[0] == "{"]
        assert list(channel.get("parameters", {})) == levels
        assert set(channel["messages"]) == set(flow.messages)
    assert set(document["components"]["messages"]) == set(SCHEMA_MODELS)
    # Who sends and who receives each topic is an operation, tagged with the role.
    for kind, flow in FLOWS.items():
        for action, roles in (("send", flow.senders), ("receive", flow.receivers)):
            for role in roles:
                operation = document["operations"][f"{role}_{action}s_{kind.value}"]
                assert operation["action"] == action
                assert operation["tags"] == [{"$ref": f"#/components/tags/{role}"}]
                if action == "send":
                    assert operation["bindings"]["mqtt"]["retain"] is flow.retained


def test_another_prefix_gives_the_same_document_under_it() -> None:
    moved = asyncapi("agency/mesh/v2")
    assert moved["channels"]["ack"]["address"] == "agency/mesh/v2/ack/{issuer}/{camera}"
    assert moved["components"] == asyncapi()["components"]


def test_the_committed_document_is_valid_for_the_asyncapi_parser(node: str) -> None:
    code, report = validate(node, COMMITTED)
    problems = [d for d in report["diagnostics"] if d["severity"] in ("error", "warning")]
    assert code == 0
    assert report["valid"] is True
    assert (report["error"], report["warning"]) == (0, 0), problems
    # The parser read the whole document: every channel, operation and message.
    document = yaml.safe_load(COMMITTED.read_text())
    assert report["asyncapi"] == document["asyncapi"]
    assert report["channels"] == [c["address"] for c in document["channels"].values()]
    assert report["operations"] == list(document["operations"])
    assert report["messages"] == list(document["components"]["messages"])


def test_the_validator_reports_a_broken_document(node: str, tmp_path: Path) -> None:
    """It really checks: a message on a channel that does not carry it, and a payload schema
    that is no JSON Schema, are errors."""
    document = yaml.safe_load(COMMITTED.read_text())
    operation = document["operations"]["gateway_sends_cmd_camera"]
    operation["messages"] = [{"$ref": "#/channels/ack/messages/ack"}]
    document["components"]["schemas"]["CameraAck"]["properties"]["reason"]["type"] = "text"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(document, sort_keys=False))
    code, report = validate(node, broken)
    assert code == 1
    assert report["valid"] is False
    errors = {d["path"] for d in report["diagnostics"] if d["severity"] == "error"}
    assert "operations/gateway_sends_cmd_camera/messages/0" in errors, errors
    assert any(path.startswith("components/schemas/CameraAck") for path in errors), errors

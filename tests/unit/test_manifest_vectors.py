"""docs/vectors/recording-manifest.json and docs/schemas/recording-manifest.schema.json:
the committed files are what the code writes; the verifier reaches every stated finding;
an independent JOSE implementation (joserfc) verifies the camera's manifest.json with the
published key; the canonical bytes are what an independent serialiser writes; and the
manifest satisfies its schema."""

from __future__ import annotations

import base64
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # pinned, via openapi-spec-validator (dev)
import pytest
import yaml
from joserfc import jws as jose_jws
from joserfc.jwk import OKPKey
from typer.testing import CliRunner

from mesh.camera.recording.manifest import MANIFEST_SCHEMA_FILE, manifest_schema
from mesh.camera.recording.vectors import findings_of, manifest_vectors
from mesh.cli.app import app
from mesh.security.trust import TrustStore

DOCS = Path(__file__).resolve().parents[2] / "docs"
VECTORS: dict[str, Any] = json.loads((DOCS / "vectors" / "recording-manifest.json").read_text())
SCHEMA: dict[str, Any] = json.loads((DOCS / "schemas" / MANIFEST_SCHEMA_FILE).read_text())


def test_the_committed_vectors_and_schema_are_what_the_code_writes(tmp_path: Path) -> None:
    """Regenerate with `make schema` (trigger-mesh schema / vectors)."""
    assert json.loads(json.dumps(manifest_vectors())) == VECTORS
    assert manifest_schema() == SCHEMA
    result = CliRunner().invoke(app, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / MANIFEST_SCHEMA_FILE).read_text()) == SCHEMA


@pytest.fixture
def trust(tmp_path: Path) -> TrustStore:
    path = tmp_path / "trust.yaml"
    path.write_text(yaml.safe_dump(VECTORS["trust_store"]))
    return TrustStore.load(path)


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_the_verifier_reaches_each_stated_finding(case: dict[str, Any], trust: TrustStore) -> None:
    got = findings_of(case["files"], case["manifest_json"], trust)
    assert [list(f) for f in got] == case["findings"]


def test_an_independent_implementation_agrees_on_bytes_signature_and_hash() -> None:
    manifest_json: str = VECTORS["manifest_json"]
    assert hashlib.sha256(manifest_json.encode()).hexdigest() == VECTORS["manifest_sha256"]
    # canonical: sorted members, no whitespace, UTF-8, by the standard library's serialiser
    canonical = json.dumps(
        VECTORS["manifest"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert canonical == VECTORS["canonical"]
    camera = next(k for k in VECTORS["keys"] if k["name"] == "camera bwc-12a")
    x = base64.urlsafe_b64encode(bytes.fromhex(camera["public_key"])).rstrip(b"=").decode()
    key = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": x})
    message = json.loads(manifest_json)
    header = json.loads(base64.urlsafe_b64decode(message["protected"] + "=="))
    assert header == {"alg": "EdDSA", "kid": camera["key_id"], "typ": "trigger-mesh+json"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns that RFC 9864 deprecates "EdDSA"
        verified = jose_jws.deserialize_json(message, key, algorithms=["EdDSA"])
    assert verified.payload == canonical.encode("utf-8")


def test_the_manifest_satisfies_its_schema_and_the_schema_refuses_a_bad_one() -> None:
    jsonschema.validate(VECTORS["manifest"], SCHEMA)
    bad = json.loads(json.dumps(VECTORS["manifest"]))
    bad["segments"][0]["name"] = "../../etc/passwd"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)
    del bad["segments"][0]["name"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)

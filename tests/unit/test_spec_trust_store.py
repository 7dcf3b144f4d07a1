"""The trust store file as docs/security.md ("The trust store file") defines it: its
example loads, its JSON Schema is the committed one, and a bad file is refused on load
with an error naming the entry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mesh.documents import ConfigError
from mesh.security.keys import key_id, public_key_hex
from mesh.security.trust import (
    TRUST_STORE_SCHEMA_FILE,
    KeyRole,
    TrustStore,
    trust_store_schema,
)

REPO = Path(__file__).resolve().parents[2]
RFC8032 = Ed25519PrivateKey.from_private_bytes(
    bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
)
PUB = public_key_hex(RFC8032.public_key())
KID = key_id(RFC8032.public_key())


def _entry(**fields: str) -> str:
    body = {"key_id": KID, "role": "gateway", "subject": "gw-car-12", "public_key": PUB}
    body.update(fields)
    return "- " + "\n  ".join(f"{k}: {v}" for k, v in body.items()) + "\n"


def _load(tmp_path: Path, text: str) -> TrustStore:
    path = tmp_path / "trust.yaml"
    path.write_text(text)
    return TrustStore.load(path)


def test_the_documented_example_loads(tmp_path: Path) -> None:
    page = (REPO / "docs" / "security.md").read_text()
    section = page.split("### The trust store file", 1)[1]
    example = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert example is not None
    store = _load(tmp_path, example.group(1))
    assert set(store.keys) == {KID, "9ee202a85da63321"}
    gateway = store.keys[KID]
    assert (gateway.role, gateway.subject, gateway.public_key) == (
        KeyRole.GATEWAY,
        "gw-car-12",
        PUB,
    )
    assert gateway.not_after is not None
    assert gateway.not_after.utcoffset() is not None


def test_the_committed_schema_is_the_generated_one() -> None:
    committed = json.loads((REPO / "docs" / "schemas" / TRUST_STORE_SCHEMA_FILE).read_text())
    assert committed == trust_store_schema(), "out of date: run `make schema`"


def test_the_schema_requires_what_the_loader_needs() -> None:
    schema = trust_store_schema()
    assert schema["required"] == ["version", "keys"]
    key = schema["$defs"]["TrustedKey"]  # type: ignore[index]
    assert key["required"] == ["key_id", "role", "subject", "public_key"]
    assert key["additionalProperties"] is False


def test_a_key_listed_twice_is_refused(tmp_path: Path) -> None:
    """Before: the second entry silently replaced the first (another role, or subject)."""
    text = "version: 1\nkeys:\n" + _entry() + _entry(role="camera", subject="bwc-12a")
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert caught.value.key == "keys.1.key_id"
    assert KID in caught.value.problem
    assert "keys.0" in caught.value.problem


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("not_after", "2026-01-01T00:00:00", "timezone"),  # a time without its zone
        ("role", "admin", "'gateway', 'camera' or 'dispatch'"),
        ("public_key", "d75a98", "pattern"),
        ("colour", "red", "unknown key"),
    ],
)
def test_a_bad_entry_is_refused_naming_the_key(
    tmp_path: Path, field: str, value: str, problem: str
) -> None:
    """The error names the entry's place in the file and the key it describes."""
    text = "version: 1\nkeys:\n" + _entry(role="dispatch", subject="dispatch-1")
    text += _entry(**{"key_id": "0123456789abcdef", field: value})
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    message = str(caught.value)
    assert caught.value.key == f"keys.1.{field}"
    assert problem in message
    assert "key_id 0123456789abcdef" in message


def test_a_key_id_that_is_not_its_public_keys_is_refused(tmp_path: Path) -> None:
    text = "version: 1\nkeys:\n" + _entry(key_id="0123456789abcdef")
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert caught.value.key == "keys.0"
    assert f"does not match its public key ({KID})" in caught.value.problem


def test_another_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, "version: 2\nkeys: []\n")
    assert caught.value.key == "version"

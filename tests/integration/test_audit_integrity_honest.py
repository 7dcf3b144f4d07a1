"""The chain's verdict says what it proves (review item 2; docs/audit.md, "Verdicts").

A hash chain anyone can rebuild after an edit, and a checkpoint anyone can sign with a key
of their own. Before, ``audit verify`` and ``audit report`` called such a rebuilt log
"intact" when no key was pinned. Now only a log checked against the key the auditor gives
(``--pubkey``) is ``intact``; without one a chain that links and whose checkpoints verify
with the keys the log names is ``consistent``, and says that its signatures were not
checked against a trusted key. The insider here edits a record of a real gateway's log
(written over a real mosquitto), then re-hashes every record after it and re-signs every
checkpoint with a key of their own: without ``--pubkey`` the log is ``consistent``, never
``intact``; with the gateway's key it fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.decide.policy import Policy
from mesh.gateway.build import build_gateway, config_in_code
from mesh.journal.chain import CHECKPOINT_KIND, GENESIS
from mesh.journal.signer import CheckpointSigner
from mesh.journal.store import log_id_of
from mesh.protocol.models import ActivationState, TriggerKind
from mesh.security.keys import KeyFiles, new_gateway_key
from tests.harness import CENTER, UNIT, event, running_mesh
from tests.unit.test_audit_tamper import Row, forged, rewrite, rows_of

CLI = [sys.executable, "-m", "mesh"]


def cli(*args: str | Path) -> tuple[int, str]:
    done = subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def gateway_key(tmp_path: Path) -> KeyFiles:
    return new_gateway_key(tmp_path / "keys", "gw-car-12")


@pytest.fixture
async def gateway_log(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, gateway_key: KeyFiles
) -> Path:
    """A real gateway's signed log: one weapon draw, every camera in range started; the
    gateway's shutdown signs the end."""
    log = tmp_path / "car-12.db"
    gateway = build_gateway(
        config_in_code(UNIT, log, topics=topics, position=CENTER),
        Policy(),
        signer=CheckpointSigner.from_file(gateway_key.private),
        url=mosquitto.url,
        client_id=f"gw-{topics.prefix[:15]}",
    )
    async with running_mesh(mosquitto.url, topics, log, gateway=gateway) as mesh:
        record = await mesh.activate(event(TriggerKind.WEAPON_DRAW))
        assert record.state is ActivationState.CONFIRMED
    return log


def rebuild(log: Path, edit: tuple[str, str], signer: CheckpointSigner | None) -> int:
    """The insider: one record's body edited, then every record re-hashed from the start
    and every checkpoint re-signed by ``signer``, or (None) left as the gateway signed it.
    Returns the seq of the edited record."""
    old, new = edit
    rows = rows_of(log)
    edited = next(seq for seq, row in rows.items() if old in row[4])
    log_id = log_id_of(log)
    chain: list[Row] = []
    prev = GENESIS
    for seq, at_ns, kind, aid, body, _, _ in rows.values():
        text = body.replace(old, new, 1) if seq == edited else body
        if kind == CHECKPOINT_KIND and signer is not None:
            genuine = json.loads(body)
            retention = genuine.get("vouches") == "retention"
            resigned = signer.body(log_id, seq - 1, prev, genuine["reason"], retention=retention)
            text = json.dumps(resigned, separators=(",", ":"))
        row = forged(seq, prev, kind, aid, text, at_ns)
        chain.append(row)
        prev = row[6]
    rewrite(log, delete=list(rows), insert=chain)
    return edited


# The insider hides that a camera started: its ack becomes a refusal.
EDIT = ('"status":"started"', '"status":"rejected"')


def _report(log: Path, out: Path, *pin: str | Path) -> dict[str, object]:
    code, text = cli("audit", "report", log, "--out", out, *pin)
    assert code == 0, text
    document = json.loads((out / "report.json").read_text())
    assert isinstance(document, dict)
    return document


def test_the_genuine_log_is_intact_only_against_the_gateways_key(
    gateway_log: Path, gateway_key: KeyFiles, tmp_path: Path
) -> None:
    code, out = cli("audit", "verify", gateway_log, "--pubkey", gateway_key.public)
    assert code == 0, out
    assert "intact, every record signed by the pinned key" in out
    pinned = _report(gateway_log, tmp_path / "pinned", "--pubkey", gateway_key.public)
    assert pinned["integrity"]["verdict"] == "intact"  # type: ignore[index]
    assert str(pinned["headline"]).startswith("intact: ")

    code, out = cli("audit", "verify", gateway_log)
    assert code == 0, out
    assert "consistent, every record signed" in out
    assert "intact" not in out
    unpinned = _report(gateway_log, tmp_path / "unpinned")
    assert unpinned["integrity"]["verdict"] == "consistent"  # type: ignore[index]


def test_a_rebuilt_and_re_signed_chain_is_never_called_intact(
    gateway_log: Path, gateway_key: KeyFiles, tmp_path: Path
) -> None:
    insider = CheckpointSigner(Ed25519PrivateKey.generate())
    edited = rebuild(gateway_log, EDIT, insider)

    # Without a pinned key the chain links and every checkpoint verifies with the key it
    # names (the insider's): consistent, and the words say what that does not prove.
    document = _report(gateway_log, tmp_path / "unpinned")
    integrity = document["integrity"]
    assert isinstance(integrity, dict)
    assert integrity["verdict"] == "consistent"
    assert integrity["key_ids"] == [insider.key_id]
    headline = str(document["headline"])
    assert headline == integrity["headline"]
    assert headline.startswith("consistent: ")
    assert "signatures were not checked against a trusted key" in headline
    assert "intact" not in headline + str(integrity["summary"])
    html = (tmp_path / "unpinned" / "report.html").read_text()
    assert '<td class="warn">consistent: ' in html
    assert "intact" not in html
    code, out = cli("audit", "verify", gateway_log)
    assert code == 0, out
    assert "consistent" in out
    assert "intact" not in out

    # With the gateway's key, the insider's signatures fail.
    genuine = ["--pubkey", str(gateway_key.public)]
    code, out = cli("audit", "verify", gateway_log, "--all", *genuine)
    assert code == 1, out
    assert f"signed by key {insider.key_id}, not the pinned key {gateway_key.key_id}" in out
    assert "intact" not in out
    document = _report(gateway_log, tmp_path / "pinned", *genuine)
    integrity = document["integrity"]
    assert isinstance(integrity, dict)
    assert integrity["verdict"] == "tampered"
    assert {p["problem"] for p in integrity["problems"]} == {"wrong_key"}
    assert str(document["headline"]).startswith("tampered: broken at record ")
    assert '<td class="bad">tampered: ' in (tmp_path / "pinned" / "report.html").read_text()
    assert edited > 1  # the edit sat inside the chain, with records after it re-hashed


def test_a_rebuilt_chain_under_the_gateways_checkpoints_is_tampered_either_way(
    gateway_log: Path, gateway_key: KeyFiles, tmp_path: Path
) -> None:
    """Re-hashed, the gateway's own checkpoints left in place: they signed other hashes,
    so this is tampered with or without the key (it was before the verdicts too)."""
    rebuild(gateway_log, EDIT, None)
    for pin in ([], ["--pubkey", str(gateway_key.public)]):
        code, out = cli("audit", "verify", gateway_log, *pin)
        assert code == 1, out
        assert "bad_signature" in out
        integrity = _report(gateway_log, tmp_path / f"out{len(pin)}", *pin)["integrity"]
        assert integrity["verdict"] == "tampered"  # type: ignore[index]

"""``trigger-mesh keys`` in processes of their own: new, rotate (with an overlap), revoke and
list, and what a trust store written by them believes (tests/unit/test_signing.py: the
signatures and the trust store as pure functions)."""

from __future__ import annotations

import time
from pathlib import Path

from mesh.decide.rejection import Rejection
from mesh.protocol.models import RecordStart
from mesh.security.checks import Security
from mesh.security.signing import PayloadSigner
from mesh.security.trust import TrustStore
from tests.integration.test_cli import run
from tests.unit.test_signing import NS, _code, _command


def test_keys_cli_new_rotate_revoke_list(tmp_path: Path) -> None:
    trust, out = tmp_path / "trust.yaml", tmp_path / "keys"
    made = run(
        "keys",
        "new",
        "--role",
        "gateway",
        "--id",
        "gw-car-12",
        "--out",
        str(out),
        "--trust",
        str(trust),
    )
    assert made.returncode == 0, made.stderr
    assert (out / "gw-car-12.key").stat().st_mode & 0o777 == 0o600
    first = PayloadSigner.from_file(out / "gw-car-12.key")
    again = run(
        "keys",
        "new",
        "--role",
        "gateway",
        "--id",
        "gw-car-12",
        "--out",
        str(out),
        "--trust",
        str(trust),
    )
    assert again.returncode == 2  # never overwrites a key
    assert "refusing to overwrite" in again.stderr + again.stdout
    bad = run(
        "keys", "new", "--role", "toaster", "--id", "x", "--out", str(out), "--trust", str(trust)
    )
    assert bad.returncode == 2
    rotated = run(
        "keys",
        "rotate",
        "--role",
        "gateway",
        "--id",
        "gw-car-12",
        "--out",
        str(out),
        "--trust",
        str(trust),
        "--overlap-hours",
        "1",
    )
    assert rotated.returncode == 0, rotated.stderr
    assert (out / f"gw-car-12.{first.key_id}.key").exists()  # the old key is kept aside
    second = PayloadSigner.from_file(out / "gw-car-12.key")
    assert second.key_id != first.key_id
    store = TrustStore.load(trust)
    now = time.time_ns()
    security = Security(trust=store)
    # Both are believed during the overlap; the old one not after it.
    assert _check(security, first, _command(now), now) is None
    assert _check(security, second, _command(now), now) is None
    later = now + 2 * 3600 * NS
    assert _code(_check(security, first, _command(later), later)) == "key_expired"
    revoked = run("keys", "revoke", second.key_id, "--trust", str(trust))
    assert revoked.returncode == 0, revoked.stderr
    store = TrustStore.load(trust)
    # Checked just after the revocation time the store recorded: `keys revoke` stamps its
    # own clock, which may be seconds after `now` on a loaded machine.
    revoked_at = store.keys[second.key_id].revoked_at
    assert revoked_at is not None
    after = int(revoked_at.timestamp() * NS) + NS
    assert _code(_check(Security(trust=store), second, _command(after), after)) == ("key_revoked")
    listed = run("keys", "list", "--trust", str(trust))
    assert listed.returncode == 0
    assert first.key_id in listed.stdout
    assert "revoked" in listed.stdout


def _check(
    security: Security, signer: PayloadSigner, command: RecordStart, now: int
) -> Rejection | None:
    """A camera's check of ``command`` as ``signer`` sends it (verified, parsed, checked)."""
    return security.check_command(security.open(RecordStart, signer.seal(command).to_bytes()), now)

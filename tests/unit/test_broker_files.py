"""The locked-down broker's files (docs/broker.md), generated and checked without starting a
broker: the fleet, the ACL, the conf, the password file, certificates, the written bundle,
the fleet file and `broker-config`. Real mosquitto started with exactly that output, and
every forbidden connect, publish and subscribe refused: tests/integration/test_broker_config.py.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from bridge.broker.acl import CELL_LENGTH, GEOHASH_ALPHABET, FleetError, acl_blocks, region_cells
from bridge.broker.config import (
    MESSAGE_SIZE_LIMIT,
    BrokerConfigError,
    FleetSpec,
    Principal,
    password_line,
    render_acl,
    render_secure_conf,
    write_broker_config,
)
from bridge.broker.passwd import verify_line
from bridge.broker.pki import CertPair, PkiError, issue_client, issue_server, new_ca
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.config import load_camera_config, load_gateway_config
from mesh.decide.cells import ALPHABET, CELL_PRECISION, cell_of
from mesh.documents import ConfigError
from mesh.security.fleet_file import load_fleet

REPO = Path(__file__).resolve().parents[2]
GW, GW7 = "gw-unit-12", "gw-unit-7"
CAM, CAM2, CAM7 = "bwc-101", "bwc-102", "bwc-201"
DISPATCH, ARCHIVER = "dispatch-1", "archiver-1"
# Regions: CAM reads the cells of dr4e3 (central Philadelphia, 4.9 km square), the others
# the fleet's default dr4e (39 x 20 km). Only GW may broadcast on cmd/all.
HOME_CELL, NEAR_CELL, FAR_CELL = "dr4e39", "dr4ed0", "dr5reg"  # in dr4e3; in dr4e; New York
FLEET = FleetSpec(
    gateways=(Principal(GW, "unit-12", broadcast=True), Principal(GW7, "unit-7")),
    cameras=(
        Principal(CAM, "unit-12", cells=("dr4e3",)),
        Principal(CAM2, "unit-12"),
        Principal(CAM7, "unit-7"),
    ),
    dispatch=(DISPATCH,),
    archivers=(ARCHIVER,),
    camera_cells=("dr4e",),
)
T = Topics(FLEET.prefix)
P = T.prefix


# --- pure: the fleet, the ACL, the conf, the password file ------------------------------------
def _rules(user: str, spec: FleetSpec = FLEET) -> set[tuple[str, str]]:
    block = next(b for b in acl_blocks(spec) if b.user == user)
    return {(r.access, r.topic) for r in block.rules}


def test_acl_of_a_gateway() -> None:
    assert _rules(GW) == {
        ("write", f"{P}/cmd/unit/unit-12"),
        ("readwrite", f"{P}/cmd/cell/+"),
        ("write", f"{P}/cmd/camera/+"),
        ("write", f"{P}/cmd/all"),
        ("readwrite", f"{P}/trigger/unit-12"),
        ("read", f"{P}/cancel/unit-12"),
        ("read", f"{P}/ack/{GW}/+"),
        ("read", f"{P}/recording/{GW}/+"),
        ("read", f"{P}/presence/+"),
        ("readwrite", f"{P}/receipt/unit-12"),
        ("readwrite", f"{P}/activation/unit-12/+"),
        ("write", f"{P}/escalation/+"),
        ("readwrite", f"{P}/gateway/{GW}"),
        ("write", f"{P}/log/+/records/{GW}"),
        ("read", f"{P}/log/+/synced/{GW}"),
    }


def test_acl_of_a_gateway_that_may_not_broadcast() -> None:
    assert ("write", f"{P}/cmd/all") not in _rules(GW7)
    assert _rules(GW7) | {("write", f"{P}/cmd/all")} == {
        (access, topic.replace("unit-12", "unit-7").replace(GW, GW7))
        for access, topic in _rules(GW)
    }


def test_acl_of_a_camera_dispatch_and_archiver() -> None:
    region = {("read", f"{P}/cmd/cell/dr4e3{c}") for c in GEOHASH_ALPHABET}
    assert _rules(CAM) == region | {
        ("read", f"{P}/cmd/all"),
        ("read", f"{P}/cmd/unit/unit-12"),
        ("read", f"{P}/cmd/camera/{CAM}"),
        ("write", f"{P}/ack/+/{CAM}"),
        ("write", f"{P}/recording/+/{CAM}"),
        ("readwrite", f"{P}/presence/{CAM}"),
    }
    assert _rules(DISPATCH) == {
        ("read", f"{P}/#"),
        ("write", f"{P}/trigger/+"),
        ("write", f"{P}/cancel/+"),
    }
    assert _rules(ARCHIVER) == {
        ("read", f"{P}/trigger/+"),
        ("read", f"{P}/receipt/+"),
        ("read", f"{P}/activation/+/+"),
        ("read", f"{P}/ack/+/+"),
        ("read", f"{P}/escalation/+"),
        ("read", f"{P}/log/+/records/+"),
        ("write", f"{P}/log/+/synced/+"),
    }


def test_camera_regions() -> None:
    assert len(_rules(CAM2)) == 6 + 1024  # the fleet's default region: all of dr4e
    everywhere = FleetSpec(cameras=(Principal(CAM, "u"),))
    assert ("read", f"{P}/cmd/cell/+") in _rules(CAM, everywhere)  # no region: every cell
    assert region_cells(("dr4e3", "dr4e39", "dr4e3")) == tuple(
        sorted(f"dr4e3{c}" for c in GEOHASH_ALPHABET)
    )
    # The ACL's grid is the one cameras compute their cell topic with.
    assert (CELL_LENGTH, GEOHASH_ALPHABET) == (CELL_PRECISION, ALPHABET)
    assert cell_of(39.952583, -75.165222) in region_cells(("dr4e3",))
    text = render_acl(FLEET)
    # A camera's own topics come before its region's cells (mosquitto walks them in order).
    cam_block = text.split(f"user {CAM}\n")[1].split("\n\n")[0].splitlines()
    assert cam_block[0] == f"topic read {P}/cmd/all"
    assert all("cmd/cell/" in line for line in cam_block[6:])


def test_rendered_acl_grants_nothing_to_anonymous() -> None:
    text = render_acl(FLEET)
    head, _, _ = text.partition("\nuser ")
    # Rules before the first `user` line would be the anonymous user's.
    assert all(not line or line.startswith("#") for line in head.splitlines())
    assert "pattern" not in text
    assert f"user {GW}\ntopic write {P}/cmd/unit/unit-12\n" in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("user ")]
    assert users == list(FLEET.names)


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        (
            lambda: FleetSpec(cameras=(Principal(GW, "u"),), gateways=(Principal(GW, "u"),)),
            "cameras.0.id",
        ),
        (lambda: FleetSpec(dispatch=("d", "d")), "dispatch.1"),
        (lambda: FleetSpec(cameras=(Principal("bad id", "u"),)), "cameras.0.id"),
        (lambda: FleetSpec(cameras=(Principal("cam+", "u"),)), "cameras.0.id"),
        (lambda: FleetSpec(cameras=(Principal("cam", None),)), "cameras.0.unit"),
        (lambda: FleetSpec(gateways=(Principal("gw", "u/#"),)), "gateways.0.id"),
        # The sender level of logs sent without a gateway (bridge/topics.py).
        (lambda: FleetSpec(gateways=(Principal("_unnamed", "u"),)), "gateways.0.id"),
        (lambda: FleetSpec(prefix="mesh/#"), "prefix"),
        (lambda: FleetSpec(cameras=(Principal("c", "u", cells=("dr5",)),)), "cameras.0.cells"),
        (lambda: FleetSpec(cameras=(Principal("c", "u", cells=("dr5a",)),)), "cameras.0.cells"),
        (lambda: FleetSpec(cameras=(Principal("c", "u", cells=()),)), "cameras.0.cells"),
        (lambda: FleetSpec(camera_cells=("dr4e", "dr4s", "dr47")), "camera_cells"),
        (lambda: FleetSpec(gateways=(Principal("g", "u", cells=("dr4e",)),)), "gateways.0.cells"),
        (lambda: FleetSpec(cameras=(Principal("c", "u", broadcast=True),)), "cameras.0.broadcast"),
    ],
)
def test_fleet_spec_refuses_bad_ids(spec: Any, key: str) -> None:
    with pytest.raises(FleetError) as caught:
        spec()
    assert caught.value.key == key


def test_secure_conf() -> None:
    files = {
        "cafile": Path("/b/ca.crt"),
        "certfile": Path("/b/server/broker.crt"),
        "keyfile": Path("/b/server/broker.key"),
        "acl_file": Path("/b/acl"),
    }
    cert = render_secure_conf(port=8883, bind="0.0.0.0", **files).splitlines()
    password = render_secure_conf(
        port=8883, bind="0.0.0.0", auth="password", password_file=Path("/b/passwd"), **files
    ).splitlines()
    for lines in (cert, password):
        assert "allow_anonymous false" in lines
        assert "allow_anonymous true" not in lines
        assert "set_tcp_nodelay true" in lines
        assert "per_listener_settings false" in lines
        assert "listener 8883 0.0.0.0" in lines
        assert "tls_version tlsv1.2" in lines
        assert "acl_file /b/acl" in lines
        assert "keyfile /b/server/broker.key" in lines
    assert {"require_certificate true", "use_identity_as_username true"} <= set(cert)
    assert not any(line.startswith("password_file") for line in cert)
    assert {"require_certificate false", "password_file /b/passwd"} <= set(password)
    # Per-client limits: a stalled reader, a flood, an oversized payload.
    assert {
        "max_inflight_messages 1000",
        "max_queued_messages 10000",
        f"max_queued_bytes {64 * 1024 * 1024}",
        f"message_size_limit {MESSAGE_SIZE_LIMIT}",
    } <= set(cert)
    # ...and no legitimate payload is over it (the archive's own limits).
    from mesh.archive.intake import MAX_RECORD_BYTES
    from mesh.protocol.log_wire import BATCH_MAX_BYTES

    assert max(MAX_RECORD_BYTES, BATCH_MAX_BYTES) < MESSAGE_SIZE_LIMIT
    with pytest.raises(BrokerConfigError, match="absolute"):
        render_secure_conf(port=1, bind="::", **{**files, "acl_file": Path("acl")})
    with pytest.raises(BrokerConfigError, match="line breaks"):
        render_secure_conf(
            port=1, bind="::", **{**files, "acl_file": Path("/a\nallow_anonymous true")}
        )
    with pytest.raises(BrokerConfigError, match="password_file"):
        render_secure_conf(port=1, bind="::", auth="password", **files)


def test_password_line_is_mosquittos_pbkdf2_sha512() -> None:
    salt = bytes(range(12))
    line = password_line("bwc-101", "s3cret", iterations=101, salt=salt)
    user, _, stored = line.partition(":")
    _, version, iterations, salt_b64, hash_b64 = stored.split("$")
    assert (user, version, iterations) == ("bwc-101", "7", "101")
    import base64

    assert base64.b64decode(salt_b64) == salt
    expected = hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, 101, 64)
    assert base64.b64decode(hash_b64) == expected
    assert verify_line(password_line("u", "pw"), "pw")
    assert not verify_line(password_line("u", "pw"), "pW")
    with pytest.raises(ValueError, match="user"):
        password_line("a:b", "pw")


# --- pure-ish: certificates and the written bundle ---------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_certificates(tmp_path: Path) -> None:
    ca = new_ca(tmp_path)
    assert (ca.cert, ca.key) == (tmp_path / "ca.crt", tmp_path / "private" / "ca.key")
    assert _mode(ca.key) == 0o600
    with pytest.raises(PkiError, match="refusing to replace a CA"):
        new_ca(tmp_path)
    server = issue_server(ca, tmp_path / "server", "broker", ["broker.test", "10.0.0.7"])
    client = issue_client(ca, tmp_path / "clients", CAM)
    assert _mode(server.key) == 0o600
    assert _mode(client.key) == 0o600
    s = x509.load_pem_x509_certificate(server.cert.read_bytes())
    san = s.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.test"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    eku = s.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    c = x509.load_pem_x509_certificate(client.cert.read_bytes())
    assert c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CAM
    eku = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # OpenSSL (through Python) accepts the chain for its purpose.
    context = ssl.create_default_context(cafile=ca.cert)
    context.load_cert_chain(client.cert, client.key)
    with pytest.raises(PkiError):
        issue_client(ca, tmp_path, "../escape")
    with pytest.raises(PkiError):
        issue_server(ca, tmp_path, "srv", ["not a host!"])


def test_an_agency_rsa_ca_without_key_identifier_can_issue(tmp_path: Path) -> None:
    import datetime as dt

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Agency Root")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    ca = CertPair(tmp_path / "agency.crt", tmp_path / "agency.key")
    ca.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ca.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    client = issue_client(ca, tmp_path / "clients", CAM)
    issued = x509.load_pem_x509_certificate(client.cert.read_bytes())
    issued.verify_directly_issued_by(cert)
    context = ssl.create_default_context(cafile=ca.cert)
    context.load_cert_chain(client.cert, client.key)


def test_written_bundle(tmp_path: Path) -> None:
    out = tmp_path / "broker"
    bundle = write_broker_config(out, FLEET, hosts=("broker.test",), run_as="root")
    for name in ("mosquitto.conf", "acl", "ca.crt", "private/ca.key", "server/broker.crt"):
        assert (out / name).is_file(), name
    assert _mode(out / "private") == 0o700
    assert _mode(out / "clients") == 0o700
    for secret in (out / "private/ca.key", bundle.server.key, bundle.acl):
        assert _mode(secret) == 0o600, secret
    for name in FLEET.names:
        pair = bundle.client_certs[name]
        assert _mode(pair.key) == 0o600
        url = bundle.url_for(name)
        assert BrokerUrl.parse(bundle.url_files[name].read_text()) == url
        assert (url.scheme, url.host, url.port) == ("mqtts", "broker.test", 8883)
        assert (url.cert_file, url.key_file, url.ca_file) == (
            str(pair.cert),
            str(pair.key),
            str(out / "ca.crt"),
        )
    conf = bundle.conf.read_text()
    assert f"acl_file {out}/acl" in conf
    assert "user root" in conf
    assert bundle.acl.read_text() == render_acl(FLEET)
    with pytest.raises(BrokerConfigError, match="--force"):
        write_broker_config(out, FLEET)
    ca_before = (out / "ca.crt").read_bytes()
    key_before = bundle.client_certs[CAM].key.read_bytes()
    again = write_broker_config(out, FLEET, auth="password", force=True, run_as="root")
    assert (out / "ca.crt").read_bytes() == ca_before  # the CA stays
    assert bundle.client_certs[CAM].key.read_bytes() == key_before  # not touched by password mode
    assert again.password_file is not None
    assert _mode(again.password_file) == 0o600
    for name in FLEET.names:
        password = again.credentials[name].read_text().strip()
        assert _mode(again.credentials[name]) == 0o600
        assert _mode(again.url_files[name]) == 0o600  # it holds the password
        url = BrokerUrl.parse(again.url_files[name].read_text())
        assert (url.username, url.password, url.cert_file) == (name, password, None)
    lines = again.password_file.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == list(FLEET.names)
    assert verify_line(lines[0], again.credentials[FLEET.names[0]].read_text().strip())


@pytest.mark.parametrize(
    "options",
    [
        {"hosts": ("bad host!",)},
        {"hosts": ()},
        {"port": 0},
        {"bind": "0.0.0.0\nallow_anonymous true"},
        {"run_as": "root\nallow_anonymous true"},
        {"auth": "kerberos"},
    ],
)
def test_bad_options_write_nothing(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(BrokerConfigError):
        write_broker_config(tmp_path / "b", FLEET, **options)
    assert not (tmp_path / "b").exists()


def test_a_given_ca_is_used_and_its_certificate_copied(tmp_path: Path) -> None:
    ca = new_ca(tmp_path / "agency")
    bundle = write_broker_config(tmp_path / "b", FLEET, ca=ca, run_as="root")
    assert bundle.ca_cert == tmp_path / "b" / "ca.crt"
    assert bundle.ca_cert.read_bytes() == ca.cert.read_bytes()
    assert not (tmp_path / "b" / "private").exists()  # the CA's key stays where it is
    # A directory that already trusts another CA is not silently switched.
    new_ca(tmp_path / "c")
    with pytest.raises(BrokerConfigError, match="another CA"):
        write_broker_config(tmp_path / "c", FLEET, ca=ca, run_as="root")
    with pytest.raises(BrokerConfigError, match="not belong"):
        write_broker_config(
            tmp_path / "d", FLEET, ca=CertPair(ca.cert, tmp_path / "c/private/ca.key")
        )


def test_broker_files_are_handed_to_the_broker_user(tmp_path: Path) -> None:
    bundle = write_broker_config(tmp_path / "b", FLEET, auth="password")
    try:
        entry = pwd.getpwnam("mosquitto")
    except KeyError:
        entry = None
    if os.geteuid() != 0 or entry is None:
        # Not ours to do: the installer is told what to run.
        assert not bundle.ownership_done
        steps = bundle.ownership_steps()
        assert str(bundle.server.key) in steps[0]
        assert str(bundle.var_dir) in steps[1]
        return
    assert bundle.ownership_done
    assert bundle.ownership_steps() == []
    for path in bundle.broker_reads:
        info = path.stat()
        assert (info.st_uid, info.st_gid, _mode(path)) == (0, entry.pw_gid, 0o640), path
    assert bundle.var_dir.stat().st_uid == entry.pw_uid
    # Device secrets are not the broker's business.
    assert all(p.stat().st_gid == 0 and _mode(p) == 0o600 for p in bundle.credentials.values())


# --- the fleet file and the command line ------------------------------------------------------
def test_example_fleet_matches_the_example_devices() -> None:
    spec = load_fleet(REPO / "configs/fleet.yaml")
    gateway, _ = load_gateway_config(REPO / "configs/gateway.yaml")
    camera = load_camera_config(REPO / "configs/camera.yaml")
    gateways = {(g.name, g.unit) for g in spec.gateways}
    assert (gateway.gateway_id or f"gw-{gateway.unit}", gateway.unit) in gateways
    member = next(c for c in spec.cameras if (c.name, c.unit) == (camera.camera_id, camera.unit))
    assert spec.prefix == gateway.topic_prefix == camera.topic_prefix
    # The example camera is inside its region, and so is the car.
    region = spec.region_of(member)
    assert region is not None
    assert camera.position is not None
    assert gateway.position is not None
    for where in (camera.position, gateway.position):
        assert cell_of(where.lat, where.lon) in region_cells(region)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("cameras: [{id: 'bad id', unit: u}]", "cameras.0.id"),
        ("cameras: [{id: cam}]", "cameras.0.unit"),
        ("cameras: [{id: cam, unit: u, role: body}]", "cameras.0.role"),
        ("dispatch: [d]\narchivers: [d]", "archivers.0"),
        ("prefix: 'mesh/#'\ndispatch: [d]", "prefix"),
        ("gateway: []", "gateway"),
        ("cameras: [{id: c, unit: u, cells: [dr5]}]", "cameras.0.cells"),
        ("cameras: [{id: c, unit: u, broadcast: true}]", "cameras.0.broadcast"),
        ("gateways: [{id: g, unit: u, cells: [dr5r]}]", "gateways.0.cells"),
        ("gateways: [{id: g, unit: u, broadcast: maybe}]", "gateways.0.broadcast"),
        ("camera_cells: [dr4e, dr4s, dr47]\ndispatch: [d]", "camera_cells"),
        ("camera_cells: 'dr4e'\ndispatch: [d]", "camera_cells"),
    ],
)
def test_bad_fleet_files_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_fleet(path)
    assert (caught.value.path, caught.value.key) == (str(path), key)


runner = CliRunner()


def _cli(*args: str) -> Any:
    from mesh.cli.app import app

    return runner.invoke(app, list(args))


def test_cli_writes_refuses_to_overwrite_and_forces(tmp_path: Path) -> None:
    out = tmp_path / "broker"
    args = ("broker-config", "--out", str(out), "--fleet", str(REPO / "configs/fleet.yaml"))
    first = _cli(*args, "--host", "mqtt.example.org", "--host", "10.1.2.3", "--run-as", "root")
    assert first.exit_code == 0, first.output
    assert f"mosquitto -c {out}/mosquitto.conf" in first.output
    assert "clients/NAME.url" in first.output
    cert = x509.load_pem_x509_certificate((out / "server/broker.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.example.org"]
    url = BrokerUrl.parse((out / "clients/bwc-101.url").read_text())
    assert (url.host, url.cert_file) == ("mqtt.example.org", str(out / "clients/bwc-101.crt"))
    conf = (out / "mosquitto.conf").read_text()
    ca = (out / "ca.crt").read_bytes()

    refused = _cli(*args)
    assert refused.exit_code == 2
    assert "--force" in refused.output
    assert (out / "mosquitto.conf").read_text() == conf

    forced = _cli(*args, "--force", "--auth", "password", "--port", "9883", "--run-as", "root")
    assert forced.exit_code == 0, forced.output
    assert "listener 9883 0.0.0.0" in (out / "mosquitto.conf").read_text()
    assert (out / "credentials/gw-car-12.password").is_file()
    assert (out / "ca.crt").read_bytes() == ca


def test_cli_usage_errors(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("cameras:\n  - {id: bwc-1, unit: car-1}\n  - {id: bwc-1, unit: car-2}\n")
    bad = _cli("broker-config", "--out", str(tmp_path / "b"), "--fleet", str(fleet))
    assert bad.exit_code == 2
    assert str(fleet) in bad.output
    assert "cameras.1.id" in bad.output
    assert not (tmp_path / "b").exists()
    good = str(REPO / "configs/fleet.yaml")
    for extra in (["--auth", "kerberos"], ["--ca-cert", str(fleet)]):
        result = _cli("broker-config", "--out", str(tmp_path / "b"), "--fleet", good, *extra)
        assert result.exit_code == 2, (extra, result.output)
    missing = _cli("broker-config", "--out", str(tmp_path / "b"), "--fleet", str(tmp_path / "x"))
    assert missing.exit_code == 2
    assert "cannot read" in missing.output

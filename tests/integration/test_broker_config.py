"""The locked-down broker (docs/broker.md): generated files, then real mosquitto started with
exactly that output, and every forbidden connect, publish and subscribe refused.

How "never arrives" is proved without long sleeps: the forbidden message is published
first and acknowledged by the broker (mosquitto routes a message to every subscriber
before it sends the PUBACK), then an allowed one; mosquitto delivers to each subscriber in
order, so once the allowed one has arrived the forbidden one would have arrived before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import pwd
import shutil
import ssl
import stat
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from typer.testing import CliRunner

from bridge.broker.acl import (
    CELL_LENGTH,
    GEOHASH_ALPHABET,
    FleetError,
    acl_blocks,
    region_cells,
)
from bridge.broker.config import (
    MAX_QUEUED_BYTES,
    MESSAGE_SIZE_LIMIT,
    AuthMode,
    BrokerBundle,
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
from bridge.mqtt.client import LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess, free_port
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics, shared
from mesh.config import ConfigError, load_camera_config, load_gateway_config
from mesh.decide.cells import ALPHABET, CELL_PRECISION, cell_of
from mesh.protocol.codec import encode
from mesh.security.fleet_file import load_fleet
from tests.conftest import require_mosquitto

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
SUCCESS, NOT_AUTHORIZED = 0x00, 0x87


# --- brokers ----------------------------------------------------------------------------------
def _serve(out: Path, auth: AuthMode, **options: Any) -> Iterator[BrokerBundle]:
    """Generate a bundle on a free loopback port and run mosquitto with its conf as is.
    run_as="root": pytest's temporary directories are private to the user running the
    tests, so a broker that dropped to `mosquitto` could not read them (the drop itself
    is tested by test_the_default_bundle_runs_after_the_privilege_drop)."""
    binary = require_mosquitto()
    port = free_port()
    bundle = write_broker_config(
        out, FLEET, port=port, bind="127.0.0.1", auth=auth, run_as="root", **options
    )
    broker = MosquittoProcess(binary, port, out, config=bundle.conf)
    broker.start()
    try:
        yield bundle
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def cert_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerBundle]:
    yield from _serve(tmp_path_factory.mktemp("broker-cert"), "cert")


@pytest.fixture(scope="module")
def password_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerBundle]:
    yield from _serve(tmp_path_factory.mktemp("broker-password"), "password")


# --- a thin client ----------------------------------------------------------------------------
def _code(reason: Any) -> int:
    return int(getattr(reason, "value", reason))


class Peer:
    """An aiomqtt client that keeps what it receives and the broker's reason codes."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.inbox: list[tuple[str, bytes]] = []
        self._arrived = asyncio.Event()
        self._pubacks: dict[int, asyncio.Future[int]] = {}
        paho = client._client
        inner = paho.on_publish

        # aiomqtt drops the PUBACK's reason code (MQTT 5 says "not authorized" there).
        def on_publish(c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
            waiter = self._pubacks.pop(mid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(_code(reason))
            inner(c, userdata, mid, reason, props)

        paho.on_publish = on_publish

    async def subscribe(self, topic_filter: str) -> int:
        """The SUBACK's code: 0-2 granted QoS, >= 0x80 refused."""
        codes = await self.client.subscribe(topic_filter, qos=1, timeout=5)
        return _code(codes[0])

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Publish at QoS 1; the PUBACK's reason code (always 0 in MQTT 3.1.1)."""
        info = self.client._client.publish(topic, payload, qos=1, retain=retain)
        assert info.rc == 0, f"publish to {topic} not sent: {info.rc}"
        # Registered before the next await, so the PUBACK cannot be handled before it.
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pubacks[info.mid] = waiter
        return await asyncio.wait_for(waiter, 5)

    async def until(
        self, topic: str, payload: bytes, timeout_s: float = 5
    ) -> list[tuple[str, bytes]]:
        """Wait for this message; everything received up to it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (topic, payload) not in self.inbox:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise AssertionError(
                    f"{topic} {payload!r} never arrived; got {self.inbox}"
                ) from None
        return list(self.inbox)

    async def _read(self) -> None:
        async for message in self.client.messages:
            payload = message.payload
            data = (
                bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
            )
            self.inbox.append((message.topic.value, data))
            self._arrived.set()


def _client(
    url: BrokerUrl,
    *,
    v5: bool = True,
    timeout_s: float = 5,
    client_id: str | None = None,
    **kw: Any,
) -> aiomqtt.Client:
    return aiomqtt.Client(
        url.host,
        url.port,
        username=url.username,
        password=url.password,
        identifier=client_id or f"t-{uuid.uuid4().hex[:10]}",
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        tls_context=url.tls_context(),
        timeout=timeout_s,
        **kw,
    )


@asynccontextmanager
async def peer(
    url: BrokerUrl, *, v5: bool = True, timeout_s: float = 5, session: str | None = None
) -> AsyncIterator[Peer]:
    """``session``: resume (or start) the persistent session of this client id."""
    kw: dict[str, Any] = {}
    if session is not None:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 300
        kw = {"client_id": session, "clean_start": False, "properties": properties}
    async with _client(url, v5=v5, timeout_s=timeout_s, **kw) as client:
        p = Peer(client)
        reader = asyncio.create_task(p._read())
        try:
            yield p
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


async def refusal(url: BrokerUrl, timeout_s: float = 1.0) -> str:
    """Why connecting failed; '' if it connected. (A broker that drops the TLS session
    after the handshake leaves aiomqtt waiting for its CONNACK: a timeout.)"""
    try:
        async with peer(url, timeout_s=timeout_s):
            return ""
    except (aiomqtt.MqttError, ssl.SSLError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}" + (f" rc={exc.rc}" if hasattr(exc, "rc") else "")


async def tls_alert(url: BrokerUrl) -> str:
    """The TLS alert the broker answers a client's certificate with (TLS 1.3 sends it
    after the handshake, so read once)."""
    try:
        reader, writer = await asyncio.open_connection(
            url.host, url.port, ssl=url.tls_context(), server_hostname=url.host
        )
    except ssl.SSLError as exc:
        return str(exc.reason)
    try:
        await asyncio.wait_for(reader.read(1), 2)
    except ssl.SSLError as exc:
        return str(exc.reason)
    finally:
        writer.close()
    return ""


def tag() -> str:
    return uuid.uuid4().hex[:8]


# --- pure: the fleet, the ACL, the conf, the password file ------------------------------------
def _rules(user: str, spec: FleetSpec = FLEET) -> set[tuple[str, str]]:
    block = next(b for b in acl_blocks(spec) if b.user == user)
    return {(r.access, r.topic) for r in block.rules}


def test_acl_of_a_gateway() -> None:
    assert _rules(GW) == {
        ("write", f"{P}/cmd/unit/unit-12"),
        ("write", f"{P}/cmd/cell/+"),
        ("write", f"{P}/cmd/camera/+"),
        ("write", f"{P}/cmd/all"),
        ("readwrite", f"{P}/trigger/unit-12"),
        ("read", f"{P}/cancel/unit-12"),
        ("read", f"{P}/ack/{GW}/+"),
        ("read", f"{P}/presence/+"),
        ("readwrite", f"{P}/receipt/unit-12"),
        ("readwrite", f"{P}/activation/unit-12/+"),
        ("write", f"{P}/escalation/+"),
        ("readwrite", f"{P}/gateway/{GW}"),
        ("write", f"{P}/log/+/records"),
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
        ("read", f"{P}/log/+/records"),
        ("write", f"{P}/log/+/synced/+"),
    }


def test_camera_regions() -> None:
    assert len(_rules(CAM2)) == 5 + 1024  # the fleet's default region: all of dr4e
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
    assert all("cmd/cell/" in line for line in cam_block[5:])


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


def test_our_check_reads_mosquitto_passwd_lines(tmp_path: Path) -> None:
    """The format matches the reference tool's (when it is installed; the project never
    needs it: the password-mode broker below accepts our lines)."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    import subprocess

    subprocess.run([tool, "-b", "-c", str(tmp_path / "pw"), "cam", "pa55"], check=True)
    line = (tmp_path / "pw").read_text().strip()
    assert verify_line(line, "pa55")
    assert not verify_line(line, "pa56")


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


def test_the_default_bundle_runs_after_the_privilege_drop() -> None:
    """As root, mosquitto drops to `mosquitto` before it reads its key, password file and
    ACL: the default bundle (run_as="mosquitto") must still start and serve."""
    binary = require_mosquitto()
    if os.geteuid() != 0:
        pytest.skip("only root drops privileges")
    try:
        broker_uid = pwd.getpwnam("mosquitto").pw_uid
    except KeyError:
        pytest.skip("no mosquitto user")
    # Not pytest's tmp_path: that is private to root; a broker's directory is not.
    out = Path(tempfile.mkdtemp(prefix="tm-broker-"))
    try:
        out.chmod(0o755)
        port = free_port()
        bundle = write_broker_config(out, FLEET, port=port, bind="127.0.0.1", auth="password")
        assert "user mosquitto" in bundle.conf.read_text()
        broker = MosquittoProcess(binary, port, out, config=bundle.conf)
        broker.start()
        try:
            assert broker.process is not None
            status = Path(f"/proc/{broker.process.pid}/status").read_text()
            uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            assert int(uid_line.split()[1]) == broker_uid
            assert asyncio.run(refusal(bundle.url_for(CAM))) == ""
        finally:
            broker.stop()
    finally:
        shutil.rmtree(out, ignore_errors=True)


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


# --- a real broker: who may connect -----------------------------------------------------------
async def test_only_fleet_certificates_connect(cert_broker: BrokerBundle, tmp_path: Path) -> None:
    good = cert_broker.url_for(CAM)
    other_ca = new_ca(tmp_path / "other")
    stranger = issue_client(other_ca, tmp_path / "other", CAM)  # the right name, the wrong CA
    no_cert = dataclasses.replace(good, cert_file=None, key_file=None)
    foreign = dataclasses.replace(good, cert_file=str(stranger.cert), key_file=str(stranger.key))
    cases = {
        "fleet certificate": good,
        "no client certificate": no_cert,
        "no certificate, a username and password": dataclasses.replace(
            no_cert, username=CAM, password="guess"
        ),
        "client certificate from another CA": foreign,
        "server checked against another CA": dataclasses.replace(good, ca_file=str(other_ca.cert)),
        "plain mqtt:// to the TLS port": BrokerUrl("mqtt", "127.0.0.1", cert_broker.port),
        "plain mqtt:// with a username": BrokerUrl("mqtt", "127.0.0.1", cert_broker.port, CAM, "x"),
    }
    outcomes = await asyncio.gather(*(refusal(url) for url in cases.values()))
    result = dict(zip(cases, outcomes, strict=True))
    assert result.pop("fleet certificate") == ""
    for case, why in result.items():
        assert why, f"{case}: connected"
    assert "CERTIFICATE_VERIFY_FAILED" in result["server checked against another CA"]
    # What the broker says to the certificates it refuses.
    alerts = await asyncio.gather(tls_alert(no_cert), tls_alert(foreign))
    assert list(alerts) == ["TLSV13_ALERT_CERTIFICATE_REQUIRED", "TLSV1_ALERT_UNKNOWN_CA"]


@pytest.fixture
def misnamed_broker(cert_broker: BrokerBundle, tmp_path: Path) -> Iterator[BrokerBundle]:
    """The same CA and fleet, but a server certificate for broker.test only."""
    ca = CertPair(cert_broker.ca_cert, cert_broker.out_dir / "private" / "ca.key")
    yield from _serve(tmp_path, "cert", hosts=("broker.test",), ca=ca)


async def test_hostname_verification(
    cert_broker: BrokerBundle, misnamed_broker: BrokerBundle
) -> None:
    wrong_ip, wrong_name = await asyncio.gather(
        refusal(misnamed_broker.url_for(CAM, "127.0.0.1")),
        refusal(misnamed_broker.url_for(CAM, "localhost")),
    )
    assert "CERTIFICATE_VERIFY_FAILED" in wrong_ip
    assert "mismatch" in wrong_ip
    assert "CERTIFICATE_VERIFY_FAILED" in wrong_name
    assert "mismatch" in wrong_name
    # Names in the certificate connect, to the same kind of broker.
    ok = await asyncio.gather(*(refusal(cert_broker.url_for(CAM, h)) for h in cert_broker.hosts))
    assert ok == ["", ""]
    assert cert_broker.hosts == ("localhost", "127.0.0.1")


async def test_password_mode(password_broker: BrokerBundle) -> None:
    good = password_broker.url_for(CAM)
    assert good.cert_file is None
    assert good.username == CAM
    assert good.password
    assert BrokerUrl.parse(password_broker.url_files[CAM].read_text()) == good
    other_password = password_broker.credentials[CAM2].read_text().strip()
    cases = {
        "right password": good,
        "wrong password": dataclasses.replace(good, password="wrong"),
        "another device's password": dataclasses.replace(good, password=other_password),
        "unknown user": dataclasses.replace(good, username="ghost"),
        "anonymous": dataclasses.replace(good, username=None, password=None),
        "plain mqtt://": BrokerUrl("mqtt", "127.0.0.1", good.port, CAM, good.password),
    }
    outcomes = await asyncio.gather(*(refusal(url) for url in cases.values()))
    result = dict(zip(cases, outcomes, strict=True))
    assert result.pop("right password") == ""
    assert result.pop("plain mqtt://")
    for case, why in result.items():
        assert "Not authorized" in why, f"{case}: {why}"
    # The ACL applies to password users as it does to certificate names.
    t = tag().encode()
    async with peer(password_broker.url_for(DISPATCH)) as reader, peer(good) as camera:
        assert await reader.subscribe(f"{P}/#") == 1
        assert await camera.publish(T.command_all(), b"no-" + t) == NOT_AUTHORIZED
        assert await camera.publish(T.ack(GW, CAM), b"yes-" + t) == SUCCESS
        seen = await reader.until(T.ack(GW, CAM), b"yes-" + t)
    assert (T.command_all(), b"no-" + t) not in seen


# --- a real broker: who may publish what ------------------------------------------------------
FORBIDDEN_PUBLISH = [
    # publisher, a topic it may not publish to, one it may (sent after it)
    pytest.param(GW, T.command_unit("unit-7"), T.command_unit("unit-12"), id="gw-cmd-other-unit"),
    pytest.param(GW, T.ack(GW, CAM), T.command_camera(CAM), id="gw-forges-ack"),
    pytest.param(GW, T.presence(CAM), T.gateway(GW), id="gw-forges-presence"),
    pytest.param(GW, T.gateway(GW7), T.gateway(GW), id="gw-other-gateway-status"),
    pytest.param(
        GW, T.activation("unit-7", "a1"), T.activation("unit-12", "a1"), id="gw-other-activation"
    ),
    pytest.param(GW, T.receipt("unit-7"), T.receipt("unit-12"), id="gw-other-receipt"),
    pytest.param(GW, T.trigger("unit-7"), T.trigger("unit-12"), id="gw-other-unit-trigger"),
    pytest.param(GW, T.cancel("unit-12"), T.escalation("unit-unit-12"), id="gw-cancel"),
    pytest.param(GW, T.log_synced("log-1", GW), T.log_records("log-1"), id="gw-forges-watermark"),
    pytest.param(CAM, T.command_all(), T.ack(GW, CAM), id="cam-cmd-all"),
    pytest.param(CAM, T.command_unit("unit-12"), T.ack(GW, CAM), id="cam-cmd-unit"),
    pytest.param(CAM, T.command_cell("8a2a1072b59ffff"), T.ack(GW, CAM), id="cam-cmd-cell"),
    pytest.param(CAM, T.command_camera(CAM2), T.ack(GW, CAM), id="cam-cmd-camera"),
    pytest.param(CAM, T.ack(GW, CAM2), T.ack(GW, CAM), id="cam-ack-for-other-camera"),
    pytest.param(CAM, T.presence(CAM2), T.presence(CAM), id="cam-presence-of-other-camera"),
    pytest.param(CAM, T.trigger("unit-12"), T.ack(GW7, CAM), id="cam-trigger"),
    pytest.param(CAM, T.activation("unit-12", "a1"), T.ack(GW, CAM), id="cam-activation"),
    pytest.param(DISPATCH, T.command_all(), T.trigger("unit-12"), id="dispatch-cmd-all"),
    # Only gateways flagged `broadcast` may reach every camera at once.
    pytest.param(GW7, T.command_all(), T.command_unit("unit-7"), id="gw-without-broadcast-cmd-all"),
    pytest.param(DISPATCH, T.command_unit("unit-12"), T.trigger("unit-12"), id="dispatch-cmd-unit"),
    pytest.param(DISPATCH, T.command_camera(CAM), T.cancel("unit-12"), id="dispatch-cmd-camera"),
    pytest.param(DISPATCH, T.ack(GW, CAM), T.trigger("unit-7"), id="dispatch-ack"),
    pytest.param(DISPATCH, T.presence(CAM), T.trigger("unit-12"), id="dispatch-presence"),
    pytest.param(
        DISPATCH, T.activation("unit-12", "a1"), T.trigger("unit-12"), id="dispatch-activation"
    ),
    pytest.param(DISPATCH, T.receipt("unit-12"), T.cancel("unit-7"), id="dispatch-receipt"),
    pytest.param(DISPATCH, T.gateway(GW), T.trigger("unit-12"), id="dispatch-gateway-status"),
    pytest.param(ARCHIVER, T.command_all(), T.log_synced("log-1", GW), id="archiver-cmd-all"),
    pytest.param(
        ARCHIVER, T.log_records("log-1"), T.log_synced("log-1", GW), id="archiver-log-records"
    ),
    pytest.param(GW, f"other/{P}/cmd/all", T.command_all(), id="gw-outside-the-prefix"),
]


@pytest.mark.parametrize(("publisher", "forbidden", "allowed"), FORBIDDEN_PUBLISH)
async def test_forbidden_publish_never_reaches_a_reader(
    cert_broker: BrokerBundle, publisher: str, forbidden: str, allowed: str
) -> None:
    t = tag().encode()
    async with (
        peer(cert_broker.url_for(DISPATCH)) as reader,
        peer(cert_broker.url_for(publisher)) as sender,
    ):
        assert await reader.subscribe(f"{P}/#") == 1
        assert (
            await reader.subscribe("other/#") == 1
        )  # granted, but dispatch may read no such topic
        # MQTT 5: the broker says so in the PUBACK, and keeps the connection.
        assert await sender.publish(forbidden, b"no-" + t) == NOT_AUTHORIZED
        assert await sender.publish(allowed, b"yes-" + t) == SUCCESS
        seen = await reader.until(allowed, b"yes-" + t)
    assert (forbidden, b"no-" + t) not in seen


async def test_mqtt311_forbidden_publish_is_dropped_silently(cert_broker: BrokerBundle) -> None:
    """MQTT 3.1.1 has no reason codes: the broker acknowledges, drops the message, and
    keeps the connection (the publisher cannot tell)."""
    t = tag().encode()
    async with (
        peer(cert_broker.url_for(DISPATCH)) as reader,
        peer(cert_broker.url_for(GW), v5=False) as gateway,
    ):
        assert await reader.subscribe(f"{P}/#") == 1
        assert await gateway.publish(T.command_unit("unit-7"), b"no-" + t) == SUCCESS
        assert await gateway.publish(T.command_unit("unit-12"), b"yes-" + t) == SUCCESS
        seen = await reader.until(T.command_unit("unit-12"), b"yes-" + t)
    assert (T.command_unit("unit-7"), b"no-" + t) not in seen


async def _will_of(url: BrokerUrl, topic: str, payload: bytes) -> None:
    """Connect with a will, then leave so that the broker publishes it (MQTT 5 DISCONNECT
    with reason 0x04, "disconnect with will message": the same path as a lost link)."""
    from paho.mqtt.reasoncodes import ReasonCode

    client = _client(url, will=aiomqtt.Will(topic, payload, qos=1, retain=True))
    try:
        await client.__aenter__()
    except aiomqtt.MqttConnectError:
        return  # refused at CONNECT: as good (2.0.11 accepts it, and drops the will later)
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    paho = client._client
    inner = paho.on_disconnect

    def on_disconnect(*args: Any) -> None:
        inner(*args)
        if not gone.done():
            gone.set_result(None)

    paho.on_disconnect = on_disconnect
    paho.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
    await asyncio.wait_for(gone, 5)
    with contextlib.suppress(aiomqtt.MqttError):
        await client.__aexit__(None, None, None)


async def test_a_will_on_another_cameras_presence_is_dropped(cert_broker: BrokerBundle) -> None:
    t = tag().encode()
    async with peer(cert_broker.url_for(DISPATCH)) as reader:
        assert await reader.subscribe(T.all_presence()) == 1
        await _will_of(cert_broker.url_for(CAM), T.presence(CAM2), b"forged-" + t)
        await _will_of(cert_broker.url_for(CAM), T.presence(CAM), b"offline-" + t)
        seen = await reader.until(T.presence(CAM), b"offline-" + t)
    assert (T.presence(CAM2), b"forged-" + t) not in seen
    # Nor was it retained: a new reader is given the allowed will only. (Retained messages
    # are sent as each SUBSCRIBE is handled, so the forged one would come first.)
    async with peer(cert_broker.url_for(DISPATCH)) as late:
        assert await late.subscribe(T.presence(CAM2)) == 1
        assert await late.subscribe(T.presence(CAM)) == 1
        seen = await late.until(T.presence(CAM), b"offline-" + t)
    assert (T.presence(CAM2), b"forged-" + t) not in seen


async def test_a_stolen_client_id_gets_nothing_queued_for_it(cert_broker: BrokerBundle) -> None:
    """Client ids are not tied to usernames: another device may take over a gateway's
    session, but the acks queued for the gateway are not delivered to it."""
    t = tag()
    session = f"tm-{GW}-{t}"
    async with peer(cert_broker.url_for(GW), session=session) as gateway:
        assert await gateway.subscribe(T.acks_for(GW)) == 1
    async with peer(cert_broker.url_for(CAM)) as camera:
        assert await camera.publish(T.ack(GW, CAM), f"queued-{t}".encode()) == SUCCESS
    async with (
        peer(cert_broker.url_for(CAM2), session=session) as intruder,
        peer(cert_broker.url_for(GW)) as sender,
    ):
        # Anything queued was sent as the session resumed, before this subscription.
        assert await intruder.subscribe(T.command_camera(CAM2)) == 1
        assert await sender.publish(T.command_camera(CAM2), f"later-{t}".encode()) == SUCCESS
        seen = await intruder.until(T.command_camera(CAM2), f"later-{t}".encode())
    assert (T.ack(GW, CAM), f"queued-{t}".encode()) not in seen


# --- a real broker: who may read what ---------------------------------------------------------
FORBIDDEN_SUBSCRIBE = [
    # subscriber, a filter it may not read, (publisher, topic in it), a filter it may read,
    # (publisher, topic in that one)
    pytest.param(
        CAM, T.command_camera(CAM2), (GW, T.command_camera(CAM2)),
        T.command_camera(CAM), (GW, T.command_camera(CAM)), id="cam-other-camera-commands",
    ),
    pytest.param(
        CAM, T.command_unit("unit-7"), (GW7, T.command_unit("unit-7")),
        T.command_unit("unit-12"), (GW, T.command_unit("unit-12")), id="cam-other-unit-commands",
    ),
    pytest.param(
        CAM, f"{P}/ack/+/+", (CAM2, T.ack(GW, CAM2)),
        T.command_camera(CAM), (GW, T.command_camera(CAM)), id="cam-acks",
    ),
    pytest.param(
        CAM, T.all_presence(), (CAM2, T.presence(CAM2)),
        T.command_all(), (GW, T.command_all()), id="cam-presence",
    ),
    pytest.param(
        CAM, T.trigger("+"), (DISPATCH, T.trigger("unit-12")),
        T.command_camera(CAM), (GW, T.command_camera(CAM)), id="cam-triggers",
    ),
    pytest.param(
        CAM, f"{P}/#", (GW7, T.command_unit("unit-7")),
        f"{P}/#", (GW, T.command_all()), id="cam-everything-gets-only-its-own",
    ),
    # Regions: a camera reads the cells of its own region only, even with a wildcard.
    pytest.param(
        CAM, T.command_cell(FAR_CELL), (GW, T.command_cell(FAR_CELL)),
        T.command_cell(HOME_CELL), (GW, T.command_cell(HOME_CELL)), id="cam-far-cell",
    ),
    pytest.param(
        CAM, T.command_cell("+"), (GW7, T.command_cell(NEAR_CELL)),
        T.command_cell("+"), (GW, T.command_cell(HOME_CELL)), id="cam-cells-outside-its-region",
    ),
    pytest.param(
        CAM7, T.command_cell("+"), (GW, T.command_cell(FAR_CELL)),
        T.command_cell("+"), (GW, T.command_cell(NEAR_CELL)), id="cam-default-region",
    ),
    pytest.param(
        GW, T.acks_for(GW7), (CAM7, T.ack(GW7, CAM7)),
        T.acks_for(GW), (CAM, T.ack(GW, CAM)), id="gw-other-gateway-acks",
    ),
    pytest.param(
        GW, T.trigger("unit-7"), (DISPATCH, T.trigger("unit-7")),
        T.trigger("unit-12"), (DISPATCH, T.trigger("unit-12")), id="gw-other-unit-triggers",
    ),
    pytest.param(
        GW, T.cancel("+"), (DISPATCH, T.cancel("unit-7")),
        T.cancel("unit-12"), (DISPATCH, T.cancel("unit-12")), id="gw-other-unit-cancels",
    ),
    pytest.param(
        GW, T.command_camera("+"), (GW7, T.command_camera(CAM7)),
        T.acks_for(GW), (CAM, T.ack(GW, CAM)), id="gw-commands",
    ),
    pytest.param(
        GW, T.synced_for(GW7), (ARCHIVER, T.log_synced("log-7", GW7)),
        T.synced_for(GW), (ARCHIVER, T.log_synced("log-12", GW)), id="gw-other-watermarks",
    ),
    pytest.param(
        ARCHIVER, shared("archivers", T.command_unit("+")), (GW, T.command_unit("unit-12")),
        shared("archivers", f"{P}/ack/+/+"), (CAM, T.ack(GW, CAM)), id="archiver-shared",
    ),
    pytest.param(
        ARCHIVER, shared("archivers", T.all_presence()), (CAM, T.presence(CAM)),
        shared("archivers", T.trigger("+")), (DISPATCH, T.trigger("unit-7")),
        id="archiver-shared-presence",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("subscriber", "forbidden", "hidden", "allowed", "shown"), FORBIDDEN_SUBSCRIBE
)
async def test_forbidden_subscription_receives_nothing(
    cert_broker: BrokerBundle,
    subscriber: str,
    forbidden: str,
    hidden: tuple[str, str],
    allowed: str,
    shown: tuple[str, str],
) -> None:
    """mosquitto's ACL file does not check SUBSCRIBE (its SUBACK grants any filter); it
    checks read access as it delivers each message, retained ones included."""
    t = tag().encode()
    url = cert_broker.url_for
    async with (
        peer(url(DISPATCH)) as witness,
        peer(url(subscriber)) as reader,
        peer(url(hidden[0])) as first,
        peer(url(shown[0])) as second,
    ):
        assert await witness.subscribe(f"{P}/#") == 1
        suback = await reader.subscribe(forbidden)
        assert suback >= 0x80 or suback == 1  # refused, or granted and filtered (2.0.11)
        if allowed != forbidden:
            assert await reader.subscribe(allowed) == 1
        # Published with every right (PUBACK 0) and delivered to a reader that may see it...
        assert await first.publish(hidden[1], b"hidden-" + t) == SUCCESS
        await witness.until(hidden[1], b"hidden-" + t)
        # ...but not to this one, which got what came after it.
        assert await second.publish(shown[1], b"shown-" + t) == SUCCESS
        seen = await reader.until(shown[1], b"shown-" + t)
    assert (hidden[1], b"hidden-" + t) not in seen


# --- a real broker: per-client limits ------------------------------------------------------------
async def test_an_oversized_payload_is_dropped_at_the_broker(cert_broker: BrokerBundle) -> None:
    """One byte over the limit: the broker drops it and relays nothing; the largest payload
    allowed still goes through. (MQTT 3.1.1: the PUBACK says nothing. Under MQTT 5
    mosquitto 2.0.11 answers PUBACK 0x95, a code paho 2.2 does not accept for a PUBACK:
    it then closes its connection, found by experiment; docs/broker.md.)"""
    t = tag().encode()
    topic = T.command_unit("unit-12")
    async with (
        peer(cert_broker.url_for(DISPATCH)) as reader,
        peer(cert_broker.url_for(GW), v5=False, timeout_s=30) as gateway,
    ):
        assert await reader.subscribe(topic) == 1
        too_big = t + b"x" * (MESSAGE_SIZE_LIMIT + 1 - len(t))
        assert await gateway.publish(topic, too_big) == SUCCESS  # acknowledged, dropped
        largest = b"ok-" + t + b"y" * (MESSAGE_SIZE_LIMIT - len(t) - 3)
        assert await gateway.publish(topic, largest) == SUCCESS
        seen = await reader.until(topic, largest, timeout_s=30)
    assert [len(payload) for _, payload in seen] == [MESSAGE_SIZE_LIMIT]


async def test_a_stalled_readers_queue_is_bounded_in_bytes(cert_broker: BrokerBundle) -> None:
    """A camera away (or not reading) while a gateway credential floods its topic with the
    largest payloads, six of them (96 MiB): the broker holds what fits in MAX_QUEUED_BYTES
    and drops the newest. (The count, MAX_QUEUED_MESSAGES, bounds small messages alike.)"""
    session = f"t-{CAM}-{tag()}"
    topic = T.command_camera(CAM)
    flood = 6
    async with peer(cert_broker.url_for(CAM), session=session) as camera:
        assert await camera.subscribe(topic) == 1
    async with peer(cert_broker.url_for(GW), v5=False, timeout_s=60) as gateway:
        for i in range(flood):
            payload = b"%d-" % i + b"z" * (MESSAGE_SIZE_LIMIT - 2)
            assert await gateway.publish(topic, payload) == SUCCESS
        async with peer(cert_broker.url_for(CAM), session=session, timeout_s=60) as camera:
            marker = b"after-" + tag().encode()
            assert await gateway.publish(topic, marker) == SUCCESS
            seen = await camera.until(topic, marker, timeout_s=60)
    got = [int(payload.split(b"-")[0]) for t_, payload in seen if payload != marker]
    fits = -(-MAX_QUEUED_BYTES // MESSAGE_SIZE_LIMIT)  # the last one may cross the limit
    assert got == list(range(fits)), got


# --- the mesh itself, under the ACL -----------------------------------------------------------
async def test_the_mesh_works_with_its_own_credentials(
    cert_broker: BrokerBundle, tmp_path: Path
) -> None:
    """A gateway, a camera of its unit and one of another unit, and dispatch, each on its
    own certificate: a dispatch trigger is confirmed by both cameras. The ACL is enough
    for what the programs really do."""
    from mesh.camera.agent import CameraAgent, CameraIdentity
    from mesh.decide.geo import offset
    from mesh.dispatch.watch import ActivationWatcher
    from mesh.gateway.daemon import Gateway, GatewaySettings
    from mesh.protocol.models import ActivationState, CameraRole, GeoPoint, TriggerKind
    from triggers.manual import manual_trigger

    url, center = cert_broker.url_for, GeoPoint(lat=39.952583, lon=-75.165222)

    def at(north_m: float) -> GeoPoint:
        lat, lon = offset(center.lat, center.lon, north_m, 0)
        return GeoPoint(lat=lat, lon=lon)

    run = tag()
    gateway = Gateway(
        GatewaySettings(
            unit_id="unit-12", gateway_id=GW, log_path=tmp_path / "gw.db", topics=T, position=center
        ),
        url=url(GW),
        client_id=f"t-{run}-gw",
    )
    cameras = [
        CameraAgent(
            CameraIdentity(camera, unit, CameraRole.BODY),
            url=url(camera),
            topics=T,
            position=at(north_m),
            client_id=f"t-{run}-{camera}",
        )
        for camera, unit, north_m in ((CAM, "unit-12", 20), (CAM7, "unit-7", 60))
    ]
    watcher = ActivationWatcher(url(DISPATCH), T, client_id=f"t-{run}-watch")
    driver = MqttLink(url(DISPATCH), LinkOptions(f"t-{run}-driver", persistent_session=False))
    tasks = [asyncio.create_task(c.run()) for c in cameras]
    tasks += [asyncio.create_task(gateway.run()), asyncio.create_task(watcher.run())]
    tasks.append(asyncio.create_task(driver.run(lambda _m: None)))
    try:
        await asyncio.wait_for(gateway.ready.wait(), 10)
        for link in (watcher.link, driver, *(c.link for c in cameras)):
            await link.wait_up(10)
        deadline = time.monotonic() + 10
        while any(gateway.presence.get(c) is None for c in (CAM, CAM7)):
            assert time.monotonic() < deadline, "the gateway never heard the cameras"
            await asyncio.sleep(0.01)
        trigger = manual_trigger(TriggerKind.WEAPON_DRAW, "unit-12", source_id="dispatch:test")
        await driver.publish(T.trigger("unit-12"), encode(trigger))
        receipt = await watcher.receipt(trigger.event_id, 10)
        assert receipt is not None
        assert receipt.activation_id is not None, receipt
        record = await watcher.final_record(receipt.activation_id, 10)
        assert record is not None
        assert record.state is ActivationState.CONFIRMED, record
        assert {o.camera_id for o in record.cameras if o.acked_at_ns} >= {CAM, CAM7}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

"""The locked-down broker (docs/broker.md): generated files, then real mosquitto started with
exactly that output, and every forbidden connect, publish and subscribe refused (the
files by themselves: tests/unit/test_broker_files.py).

How "never arrives" is proved without long sleeps: the forbidden message is published
first and acknowledged by the broker (mosquitto routes a message to every subscriber
before it sends the PUBACK), then an allowed one; mosquitto delivers to each subscriber in
order, so once the allowed one has arrived the forbidden one would have arrived before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pwd
import shutil
import ssl
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.broker.config import (
    MAX_QUEUED_BYTES,
    MESSAGE_SIZE_LIMIT,
    AuthMode,
    BrokerBundle,
    write_broker_config,
)
from bridge.broker.passwd import verify_line
from bridge.broker.pki import CertPair, issue_client, new_ca
from bridge.mqtt.client import LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess, free_port
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import shared
from mesh.decide.policy import Policy
from mesh.gateway.build import build_gateway, config_in_code
from mesh.protocol.codec import encode
from tests.conftest import require_mosquitto
from tests.unit.test_broker_files import (
    ARCHIVER,
    CAM,
    CAM2,
    CAM7,
    DISPATCH,
    FAR_CELL,
    FLEET,
    GW,
    GW7,
    HOME_CELL,
    NEAR_CELL,
    P,
    T,
)

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
    pytest.param(
        GW, T.log_synced("log-1", GW), T.log_records("log-1", GW), id="gw-forges-watermark"
    ),
    # A log batch under another gateway's name: the archive stores a log's batches from
    # the gateway that bound it only, so a thief could otherwise write into its log.
    pytest.param(
        GW, T.log_records("log-1", GW7), T.log_records("log-1", GW), id="gw-log-batch-as-other"
    ),
    pytest.param(CAM, T.command_all(), T.ack(GW, CAM), id="cam-cmd-all"),
    pytest.param(CAM, T.command_unit("unit-12"), T.ack(GW, CAM), id="cam-cmd-unit"),
    pytest.param(CAM, T.command_cell("8a2a1072b59ffff"), T.ack(GW, CAM), id="cam-cmd-cell"),
    pytest.param(CAM, T.command_camera(CAM2), T.ack(GW, CAM), id="cam-cmd-camera"),
    pytest.param(CAM, T.ack(GW, CAM2), T.ack(GW, CAM), id="cam-ack-for-other-camera"),
    pytest.param(CAM, T.presence(CAM2), T.presence(CAM), id="cam-presence-of-other-camera"),
    pytest.param(
        CAM, T.recording(GW, CAM2), T.recording(GW, CAM), id="cam-recording-of-other-camera"
    ),
    pytest.param(GW, T.recording(GW, CAM), T.command_camera(CAM), id="gw-forges-recording"),
    pytest.param(DISPATCH, T.recording(GW, CAM), T.trigger("unit-12"), id="dispatch-recording"),
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
        ARCHIVER, T.log_records("log-1", GW), T.log_synced("log-1", GW), id="archiver-log-records"
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


async def test_a_stolen_camera_credential_cannot_report_another_cameras_recording(
    cert_broker: BrokerBundle,
) -> None:
    """Issue 19: with CAM's certificate, a thief publishes a `recording` stop in CAM2's
    name to the gateway. The broker refuses it (MQTT 5: not authorized in the PUBACK);
    the gateway, subscribed with its own credential, gets CAM's own report only. (The
    gateway's signature check is the second layer: test_recording_e2e.py.)"""
    t = tag().encode()
    async with (
        peer(cert_broker.url_for(GW)) as gateway,
        peer(cert_broker.url_for(CAM)) as thief,
    ):
        assert await gateway.subscribe(T.recordings_for(GW)) == 1
        assert await thief.publish(T.recording(GW, CAM2), b"stop-" + t) == NOT_AUTHORIZED
        assert await thief.publish(T.recording(GW7, CAM2), b"stop-" + t) == NOT_AUTHORIZED
        assert await thief.publish(T.recording(GW, CAM), b"own-" + t) == SUCCESS
        seen = await gateway.until(T.recording(GW, CAM), b"own-" + t)
    assert seen == [(T.recording(GW, CAM), b"own-" + t)]


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
        GW, T.recordings_for(GW7), (CAM7, T.recording(GW7, CAM7)),
        T.recordings_for(GW), (CAM, T.recording(GW, CAM)), id="gw-other-gateway-recordings",
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
    from mesh.protocol.models import ActivationState, CameraRole, GeoPoint, TriggerKind
    from triggers.manual import manual_trigger

    url, center = cert_broker.url_for, GeoPoint(lat=39.952583, lon=-75.165222)

    def at(north_m: float) -> GeoPoint:
        lat, lon = offset(center.lat, center.lon, north_m, 0)
        return GeoPoint(lat=lat, lon=lon)

    run = tag()
    gateway = build_gateway(
        config_in_code("unit-12", tmp_path / "gw.db", gateway_id=GW, topics=T, position=center),
        Policy(),
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

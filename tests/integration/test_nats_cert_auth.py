"""The cluster with client-certificate logins (``--central-auth cert``; docs/broker.md § Each
node): ``verify_and_map`` on the client and MQTT listeners, each user the subject of its
certificate (``CN=USER``) from the fleet's CA. On a real 3-node cluster and the car's real
mosquitto: the car's bridge logs in with its certificate and subscribes; a client with
another CA's certificate, or none, is refused; a valid certificate gets its own user's
permissions and no other's (the archiver's may not publish a trigger, dispatch's may).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.broker.bridge import bridge_client_id
from bridge.broker.nats import ADMIN_USER, NatsCluster, cert_user, mqtt_subjects
from bridge.broker.nats_run import bridge_subscribed, connz
from bridge.broker.pki import CertPair, issue_client, new_ca
from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from tests.conftest import require_mosquitto, require_nats_server
from tests.harness import wait_until
from tests.integration.test_nats_cluster import _until as until
from tests.nats_tools import ARCHIVER, CAMERAS, DISPATCH, UNIT, RunningCluster, loopback_layout

nats = pytest.importorskip("nats")

CONNECT_TIMEOUT_S = 10.0


@pytest.fixture
def cert_cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    require_nats_server()
    layout = loopback_layout(
        tmp_path / "car", f"t-{uuid.uuid4().hex[:8]}/mesh/v2", central_auth="cert"
    )
    cluster = RunningCluster(layout)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _context(central: NatsCluster, pair: CertPair | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(central.ca_cert))
    if pair is not None:
        context.load_cert_chain(pair.cert, pair.key)
    return context


async def _quiet(exc: Exception) -> None:
    """nats-py logs each refusal with a traceback otherwise; the tests assert on it."""


async def _nats(central: NatsCluster, pair: CertPair | None, **options: Any) -> Any:
    return await nats.connect(
        servers=[central.nats_url(0)],
        tls=_context(central, pair),
        tls_hostname="localhost",
        connect_timeout=CONNECT_TIMEOUT_S,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        **{"error_cb": _quiet, **options},
    )


async def _nats_refusal(central: NatsCluster, pair: CertPair | None) -> str:
    try:
        nc = await _nats(central, pair)
    except Exception as exc:
        return repr(exc)
    await nc.close()
    raise AssertionError("the client listener let the client in")


async def _mqtt_connack(central: NatsCluster, pair: CertPair | None) -> int:
    """The CONNACK return code for an MQTT 3.1.1 CONNECT without user name or password,
    over TLS with ``pair`` as the client certificate; raises if the handshake fails."""
    body = b"\x00\x04MQTT" + bytes([4, 0x02]) + struct.pack("!H", 30) + b"\x00\x07tm-cert"
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        reader, writer = await asyncio.open_connection(
            "localhost",
            central.nodes[0].mqtt_port,
            ssl=_context(central, pair),
            server_hostname="localhost",
        )
        try:
            writer.write(bytes([0x10, len(body)]) + body)
            await writer.drain()
            connack = await reader.readexactly(4)
            assert connack[:2] == b"\x20\x02", connack
            return connack[3]
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


async def _mqtt_refusal(central: NatsCluster, pair: CertPair | None) -> str:
    try:
        code = await _mqtt_connack(central, pair)
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError) as exc:
        return repr(exc)
    raise AssertionError(f"the MQTT listener answered CONNACK {code}")


def _logged(central: NatsCluster, kind: str, reason: str) -> bool:
    log = central.log_files[central.nodes[0].name].read_text()
    return any(f" - {kind}:" in line and reason in line for line in log.splitlines())


def test_the_cert_configs_are_valid_and_hold_no_password(tmp_path: Path) -> None:
    binary = require_nats_server()
    central = loopback_layout(tmp_path / "car", "t/mesh/v2", central_auth="cert").central
    for conf in central.confs.values():
        text = conf.read_text()
        assert text.count("verify_and_map: true") == 2  # the client and MQTT listeners
        assert f'user: "{cert_user(DISPATCH)}"' in text
        # Only the routes' password (cluster authorization and route URLs).
        assert text.count("password:") == 1
        done = subprocess.run(
            [str(binary), "-t", "-c", str(conf)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, (done.stdout, done.stderr)
    assert central.credentials == {}
    assert set(central.client_certs) == {u.name for u in central.users}


async def test_the_car_bridge_logs_in_with_its_certificate(
    cert_cluster: RunningCluster,
) -> None:
    layout = cert_cluster.layout
    assert layout.bridge.url.password is None
    assert layout.bridge.url.cert_file is not None
    car = layout.car
    broker = MosquittoProcess(require_mosquitto(), car.port, car.out_dir, config=car.conf)
    broker.start()
    try:
        client_id = bridge_client_id(layout.bridge, car.spec)
        nodes = [proc.node for proc in cert_cluster.procs]
        # On any node: on a loaded machine nats-server may time out making the MQTT
        # session's streams, and the bridge moves on to the next node (round_robin).
        await wait_until(lambda: any(bridge_subscribed(n, client_id, car.spec) for n in nodes), 90)
    finally:
        broker.stop()


async def test_another_cas_certificate_or_none_is_refused(
    cert_cluster: RunningCluster, tmp_path: Path
) -> None:
    central = cert_cluster.layout.central
    # Another CA's certificate for the very name the fleet's CA gave dispatch.
    forged = issue_client(new_ca(tmp_path / "other"), tmp_path / "other", DISPATCH)
    mine = central.client_certs[DISPATCH]
    assert await _mqtt_connack(central, mine) == 0
    nc = await _nats(central, mine)
    await nc.close()
    # A certificate of the fleet's CA for a principal with no user at central (a camera).
    camera = cert_cluster.layout.car.client_certs[CAMERAS[0]]
    assert "authorization violation" in (await _nats_refusal(central, camera)).lower()
    assert await _mqtt_connack(central, camera) != 0
    # Refused at the TLS handshake (an alert or a reset); the node's log says why.
    why = {
        "forged": "TLS handshake error: tls: failed to verify certificate: x509: certificate "
        "signed by unknown authority",
        "none": "TLS handshake error: tls: client didn't provide a certificate",
    }
    for pair, reason in ((forged, why["forged"]), (None, why["none"])):
        await _nats_refusal(central, pair)
        await _mqtt_refusal(central, pair)
        # cid: a client connection, mid: an MQTT one.
        for kind in ("cid", "mid"):
            await wait_until(lambda k=kind, r=reason: _logged(central, k, r))


async def test_a_certificate_gets_its_own_users_permissions_only(
    cert_cluster: RunningCluster,
) -> None:
    """The archiver's certificate may not publish a trigger; dispatch's may."""
    central = cert_cluster.layout.central
    topics = Topics(cert_cluster.layout.car.spec.prefix)
    (subject,) = mqtt_subjects(topics.trigger(UNIT))
    admin = await _nats(central, central.client_certs[ADMIN_USER])
    seen: list[bytes] = []

    async def on_message(msg: Any) -> None:
        seen.append(msg.data)

    await admin.subscribe(subject, cb=on_message)
    await admin.flush()
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    archiver = await _nats(central, central.client_certs[ARCHIVER], error_cb=on_error)
    dispatch = await _nats(central, central.client_certs[DISPATCH])
    try:
        await archiver.publish(subject, b"from the archiver")
        await archiver.flush()
        await wait_until(lambda: any("permissions violation" in str(e).lower() for e in errors))
        await dispatch.publish(subject, b"from dispatch")
        await dispatch.flush()
        await wait_until(lambda: b"from dispatch" in seen)
        assert b"from the archiver" not in seen
    finally:
        for nc in (archiver, dispatch, admin):
            await nc.close()


async def test_an_archiver_logs_in_with_its_certificate(
    cert_cluster: RunningCluster, postgres: str
) -> None:
    """`archiver stream` with the operator's certificate makes the stream; `archiver
    --nats … --nats-cert` (a process, the real CLI) consumes it with the archiver's and
    sends its watermarks over MQTT with the same certificate: every trigger lands once."""
    from mesh.protocol.codec import encode
    from tests.integration.test_archive_jetstream import publish_natively, triggers

    central = cert_cluster.layout.central
    servers = ",".join(central.nats_url(i) for i in range(3))
    prefix = cert_cluster.layout.car.spec.prefix
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGER_MESH_")}

    def login(user: str) -> list[str]:
        pair = central.client_certs[user]
        return [
            "--nats",
            servers,
            "--nats-user",
            user,
            "--nats-cert",
            str(pair.cert),
            "--nats-key",
            str(pair.key),
            "--nats-ca",
            str(central.ca_cert),
        ]

    # A fresh cluster on a loaded machine can leave JetStream API requests unanswered for
    # a while after /healthz passes (the `archiver stream` below once timed out in CI
    # after 30 s): it runs once the API answers.
    async def answered() -> None:
        nc = await _nats(central, central.client_certs[ADMIN_USER])
        try:
            await nc.jetstream(timeout=5).account_info()
        finally:
            await nc.close()

    await until(answered, 60, "JetStream's API")
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "mesh",
            "archiver",
            "stream",
            *login(ADMIN_USER),
            "--prefix",
            prefix,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert made.returncode == 0, made.stderr
    mqtt = central.nodes[0].mqtt_port
    archiver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mesh",
            "archiver",
            "--db",
            postgres,
            "--id",
            "arch-cert",
            "--prefix",
            prefix,
            *login(ARCHIVER),
            "--log-format",
            "json",
            "--log-level",
            "warning",
        ],
        env={**env, "TRIGGER_MESH_BROKER": f"mqtts://localhost:{mqtt}?ca={central.ca_cert}"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        n = 50
        await publish_natively(cert_cluster, [encode(t) for t in triggers(n)])
        await wait_until(lambda: _triggers(postgres) >= n, 60)
        assert _triggers(postgres) == n
        # Its watermark link: an MQTT connection of the archiver's user (its certificate).
        await wait_until(lambda: _mqtt_client_on(cert_cluster, "tm-archiver-arch-cert"), 30)
    finally:
        archiver.terminate()
        _, stderr = archiver.communicate(timeout=30)
    assert b"rror" not in stderr, stderr


def _triggers(dsn: str) -> int:
    """The archive's trigger rows; 0 until the archiver has made its tables."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        try:
            row = conn.execute("SELECT count(*) FROM triggers").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
        assert row is not None
        return int(row[0])


def _mqtt_client_on(cluster: RunningCluster, client_id: str) -> bool:
    conns = connz(cluster.procs[0].node).get("connections") or []
    assert isinstance(conns, list)
    return any(c.get("mqtt_client") == client_id for c in conns)

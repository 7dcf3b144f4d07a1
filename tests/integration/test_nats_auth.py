"""A stolen node config is no key to the cluster (docs/security.md, docs/broker.md § Each
node): on a real 3-node cluster from the generated configs, everything one node's config
holds is tried as a password, over MQTT and over native NATS, and refused; the users'
real passwords (from their 0600 credentials files) still get in; no user's password is in
the file; and the routes' password, which the file's route URLs must carry, does not open
the route listener without a certificate from the fleet's CA.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from pathlib import Path

import pytest

from bridge.broker.nats import ADMIN_USER, BCRYPT_COST, ROUTE_USER, NatsCluster
from bridge.broker.pki import issue_client, new_ca
from tests.harness import wait_until
from tests.nats_tools import ARCHIVER, DISPATCH, RunningCluster, mqtt_connack

nats = pytest.importorskip("nats")

# The bounds of one connect attempt.
CONNECT_TIMEOUT_S = 10.0


def _stolen(central: NatsCluster) -> tuple[str, dict[str, str]]:
    """Node 1's config as a thief would read it, and each user's 'password' in it."""
    text = central.confs["nats-1"].read_text()
    pairs = re.findall(r'user: "([^"]+)"\n\s+password: "([^"]+)"', text)
    # The routes' user (cluster authorization) is tried apart.
    return text, {user: password for user, password in pairs if user != ROUTE_USER}


def _tls(central: NatsCluster) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(central.ca_cert))


async def _quiet(exc: Exception) -> None:
    """nats-py logs each refusal with a traceback otherwise; the test asserts on it."""


async def _nats_login(central: NatsCluster, user: str, password: str) -> str:
    """'ok' if node 1's client listener lets ``user`` in with ``password``, else the error."""
    try:
        nc = await nats.connect(
            servers=[central.nats_url(0)],
            user=user,
            password=password,
            tls=_tls(central),
            tls_hostname="localhost",
            connect_timeout=CONNECT_TIMEOUT_S,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=_quiet,
        )
    except Exception as exc:
        return repr(exc)
    await nc.close()
    return "ok"


async def test_a_stolen_node_config_logs_nobody_in(nats_cluster: RunningCluster) -> None:
    central = nats_cluster.layout.central
    text, found = _stolen(central)
    # The car's bridge: MQTT only.
    (bridge,) = (u.name for u in central.users if u.name.startswith("tm-bridge-"))
    # MQTT: the real password is taken; the hash as the password is refused (4: bad user
    # name or password, 5: not authorized). A CONNECT closed unanswered (-1) is neither:
    # a fresh cluster's MQTT listener, making its session streams under load, closed the
    # first ones in CI; the real login is waited for until it is answered.
    loop = asyncio.get_running_loop()
    for user in (DISPATCH, ARCHIVER, bridge):
        deadline = loop.time() + 60
        while (code := await mqtt_connack(central, user, central.password(user))) == -1:
            assert loop.time() < deadline, f"{user}: no CONNACK within 60 s"
        assert code == 0, (user, code)
        assert await mqtt_connack(central, user, found[user]) in (4, 5), user
    # Native NATS: the same, the operator's user too.
    for user in (ADMIN_USER, DISPATCH, ARCHIVER):
        refused = await _nats_login(central, user, found[user])
        assert "authorization violation" in refused.lower(), (user, refused)
        assert await _nats_login(central, user, central.password(user)) == "ok", user

    # Every user is in the file with a bcrypt hash (cost BCRYPT_COST); no password is.
    assert set(found) == {u.name for u in central.users}
    for user in central.users:
        assert central.password(user.name) not in text, user.name
        assert found[user.name].startswith(f"$2b${BCRYPT_COST:02d}$"), found[user.name]


def _route_password(text: str) -> str:
    match = re.search(rf"nats-route://{ROUTE_USER}:([^@]+)@", text)
    assert match is not None
    return match.group(1)


async def _route_refusal(port: int, context: ssl.SSLContext, route_password: str) -> str:
    """Why the route listener on ``port`` refused a TLS client that sent the routes'
    CONNECT with ``route_password``; fails if it did not refuse."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(
                "localhost", port, ssl=context, server_hostname="localhost"
            )
            # TLS 1.3 finishes the client's side before the server checks its certificate:
            # the refusal arrives on the first read.
            connect = f'CONNECT {{"user":"{ROUTE_USER}","pass":"{route_password}"}}\r\n'
            writer.write(connect.encode())
            await writer.drain()
            data = await reader.read(4096)
            writer.close()
    except (ssl.SSLError, ConnectionError) as exc:
        return str(exc)
    raise AssertionError(f"the route listener took the client: {data!r}")


async def test_the_route_password_in_a_stolen_config_opens_no_route(
    nats_cluster: RunningCluster, tmp_path: Path
) -> None:
    """The routes' password is in the route URLs (nats-server dials with it) but hashed in
    the cluster authorization; without a certificate from the fleet's CA, the route
    listener refuses the TLS handshake before any password is read."""
    central = nats_cluster.layout.central
    text, _ = _stolen(central)
    route_password = _route_password(text)
    authorization = text.split("authorization {", 1)[1].split("}", 1)[0]
    assert route_password not in authorization
    assert f'"$2b${BCRYPT_COST:02d}$' in authorization

    port = central.nodes[1].cluster_port
    bare = _tls(central)  # trusts the CA, presents no certificate
    refused = await _route_refusal(port, bare, route_password)
    assert "certificate required" in refused.lower(), refused
    # A certificate of another CA, for the same name a node's has.
    other = issue_client(new_ca(tmp_path / "other"), tmp_path / "other", "nats")
    foreign = _tls(central)
    foreign.load_cert_chain(other.cert, other.key)
    await _route_refusal(port, foreign, route_password)  # a reset: the reason is in the log
    log = central.log_files[central.nodes[1].name]
    await wait_until(
        lambda: (
            "TLS route handshake error: tls: failed to verify certificate: x509: "
            "certificate signed by unknown authority" in log.read_text()
        )
    )

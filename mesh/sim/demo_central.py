"""`trigger-mesh demo --central` (`make central`): the demo's car bridged to a central tier.

On this machine: a 3-node NATS JetStream cluster (``broker-config --central nats``'s
configs on free loopback ports, TLS and accounts as in production), the car's locked-down
mosquitto bridged to it, two archivers sharing the archive's JetStream consumer and
writing into PostgreSQL (the running server), and a dispatch console on the third node.
The demo's gateway and 20 cameras run in the car, signing everything as ``--secure``
does. After the scenario the demo checks that the
archive holds every activation of the run and that the console, which only sees the
cluster, saw them all. ``--stay`` keeps everything running until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bridge.broker.acl import FleetSpec, Principal
from bridge.broker.bridge import bridge_client_id
from bridge.broker.nats import (
    ADMIN_USER,
    CarAndCentral,
    NatsCluster,
    NatsNode,
)
from bridge.broker.nats_run import (
    RunningCluster,
    bridge_subscribed,
    loopback_nodes,
    write_loopback,
)
from bridge.mqtt.embedded import BrokerStartError, MosquittoProcess, find_mosquitto
from bridge.topics import Topics
from mesh.archive.archiver import Archiver, ArchiverSettings
from mesh.archive.jetstream import (
    ADMIN_TIMEOUT_S,
    StreamSettings,
    archiver_source,
    cluster_login,
    connect,
    ensure_archive,
)
from mesh.dispatch.console.auth import Role, Users, add_user
from mesh.dispatch.console.server import ConsoleServer
from mesh.security.signing import PayloadSigner
from mesh.sim.camera_fleet import CameraSpec
from mesh.sim.demo_secure import DISPATCH_ID, SecureSetup, fleet_keys

ARCHIVER_IDS = ("archiver-1", "archiver-2")
CONSOLE_USER = "dispatcher"
# Where the archive goes when --db names no schema (search_path) of its own.
DEFAULT_SCHEMA = "trigger_mesh_central"
NODES = 3
# How long the archive and the console may take to hold the run's final states.
CENTRAL_SETTLE_S = 20.0


def archive_dsn(dsn: str) -> tuple[str, str | None]:
    """The DSN the archivers use, and the schema to create first (None: the DSN sets its
    own search_path, which is used as it is)."""
    if "search_path" in str(conninfo_to_dict(dsn).get("options") or ""):
        return dsn, None
    return make_conninfo(dsn, options=f"-csearch_path={DEFAULT_SCHEMA}"), DEFAULT_SCHEMA


@dataclass
class CentralTier:
    """Everything ``central_tier`` started; ``car`` is what the demo's --secure code uses."""

    layout: CarAndCentral
    cluster: RunningCluster
    car: SecureSetup
    archivers: list[Archiver]
    console: ConsoleServer
    console_password: str
    dsn: str
    make_archivers: Callable[[], list[Archiver]]
    # The archivers' tasks first (one each, in order), then the console's.
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def wait_up(self, spec: FleetSpec) -> None:
        """Until the archivers and the console are connected and the car's bridge has
        subscribed at one of the nodes (the car's messages cross from then on)."""
        for archiver in self.archivers:
            await archiver.ready.wait()
        await self.console.hub.link.wait_up()
        bridge_id = bridge_client_id(self.layout.bridge, spec)
        while True:
            up = [
                await asyncio.to_thread(bridge_subscribed, node, bridge_id, spec)
                for node in self.layout.central.nodes
            ]
            if any(up):
                return
            await asyncio.sleep(0.1)

    def restarted_archivers(self) -> list[Archiver]:
        """New archivers with the same identities, as after a restart of their hosts."""
        self.archivers = self.make_archivers()
        return self.archivers

    @property
    def console_url(self) -> str:
        return f"{self.console.scheme}://127.0.0.1:{self.console.port}/"

    async def archived_states(self, activation_ids: Sequence[str]) -> dict[str, str]:
        """The archive's state of each of these activations it holds."""
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT activation_id, state FROM activations WHERE activation_id = ANY(%s)",
                (list(activation_ids),),
            )
            return {row[0]: row[1] for row in await cursor.fetchall()}

    def console_states(self, activation_ids: Sequence[str]) -> dict[str, str]:
        """The console's state of each of these activations it has seen."""
        seen = self.console.hub.state.activations
        return {a: seen[a].state.value for a in activation_ids if a in seen}

    async def settled(
        self, finals: dict[str, str], timeout_s: float, *, console: bool = True
    ) -> list[str]:
        """Wait until the archive (and the console, unless ``console`` is False) hold every
        activation in its final state; what still differs at the deadline, one line each.
        The console is a live view (a clean session): what finished while its node was
        down is not sent to it again."""
        problems: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            held = [("the archive", await self.archived_states(list(finals)))]
            if console:
                held.append(("the console", self.console_states(list(finals))))
            problems = [
                f"activation {a}: {where} has {got.get(a, 'nothing')}, the car logged {state}"
                for a, state in finals.items()
                for where, got in held
                if got.get(a) != state
            ]
            if not problems or loop.time() > deadline:
                return problems
            await asyncio.sleep(0.2)


def _fleet(
    topics: Topics, gateway_id: str, unit_id: str, cameras: Sequence[CameraSpec]
) -> FleetSpec:
    return FleetSpec(
        prefix=topics.prefix,
        gateways=(Principal(gateway_id, unit_id),),
        cameras=tuple(Principal(c.camera_id, c.unit_id) for c in cameras),
        dispatch=(DISPATCH_ID,),
        archivers=ARCHIVER_IDS,
    )


async def _make_archive(central: NatsCluster, topics: Topics) -> None:
    """The archive's stream and consumer, made by the operator's user (archivers may only
    consume: bridge/broker/nats.py)."""
    admin = await connect(cluster_login(central, ADMIN_USER))
    try:
        await ensure_archive(admin.jetstream(timeout=ADMIN_TIMEOUT_S), topics, StreamSettings())
    finally:
        await admin.close()


async def _prepare_schema(dsn: str, schema: str | None) -> None:
    if schema is None:
        return
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


@contextlib.asynccontextmanager
async def central_tier(
    workdir: Path,
    topics: Topics,
    gateway_id: str,
    unit_id: str,
    cameras: Sequence[CameraSpec],
    *,
    dsn: str,
    nodes: Sequence[NatsNode] | None = None,
    car_port: int | None = None,
) -> AsyncIterator[CentralTier]:
    """Write every configuration into ``workdir``, start the cluster (``nodes``, default
    three on free loopback ports), the car's broker (on ``car_port``, which goes with
    ``nodes``), the archivers and the console; stop them all (in reverse) afterwards."""
    binary = find_mosquitto()
    if binary is None:
        raise BrokerStartError("--central needs mosquitto (apt-get install -y mosquitto)")
    spec = _fleet(topics, gateway_id, unit_id, cameras)
    if nodes is None:
        nodes, (car_port,) = loopback_nodes(NODES, extra=1)
    if car_port is None:
        raise ValueError("central_tier: give car_port with nodes")
    layout = await asyncio.to_thread(
        write_loopback, workdir / "broker", spec, list(nodes), car_port, run_as=getpass.getuser()
    )
    central = layout.central
    archive, schema = archive_dsn(dsn)
    await _prepare_schema(dsn, schema)
    keys, trust = fleet_keys(spec)
    cluster = RunningCluster(central)
    car_broker = MosquittoProcess(
        binary, layout.car.port, workdir / "broker", config=layout.car.conf
    )
    users_file = workdir / "console-users.json"
    password = secrets.token_urlsafe(12)
    add_user(users_file, CONSOLE_USER, Role.DISPATCHER, password)
    tier: CentralTier | None = None
    try:
        await asyncio.to_thread(cluster.start)
        await asyncio.to_thread(car_broker.start)

        await _make_archive(central, topics)

        def make_archivers() -> list[Archiver]:
            return [
                Archiver(
                    ArchiverSettings(
                        archive,
                        archiver_id=name,
                        topics=topics,
                        trust=trust,
                        units={gateway_id: unit_id},
                    ),
                    source=archiver_source(
                        cluster_login(central, name, first=i % NODES),
                        central.mqtt_url(name, node=i % NODES, failover=True),
                        name,
                    ),
                )
                for i, name in enumerate(ARCHIVER_IDS)
            ]

        archivers = make_archivers()
        console = ConsoleServer(
            central.mqtt_url(DISPATCH_ID, node=NODES - 1, failover=True),
            topics,
            Users.load(users_file),
            port=0,
            signer=PayloadSigner(keys[DISPATCH_ID]),
        )
        tier = CentralTier(
            layout=layout,
            cluster=cluster,
            car=SecureSetup(bundle=layout.car, broker=car_broker, trust=trust, keys=keys),
            archivers=archivers,
            console=console,
            console_password=password,
            dsn=archive,
            make_archivers=make_archivers,
        )
        tier.tasks = [asyncio.create_task(a.run()) for a in archivers]
        tier.tasks.append(asyncio.create_task(console.run()))
        async with asyncio.timeout(30):
            await tier.wait_up(spec)
        yield tier
    finally:
        if tier is not None:
            for task in tier.tasks:
                task.cancel()
            await asyncio.gather(*tier.tasks, return_exceptions=True)
        await asyncio.to_thread(car_broker.stop)
        await asyncio.to_thread(cluster.stop)

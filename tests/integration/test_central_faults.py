"""Faults of the central tier, each counting what was lost (it must be nothing).

A real car (the gateway and its three cameras, signed, on the car's locked-down mosquitto)
bridged to a real 3-node NATS cluster, two archivers into the real PostgreSQL and a
dispatch console on the cluster, as `demo --central` runs them (mesh/sim/demo_central.py).
The car fires a burst of triggers while a fault is played; afterwards every activation
the car logged must be confirmed in the car (its cameras kept being commanded), and in the
archive: with all archivers down or the uplink cut, its live tables hold each final state
and every camera's ack, and so does the console; where the fault makes a stream elect a
leader (a node killed, a rolling restart), nats-server may drop what the bridge published
meanwhile: the archive's copy of the car's hash-chained log must hold every record, the
live rows must all be there once the archivers have made the missing ones from it, and
the console's feed must resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bridge.broker.nats import ADMIN_USER, ARCHIVE_STREAM, NatsNode
from bridge.broker.nats_run import loopback_nodes
from bridge.mqtt.client import LinkDown, LinkOptions, MqttLink
from bridge.topics import Topics
from mesh.archive.jetstream import ADMIN_TIMEOUT_S, cluster_login, connect
from mesh.archive.store import log_status
from mesh.decide.policy import Policy
from mesh.dispatch.watch import ActivationWatcher
from mesh.gateway.build import build_gateway, config_in_code
from mesh.gateway.daemon import Gateway
from mesh.journal.signer import CheckpointSigner
from mesh.journal.store import log_id_of, read_records
from mesh.protocol.models import ActivationState, TriggerKind
from mesh.sim.camera_fleet import build_agents, wait_all_up
from mesh.sim.demo import CENTER, GATEWAY_ID, UNIT, demo_specs
from mesh.sim.demo_central import CentralTier, central_tier
from tests.chaos_tools import ChaosProxy
from tests.conftest import require_mosquitto
from tests.harness import wait_until
from triggers.manual import manual_trigger

BURST = 12


def car_broker_state(tier: CentralTier) -> str:
    """The car's mosquitto as the kernel sees it (state, the syscall it waits in, its
    kernel stack when readable) and its log's last lines."""
    conf = str(tier.layout.car.conf)
    parts: list[str] = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            argv = (pid_dir / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if Path(argv[0]).name != "mosquitto" or conf not in argv:
            continue
        for name in ("status", "wchan", "syscall", "stack"):
            try:
                text = (pid_dir / name).read_text()
            except OSError as exc:
                text = f"({exc.strerror})"
            if name == "status":
                text = next((line for line in text.splitlines() if line.startswith("State")), "")
            parts.append(f"{name}: {text.strip()}")
    log = next(tier.layout.car.out_dir.rglob("mosquitto.log"), None)
    if log is not None:
        parts.append("log: " + " | ".join(log.read_text(errors="replace").splitlines()[-8:]))
    return "; ".join(parts) or "no process of that config"


@dataclass
class Car:
    tier: CentralTier
    topics: Topics
    gateway: Gateway
    driver: MqttLink
    watcher: ActivationWatcher  # the car's own view: what the car logged as final

    async def trigger(self, n: int) -> None:
        security = self.tier.car.security(GATEWAY_ID)
        event = manual_trigger(TriggerKind.MANUAL, UNIT, source_id=f"test:button-{n}")
        try:
            await self.driver.publish(self.topics.trigger(UNIT), security.seal(event), qos=1)
        except LinkDown as exc:
            # Once in CI the car's mosquitto answered no PUBACK while its bridge reconnected
            # during the rolling restart: its log stopped (no bridge retries, no
            # "terminating" at SIGTERM). Say where it was, for the next time.
            raise AssertionError(
                f"the car's mosquitto took no trigger: {car_broker_state(self.tier)}"
            ) from exc

    async def burst(self, during: Callable[[], Awaitable[None]] | None = None) -> None:
        """BURST triggers, ``during`` played after the first third of them."""
        for n in range(BURST):
            if n == BURST // 3 and during is not None:
                await during()
            await self.trigger(n)

    async def finals(self, timeout_s: float = 30.0) -> dict[str, str]:
        """Every activation the car decided, once all are final in the car."""

        def settled() -> bool:
            receipts = [r for r in self.watcher.receipts.values() if r.activation_id]
            records = self.watcher.records
            return len(receipts) >= BURST and all(
                r.activation_id in records
                and records[r.activation_id].state is not ActivationState.PENDING
                for r in receipts
            )

        assert await self.watcher.wait_for(settled, timeout_s), self.watcher.receipts
        return {a: r.state.value for a, r in self.watcher.records.items()}

    async def lost(self, finals: dict[str, str], *, console: bool = True) -> list[str]:
        """What the archive (and the console) lack of ``finals``, once they have settled."""
        problems = await self.tier.settled(finals, 30, console=console)
        async with await psycopg.AsyncConnection.connect(self.tier.dsn) as conn:
            cursor = await conn.execute(
                "SELECT activation_id, camera_id FROM acks WHERE activation_id = ANY(%s)",
                (list(finals),),
            )
            acked = {tuple(row) for row in await cursor.fetchall()}
            triggers = [self.watcher.records[a].trigger.event_id for a in finals]
            cursor = await conn.execute(
                "SELECT event_id FROM triggers WHERE event_id = ANY(%s)", (triggers,)
            )
            triggered = {row[0] for row in await cursor.fetchall()}
            cursor = await conn.execute(
                "SELECT event_id FROM receipts WHERE event_id = ANY(%s)", (triggers,)
            )
            answered = {row[0] for row in await cursor.fetchall()}
        problems += [f"trigger {t} not archived" for t in triggers if t not in triggered]
        problems += [f"receipt of trigger {t} not archived" for t in triggers if t not in answered]
        for activation_id in finals:
            record = self.watcher.records[activation_id]
            for camera in record.cameras:
                if (
                    camera.acked_at_ns is not None
                    and (activation_id, camera.camera_id) not in acked
                ):
                    problems.append(f"ack of {camera.camera_id} for {activation_id} not archived")
        return problems

    def broker_log_tail(self, lines: int = 40) -> str:
        """The end of the car's mosquitto log (its bridge's connects and drops)."""
        log = self.tier.layout.car.out_dir / "var" / "mosquitto.log"
        try:
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"

    async def log_copied(self, timeout_s: float = 60) -> int:
        """Wait until the archive's copy of the car's log holds every record the log had
        (its watermark reaches the log's head: the sync resends until it does); the head."""
        log = self.gateway.settings.log_path
        head = list(read_records(log))[-1].seq
        log_id = log_id_of(log)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            async with await psycopg.AsyncConnection.connect(self.tier.dsn) as conn:
                status = await log_status(conn, log_id)
            if status is not None and status.synced_seq >= head:
                return head
            assert loop.time() < deadline, (
                f"archive's copy of the log at {status}, head {head}; the car's broker said, "
                f"last: {self.broker_log_tail()}"
            )
            await asyncio.sleep(0.2)

    async def live_rows_filled(
        self, finals: dict[str, str], timeout_s: float = 60
    ) -> tuple[int, int]:
        """After a fault that makes a stream elect a leader: nats-server drops an MQTT
        publish that reaches the archive's stream meanwhile, after it has sent the bridge
        its PUBACK (docs/deployment.md). The log sync resends until central's watermark
        covers the log's head; the archivers then make the live rows the dropped messages
        left out from the log's records, once a checkpoint signed by the gateway's trusted
        key vouches for them. Nothing may be missing then. Returns how many activation
        and ack rows were made from the log."""
        head = await self.log_copied()
        log_id = log_id_of(self.gateway.settings.log_path)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            async with await psycopg.AsyncConnection.connect(self.tier.dsn) as conn:
                cursor = await conn.execute(
                    "SELECT vouched_seq, vouch_problem FROM logs WHERE log_id = %s", (log_id,)
                )
                row = await cursor.fetchone()
            assert row is not None
            assert row[1] is None, row  # no vouch_problem
            if row[0] >= head:
                break
            assert loop.time() < deadline, f"live rows made up to record {row[0]}, head {head}"
            await asyncio.sleep(0.2)
        assert await self.lost(finals, console=False) == []
        async with await psycopg.AsyncConnection.connect(self.tier.dsn) as conn:
            cursor = await conn.execute(
                "SELECT (SELECT count(*) FROM activations WHERE archived_by LIKE '%%/log'),"
                " (SELECT count(*) FROM acks WHERE archived_by LIKE '%%/log')"
            )
            made = await cursor.fetchone()
        assert made is not None
        print(f"live rows made from the log (activations, acks): {made}")
        return int(made[0]), int(made[1])

    async def archivers_down(self) -> None:
        tier = self.tier
        for task in tier.tasks[: len(tier.archivers)]:
            task.cancel()
        await asyncio.gather(*tier.tasks[: len(tier.archivers)], return_exceptions=True)

    def archivers_up(self) -> None:
        """New archivers with the same identities, as after a restart of their hosts."""
        tier = self.tier
        tier.tasks[: len(tier.archivers)] = [
            asyncio.create_task(a.run()) for a in tier.restarted_archivers()
        ]

    async def feed_resumes(self, timeout_s: float = 30) -> None:
        """After the fault: a new activation reaches the console."""
        link = self.tier.console.hub.link
        await link.wait_up(timeout_s)
        # The console's link is up once connected, with the filters nats-server granted. A
        # node short of another refuses filters whose consumers it could not make in time
        # (CI: the activations' one, twice, 5 s each); the link asks for them again on the
        # same connection, and what is published before they are granted does not reach
        # the console. The feed has resumed once none is refused.
        await wait_until(lambda: link.is_up and not link.refused, timeout_s)
        before = set(self.watcher.records)
        await self.trigger(1000)

        def new_final() -> bool:
            return any(
                r.state is not ActivationState.PENDING
                for a, r in self.watcher.records.items()
                if a not in before
            )

        assert await self.watcher.wait_for(new_final, 30)
        finals = {a: r.state.value for a, r in self.watcher.records.items() if a not in before}
        assert await self.tier.settled(finals, timeout_s) == []


@contextlib.asynccontextmanager
async def central_car(
    tmp_path: Path, dsn: str, nodes: list[NatsNode] | None = None, car_port: int | None = None
) -> AsyncIterator[Car]:
    require_mosquitto()
    topics = Topics(f"t-{uuid.uuid4().hex[:8]}/mesh/v2")
    specs = [s for s in demo_specs() if s.unit_id == UNIT]
    async with central_tier(
        tmp_path, topics, GATEWAY_ID, UNIT, specs, dsn=dsn, nodes=nodes, car_port=car_port
    ) as tier:
        setup = tier.car
        run_id = uuid.uuid4().hex[:6]
        agents = build_agents(
            specs,
            url=setup.url(specs[0].camera_id),
            topics=topics,
            client_prefix=f"t-{run_id}-",
            now_ns=time.time_ns(),
            url_of=setup.camera_url(),
            security_of=setup.camera_security(),
        )
        gateway = build_gateway(
            config_in_code(
                UNIT,
                tmp_path / "car.db",
                gateway_id=GATEWAY_ID,
                topics=topics,
                position=CENTER,
                # The edge log's copy at central: what the archive must hold in full.
                sync_log=True,
                sync_interval_s=1.0,
                # Signed with the gateway's trusted key, often: the archivers make the live
                # rows a lost message left out from the log once a checkpoint vouches.
                checkpoint_interval_s=1.0,
            ),
            Policy(),
            url=setup.url(GATEWAY_ID),
            client_id=f"t-{run_id}-gw",
            sources=[],
            security=setup.security(GATEWAY_ID),
            signer=CheckpointSigner(setup.keys[GATEWAY_ID]),
        )
        driver = MqttLink(
            setup.url(GATEWAY_ID), LinkOptions(f"t-{run_id}-driver", persistent_session=False)
        )
        watcher = ActivationWatcher(
            setup.url(GATEWAY_ID), topics, client_id=f"t-{run_id}-watch", unit_id=UNIT
        )
        tasks = [asyncio.create_task(a.run()) for a in agents]
        tasks += [
            asyncio.create_task(gateway.run()),
            asyncio.create_task(driver.run(lambda _m: None)),
            asyncio.create_task(watcher.run()),
        ]
        try:
            async with asyncio.timeout(20):
                await gateway.ready.wait()
            await wait_all_up(agents, 20)
            await driver.wait_up(20)
            await watcher.link.wait_up(20)
            yield Car(tier, topics, gateway, driver, watcher)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _bridge_node(car: Car) -> int:
    from bridge.broker.bridge import bridge_client_id
    from bridge.broker.nats_run import bridge_subscribed

    layout = car.tier.layout
    client_id = bridge_client_id(layout.bridge, layout.car.spec)
    up = [bridge_subscribed(n, client_id, layout.car.spec) for n in layout.central.nodes]
    assert up.count(True) == 1, up
    return up.index(True)


async def test_a_node_killed_during_a_burst_loses_nothing(tmp_path: Path, postgres: str) -> None:
    """The node the car's bridge is on is SIGKILLed a third into the burst: the bridge
    fails over, the archivers and the console (on other nodes) go on, nothing is lost."""
    async with central_car(tmp_path, postgres) as car:
        victim = _bridge_node(car)

        async def kill() -> None:
            await asyncio.to_thread(car.tier.cluster.procs[victim].kill)

        await car.burst(during=kill)
        finals = await car.finals()
        assert set(finals.values()) == {"confirmed"}, finals  # the car kept commanding
        await car.live_rows_filled(finals)
        await car.feed_resumes()


async def test_the_console_s_node_killed_the_console_moves_on(
    tmp_path: Path, postgres: str
) -> None:
    """The node the console is on is SIGKILLed during the burst and stays down: the
    console's URL names every node, so it reconnects to another and its feed resumes;
    the archive loses nothing."""
    async with central_car(tmp_path, postgres) as car:
        link = car.tier.console.hub.link
        ports = [f"localhost:{n.mqtt_port}" for n in car.tier.layout.central.nodes]
        victim = ports.index(link.node)

        async def kill() -> None:
            await asyncio.to_thread(car.tier.cluster.procs[victim].kill)

        await car.burst(during=kill)
        finals = await car.finals()
        assert set(finals.values()) == {"confirmed"}, finals
        await car.live_rows_filled(finals)
        # nats-server takes a while to serve MQTT clients after losing a node (CONNECTs
        # closed unanswered, SUBSCRIBEs unanswered, for up to ~30 s here): 60 s.
        await car.feed_resumes(timeout_s=60)
        assert link.node != ports[victim]


async def test_all_archivers_down_then_back_loses_nothing(tmp_path: Path, postgres: str) -> None:
    async with central_car(tmp_path, postgres) as car:
        tier = car.tier
        await car.archivers_down()
        await car.burst()
        finals = await car.finals()
        archived = await tier.archived_states(list(finals))
        assert archived == {}, "no archiver ran, yet rows were written"
        car.archivers_up()
        assert await car.lost(finals) == []


async def test_the_backlog_discarded_while_archivers_are_down_is_made_from_the_logs(
    tmp_path: Path, postgres: str
) -> None:
    """Both archivers down during the burst, and the stream's backlog discarded meanwhile
    (what max_age or max_bytes do to the oldest messages, docs/archive.md): the live
    messages are gone for good; the gateway's log sync resends its batches until the
    watermark covers them, and the archivers make the live rows from the log."""
    async with central_car(tmp_path, postgres) as car:
        tier = car.tier
        await car.archivers_down()
        await car.burst()
        finals = await car.finals()
        admin = await connect(cluster_login(tier.layout.central, ADMIN_USER))
        try:
            await admin.jetstream(timeout=ADMIN_TIMEOUT_S).purge_stream(ARCHIVE_STREAM)
        finally:
            await admin.close()
        car.archivers_up()
        activations, _ = await car.live_rows_filled(finals)
        assert activations > 0  # the purge took live records: they came from the log


async def test_a_rolling_restart_of_the_cluster_loses_nothing(
    tmp_path: Path, postgres: str
) -> None:
    """Each node in turn is stopped cleanly (SIGTERM, as a service restart does) and
    started again, healthy before the next, while the car fires its burst."""
    async with central_car(tmp_path, postgres) as car:
        cluster = car.tier.cluster

        async def roll() -> None:
            for index in range(len(cluster.procs)):
                await asyncio.to_thread(cluster.procs[index].stop)
                await asyncio.to_thread(cluster.restart, index)
                await car.trigger(100 + index)  # traffic between the restarts

        await car.burst(during=roll)
        finals = await car.finals(timeout_s=60)
        assert set(finals.values()) == {"confirmed"}, finals
        await car.live_rows_filled(finals)
        # The console's node is restarted too: what finished meanwhile is not sent to it
        # again (a live view); its feed resumes.
        await car.feed_resumes(timeout_s=60)


async def test_the_car_uplink_cut_and_restored_loses_nothing(tmp_path: Path, postgres: str) -> None:
    """The car reaches each node through a proxy (its cellular uplink). All three are cut
    (connections reset, new ones refused) for the whole burst: the car commands its
    cameras alone; once the uplink is back, archive and console get everything."""
    # The proxies listen first, so that the nodes' ports, chosen next, differ from theirs.
    proxies = [ChaosProxy(("127.0.0.1", 0)) for _ in range(3)]
    for proxy in proxies:
        await proxy.start()
    nodes, (car_port,) = loopback_nodes(3, extra=1)
    for proxy, node in zip(proxies, nodes, strict=True):
        proxy.upstream = ("127.0.0.1", node.mqtt_port)
    nodes = [
        dataclasses.replace(n, bridge_port=p.port) for n, p in zip(nodes, proxies, strict=True)
    ]
    try:
        async with central_car(tmp_path, postgres, nodes, car_port) as car:
            for proxy in proxies:
                proxy.cut("refuse")
            await car.burst()
            finals = await car.finals()
            assert set(finals.values()) == {"confirmed"}, finals
            # Nothing crossed while the uplink was down (the cut is real).
            assert await car.tier.archived_states(list(finals)) == {}
            for proxy in proxies:
                await proxy.restore()
            assert await car.lost(finals) == []
            assert sum(p.counters["cut"] for p in proxies) >= 1
    finally:
        for proxy in proxies:
            await proxy.close()

"""`trigger-mesh demo --secure`: the demo on a locked-down broker, and the attacks it holds.

The broker is mosquitto run with exactly what `broker-config` writes (TLS with client
certificates, no anonymous access, the per-principal ACL); every gateway, camera and the
dispatch console sign what they send and check what they receive against one trust
store. After the scenario, four attacks are played against it (docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.broker.acl import FleetSpec, Principal
from bridge.broker.config import BrokerBundle, write_broker_config
from bridge.mqtt.client import LinkDown, LinkOptions, MqttLink
from bridge.mqtt.embedded import BrokerStartError, MosquittoProcess, find_mosquitto, free_port
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.protocol.codec import encode
from mesh.protocol.models import AckStatus, RecordStart
from mesh.security.checks import Security
from mesh.security.signing import PayloadSigner
from mesh.security.trust import KeyRole, TrustStore, trusted_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from mesh.camera.agent import CameraAgent
    from mesh.sim.camera_fleet import CameraSpec

DISPATCH_ID = "demo-dispatch"


@dataclass
class SecureSetup:
    """The locked-down broker, every principal's credentials and keys, one trust store."""

    bundle: BrokerBundle
    broker: MosquittoProcess
    trust: TrustStore
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)

    def url(self, name: str) -> BrokerUrl:
        return self.bundle.url_for(name)

    def security(self, name: str) -> Security:
        return Security(signer=PayloadSigner(self.keys[name]), trust=self.trust)

    def camera_url(self) -> Callable[[CameraSpec], BrokerUrl]:
        return lambda spec: self.url(spec.camera_id)

    def camera_security(self) -> Callable[[CameraSpec], Security]:
        return lambda spec: self.security(spec.camera_id)


def fleet_keys(spec: FleetSpec) -> tuple[dict[str, Ed25519PrivateKey], TrustStore]:
    """A signing key for every gateway, camera and dispatch console of ``spec``, and the
    trust store that names each by role (archivers sign nothing)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    roles = {
        **{g.name: KeyRole.GATEWAY for g in spec.gateways},
        **{c.name: KeyRole.CAMERA for c in spec.cameras},
        **dict.fromkeys(spec.dispatch, KeyRole.DISPATCH),
    }
    keys = {name: Ed25519PrivateKey.generate() for name in roles}
    trust = TrustStore(
        trusted_key(keys[name].public_key(), role, name) for name, role in roles.items()
    )
    return keys, trust


@contextlib.asynccontextmanager
async def secure_broker(
    workdir: Path, topics: Topics, gateway_id: str, unit_id: str, cameras: list[CameraSpec]
) -> AsyncIterator[SecureSetup]:
    """Generate the broker's configuration and everyone's keys in ``workdir``, start
    mosquitto with it, and stop it afterwards."""
    binary = find_mosquitto()
    if binary is None:
        raise BrokerStartError("--secure needs mosquitto (apt-get install -y mosquitto)")
    spec = FleetSpec(
        prefix=topics.prefix,
        gateways=(Principal(gateway_id, unit_id),),
        cameras=tuple(Principal(c.camera_id, c.unit_id) for c in cameras),
        dispatch=(DISPATCH_ID,),
    )
    port = free_port()
    bundle = await asyncio.to_thread(
        write_broker_config,
        workdir / "broker",
        spec,
        hosts=("localhost", "127.0.0.1"),
        port=port,
        bind="127.0.0.1",
        run_as="root",
    )
    keys, trust = fleet_keys(spec)
    broker = MosquittoProcess(binary, port, workdir / "broker", config=bundle.conf)
    await asyncio.to_thread(broker.start)
    try:
        yield SecureSetup(bundle=bundle, broker=broker, trust=trust, keys=keys)
    finally:
        await asyncio.to_thread(broker.stop)


@contextlib.asynccontextmanager
async def command_tap(setup: SecureSetup, topics: Topics) -> AsyncIterator[dict[str, bytes]]:
    """What an eavesdropper with dispatch's read access records: every command as sent,
    the first copy of each activation's, by activation id."""
    captured: dict[str, bytes] = {}

    def keep(message: Any) -> None:
        with contextlib.suppress(ValueError):
            command = Security().open(RecordStart, message.payload).model  # read, not checked
            captured.setdefault(command.activation_id, message.payload)

    async with _link(setup.url(DISPATCH_ID), subscriptions=(f"{topics.prefix}/cmd/#",), on=keep):
        yield captured


@dataclass
class AttackReport:
    """What each attack achieved (the demo holds if every one achieved nothing)."""

    no_certificate_connected: bool = True
    stolen_camera_commands_delivered: int = -1
    stolen_camera_forged_acks_delivered: int = -1
    unsigned_commands_obeyed: int = -1
    unsigned_commands_refused: list[str] = field(default_factory=list)
    replayed_new_recordings: int = -1
    # Not vacuous: the stolen camera's one allowed publish got through, and the replayed
    # command reached cameras (they counted it).
    allowed_probe_arrived: bool = False
    replay_handled_by_cameras: int = 0

    def held(self) -> bool:
        return (
            self.allowed_probe_arrived
            and self.replay_handled_by_cameras > 0
            and not self.no_certificate_connected
            and self.stolen_camera_commands_delivered == 0
            and self.stolen_camera_forged_acks_delivered == 0
            and self.unsigned_commands_obeyed == 0
            and bool(self.unsigned_commands_refused)
            and self.replayed_new_recordings == 0
        )

    def summary(self) -> dict[str, Any]:
        return {
            "held": self.held(),
            "no_certificate_connected": self.no_certificate_connected,
            "stolen_camera_commands_delivered": self.stolen_camera_commands_delivered,
            "stolen_camera_forged_acks_delivered": self.stolen_camera_forged_acks_delivered,
            "unsigned_commands_obeyed": self.unsigned_commands_obeyed,
            "unsigned_commands_refused": self.unsigned_commands_refused,
            "replayed_new_recordings": self.replayed_new_recordings,
            "allowed_probe_arrived": self.allowed_probe_arrived,
            "replay_handled_by_cameras": self.replay_handled_by_cameras,
        }


async def play_attacks(
    setup: SecureSetup,
    topics: Topics,
    agents: list[CameraAgent],
    captured: bytes | None,
    *,
    gateway_id: str,
    unit_id: str,
) -> AttackReport:
    """Four attackers against the running secure mesh:
    1. a client with no certificate;
    2. a stolen camera's credentials, publishing a command and another camera's ack;
    3. the gateway's broker credentials without its signing key (an unsigned command);
    4. a genuine signed command captured off the wire and replayed everywhere."""
    report = AttackReport()
    report.no_certificate_connected = await _connects(
        BrokerUrl(
            scheme="mqtts",
            host="localhost",
            port=setup.bundle.port,
            ca_file=str(setup.bundle.ca_cert),
        )
    )
    # Everything that reaches the broker's subscribers is seen by this dispatch reader.
    seen: list[str] = []
    async with _link(
        setup.url(DISPATCH_ID),
        subscriptions=(f"{topics.prefix}/#",),
        on=lambda m: seen.append(m.topic),
    ) as _reader:
        stolen = next(a for a in agents if a.identity.unit_id != unit_id)
        victim = next(a for a in agents if a.identity.unit_id == unit_id)
        now = time.time_ns()
        # Read, not checked: the thief copies its fields into a command of its own.
        genuine = Security().open(RecordStart, captured).model if captured else None
        forged = _forged_command(genuine, now, gateway_id) if genuine else None
        async with _link(setup.url(stolen.identity.camera_id)) as thief:
            marker = len(seen)
            if forged is not None:
                await _try_publish(thief, topics.command_unit(unit_id), encode(forged))
            fake_ack = (
                '{"type":"ack","v":2,"activation_id":"a-forged","camera_id":"'
                + victim.identity.camera_id
                + f'","status":"started","received_at_ns":"{now}"}}'
            ).encode()
            await _try_publish(thief, topics.ack(gateway_id, victim.identity.camera_id), fake_ack)
            # An ack under its own id is allowed: once it has arrived, the refused
            # publishes sent before it on the same connection would have too.
            own_ack = topics.ack(gateway_id, stolen.identity.camera_id)
            await _try_publish(thief, own_ack, b"{}")
            await _settle(lambda: own_ack in seen[marker:])
            report.allowed_probe_arrived = own_ack in seen[marker:]
            report.stolen_camera_commands_delivered = sum("/cmd/" in t for t in seen[marker:])
            victim_ack = topics.ack(gateway_id, victim.identity.camera_id)
            report.stolen_camera_forged_acks_delivered = seen[marker:].count(victim_ack)
        recordings = sum(a.simulated.recordings for a in agents)
        if forged is not None:
            refused_before = {a.identity.camera_id: _refusals(a) for a in agents}
            async with _link(setup.url(gateway_id)) as insider:
                await _try_publish(insider, topics.command_unit(unit_id), encode(forged))
                await _settle(
                    lambda: any(_refusals(a) > refused_before[a.identity.camera_id] for a in agents)
                )
            report.unsigned_commands_refused = sorted(
                f"{a.identity.camera_id}:{ack.reason.split(':')[0]}"
                for a in agents
                for ack in a.acks_sent
                if ack.activation_id == forged.activation_id and ack.status is AckStatus.REJECTED
            )
        report.unsigned_commands_obeyed = sum(a.simulated.recordings for a in agents) - recordings
        if captured is not None and genuine is not None:
            from mesh.decide.fanout import command_topics

            before = sum(a.simulated.recordings for a in agents)
            handled = sum(_handled(a) for a in agents)
            async with _link(setup.url(gateway_id)) as insider:
                for topic in command_topics(topics, genuine):
                    await _try_publish(insider, topic, captured)
                for agent in agents:
                    await _try_publish(
                        insider, topics.command_camera(agent.identity.camera_id), captured
                    )
            await asyncio.sleep(0.5)
            report.replayed_new_recordings = sum(a.simulated.recordings for a in agents) - before
            report.replay_handled_by_cameras = sum(_handled(a) for a in agents) - handled
    return report


def _handled(agent: CameraAgent) -> int:
    """Commands the camera decided on or refused (one count per command it received)."""
    return sum(
        v for k, v in agent.counters.items() if k.startswith(("decision.", "refused.command."))
    )


def _refusals(agent: CameraAgent) -> int:
    return sum(v for k, v in agent.counters.items() if k.startswith("refused.command."))


def _forged_command(template: RecordStart, now_ns: int, gateway_id: str) -> RecordStart:
    """A fresh command in the gateway's name, signed by nobody."""
    return template.model_copy(
        update={
            "activation_id": f"a-forged-{uuid.uuid4().hex[:8]}",
            "issuer": gateway_id,
            "issued_at_ns": now_ns,
            "expires_at_ns": now_ns + 30 * 10**9,
        }
    )


async def _connects(url: BrokerUrl) -> bool:
    link = MqttLink(
        url,
        LinkOptions(
            f"demo-rogue-{uuid.uuid4().hex[:6]}", persistent_session=False, backoff_max_s=0.2
        ),
    )
    task = asyncio.create_task(link.run(lambda _m: None))
    try:
        await link.wait_up(1.5)
        return True
    except LinkDown:
        return False
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def _link(
    url: BrokerUrl,
    *,
    subscriptions: tuple[str, ...] = (),
    on: Callable[[Any], None] | None = None,
) -> AsyncIterator[MqttLink]:
    link = MqttLink(
        url,
        LinkOptions(
            f"demo-attack-{uuid.uuid4().hex[:6]}",
            subscriptions=tuple((s, 1) for s in subscriptions),
            persistent_session=False,
        ),
    )
    task = asyncio.create_task(link.run(on or (lambda _m: None)))
    try:
        await link.wait_up(10)
        yield link
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _try_publish(link: MqttLink, topic: str, payload: bytes) -> None:
    # A publish the ACL refuses is acknowledged (MQTT 5: "not authorized") and dropped;
    # either way the attacker learns nothing useful, and the demo goes on.
    with contextlib.suppress(LinkDown):
        await link.publish(topic, payload, qos=1, wait_s=5)


async def _settle(check: Callable[[], bool], timeout_s: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # whatever else was sent with it has arrived too

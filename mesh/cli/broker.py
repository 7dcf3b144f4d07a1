"""``trigger-mesh broker-config``: a locked-down mosquitto for a fleet (docs/broker.md).

Registered on the main app in ``mesh.cli.app``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mesh.cli.common import EXIT_USAGE, console, fail

if TYPE_CHECKING:
    from bridge.broker.acl import FleetSpec
    from bridge.broker.bridge import BridgeSpec
    from bridge.broker.pki import CertPair

_ROLE_FILES = {
    "cert": "ca.crt, clients/{name}.crt, clients/{name}.key",
    "password": "ca.crt and the password in credentials/{name}.password",
}


def broker_config(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the broker's files to")],
    fleet: Annotated[
        Path, typer.Option("--fleet", help="Fleet file: gateways, cameras, dispatch, archivers")
    ],
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="Name or address clients use for the broker (repeat; all go in the server "
            "certificate, the first in the URLs); default: localhost and 127.0.0.1",
        ),
    ] = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8883,
    bind: Annotated[str, typer.Option("--bind", help="Address the listener binds")] = "0.0.0.0",  # noqa: S104
    auth: Annotated[
        str, typer.Option("--auth", help="cert: client certificates; password: passwords")
    ] = "cert",
    ca_cert: Annotated[
        Path | None, typer.Option("--ca-cert", help="Use this CA instead of making one")
    ] = None,
    ca_key: Annotated[Path | None, typer.Option("--ca-key", help="The key of --ca-cert")] = None,
    run_as: Annotated[
        str, typer.Option("--run-as", help="User mosquitto drops to when started as root")
    ] = "mosquitto",
    force: Annotated[
        bool, typer.Option("--force", help="Write over an existing configuration (the CA stays)")
    ] = False,
    bridge: Annotated[
        list[str] | None,
        typer.Option(
            "--bridge",
            help="NAME=URL (mqtt:// or mqtts://): bridge this in-car broker to a central "
            "one (repeat for several); its topics follow the fleet file's gateways and cameras",
        ),
    ] = None,
    central: Annotated[
        str | None,
        typer.Option(
            "--central",
            help="nats: also write a NATS JetStream cluster's configs (central/) and bridge "
            "this car to it, every node a failover address (docs/broker.md)",
        ),
    ] = None,
    central_host: Annotated[
        list[str] | None,
        typer.Option(
            "--central-host",
            help="With --central: the nodes' host (once: all nodes there, ports counted up) "
            "or one per node; default localhost",
        ),
    ] = None,
    central_nodes: Annotated[
        int, typer.Option("--central-nodes", min=1, max=9, help="With --central: nodes")
    ] = 3,
    central_auth: Annotated[
        str,
        typer.Option(
            "--central-auth",
            help="With --central: how the cluster's users log in: password (bcrypt hashes "
            "in the nodes' configs) or cert (client certificates from the CA)",
        ),
    ] = "password",
    central_max_consumers: Annotated[
        int | None,
        typer.Option(
            "--central-max-consumers",
            min=1,
            help="With --central: the account's JetStream consumers at most (9 per car's "
            "bridge; default 20,000; docs/deployment.md)",
        ),
    ] = None,
) -> None:
    """Write a TLS-only mosquitto configuration with an ACL for the fleet, and each device's
    credentials (client certificates or passwords) and broker URL."""
    from bridge.broker.bridge import BridgeError, parse_bridge_specs
    from bridge.broker.config import BrokerConfigError, write_broker_config
    from bridge.broker.pki import CertPair
    from mesh.documents import ConfigError
    from mesh.security.fleet_file import load_fleet

    if auth not in ("cert", "password"):
        fail(f"--auth must be cert or password, not {auth!r}", EXIT_USAGE)
    if central_auth not in ("cert", "password"):
        fail(f"--central-auth must be cert or password, not {central_auth!r}", EXIT_USAGE)
    if central is None and central_auth != "password":
        fail("--central-auth goes with --central", EXIT_USAGE)
    if (ca_cert is None) != (ca_key is None):
        fail("--ca-cert and --ca-key go together", EXIT_USAGE)
    try:
        bridges = parse_bridge_specs(bridge or ())
    except BridgeError as exc:
        fail(str(exc), EXIT_USAGE)
    try:
        spec = load_fleet(fleet)
    except ConfigError as exc:
        fail(f"config error: {exc}", EXIT_USAGE)
    ca = CertPair(ca_cert, ca_key) if ca_cert is not None and ca_key is not None else None
    if central is not None:
        _car_and_central(
            out,
            spec,
            central,
            hosts=tuple(central_host or ("localhost",)),
            count=central_nodes,
            car_hosts=tuple(host) if host else ("localhost", "127.0.0.1"),
            port=port,
            bind=bind,
            auth="cert" if auth == "cert" else "password",
            central_auth="cert" if central_auth == "cert" else "password",
            **(
                {}
                if central_max_consumers is None
                else {"central_max_consumers": central_max_consumers}
            ),
            ca=ca,
            force=force,
            run_as=run_as,
            bridges=bridges,
        )
        return
    try:
        bundle = write_broker_config(
            out,
            spec,
            hosts=tuple(host) if host else ("localhost", "127.0.0.1"),
            port=port,
            bind=bind,
            auth="cert" if auth == "cert" else "password",
            ca=ca,
            force=force,
            run_as=run_as,
            bridges=bridges,
        )
    except BrokerConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        fail(f"cannot write {out}: {exc}", EXIT_USAGE)

    d = bundle.out_dir
    say = console().print
    say(f"wrote {d} for {len(spec.names)} principals (auth {auth}):", highlight=False)
    listing = [
        ("mosquitto.conf", f"TLS listener {bind}:{port}, no anonymous access, runs as {run_as}"),
        ("acl", "who may publish and read which topics"),
        *([("passwd", "the broker's password hashes")] if bundle.password_file else []),
        ("ca.crt", "the CA: the broker and every device trust it"),
        ("private/ca.key", "the CA's key: keep it off the broker, it issues certificates"),
        ("server/broker.crt, .key", f"the broker's certificate, for {', '.join(bundle.hosts)}"),
        ("clients/NAME.url", "each device's broker URL (its `broker:` setting)"),
        *(
            [("credentials/NAME.password", "each device's password")]
            if bundle.password_file
            else [("clients/NAME.crt, .key", "each device's certificate (CN = its id)")]
        ),
        ("var/", "the broker's persistence and log (mosquitto.log)"),
        *(
            (f"bridges/{name}.acl", f"the ACL central must grant bridge {name!r}")
            for name in bundle.bridge_acls
        ),
        *(
            (f"bridges/relay-{gw}.acl", f"the ACL central must grant {gw}'s cell relay")
            for gw in bundle.relay_acls
        ),
    ]
    for name, what in listing:
        say(f"  {name:<26} {what}", highlight=False)
    say("next steps:", highlight=False)
    step = 1
    for command in bundle.ownership_steps():
        say(f"  {step}. as root, let user {run_as} read its files: {command}", highlight=False)
        step += 1
    say(f"  {step}. start the broker: mosquitto -c {bundle.conf}", highlight=False)
    files = _ROLE_FILES[auth].format(name="NAME")
    say(
        f"  {step + 1}. give each device NAME {files}; its `broker:` URL is clients/NAME.url "
        f"(it names the files where they are here: change the paths to where they go)",
        highlight=False,
    )


def _car_and_central(
    out: Path,
    spec: FleetSpec,
    engine: str,
    *,
    hosts: tuple[str, ...],
    count: int,
    car_hosts: tuple[str, ...],
    ca: CertPair | None,
    bridges: tuple[BridgeSpec, ...],
    **car_options: Any,
) -> None:
    """``--central nats``: the car's mosquitto bridged to a NATS cluster, and its configs."""
    from bridge.broker.config import BrokerConfigError
    from bridge.broker.nats import NatsConfigError, cluster_nodes, write_car_and_central
    from bridge.broker.pki import PkiError

    if engine != "nats":
        fail(f"--central must be nats, not {engine!r}", EXIT_USAGE)
    try:
        nodes = cluster_nodes(hosts, count)
        done = write_car_and_central(
            out,
            spec,
            nodes,
            central_hosts=hosts,
            ca=ca,
            bridges=bridges,
            hosts=car_hosts,
            **car_options,
        )
    except (NatsConfigError, BrokerConfigError, PkiError) as exc:
        fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        fail(f"cannot write {out}: {exc}", EXIT_USAGE)
    say = console().print
    cluster = done.central
    say(
        f"wrote {done.car.conf}: the car's broker, bridged to {len(nodes)} NATS nodes",
        highlight=False,
    )
    for node in nodes:
        say(
            f"  {cluster.confs[node.name]}: {node.name} at {node.host} (client "
            f"{node.client_port}, cluster {node.cluster_port}, MQTT {node.mqtt_port}, "
            f"monitoring 127.0.0.1:{node.http_port})",
            highlight=False,
        )
    what = "certificates and keys" if cluster.auth == "cert" else "passwords"
    say(f"  users' {what}: {cluster.out_dir / 'credentials'}", highlight=False)
    say(
        "next steps: start each node with nats-server -c NODE.conf (pip install "
        "'trigger-mesh[central]' installs nats-server), then the car's broker with "
        f"mosquitto -c {done.car.conf}",
        highlight=False,
    )

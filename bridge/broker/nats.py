"""The central tier on a NATS JetStream cluster (docs/broker.md § A NATS central tier).

``write_nats_cluster`` writes one nats-server configuration per node of a cluster (three
by default): its ``server_name``, the routes to the other nodes, JetStream with a store
directory of its own, the MQTT listener the cars' bridges connect to (MQTT needs JetStream
and a server name), TLS on every listener with a certificate from the fleet's CA (the one
``broker-config`` made for the in-car broker: ``bridge.broker.pki``), and one account whose
users mirror the mosquitto ACL's intent for the central roles: dispatch consoles,
archivers and the car's bridge. ``render_node`` is the pure renderer it uses.

Users log in with a password (``auth="password"``) or a client certificate from the
fleet's CA (``auth="cert"``: ``verify_and_map`` on the client and MQTT listeners, each user
named by its certificate's subject, ``CN=USER``). A node's config holds no user's password,
only its bcrypt hash (``password_hash``): the clients' passwords are in
``credentials/USER.password`` (0600) alone; their certificates in ``credentials/USER.crt``
and ``.key``. The routes' password
is hashed in the ``cluster`` authorization too, but each route URL to the other nodes
carries it in clear (nats-server dials with it): what keeps a stranger off the route
listener is its mutual TLS (a certificate from the fleet's CA).

MQTT topics are NATS subjects inside the server: ``/`` becomes ``.``, a ``.`` inside a level
becomes ``//``, ``+`` is ``*`` and a trailing ``#`` is ``>`` plus the level above it
(``mqtt_subjects``). Permissions are written on subjects, so each ACL rule is converted.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bridge.broker.acl import FleetSpec, dispatch_rules
from bridge.broker.bridge import (
    BridgeError,
    BridgeSpec,
    bridge_client_id,
    bridge_topics,
    relay_read_cells,
    relay_user,
)
from bridge.broker.config import (
    AUTH_MODES,
    AuthMode,
    BrokerBundle,
    hand_to_broker_user,
    write_broker_config,
)
from bridge.broker.pki import CertPair, issue_client, issue_server, write_private
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics

__all__ = [
    "ARCHIVE_CONSUMER",
    "ARCHIVE_STREAM",
    "CLUSTER_NAME",
    "CarAndCentral",
    "NatsCluster",
    "NatsConfigError",
    "NatsNode",
    "NatsUser",
    "archiver_inbox",
    "central_users",
    "cluster_nodes",
    "mqtt_subjects",
    "nats_bridge",
    "password_hash",
    "render_node",
    "subject_topic",
    "write_car_and_central",
    "write_nats_cluster",
]

CLUSTER_NAME = "trigger-mesh"
ACCOUNT = "MESH"
# The operator's user: creates streams and consumers (JetStream's API); never a device's.
ADMIN_USER = "admin"
# The routes between the nodes authenticate with this user and a random password.
ROUTE_USER = "route"
# A QoS 1 subscription of an MQTT client is a JetStream consumer that delivers on
# $MQTT.sub.<id>: an MQTT user with permissions must be allowed to subscribe there.
MQTT_DELIVERY = "$MQTT.sub.>"
# The protocol's largest payload plus headroom, as the mosquitto conf's message_size_limit.
MAX_PAYLOAD = 16 * 1024 * 1024 + 64 * 1024
DEFAULT_PORTS = {"client": 4222, "cluster": 6222, "mqtt": 8883, "http": 8222}
# The archive's JetStream stream and the one durable pull consumer all archivers share
# (mesh/archive/jetstream.py): the archivers' permissions name them.
ARCHIVE_STREAM = "MESH_ARCHIVE"
ARCHIVE_CONSUMER = "archivers"

# bcrypt's cost (2**cost rounds) for the users' and the routes' hashes. nats-server checks
# the hash on every connect and reconnect: a node that fails sends its cars' bridges and
# relays to the others at once. The passwords made here are 192 random bits, so the hash
# need not slow guessing, only keep the password out of the file: cost 4 (bcrypt's
# minimum) added 0.6-2.3 ms to a connect, cost 10 79-90 ms (bench/nats_auth.py,
# docs/broker.md). It keeps such a storm cheap, as the mosquitto password file's 1000
# iterations do (bridge/broker/passwd.py).
BCRYPT_COST = 4
# The account's JetStream consumers, at most (the node configs' `max_consumers`).
# nats-server makes one for every QoS 1 filter of an MQTT session: 9 for each car's bridge
# (bench/central_sessions.py). Without an account limit, nats-server 2.15 holds a stream
# to 1,000 consumers (`jetstream.limits.default_max_consumers`), and the bridges' SUBACKs
# failed from about the 111th car on. 20,000: about 2,200 cars; at that limit a further
# bridge's subscriptions are refused in their SUBACK (docs/deployment.md, sizing).
MAX_CONSUMERS = 20_000
# bcrypt reads at most 72 bytes of a password; a longer one would be cut silently.
BCRYPT_MAX_BYTES = 72

ConnectionType = Literal["STANDARD", "MQTT"]


class NatsConfigError(ValueError):
    """The cluster's configuration cannot be written as asked; the message says why."""


@dataclass(frozen=True)
class NatsNode:
    """One node: its name and where the others, the clients and the cars reach it."""

    name: str
    host: str
    client_port: int = DEFAULT_PORTS["client"]
    cluster_port: int = DEFAULT_PORTS["cluster"]
    mqtt_port: int = DEFAULT_PORTS["mqtt"]
    # Monitoring (/healthz, /varz, /jsz): bound to the loopback only.
    http_port: int = DEFAULT_PORTS["http"]
    # Where the cars' bridges reach the MQTT listener when something sits in between (a
    # NAT, a TCP load balancer; the tests' proxy); None: mqtt_port.
    bridge_port: int | None = None

    @property
    def reached_at(self) -> int:
        """The port a car's bridge connects to."""
        return self.bridge_port or self.mqtt_port


@dataclass(frozen=True)
class NatsUser:
    """A user of the mesh's account: what it may publish and subscribe to (NATS subjects)."""

    name: str
    comment: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    connection_types: tuple[ConnectionType, ...] = ("STANDARD", "MQTT")
    # None: every subject (the operator's user only).
    unrestricted: bool = False
    # Whether it subscribes over MQTT (then it may also subscribe to MQTT_DELIVERY).
    mqtt_subscribes: bool = True


def cluster_nodes(hosts: Sequence[str], count: int = 3) -> tuple[NatsNode, ...]:
    """``count`` nodes: one per host when ``hosts`` names ``count`` hosts (the standard
    ports on each), or all on the one host given, the ports counted up from the standard
    ones (node 2 listens on 4223, 6223, 8884, 8223, …)."""
    if count < 1:
        raise NatsConfigError("a cluster needs at least one node")
    if len(hosts) == count:
        return tuple(NatsNode(f"nats-{i + 1}", host) for i, host in enumerate(hosts))
    if len(hosts) != 1:
        raise NatsConfigError(f"give one host, or one per node ({count}), not {len(hosts)}")
    return tuple(
        NatsNode(
            f"nats-{i + 1}",
            hosts[0],
            client_port=DEFAULT_PORTS["client"] + i,
            cluster_port=DEFAULT_PORTS["cluster"] + i,
            mqtt_port=DEFAULT_PORTS["mqtt"] + i,
            http_port=DEFAULT_PORTS["http"] + i,
        )
        for i in range(count)
    )


def mqtt_subjects(topic: str) -> tuple[str, ...]:
    """The NATS subjects an MQTT topic or filter is inside nats-server: ``a/b.c/+`` is
    ``a.b//c.*``; ``a/#`` is ``a.>`` and ``a`` (MQTT's ``#`` also matches its parent)."""
    levels = topic.split("/")
    if any(level == "" for level in levels):
        raise NatsConfigError(f"topic {topic!r}: empty levels are not used by the mesh")
    if "#" in levels[:-1] or any(("#" in lv or "+" in lv) and len(lv) > 1 for lv in levels):
        raise NatsConfigError(f"topic {topic!r}: misplaced wildcard")

    def token(level: str) -> str:
        return {"+": "*", "#": ">"}.get(level, level.replace(".", "//"))

    subject = ".".join(token(level) for level in levels)
    if levels[-1] == "#" and len(levels) > 1:
        return (".".join(token(level) for level in levels[:-1]), subject)
    return (subject,)


def subject_topic(subject: str) -> str:
    """The MQTT topic of a NATS subject, the inverse of nats-server's conversion of a topic
    (``mqtt_subjects`` for a topic without wildcards): ``.`` separates levels, a token
    ``/`` is an empty level (a leading, trailing or doubled ``/``), ``//`` is a ``.``."""
    return "/".join("" if t == "/" else t.replace("//", ".") for t in subject.split("."))


def archiver_inbox(user: str) -> str:
    """The inbox prefix of an archiver's NATS connection: the only subjects it may
    subscribe to (JetStream's replies and the consumer's deliveries come there)."""
    return f"_INBOX.{user}"


def _archiver_user(name: str, t: Topics) -> NatsUser:
    """An archiver reads the archive's stream through the shared consumer and nothing else:
    it may fetch from it, acknowledge (ack, nak, term, in progress) and read its info; it
    publishes only the synced watermarks (over MQTT, retained). It may not publish into the
    stream's subjects, nor create, change, purge or delete a stream or consumer."""
    s, c = ARCHIVE_STREAM, ARCHIVE_CONSUMER
    return NatsUser(
        name,
        f"archiver {name}: consumes {s} through {c}, publishes log watermarks",
        (
            f"$JS.API.CONSUMER.MSG.NEXT.{s}.{c}",
            f"$JS.API.CONSUMER.INFO.{s}.{c}",
            f"$JS.ACK.{s}.{c}.>",
            *mqtt_subjects(f"{t.prefix}/log/+/synced/+"),
        ),
        (f"{archiver_inbox(name)}.>",),
        # Over MQTT it only publishes (the watermarks): no QoS 1 deliveries of others' to read.
        mqtt_subscribes=False,
    )


def _subjects(topics: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for topic in topics:
        for subject in mqtt_subjects(topic):
            if subject not in out:
                out.append(subject)
    return tuple(out)


def central_users(spec: FleetSpec, bridges: Sequence[BridgeSpec] = ()) -> tuple[NatsUser, ...]:
    """The central roles of the fleet file and the car's bridges, with the mosquitto ACL's
    grants (bridge/broker/acl.py, bridge/broker/bridge.py) as subjects; the operator's
    user first."""
    t = Topics(spec.prefix)
    users = [
        NatsUser(
            ADMIN_USER,
            "the operator: streams, consumers and everything else (keep it off devices)",
            (),
            (),
            connection_types=("STANDARD",),
            unrestricted=True,
        )
    ]
    for name in spec.dispatch:
        rules = dispatch_rules(t)
        users.append(
            NatsUser(
                name,
                f"dispatch {name}: reads everything, sends only triggers and cancels",
                _subjects(r.topic for r in rules if r.access in ("write", "readwrite")),
                (*_subjects(r.topic for r in rules if r.access in ("read", "readwrite")),),
            )
        )
    for name in spec.archivers:
        users.append(_archiver_user(name, t))
    for bridge in bridges:
        user = bridge.url.username or bridge_client_id(bridge, spec)
        crossing = bridge_topics(spec)
        users.append(
            NatsUser(
                user,
                f"the car's bridge {bridge.name!r}: writes what goes out, reads what comes in",
                (
                    *_subjects(c.pattern for c in crossing if c.direction in ("out", "both")),
                    # Its connection state (mosquitto's `notifications`), and its will there.
                    *mqtt_subjects(
                        f"$SYS/broker/connection/{bridge_client_id(bridge, spec)}/state"
                    ),
                ),
                _subjects(c.pattern for c in crossing if c.direction in ("in", "both")),
                connection_types=("MQTT",),
            )
        )
    if bridges:
        users += [_relay_user(t, spec, gw.name) for gw in spec.gateways]
    names = [u.name for u in users]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise NatsConfigError(f"user names must be unique across roles: {', '.join(twice)}")
    return tuple(users)


def _relay_user(t: Topics, spec: FleetSpec, gateway: str) -> NatsUser:
    """A car's cell relay (mesh/gateway/cell_relay.py): publishes any cell, subscribes to
    the cells of its cameras' regions, each by name (central_relay_acl_block); a wildcard
    subscription beyond them is refused."""
    try:
        cells = relay_read_cells(spec)
    except BridgeError as exc:
        raise NatsConfigError(str(exc)) from None
    read = [t.command_cell("+")] if cells is None else [t.command_cell(c) for c in cells]
    return NatsUser(
        relay_user(gateway),
        f"the cell relay of {gateway}: any cell out, its cameras' region in",
        mqtt_subjects(t.command_cell("+")),
        _subjects(read),
        connection_types=("MQTT",),
    )


def _q(value: str | Path) -> str:
    """A quoted string of the NATS config format (JSON's escapes are its own)."""
    return json.dumps(str(value))


def _tls_block(indent: str, ca: Path, server: CertPair, *, map_users: bool = False) -> list[str]:
    # map_users: a client certificate from ``ca`` is required, and its subject is the user.
    mapped = [f"{indent}  verify_and_map: true"] if map_users else []
    return [
        f"{indent}tls {{",
        f"{indent}  cert_file: {_q(server.cert)}",
        f"{indent}  key_file: {_q(server.key)}",
        f"{indent}  ca_file: {_q(ca)}",
        *mapped,
        # TLS 1.2 is Go's floor; 1.3 is negotiated when both ends speak it.
        f"{indent}  timeout: 5",
        f"{indent}}}",
    ]


def cert_user(name: str) -> str:
    """The user name nats-server maps a client certificate of common name ``name`` to (its
    subject, as ``issue_client`` writes it): ``CN=name``."""
    return f"CN={name}"


def password_hash(password: str, cost: int = BCRYPT_COST) -> str:
    """The bcrypt hash (``$2b$…``) of ``password``, as nats-server checks it."""
    try:
        import bcrypt
    except ImportError:
        raise NatsConfigError(
            "hashing the cluster's passwords needs bcrypt: pip install 'trigger-mesh[central]'"
        ) from None
    secret = password.encode()
    if not secret or len(secret) > BCRYPT_MAX_BYTES:
        raise NatsConfigError(f"a password must be 1 to {BCRYPT_MAX_BYTES} bytes (bcrypt)")
    return bcrypt.hashpw(secret, bcrypt.gensalt(rounds=cost)).decode()


def _user_block(user: NatsUser, hashed: str | None) -> list[str]:
    """``hashed``: the password's bcrypt hash; None: the user is a certificate's subject."""
    login = (
        [f"        user: {_q(cert_user(user.name))}"]
        if hashed is None
        else [f"        user: {_q(user.name)}", f"        password: {_q(hashed)}"]
    )
    lines = [
        f"      # {user.comment}",
        "      {",
        *login,
        "        allowed_connection_types: ["
        + ", ".join(_q(c) for c in user.connection_types)
        + "]",
    ]
    if not user.unrestricted:
        subscribe = list(user.subscribe)
        if "MQTT" in user.connection_types and user.mqtt_subscribes:
            subscribe.append(MQTT_DELIVERY)
        lines += [
            "        permissions: {",
            "          publish: {allow: [" + ", ".join(_q(s) for s in user.publish) + "]}",
            "          subscribe: {allow: [" + ", ".join(_q(s) for s in subscribe) + "]}",
            "        }",
        ]
    return [*lines, "      }"]


def render_node(
    node: NatsNode,
    nodes: Sequence[NatsNode],
    *,
    store_dir: Path,
    log_file: Path,
    ca: Path,
    server: CertPair,
    users: Sequence[NatsUser],
    password_hashes: Mapping[str, str],
    route_password: str,
    route_password_hash: str,
    bind: str = "0.0.0.0",  # noqa: S104 - a central node serves the fleet
    replicas: int = 3,
    auth: AuthMode = "password",
    max_consumers: int = MAX_CONSUMERS,
) -> str:
    """One node's nats-server configuration. Paths must be absolute (nats-server resolves
    relative ones against its working directory). ``password_hashes``: each user's bcrypt
    hash (``password_hash``); ``route_password`` goes into the routes to the others, its
    hash into this node's cluster authorization. ``auth="cert"``: no user has a password
    (``password_hashes`` is not read); a client certificate is their login."""
    for what, path in (("store_dir", store_dir), ("log_file", log_file), ("ca", ca)):
        if not path.is_absolute():
            raise NatsConfigError(f"{what} must be an absolute path, not {path}")
    if auth not in AUTH_MODES:
        raise NatsConfigError(f"auth must be one of {AUTH_MODES}, not {auth!r}")
    if max_consumers < 1:
        raise NatsConfigError(f"max_consumers must be at least 1, not {max_consumers}")
    by_cert = auth == "cert"
    hashes = [*([] if by_cert else password_hashes.values()), route_password_hash]
    if not all(h.startswith(("$2a$", "$2b$", "$2y$")) for h in hashes):
        # nats-server compares anything else as plain text.
        raise NatsConfigError("the node config takes bcrypt hashes, not passwords")
    routes = [
        f"nats-route://{ROUTE_USER}:{route_password}@{other.host}:{other.cluster_port}"
        for other in nodes
        if other.name != node.name
    ]
    lines = [
        f"# generated by trigger-mesh broker-config --central nats: node {node.name} of "
        f"{len(nodes)}, cluster {CLUSTER_NAME}",
        # MQTT and JetStream in a cluster need a stable, unique server name.
        f"server_name: {_q(node.name)}",
        f"listen: {_q(f'{bind}:{node.client_port}')}",
        # Monitoring (/healthz?js-enabled-only=true, /varz, /jsz): loopback only.
        f"http: {_q(f'127.0.0.1:{node.http_port}')}",
        f"max_payload: {MAX_PAYLOAD}",
        f"log_file: {_q(log_file)}",
        *_tls_block("", ca, server, map_users=by_cert),
        "jetstream {",
        f"  store_dir: {_q(store_dir)}",
        "}",
        "cluster {",
        f"  name: {_q(CLUSTER_NAME)}",
        f"  listen: {_q(f'{bind}:{node.cluster_port}')}",
        "  authorization {",
        f"    user: {_q(ROUTE_USER)}",
        f"    password: {_q(route_password_hash)}",
        "  }",
        "  routes: [",
        *(f"    {_q(route)}" for route in routes),
        "  ]",
        *_tls_block("  ", ca, server),
        "}",
        # The cars' bridges (mosquitto, MQTT 3.1.1). Sessions, retained messages and QoS 1
        # deliveries are kept in JetStream streams, replicated on `replicas` nodes: a
        # bridge that fails over to another node finds its session there.
        "mqtt {",
        f"  listen: {_q(f'{bind}:{node.mqtt_port}')}",
        f"  stream_replicas: {replicas}",
        *_tls_block("  ", ca, server, map_users=by_cert),
        "}",
        "accounts {",
        f"  {ACCOUNT}: {{",
        # A limit of the account's own: nats-server's default caps each stream instead.
        "    jetstream {",
        f"      max_consumers: {max_consumers}",
        "    }",
        "    users: [",
    ]
    for user in users:
        lines += _user_block(user, None if by_cert else password_hashes[user.name])
    lines += ["    ]", "  }", "}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class NatsCluster:
    """What ``write_nats_cluster`` wrote. Paths are absolute."""

    out_dir: Path
    nodes: tuple[NatsNode, ...]
    confs: Mapping[str, Path]
    store_dirs: Mapping[str, Path]
    log_files: Mapping[str, Path]
    ca_cert: Path
    users: tuple[NatsUser, ...]
    # auth="password": each user's password file (0600, one line).
    credentials: Mapping[str, Path] = field(default_factory=dict)
    auth: AuthMode = "password"
    # auth="cert": each user's client certificate and key (0600).
    client_certs: Mapping[str, CertPair] = field(default_factory=dict)

    def password(self, user: str) -> str:
        return self.credentials[user].read_text().strip()

    def mqtt_url(
        self, user: str, node: int = 0, host: str = "localhost", *, failover: bool = False
    ) -> BrokerUrl:
        """The mqtts URL of ``user`` on node ``node``'s MQTT listener, with its password or
        its certificate and key; with ``failover``, the other nodes' listeners follow it in
        the URL's host list (a link moves to the next when its node is lost)."""
        order = [node, *(i for i in range(len(self.nodes)) if i != node)] if failover else [node]
        url = BrokerUrl(
            scheme="mqtts",
            host=host,
            port=self.nodes[node].mqtt_port,
            ca_file=str(self.ca_cert),
            failover=tuple((host, self.nodes[i].mqtt_port) for i in order[1:]),
        )
        if self.auth == "cert":
            pair = self.client_certs[user]
            return dataclasses.replace(url, cert_file=str(pair.cert), key_file=str(pair.key))
        return dataclasses.replace(url, username=user, password=self.password(user))

    def nats_url(self, node: int = 0, host: str = "localhost") -> str:
        """``tls://host:port`` of node ``node``'s client listener (credentials apart)."""
        return f"tls://{host}:{self.nodes[node].client_port}"


def write_nats_cluster(
    out_dir: Path,
    spec: FleetSpec,
    nodes: Sequence[NatsNode],
    *,
    ca: CertPair,
    hosts: Sequence[str],
    bridges: Sequence[BridgeSpec] = (),
    passwords: Mapping[str, str] | None = None,
    bind: str = "0.0.0.0",  # noqa: S104
    days: int = 825,
    auth: AuthMode = "password",
    given_certs: Mapping[str, CertPair] | None = None,
    max_consumers: int = MAX_CONSUMERS,
) -> NatsCluster:
    """Write ``out_dir/NAME.conf`` for each node, its ``NAME/jetstream`` store and
    ``NAME/nats.log``, the nodes' certificate ``server/nats.crt`` (for ``hosts`` and every
    node's host) issued by ``ca``, and each user's password in ``credentials/USER.password``.
    ``passwords``: the bridges' (their URLs carry them); the others are made here.
    ``auth="cert"``: no passwords; each user's client certificate (``CN=USER``, from
    ``ca``) in ``credentials/USER.crt`` and ``.key``, but for those ``given_certs`` names
    (the car's bridge: its certificate lies beside the car's conf)."""
    if len({n.name for n in nodes}) != len(nodes):
        raise NatsConfigError("node names must be unique")
    users = central_users(spec, bridges)
    out = out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cert_hosts = list(dict.fromkeys([*hosts, *(n.host for n in nodes)]))
    # Also a client certificate: each node is a TLS client of the others' route listeners.
    server = issue_server(ca, out / "server", "nats", cert_hosts, days=days, client_too=True)
    if auth not in AUTH_MODES:
        raise NatsConfigError(f"auth must be one of {AUTH_MODES}, not {auth!r}")
    cred_dir = out / "credentials"
    cred_dir.mkdir(mode=0o700, exist_ok=True)
    credentials: dict[str, Path] = {}
    hashes: dict[str, str] = {}
    certs: dict[str, CertPair] = {}
    if auth == "cert":
        made = dict(given_certs or {})
        certs = {
            u.name: made.get(u.name) or issue_client(ca, cred_dir, u.name, days=days) for u in users
        }
    else:
        given = dict(passwords or {})
        for bridge in bridges:
            if bridge.url.username is not None and bridge.url.password is not None:
                given.setdefault(bridge.url.username, bridge.url.password)
        chosen = {u.name: given.get(u.name) or secrets.token_urlsafe(24) for u in users}
        for name, password in chosen.items():
            path = cred_dir / f"{name}.password"
            write_private(path, (password + "\n").encode(), replace=True)
            credentials[name] = path
        # One hash per user (and for the routes), the same in every node's config.
        hashes = {name: password_hash(password) for name, password in chosen.items()}
    route_password = secrets.token_urlsafe(24)
    route_hash = password_hash(route_password)
    ca_copy = out / "ca.crt"
    ca_copy.write_bytes(ca.cert.read_bytes())
    confs: dict[str, Path] = {}
    stores: dict[str, Path] = {}
    logs: dict[str, Path] = {}
    for node in nodes:
        node_dir = out / node.name
        node_dir.mkdir(mode=0o700, exist_ok=True)
        stores[node.name] = node_dir / "jetstream"
        logs[node.name] = node_dir / "nats.log"
        text = render_node(
            node,
            nodes,
            store_dir=stores[node.name],
            log_file=logs[node.name],
            ca=ca_copy,
            server=server,
            users=users,
            password_hashes=hashes,
            route_password=route_password,
            route_password_hash=route_hash,
            bind=bind,
            replicas=min(3, len(nodes)),
            auth=auth,
            max_consumers=max_consumers,
        )
        confs[node.name] = out / f"{node.name}.conf"
        # The users' hashes, and the routes' password in the route URLs.
        write_private(confs[node.name], text.encode(), replace=True)
    return NatsCluster(
        out_dir=out,
        nodes=tuple(nodes),
        confs=confs,
        store_dirs=stores,
        log_files=logs,
        ca_cert=ca_copy,
        users=users,
        credentials=credentials,
        auth=auth,
        client_certs=certs,
    )


def nats_bridge(
    name: str,
    spec: FleetSpec,
    nodes: Sequence[NatsNode],
    *,
    ca_file: Path,
    password: str | None = None,
    host: str | None = None,
    restart_timeout: tuple[int, int] | None = None,
    cert: CertPair | None = None,
) -> BridgeSpec:
    """The car's bridge to the cluster: the first node's MQTT listener, the others as
    failover addresses, a plain MQTT client (NATS refuses mosquitto's bridge flag). Its
    user is its client id (``tm-bridge-GATEWAY-NAME``); ``password``: made here if None.
    ``cert``: it logs in with this client certificate instead (its subject is the user).
    ``host``: the name every node is reached by (tests: localhost), else each node's host."""
    if not nodes:
        raise NatsConfigError("a bridge needs at least one node")
    probe = BridgeSpec(name, BrokerUrl(scheme="mqtt", host="x", port=1))
    user = bridge_client_id(probe, spec)
    first = nodes[0]
    url = BrokerUrl(
        scheme="mqtts", host=host or first.host, port=first.reached_at, ca_file=str(ca_file)
    )
    if cert is not None:
        url = dataclasses.replace(url, cert_file=str(cert.cert), key_file=str(cert.key))
    else:
        url = dataclasses.replace(
            url, username=user, password=password or secrets.token_urlsafe(24)
        )
    bridge = BridgeSpec(
        name,
        url,
        failover=tuple((host or n.host, n.reached_at) for n in nodes[1:]),
        private=False,
    )
    if restart_timeout is not None:
        bridge = dataclasses.replace(bridge, restart_timeout=restart_timeout)
    return bridge


@dataclass(frozen=True)
class CarAndCentral:
    """``write_car_and_central``'s result: the car's mosquitto, the cluster, the bridge."""

    car: BrokerBundle
    central: NatsCluster
    bridge: BridgeSpec


def write_car_and_central(
    out_dir: Path,
    spec: FleetSpec,
    nodes: Sequence[NatsNode],
    *,
    central_hosts: Sequence[str] = (),
    central_bind: str = "0.0.0.0",  # noqa: S104
    bridge_host: str | None = None,
    restart_timeout: tuple[int, int] | None = None,
    ca: CertPair | None = None,
    bridges: Sequence[BridgeSpec] = (),
    central_auth: AuthMode = "password",
    central_max_consumers: int = MAX_CONSUMERS,
    **car_options: Any,
) -> CarAndCentral:
    """The car's locked-down mosquitto (``write_broker_config``, ``car_options`` passed on)
    bridged to the cluster, and the cluster's configs in ``out_dir/central``, with
    certificates from the same CA (the car's, or ``ca``). ``central_auth``: how the
    cluster's users log in (``write_nats_cluster``); with "cert" the bridge's certificate
    is ``bridges/tm-bridge-GATEWAY-central.crt`` and ``.key`` beside the car's conf."""
    out = out_dir.resolve()
    probe = BridgeSpec("central", BrokerUrl(scheme="mqtt", host="x", port=1))
    try:
        bridge_user = bridge_client_id(probe, spec)
    except BridgeError as exc:
        raise NatsConfigError(str(exc)) from None
    # Where issue_client writes it, after the car's CA exists.
    bridge_cert = CertPair(
        out / "bridges" / f"{bridge_user}.crt", out / "bridges" / f"{bridge_user}.key"
    )
    bridge = nats_bridge(
        "central",
        spec,
        nodes,
        ca_file=out / "ca.crt",
        host=bridge_host,
        restart_timeout=restart_timeout,
        cert=bridge_cert if central_auth == "cert" else None,
    )
    try:
        car = write_broker_config(out, spec, ca=ca, bridges=(*bridges, bridge), **car_options)
    except BridgeError as exc:
        raise NatsConfigError(str(exc)) from None
    issuer = ca or CertPair(car.ca_cert, car.out_dir / "private" / "ca.key")
    given_certs: dict[str, CertPair] = {}
    if central_auth == "cert":
        given_certs[bridge_user] = issue_client(issuer, bridge_cert.cert.parent, bridge_user)
        # mosquitto reads the key after it drops to its user.
        car = dataclasses.replace(car, extra_reads=(bridge_cert.key,))
        car = dataclasses.replace(car, ownership_done=hand_to_broker_user(car))
    hosts = list(central_hosts) or [bridge.url.host]
    central = write_nats_cluster(
        car.out_dir / "central",
        spec,
        nodes,
        ca=issuer,
        hosts=hosts,
        bridges=(bridge,),
        bind=central_bind,
        auth=central_auth,
        max_consumers=central_max_consumers,
        given_certs=given_certs,
    )
    return CarAndCentral(car, central, bridge)

"""Edge ↔ central: the mosquitto ``connection`` section that bridges an in-car broker to a
central one (docs/broker.md § Edge ↔ central bridge). Pure: specs in, text out.

``--bridge central=mqtts://mqtt.example.org:8883?ca=…&cert=…&key=…`` becomes one
``connection central`` block in the car's mosquitto.conf. The topics it carries follow the
car's part of the fleet file (its gateways' units, its cameras): what the centre needs from
the car goes out (records, receipts, escalations, acks, status, presence, log batches),
what the car needs from the centre comes in (dispatch's triggers and cancels for its units,
other gateways' commands for its unit and cameras, the archive's log watermarks). Geo-cell
commands do not cross the bridge: the car's gateway relays the cells around the car over a
connection of its own (mesh/gateway/cell_relay.py), whose central grant
``central_relay_acl_block`` writes.

Behaviour of mosquitto 2.0.11 this relies on (checked by tests/integration/test_edge_central.py):

- with ``cleansession false`` the bridge's local side is a persistent session, so QoS 1
  messages for ``out`` topics are queued while the central broker is unreachable (up to
  the broker-wide ``max_queued_messages``) and sent, in order, when it returns; with
  ``persistence true`` that queue survives a clean restart of the in-car broker;
- messages the bridge brought in are not sent back out, and (``try_private``) the central
  broker does not send the car's own messages back in, so topics bridged in both
  directions do not loop; retained messages stay retained across;
- the bridge speaks MQTT 3.1.1: 2.0.11's MQTT 5 bridge is refused by the remote
  ("protocol error" at CONNECT) when the local conf says ``max_inflight_messages 0``, as
  ours do;
- the bridge's local side is not subject to the in-car broker's ACL: what it imports is
  published in the car as is, so the ``in`` list is the car's trust boundary.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from bridge.broker.acl import FleetSpec, region_cells
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics

__all__ = [
    "BridgeError",
    "BridgeSpec",
    "BridgeTopic",
    "bridge_client_id",
    "bridge_topics",
    "central_acl_block",
    "central_relay_acl_block",
    "parse_bridge_spec",
    "parse_bridge_specs",
    "relay_read_cells",
    "relay_user",
    "render_bridge",
    "render_bridges",
]

Direction = Literal["in", "out", "both"]
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
# Debian's system CA store: what an mqtts:// URL without ?ca= is verified against.
SYSTEM_CA_PATH = "/etc/ssl/certs"
# Decorrelated-jitter reconnect delay, seconds: a cellular uplink that comes back is used
# within CAP seconds, and the centre sees at most one TLS handshake per BASE per car.
DEFAULT_RESTART_TIMEOUT = (2, 30)
# The bridge's MQTT keepalive (s): mosquitto drops a connection silent for 1.5 of them,
# one still waiting for its CONNACK included (docs/broker.md).
BRIDGE_KEEPALIVE_S = 10


class BridgeError(ValueError):
    """A ``--bridge`` value or a bridge that cannot be configured; the message names it."""


@dataclass(frozen=True)
class BridgeSpec:
    """One ``--bridge NAME=URL``: the connection's name and the central broker's URL."""

    name: str
    url: BrokerUrl
    # (base, cap) of mosquitto's restart_timeout; tests shorten it.
    restart_timeout: tuple[int, int] = DEFAULT_RESTART_TIMEOUT
    # More (host, port) of the same central tier, tried in turn when the one in use fails:
    # the nodes of a cluster (bridge/broker/nats.py). Empty: the URL's broker only.
    failover: tuple[tuple[str, int], ...] = ()
    # mosquitto's bridge flag (try_private): a mosquitto central then sends the car's own
    # messages back to nobody. NATS refuses a CONNECT carrying it (protocol byte 132), so a
    # NATS central gets a plain MQTT 3.1.1 client (False).
    private: bool = True


@dataclass(frozen=True)
class BridgeTopic:
    """One ``topic PATTERN DIRECTION 1`` line, and why it is bridged."""

    pattern: str
    direction: Direction
    why: str


def parse_bridge_spec(text: str) -> BridgeSpec:
    """``NAME=URL``, e.g. ``central=mqtts://mqtt.example.org:8883?ca=/etc/tm/ca.crt``."""
    name, sep, url_text = text.partition("=")
    name = name.strip()
    if not sep or not url_text.strip():
        raise BridgeError(f"--bridge {text!r}: expected NAME=URL (e.g. central=mqtts://host)")
    if not _NAME_RE.match(name):
        raise BridgeError(f"--bridge {text!r}: name {name!r} must be 1-32 of [A-Za-z0-9._-]")
    try:
        url = BrokerUrl.parse(url_text)
    except ValueError as exc:
        raise BridgeError(f"--bridge {name}: {exc}") from None
    _check_url(name, url)
    return BridgeSpec(name, url)


def parse_bridge_specs(texts: Iterable[str]) -> tuple[BridgeSpec, ...]:
    """Every ``--bridge`` value; two bridges with one name are an error (the name is the
    mosquitto connection's, and part of its client id)."""
    specs: list[BridgeSpec] = []
    for text in texts:
        spec = parse_bridge_spec(text)
        if any(s.name == spec.name for s in specs):
            raise BridgeError(f"--bridge {spec.name}=…: the name {spec.name!r} is given twice")
        specs.append(spec)
    return tuple(specs)


def _check_url(name: str, url: BrokerUrl) -> None:
    where = f"--bridge {name}"
    files = {"ca": url.ca_file, "cert": url.cert_file, "key": url.key_file}
    for key, path in files.items():
        if path is None:
            continue
        # mosquitto resolves a relative path against its working directory, not the conf's.
        if not PurePosixPath(path).is_absolute():
            raise BridgeError(f"{where}: {key}={path!r} must be an absolute path")
        if _breaks_line(path):
            raise BridgeError(f"{where}: {key}= must not contain a line break")
    if (url.cert_file is None) != (url.key_file is None):
        raise BridgeError(f"{where}: cert= and key= go together")
    # A conf value is one word to the end of the line: whitespace would end or split it.
    for what, value in (("user name", url.username), ("password", url.password)):
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise BridgeError(f"{where}: the {what} must be non-empty and without spaces")
    if url.password is not None and url.username is None:
        raise BridgeError(f"{where}: a password needs a user name")
    for host, _port in url.addresses:
        if any(c.isspace() for c in host):
            raise BridgeError(f"{where}: host {host!r} must be one word")


def _breaks_line(text: str) -> bool:
    return "\n" in text or "\r" in text


def bridge_client_id(spec: BridgeSpec, fleet: FleetSpec) -> str:
    """The bridge's client id on the central broker: stable across restarts (its
    persistent session there holds what comes in while the car is away) and unique per
    car and bridge (the car's first gateway names the car)."""
    return f"tm-bridge-{_car(fleet)}-{spec.name}"


def _car(fleet: FleetSpec) -> str:
    if not fleet.gateways:
        raise BridgeError(
            "a bridge needs the car's gateway in the fleet file: its unit decides which "
            "triggers, cancels and commands come in"
        )
    return fleet.gateways[0].name


def bridge_topics(fleet: FleetSpec) -> tuple[BridgeTopic, ...]:
    """What crosses the bridge, for the car described by ``fleet`` (its gateways and
    cameras; dispatch and archivers in an edge fleet are ignored)."""
    _car(fleet)
    t = Topics(fleet.prefix)
    p = t.prefix
    units = sorted({gw.unit for gw in fleet.gateways if gw.unit is not None})
    out: list[BridgeTopic] = []
    for unit in units:
        out += [
            BridgeTopic(
                t.trigger(unit),
                "both",
                "in-car triggers go to the archive and dispatch; dispatch's come to the car",
            ),
            BridgeTopic(t.cancel(unit), "in", "dispatch's cancel requests for this unit"),
            BridgeTopic(t.receipt(unit), "out", "receipts, for the archive and dispatch"),
            BridgeTopic(t.activation(unit, "+"), "out", "activation records, for the archive"),
            BridgeTopic(t.command_unit(unit), "in", "other gateways' commands naming this unit"),
        ]
    for gw in fleet.gateways:
        out += [
            BridgeTopic(t.gateway(gw.name), "out", "the gateway's retained status and will"),
            BridgeTopic(t.acks_for(gw.name), "in", "other cars' cameras answering it"),
            BridgeTopic(t.recordings_for(gw.name), "in", "other cars' cameras' recordings for it"),
            # Only this gateway's: every car importing every log's would grow with the
            # square of the fleet (docs/deployment.md).
            BridgeTopic(t.synced_for(gw.name), "in", "the archive's watermarks of its logs"),
            BridgeTopic(t.records_from(gw.name), "out", "its log sync batches, for the archive"),
        ]
    out += [
        BridgeTopic(f"{p}/cmd/camera/{cam.name}", "in", "other gateways' retries to it")
        for cam in fleet.cameras
    ]
    # Acks, recordings and presence go out under the car's own cameras' names only, as its
    # cameras may publish them in the car: at central the bridge's user is then bound to
    # them too, so a stolen bridge credential cannot speak for another car's camera.
    for cam in fleet.cameras:
        out += [
            BridgeTopic(t.ack("+", cam.name), "out", "its acks, for the archive and gateways"),
            BridgeTopic(t.recording("+", cam.name), "out", "its recordings, for other gateways"),
            BridgeTopic(t.presence(cam.name), "out", "its presence, for dispatch (retained)"),
        ]
    out += [
        BridgeTopic(t.all_escalations(), "out", "escalations: their audiences are central"),
        # Out only if a gateway of the car may broadcast (the fleet's `broadcast`).
        BridgeTopic(t.command_all(), "both", "circles over ~1.4 km: everyone's cameras, either way")
        if any(gw.broadcast for gw in fleet.gateways)
        else BridgeTopic(t.command_all(), "in", "other cars' circles over ~1.4 km"),
        BridgeTopic(f"{p}/cmd/unit/+", "out", "this gateway's commands for other units"),
        BridgeTopic(f"{p}/cmd/camera/+", "out", "this gateway's retries to other cars' cameras"),
    ]
    return tuple(out)


def render_bridge(spec: BridgeSpec, fleet: FleetSpec) -> str:
    """The ``connection`` section for one bridge (goes after the listener settings)."""
    url = spec.url
    client_id = bridge_client_id(spec, fleet)
    base, cap = spec.restart_timeout
    if not 1 <= base <= cap:
        raise BridgeError(f"bridge {spec.name}: restart_timeout needs 1 <= base <= cap")
    # The URL's own host list (a cluster's nodes) and then the spec's failover addresses.
    addresses = [*url.addresses, *spec.failover]
    for host, port in spec.failover:
        if not host or any(c.isspace() for c in host) or not 0 < port < 65536:
            raise BridgeError(f"bridge {spec.name}: failover address {host}:{port} is not valid")
    lines = [
        f"# bridge {spec.name!r} to {url} (generated by trigger-mesh broker-config)",
        f"connection {spec.name}",
        "address " + " ".join(f"{host}:{port}" for host, port in addresses),
        *(
            # The nodes of one cluster are equals: after a failure the next one is tried
            # and kept (no return to the first while another works).
            ["round_robin true"] if len(addresses) > 1 else []
        ),
        # 3.1.1: mosquitto 2.0.11's MQTT 5 bridge sends a CONNECT the remote refuses as a
        # protocol error when max_inflight_messages is 0 (unlimited), as in our confs.
        "bridge_protocol_version mqttv311",
        *(
            # Marks the connection as a bridge at central: it does not send the car's own
            # messages back (no echo on "both" topics) and keeps their retain flag.
            ["try_private true"]
            if spec.private
            else [
                # NATS refuses the bridge flag (protocol byte 132): a plain client. Loops are
                # still prevented by direction: what the bridge brings in is never sent
                # back out (its local subscriptions are no-local); see docs/broker.md.
                "try_private false"
            ]
        ),
        # A persistent session at both ends: out-messages queue here while central is
        # down; in-messages queue at a mosquitto central while the car is away (not at
        # NATS: they come in at QoS 0, below).
        "cleansession false",
        "local_cleansession false",
        # Stable ids: a new id would start an empty session and lose what was queued.
        f"remote_clientid {client_id}",
        f"local_clientid {client_id}-local",
        "start_type automatic",
        f"restart_timeout {base} {cap}",
        # A dead uplink that sends no reset (a NAT, a tunnel), or a node that takes the
        # connection and never answers it (a NATS node whose MQTT streams are electing
        # leaders after another died), is given up on after 1.5 keepalives, and the next
        # address is tried.
        f"keepalive_interval {BRIDGE_KEEPALIVE_S}",
        # Retained state (presence, status, watermarks) keeps its retain flag across.
        "bridge_outgoing_retain true",
        # $SYS/broker/connection/<id>/state: 1 up, 0 down, here and at central (its will).
        "notifications true",
        *_credential_lines(url),
        *_tls_lines(url),
    ]
    for topic in bridge_topics(fleet):
        lines += [f"# {topic.why}", *_topic_lines(topic, nats=not spec.private)]
    return "\n".join(lines) + "\n"


def _topic_lines(topic: BridgeTopic, *, nats: bool) -> list[str]:
    """QoS 1 out: what the car sends must arrive at least once (its mosquitto queues it
    while central is away). In: QoS 1 from a mosquitto central, which queues it for the car
    while the car is away; QoS 0 from NATS, whose MQTT listener makes a replicated
    JetStream consumer of every QoS 1 filter of a session (7 and one per camera for each
    car: about 167,000 at 50,000 cameras, more than a cluster holds; docs/deployment.md).
    What central sends a car while its bridge is away is then not kept for it: the
    watermarks are retained, a gateway retries its commands, dispatch sees no receipt."""
    pattern, direction = topic.pattern, topic.direction
    if not nats or direction == "out":
        return [f"topic {pattern} {direction} 1"]
    if direction == "in":
        return [f"topic {pattern} in 0"]
    return [f"topic {pattern} out 1", f"topic {pattern} in 0"]


def render_bridges(specs: Sequence[BridgeSpec], fleet: FleetSpec) -> str:
    """Every bridge's section, in the order given; empty without bridges."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise BridgeError(f"bridge names must be unique: {names}")
    return "\n".join(render_bridge(spec, fleet) for spec in specs)


def _credential_lines(url: BrokerUrl) -> list[str]:
    if url.username is None:
        return []
    lines = [f"remote_username {url.username}"]
    if url.password is not None:
        lines.append(f"remote_password {url.password}")
    return lines


def _tls_lines(url: BrokerUrl) -> list[str]:
    if not url.tls:
        return []
    lines = (
        [f"bridge_cafile {url.ca_file}"]
        if url.ca_file is not None
        else [f"bridge_capath {SYSTEM_CA_PATH}"]
    )
    if url.cert_file is not None and url.key_file is not None:
        lines += [f"bridge_certfile {url.cert_file}", f"bridge_keyfile {url.key_file}"]
    return [
        *lines,
        # The central's certificate must name the host in the URL.
        "bridge_insecure false",
    ]


def central_acl_block(spec: BridgeSpec, fleet: FleetSpec, user: str) -> str:
    """The ACL block the central broker grants the bridge's user ``user``: write what goes
    out, read what comes in, and its connection-state notification."""
    access = {"out": "write", "in": "read", "both": "readwrite"}
    lines = [f"# bridge {spec.name} of {_car(fleet)}", f"user {user}"]
    lines += [f"topic {access[t.direction]} {t.pattern}" for t in bridge_topics(fleet)]
    lines.append(f"topic write $SYS/broker/connection/{bridge_client_id(spec, fleet)}/state")
    return "\n".join(lines) + "\n"


def relay_user(gateway: str) -> str:
    """The cell relay's user (and client id) at central: ``tm-relay-{gateway}``, the
    common name of its certificate (mesh/gateway/cell_relay.py relay_client_id)."""
    return f"tm-relay-{gateway}"


def relay_read_cells(fleet: FleetSpec) -> tuple[str, ...] | None:
    """The cells a car's relay may read at central: every cell of its cameras' regions
    (each camera's ``cells``, or the fleet's ``camera_cells``), at most MAX_CAMERA_CELLS;
    None (every cell) if a camera of the car has no region, or the car has no camera.
    Raises BridgeError if the regions together are more than that."""
    regions = [fleet.region_of(cam) for cam in fleet.cameras]
    if not regions or any(region is None for region in regions):
        return None
    prefixes = sorted({prefix for region in regions if region is not None for prefix in region})
    try:
        return region_cells(tuple(prefixes))
    except ValueError as exc:
        raise BridgeError(f"the cell relay's region (its cameras' together): {exc}") from None


def central_relay_acl_block(fleet: FleetSpec, gateway: str) -> str:
    """The ACL block the central broker grants a car's cell relay: write any cell (its
    gateway's circles go where they go, as in the car), read only the cells of the car's
    region, each by name (mosquitto checks read access on every delivery: a stolen relay
    credential that subscribes to ``{p}/cmd/cell/+`` still gets only those)."""
    t = Topics(fleet.prefix)
    cells = relay_read_cells(fleet)
    lines = [
        f"# the cell relay of gateway {gateway} of {_car(fleet)}: "
        + (
            "every cell (no camera region in the fleet file)"
            if cells is None
            else f"the {len(cells)} cells of its cameras' regions"
        ),
        f"user {relay_user(gateway)}",
        f"topic write {t.command_cell('+')}",
    ]
    if cells is None:
        lines.append(f"topic read {t.command_cell('+')}")
    else:
        lines += [f"topic read {t.command_cell(cell)}" for cell in cells]
    return "\n".join(lines) + "\n"

"""Who may publish and read what on the broker: the fleet and its mosquitto ACL. Pure.

Every principal is a broker username: a gateway's id, a camera's id, a dispatch console's
or an archiver's name (the common name of its client certificate, or its password-file
user). The rules follow the topics each program really uses (docs/broker.md has the table
and the reasons); nothing is granted to anonymous clients.

mosquitto's ACL file checks PUBLISH (write) when a message arrives and read access when it
is delivered, to each subscriber and for retained messages. It does not check SUBSCRIBE:
a subscription to a forbidden filter is granted and receives nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from bridge.topics import Topics

_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
Access = Literal["read", "write", "readwrite"]


class FleetError(ValueError):
    """A fleet description that cannot be turned into broker accounts. ``key`` says where
    (e.g. ``cameras.3.id``) so that a file loader can name it."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


@dataclass(frozen=True)
class Principal:
    """A gateway or camera: its id (the broker username) and the unit it belongs to."""

    name: str
    unit: str | None = None


@dataclass(frozen=True)
class FleetSpec:
    """Every identity the broker accepts, by role."""

    prefix: str = "mesh/v1"
    gateways: tuple[Principal, ...] = ()
    cameras: tuple[Principal, ...] = ()
    dispatch: tuple[str, ...] = ()
    archivers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            Topics(self.prefix)
        except ValueError as exc:
            raise FleetError("prefix", str(exc)) from None
        seen: dict[str, str] = {}
        for key, name, unit in self._entries():
            if not _ID_RE.match(name) or name in (".", ".."):
                raise FleetError(key, f"id {name!r} must be 1-64 of [A-Za-z0-9._:-]")
            if name in seen:
                raise FleetError(key, f"id {name!r} is already used by {seen[name]}")
            seen[name] = key
            if unit is not None and not _ID_RE.match(unit):
                raise FleetError(key, f"unit {unit!r} must be 1-64 of [A-Za-z0-9._:-]")
        for role, members in (("gateways", self.gateways), ("cameras", self.cameras)):
            for i, member in enumerate(members):
                if member.unit is None:
                    raise FleetError(f"{role}.{i}.unit", "required: the unit it belongs to")

    def _entries(self) -> Iterator[tuple[str, str, str | None]]:
        for role, members in (("gateways", self.gateways), ("cameras", self.cameras)):
            for i, member in enumerate(members):
                yield f"{role}.{i}.id", member.name, member.unit
        for role, names in (("dispatch", self.dispatch), ("archivers", self.archivers)):
            for i, name in enumerate(names):
                yield f"{role}.{i}", name, None

    @property
    def names(self) -> tuple[str, ...]:
        """Every principal's name, in file order."""
        return tuple(name for _, name, _ in self._entries())

    def role_of(self, name: str) -> str:
        for key, member, _ in self._entries():
            if member == name:
                return key.split(".", 1)[0]
        raise KeyError(name)


@dataclass(frozen=True)
class Rule:
    access: Access
    topic: str


@dataclass(frozen=True)
class AclBlock:
    user: str
    comment: str
    rules: tuple[Rule, ...]


def gateway_rules(t: Topics, gateway: str, unit: str) -> tuple[Rule, ...]:
    p = t.prefix
    return (
        Rule("write", t.command_unit(unit)),
        Rule("write", f"{p}/cmd/cell/+"),
        Rule("write", f"{p}/cmd/camera/+"),
        # Circles of more than fanout.MAX_CELLS cells go to everyone: denying it would drop
        # large-radius activations at the broker, and cmd/cell/+ reaches every cell anyway.
        Rule("write", t.command_all()),
        # The in-car terminal's `trigger-mesh trigger` runs on the gateway's credential:
        # it publishes the manual trigger and watches the receipt and outcome.
        Rule("readwrite", t.trigger(unit)),
        Rule("read", t.cancel(unit)),
        Rule("read", t.acks_for(gateway)),
        Rule("read", t.all_presence()),
        Rule("readwrite", t.receipt(unit)),
        Rule("readwrite", t.activation(unit, "+")),
        Rule("write", t.all_escalations()),
        Rule("readwrite", t.gateway(gateway)),
        # Log ids are random per log file, not per gateway: the archive checks the records.
        Rule("write", f"{p}/log/+/records"),
        # The watermarks name their gateway: only its own.
        Rule("read", t.synced_for(gateway)),
    )


def camera_rules(t: Topics, camera: str, unit: str) -> tuple[Rule, ...]:
    p = t.prefix
    return (
        Rule("read", t.command_all()),
        Rule("read", f"{p}/cmd/cell/+"),
        Rule("read", t.command_unit(unit)),
        Rule("read", t.command_camera(camera)),
        Rule("write", f"{p}/ack/+/{camera}"),
        Rule("readwrite", t.presence(camera)),
    )


def dispatch_rules(t: Topics) -> tuple[Rule, ...]:
    return (
        Rule("read", f"{t.prefix}/#"),
        Rule("write", t.trigger("+")),
        Rule("write", t.cancel("+")),
    )


def archiver_rules(t: Topics) -> tuple[Rule, ...]:
    p = t.prefix
    # What mesh.archive.intake.archived_filters subscribes to (as $share/archivers/...:
    # mosquitto checks read access on the plain topic of each delivered message).
    reads = (
        t.trigger("+"),
        t.all_receipts(),
        t.all_activations(),
        f"{p}/ack/+/+",
        t.all_escalations(),
        t.all_log_records(),
    )
    return (
        *(Rule("read", topic) for topic in reads),
        Rule("write", f"{p}/log/+/synced/+"),
    )


def acl_blocks(spec: FleetSpec) -> tuple[AclBlock, ...]:
    t = Topics(spec.prefix)
    blocks: list[AclBlock] = []
    for gw in spec.gateways:
        assert gw.unit is not None  # FleetSpec checks it
        comment = f"gateway {gw.name} of unit {gw.unit}"
        blocks.append(AclBlock(gw.name, comment, gateway_rules(t, gw.name, gw.unit)))
    for cam in spec.cameras:
        assert cam.unit is not None
        comment = f"camera {cam.name} of unit {cam.unit}"
        blocks.append(AclBlock(cam.name, comment, camera_rules(t, cam.name, cam.unit)))
    for name in spec.dispatch:
        comment = f"dispatch {name}: reads everything, sends only triggers and cancels"
        blocks.append(AclBlock(name, comment, dispatch_rules(t)))
    for name in spec.archivers:
        blocks.append(AclBlock(name, f"archiver {name}", archiver_rules(t)))
    return tuple(blocks)


def render_acl(spec: FleetSpec) -> str:
    """The mosquitto ``acl_file``: one block per user; no rules for anonymous clients
    (rules before the first ``user`` line would apply to them)."""
    lines = [
        "# generated by trigger-mesh broker-config: one block per broker user",
        f"# topic prefix {spec.prefix}; users not listed here may neither publish nor read",
    ]
    for block in acl_blocks(spec):
        lines += ["", f"# {block.comment}", f"user {block.user}"]
        lines += [f"topic {rule.access} {rule.topic}" for rule in block.rules]
    return "\n".join(lines) + "\n"

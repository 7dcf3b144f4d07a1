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

from bridge.topics import UNNAMED_SENDER, Topics

_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
Access = Literal["read", "write", "readwrite"]

# The cell topics' grid (mesh/decide/cells.py: CELL_PRECISION, ALPHABET; a test checks they
# agree). A cell is one topic level, and an ACL pattern cannot match part of a level, so a
# camera's region (geohash prefixes) is granted cell by cell.
CELL_LENGTH = 6
GEOHASH_ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"
# A region prefix of 4 characters (about 39 x 20 km) is 1,024 cells, of 5 (4.9 x 4.9 km)
# 32. The ACL grows with cameras x cells (1,000 cameras of 1,024 cells: 36 MB, 89 MB of
# broker memory) and mosquitto walks a user's rules on every delivery to it: bounded here.
REGION_MIN_LENGTH = 4
MAX_CAMERA_CELLS = 2048


class FleetError(ValueError):
    """A fleet description that cannot be turned into broker accounts. ``key`` says where
    (e.g. ``cameras.3.id``) so that a file loader can name it."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


@dataclass(frozen=True)
class Principal:
    """A gateway or camera: its id (the broker username) and the unit it belongs to.

    ``cells`` (cameras): the geohash prefixes of the region whose cell topics it may read;
    None: every cell. ``broadcast`` (gateways): it may publish on ``{p}/cmd/all``."""

    name: str
    unit: str | None = None
    cells: tuple[str, ...] | None = None
    broadcast: bool = False


def region_cells(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """Every cell (geohash of CELL_LENGTH) under the given prefixes, sorted, once.
    Raises ValueError naming a prefix that is not one, or a region that is too large."""
    cells: set[str] = set()
    for prefix in prefixes:
        if not REGION_MIN_LENGTH <= len(prefix) <= CELL_LENGTH or any(
            c not in GEOHASH_ALPHABET for c in prefix
        ):
            raise ValueError(
                f"cell prefix {prefix!r} must be {REGION_MIN_LENGTH} to {CELL_LENGTH} "
                f"characters of the geohash alphabet ({GEOHASH_ALPHABET})"
            )
        count = len(GEOHASH_ALPHABET) ** (CELL_LENGTH - len(prefix))
        if len(cells) + count > MAX_CAMERA_CELLS:
            raise ValueError(f"the region is more than {MAX_CAMERA_CELLS} cells")
        level = [prefix]
        for _ in range(CELL_LENGTH - len(prefix)):
            level = [cell + c for cell in level for c in GEOHASH_ALPHABET]
        cells.update(level)
    return tuple(sorted(cells))


@dataclass(frozen=True)
class FleetSpec:
    """Every identity the broker accepts, by role."""

    prefix: str = "mesh/v2"
    gateways: tuple[Principal, ...] = ()
    cameras: tuple[Principal, ...] = ()
    dispatch: tuple[str, ...] = ()
    archivers: tuple[str, ...] = ()
    # The region of every camera that names none of its own (None: every cell).
    camera_cells: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        try:
            Topics(self.prefix)
        except ValueError as exc:
            raise FleetError("prefix", str(exc)) from None
        seen: dict[str, str] = {}
        for key, name, unit in self._entries():
            if not _ID_RE.match(name) or name in (".", "..", UNNAMED_SENDER):
                raise FleetError(key, _id_problem(name))
            if name in seen:
                raise FleetError(key, f"id {name!r} is already used by {seen[name]}")
            seen[name] = key
            if unit is not None and not _ID_RE.match(unit):
                raise FleetError(key, f"unit {unit!r} must be 1-64 of [A-Za-z0-9._:-]")
        for role, members in (("gateways", self.gateways), ("cameras", self.cameras)):
            for i, member in enumerate(members):
                if member.unit is None:
                    raise FleetError(f"{role}.{i}.unit", "required: the unit it belongs to")
        for i, gw in enumerate(self.gateways):
            if gw.cells is not None:
                raise FleetError(f"gateways.{i}.cells", "only cameras have a region")
        for i, cam in enumerate(self.cameras):
            if cam.broadcast:
                raise FleetError(f"cameras.{i}.broadcast", "only gateways may broadcast")
            self._check_region(f"cameras.{i}.cells", cam.cells)
        self._check_region("camera_cells", self.camera_cells)

    @staticmethod
    def _check_region(key: str, prefixes: tuple[str, ...] | None) -> None:
        if prefixes is None:
            return
        if not prefixes:
            raise FleetError(key, "an empty region: give prefixes, or leave it out for all")
        try:
            region_cells(prefixes)
        except ValueError as exc:
            raise FleetError(key, str(exc)) from None

    def region_of(self, camera: Principal) -> tuple[str, ...] | None:
        """The cell prefixes a camera may read (None: every cell)."""
        return camera.cells if camera.cells is not None else self.camera_cells

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


def _id_problem(name: str) -> str:
    if name == UNNAMED_SENDER:  # the sender level of a log sent without a gateway
        return f"id {name!r} is reserved (the name of logs sent without a gateway)"
    return f"id {name!r} must be 1-64 of [A-Za-z0-9._:-]"


@dataclass(frozen=True)
class Rule:
    access: Access
    topic: str


@dataclass(frozen=True)
class AclBlock:
    user: str
    comment: str
    rules: tuple[Rule, ...]


def gateway_rules(
    t: Topics, gateway: str, unit: str, *, broadcast: bool = False
) -> tuple[Rule, ...]:
    p = t.prefix
    # Circles of more than fanout.MAX_CELLS cells (radius over ~1.4 km) go to everyone on
    # cmd/all; only gateways whose policy has such radii need it (the fleet says so).
    everyone = (Rule("write", t.command_all()),) if broadcast else ()
    return (
        Rule("write", t.command_unit(unit)),
        # Read too: its cell relay takes its commands to central (mesh/gateway/cell_relay.py).
        Rule("readwrite", f"{p}/cmd/cell/+"),
        Rule("write", f"{p}/cmd/camera/+"),
        *everyone,
        # The in-car terminal's `trigger-mesh trigger` runs on the gateway's credential:
        # it publishes the manual trigger and watches the receipt and outcome.
        Rule("readwrite", t.trigger(unit)),
        Rule("read", t.cancel(unit)),
        Rule("read", t.acks_for(gateway)),
        Rule("read", t.recordings_for(gateway)),
        Rule("read", t.all_presence()),
        Rule("readwrite", t.receipt(unit)),
        Rule("readwrite", t.activation(unit, "+")),
        Rule("write", t.all_escalations()),
        Rule("readwrite", t.gateway(gateway)),
        # Log batches only under its own name: the archive stores a log's batches from
        # the gateway that bound it only (docs/archive.md).
        Rule("write", t.records_from(gateway)),
        # The watermarks name their gateway: only its own.
        Rule("read", t.synced_for(gateway)),
    )


def camera_rules(
    t: Topics, camera: str, unit: str, region: tuple[str, ...] | None = None
) -> tuple[Rule, ...]:
    """``region``: geohash prefixes of the cells it may read (None: every cell). Its own
    rules come first: mosquitto walks a user's rules in order on every delivery."""
    p = t.prefix
    cells = (
        (Rule("read", f"{p}/cmd/cell/+"),)
        if region is None
        else tuple(Rule("read", t.command_cell(cell)) for cell in region_cells(region))
    )
    return (
        Rule("read", t.command_all()),
        Rule("read", t.command_unit(unit)),
        Rule("read", t.command_camera(camera)),
        Rule("write", f"{p}/ack/+/{camera}"),
        # Its recordings' starts and stops, to any issuer, under its own id only.
        Rule("write", f"{p}/recording/+/{camera}"),
        Rule("readwrite", t.presence(camera)),
        *cells,
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
        comment = f"gateway {gw.name} of unit {gw.unit}" + (
            ", may broadcast on cmd/all" if gw.broadcast else ""
        )
        rules = gateway_rules(t, gw.name, gw.unit, broadcast=gw.broadcast)
        blocks.append(AclBlock(gw.name, comment, rules))
    for cam in spec.cameras:
        assert cam.unit is not None
        region = spec.region_of(cam)
        comment = f"camera {cam.name} of unit {cam.unit}" + (
            f", cells of region {' '.join(region)}" if region is not None else ", every cell"
        )
        rules = camera_rules(t, cam.name, cam.unit, region)
        blocks.append(AclBlock(cam.name, comment, rules))
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

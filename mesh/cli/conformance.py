"""``trigger-mesh conformance camera|gateway``: the conformance kit (docs/conformance.md).

Registered on the main app in ``mesh.cli.app``. The exit status: 0 when every MUST
passed; 1 when a MUST failed or was not run (out of scope only by an option: ``--skip``,
or the signed checks of an unsigned run); 2 for a usage error.
"""

from __future__ import annotations

import re
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from bridge.topics import DEFAULT_PREFIX
from mesh.cli.common import (
    EXIT_NOT_CONFIRMED,
    EXIT_OK,
    BrokerOpt,
    PrefixOpt,
    client_broker,
    console,
    fail,
    reachable_broker,
    run_until_signal,
    topic_schema,
)
from mesh.ops import logs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mesh.conformance.camera.session import Keys
    from mesh.conformance.gateway.runner import GatewayKeys
    from mesh.conformance.verdict import Check, Result
    from mesh.protocol.models import GeoPoint

T = TypeVar("T")
_IDENT = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

JunitOpt = Annotated[
    Path | None, typer.Option("--junit", help="Write the results as JUnit XML to this file")
]
TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", min=0.5, max=120, help="Seconds to wait for each answer owed"),
]
SkipOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--skip", help="Put this check out of scope (repeat); it is reported, never run as failed"
    ),
]
TrustOpt = Annotated[
    Path | None,
    typer.Option("--trust", help="Signed run: the trust store the device under test uses"),
]


def camera(
    camera_id: Annotated[str, typer.Option("--camera-id", help="The camera under test")],
    broker: BrokerOpt = None,
    unit: Annotated[
        str | None, typer.Option("--unit", help="Its unit (default: from its presence)")
    ] = None,
    prefix: PrefixOpt = DEFAULT_PREFIX,
    position: Annotated[
        str | None,
        typer.Option("--position", help="LAT,LON where it is (default: from its presence)"),
    ] = None,
    trust: TrustOpt = None,
    gateway_key: Annotated[
        Path | None,
        typer.Option(
            "--gateway-key",
            help="Signed run: a gateway key the camera trusts; the kit issues commands as "
            "that gateway",
        ),
    ] = None,
    other_gateway_key: Annotated[
        Path | None,
        typer.Option(
            "--other-gateway-key",
            help="Signed run: a second gateway key the camera trusts (distinct_issuers needs it)",
        ),
    ] = None,
    issuer: Annotated[
        str, typer.Option("--issuer", help="Unsigned run: the gateway id the kit speaks as")
    ] = "conformance-gw",
    camera_cmd: Annotated[
        str | None,
        typer.Option(
            "--camera-cmd",
            help="Start the camera with this command, and kill it (SIGKILL) at the end to "
            "see its last will; without it last_will_offline is not run",
        ),
    ] = None,
    camera_log: Annotated[
        Path | None, typer.Option("--camera-log", help="Append the --camera-cmd's output here")
    ] = None,
    move_cmd: Annotated[
        str | None,
        typer.Option(
            "--move-cmd",
            help="A command that gives the running camera a new fix, {lat} and {lon} "
            "replaced; without it cell_follows_move is not run",
        ),
    ] = None,
    junit: JunitOpt = None,
    timeout_s: TimeoutOpt = 5.0,
    quiet_s: Annotated[
        float,
        typer.Option("--quiet", min=0.2, max=30, help="Seconds of silence that count as no answer"),
    ] = 1.0,
    skip: SkipOpt = None,
) -> None:
    """Check one camera against the protocol: the kit plays gateway, dispatch and
    attacker over MQTT and reports every MUST and SHOULD of the camera's side.

    Exit status 0 when every MUST passed; 1 when a MUST failed or was not run (a check the
    kit could not make counts as failed unless put out of scope by an option: --skip
    NAME, or the signed checks of an unsigned run); SHOULDs never change it; 2 for a
    usage error.
    """
    from mesh.conformance.camera import catalog
    from mesh.conformance.camera.context import CameraOptions
    from mesh.conformance.camera.process import split_command
    from mesh.conformance.camera.runner import run_camera

    logs.configure("console", "warning")
    _ident(camera_id, "--camera-id")
    _ident(issuer, "--issuer")
    if unit is not None:
        _ident(unit, "--unit")
    url = reachable_broker(client_broker(broker))
    topic_schema(prefix)
    skipped = _skips(catalog.CHECKS, skip)
    keys, signed_issuer, other_issuer = _camera_keys(trust, gateway_key, other_gateway_key)
    try:
        cmd = split_command(camera_cmd) if camera_cmd is not None else None
        move = split_command(move_cmd) if move_cmd is not None else None
    except ValueError as exc:
        fail(f"--camera-cmd/--move-cmd: {exc}")
    if move is not None and not any("{lat}" in w for w in move):
        fail("--move-cmd must carry {lat} and {lon}, where the kit puts the new position")
    options = CameraOptions(
        camera_id=camera_id,
        prefix=prefix,
        unit_id=unit,
        position=_position(position),
        issuer=signed_issuer or issuer,
        other_issuer=other_issuer or f"{(signed_issuer or issuer)[:60]}-2",
        timeout_s=timeout_s,
        quiet_s=quiet_s,
        camera_cmd=cmd,
        camera_log=camera_log,
        move_cmd=move,
        keys=keys,
    )
    report = _run(run_camera(url, options))
    title = (
        f"trigger-mesh conformance camera {camera_id} at {url.host}:{url.port}, prefix "
        f"{prefix}, {report.properties['mode']} run as {options.issuer}"
    )
    _finish("camera", title, report.results, report.seconds, report.properties, skipped, junit)


def _camera_keys(
    trust: Path | None, gateway_key: Path | None, other_key: Path | None
) -> tuple[Keys, str | None, str | None]:
    """A signed run's keys, the issuer the gateway key speaks for, and the other's."""
    from mesh.conformance import wire
    from mesh.conformance.camera.session import Keys

    if (trust is None) != (gateway_key is None):
        fail("--trust and --gateway-key go together (a signed run), or neither (unsigned)")
    if trust is None or gateway_key is None:
        if other_key is not None:
            fail("--other-gateway-key is for a signed run: give --trust and --gateway-key too")
        return Keys(), None, None
    try:
        store = wire.load_trust(trust)
        signer = wire.load_signer(gateway_key)
        other = wire.load_signer(other_key) if other_key is not None else None
    except wire.WireError as exc:
        fail(str(exc))
    issuer = wire.subject_of(signer, store, wire.Role.GATEWAY)
    if issuer is None:
        fail(f"--gateway-key: key {signer.key_id} is not a gateway key in {trust}")
    other_issuer = None
    if other is not None:
        other_issuer = wire.subject_of(other, store, wire.Role.GATEWAY)
        if other_issuer is None or other_issuer == issuer:
            fail(f"--other-gateway-key: key {other.key_id} is not another gateway's key in {trust}")
    keys = Keys(gateway=signer, other=other, attacker=wire.new_signer(), trust=store)
    return keys, issuer, other_issuer


def _ident(value: str, option: str) -> None:
    if not _IDENT.match(value):
        fail(f"{option} {value!r}: an id is 1-64 of A-Z a-z 0-9 . _ : -")


def _position(text: str | None) -> GeoPoint | None:
    if text is None:
        return None
    from mesh.protocol.models import GeoPoint

    try:
        lat, lon = (float(part) for part in text.split(","))
        return GeoPoint(lat=lat, lon=lon)
    except ValueError:
        fail(f"--position {text!r}: LAT,LON in degrees, e.g. 39.952583,-75.165222")


def _skips(checks: Sequence[Check], names: list[str] | None) -> list[str]:
    from mesh.conformance.verdict import unknown_names

    chosen = names or []
    unknown = unknown_names(checks, chosen)
    if unknown:
        fail(
            f"--skip: no check named {', '.join(unknown)}; the checks: "
            + ", ".join(c.name for c in checks)
        )
    return chosen


def _run(coro: Coroutine[Any, Any, T]) -> T:
    from bridge.mqtt.client import LinkDown

    try:
        result = run_until_signal(coro)
    except LinkDown as exc:
        fail(f"cannot reach the broker: {exc}")
    if result is None:
        raise typer.Exit(130)
    return result  # type: ignore[no-any-return]


def _finish(
    suite: str,
    title: str,
    results: list[Result],
    seconds: float,
    properties: dict[str, str],
    skipped: list[str],
    junit: Path | None,
) -> None:
    from mesh.conformance import report
    from mesh.conformance.verdict import conformant, scoped

    results = scoped(results, skipped)
    out = console(soft_wrap=True)
    out.print(f"{title} ({seconds:.1f} s)", highlight=False, markup=False)
    out.print(report.table(results, width=max(100, out.width)), highlight=False, markup=False)
    out.print(report.summary(results), highlight=False, markup=False)
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(report.junit(suite, results, seconds=seconds, properties=properties))
    raise typer.Exit(EXIT_OK if conformant(results) else EXIT_NOT_CONFIRMED)


def gateway(
    unit: Annotated[str, typer.Option("--unit", help="The unit the gateway under test serves")],
    broker: BrokerOpt = None,
    prefix: PrefixOpt = DEFAULT_PREFIX,
    gateway_id: Annotated[
        str | None, typer.Option("--gateway-id", help="Its gateway id (default gw-UNIT)")
    ] = None,
    origin: Annotated[
        str,
        typer.Option("--origin", help="LAT,LON of trigger A, around which the kit's cameras are"),
    ] = "39.952583,-75.165222",
    kind: Annotated[
        str, typer.Option("--kind", help="The kind of the triggers (its radius must reach 45 m)")
    ] = "weapon_draw",
    trust: TrustOpt = None,
    dispatch_key: Annotated[
        Path | None,
        typer.Option(
            "--dispatch-key",
            help="Signed run: a dispatch key (or the gateway's own) that signs the triggers "
            "and cancels",
        ),
    ] = None,
    camera_keys: Annotated[
        Path | None,
        typer.Option(
            "--camera-keys",
            help="Signed run: a folder of the kit's cameras' keys, CAMERA_ID.key each (in "
            "the gateway's trust store)",
        ),
    ] = None,
    junit: JunitOpt = None,
    timeout_s: TimeoutOpt = 10.0,
    skip: SkipOpt = None,
) -> None:
    """Check one running gateway against the protocol: the kit plays eleven cameras and
    dispatch over MQTT and reports every MUST and SHOULD of the gateway's side.

    Exit status 0 when every MUST passed; 1 when a MUST failed or was not run (a check the
    kit could not make counts as failed unless put out of scope by an option: --skip
    NAME, or the signed checks of an unsigned run); SHOULDs never change it; 2 for a
    usage error.
    """
    from mesh.conformance.gateway import catalog
    from mesh.conformance.gateway.runner import GatewayOptions, run_gateway
    from mesh.protocol.models import TriggerKind

    logs.configure("console", "warning")
    _ident(unit, "--unit")
    gateway_id = gateway_id or f"gw-{unit}"
    _ident(gateway_id, "--gateway-id")
    url = reachable_broker(client_broker(broker))
    topic_schema(prefix)
    skipped = _skips(catalog.CHECKS, skip)
    try:
        trigger_kind = TriggerKind(kind)
    except ValueError:
        fail(f"--kind {kind!r}: one of {', '.join(k.value for k in TriggerKind)}")
    place = _position(origin)
    assert place is not None
    options = GatewayOptions(
        unit_id=unit,
        prefix=prefix,
        gateway_id=gateway_id,
        origin=place,
        kind=trigger_kind,
        timeout_s=timeout_s,
        keys=_gateway_keys(trust, dispatch_key, camera_keys, gateway_id, unit),
    )
    report = _run(run_gateway(url, options))
    title = (
        f"trigger-mesh conformance gateway {gateway_id} (unit {unit}) at {url.host}:{url.port}, "
        f"prefix {prefix}, {report.properties['mode']} run, kind {trigger_kind.value}"
    )
    _finish("gateway", title, report.results, report.seconds, report.properties, skipped, junit)


def _gateway_keys(
    trust: Path | None, dispatch_key: Path | None, folder: Path | None, gateway_id: str, unit: str
) -> GatewayKeys:
    from mesh.conformance import wire
    from mesh.conformance.gateway.runner import GatewayKeys
    from mesh.conformance.gateway.scene import cameras

    given = [x is not None for x in (trust, dispatch_key, folder)]
    if any(given) and not all(given):
        fail("--trust, --dispatch-key and --camera-keys go together (a signed run), or none")
    if trust is None or dispatch_key is None or folder is None:
        return GatewayKeys()
    try:
        store = wire.load_trust(trust)
        dispatch = wire.load_signer(dispatch_key)
    except wire.WireError as exc:
        fail(str(exc))
    if wire.subject_of(dispatch, store, wire.Role.DISPATCH) is None and (
        wire.subject_of(dispatch, store, wire.Role.GATEWAY) != gateway_id
    ):
        fail(
            f"--dispatch-key: key {dispatch.key_id} is no dispatch key (nor {gateway_id}'s) "
            f"in {trust}"
        )
    needed = [c.camera_id for c in cameras(unit) if c.answers]
    missing = [c for c in needed if not (folder / f"{c}.key").is_file()]
    if missing:
        fail(
            f"--camera-keys: {folder} lacks {', '.join(f'{c}.key' for c in missing)} (make "
            "them with `trigger-mesh keys new --role camera --id ID --out DIR --trust F`)"
        )
    try:
        signers = {c: wire.load_signer(folder / f"{c}.key") for c in needed}
    except wire.WireError as exc:
        fail(str(exc))
    return GatewayKeys(trust=store, dispatch=dispatch, cameras=signers, attacker=wire.new_signer())

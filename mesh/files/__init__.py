"""Files shipped in the package for the user to copy out (``trigger-mesh files``).

The entries of this folder are symbolic links to their one source in the repository
(configs/, deploy/systemd/, docs/schemas/, docs/asyncapi.yaml); building the wheel copies
what they point to, so an installed package holds the files themselves. They are read
through importlib.resources, which works from a wheel and from an editable install alike.

What is listed and copied is an allowlist: the package-data globs of pyproject.toml
(``files/configs/*.yaml`` …, checked equal by tests/unit/test_shipped_files.py), never
whatever else lies in these folders (``__pycache__``, a sensor keystore, a stray file).

Copying out never follows a symbolic link at or below ``--out``: the directory and every
folder under it are opened with O_NOFOLLOW and written through their descriptors, a new file
is created with O_CREAT|O_EXCL (which never follows a link, dangling or not), and ``--force``
writes a temporary file beside the old one and renames it over, so that a link planted in
the output directory (``configs/gateway.yaml -> /etc/…``) is refused, never written through.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from dataclasses import dataclass
from fnmatch import fnmatchcase
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from importlib.resources.abc import Traversable


@dataclass(frozen=True)
class Shipped:
    name: str
    # Globs under this package, each pyproject.toml's package-data "files/<glob>": a folder
    # part and a file-name pattern ("*" matches no "/" and, as setuptools' glob, no leading ".").
    globs: tuple[str, ...]
    about: str


SHIPPED = (
    Shipped(
        "configs",
        ("configs/*.yaml", "configs/can/*.yaml", "configs/can/*.dbc"),
        "example gateway, camera, fleet and policy configs; can/: CAN rules "
        "(ford-police-interceptor.yaml), the demo's DBC and a patrol for vehicle-sim",
    ),
    Shipped("systemd", ("systemd/*",), "hardened systemd units of the daemons"),
    Shipped("schemas", ("schemas/*.json",), "JSON Schemas of every protocol payload"),
    Shipped("asyncapi", ("asyncapi.yaml",), "the AsyncAPI 3.0 document of the protocol"),
)
NAMES = tuple(s.name for s in SHIPPED)
# Made by `keys new-sensor` beside the example configs and kept out of git: sensor keys are
# never shipped nor listed (pyproject.toml's exclude-package-data says the same).
PRIVATE = frozenset({"configs/keystore.yaml"})
# Far above what is shipped: a bound on the listing, should a link ever point somewhere wide.
MAX_FILES = 1000


class FilesError(Exception):
    """An unknown name, or a copy that would overwrite a file or go through a link."""


def shipped(name: str) -> Shipped:
    for item in SHIPPED:
        if item.name == name:
            return item
    raise FilesError(f"no shipped files named {name!r}: {', '.join(NAMES)}")


def listing(name: str) -> list[tuple[str, Traversable]]:
    """Every file of ``name``, as (path relative to this package, resource), sorted:
    ``configs/can/patrol.yaml``, ``asyncapi.yaml``."""
    item = shipped(name)
    root = files(__name__)
    found = matching(root, item.globs)
    if not found:  # a broken link or a package built without its data
        raise FilesError(f"{name}: nothing found at {root} (a package built without its data?)")
    return found


def matching(root: Traversable, globs: tuple[str, ...]) -> list[tuple[str, Traversable]]:
    """The files under ``root`` that ``globs`` name (see Shipped.globs) but the private
    ones, sorted, at most MAX_FILES."""
    found: dict[str, Traversable] = {}
    for glob in globs:
        folder, _, pattern = glob.rpartition("/")
        node = root
        for part in folder.split("/") if folder else ():
            node = node / part
        if not node.is_dir():
            continue
        for child in node.iterdir():
            rel = f"{folder}/{child.name}" if folder else child.name
            if (
                child.name.startswith(".")
                or not fnmatchcase(child.name, pattern)
                or rel in PRIVATE
                or not child.is_file()
            ):
                continue
            found[rel] = child
            if len(found) > MAX_FILES:
                raise FilesError(f"more than {MAX_FILES} files match {glob}")
    return sorted(found.items(), key=lambda pair: pair[0])


# --- copying out, through no link -------------------------------------------------------------
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def copy_out(names: list[str], out: Path, *, force: bool = False) -> list[Path]:
    """Copy the files of ``names`` under ``out`` (``out/configs/gateway.yaml`` …).

    A symbolic link at ``out`` or below it, on the path of a file to write, is refused
    (FilesError naming it), with or without ``force``; so is a file where a folder must be.
    Without ``force`` a file that exists is refused too. Every target is checked before
    anything is written, so nothing is written when one is refused; the writes themselves
    go through descriptors of the folders checked, and refuse a link that appears meanwhile.
    """
    plan = [(rel, resource) for name in names for rel, resource in listing(name)]
    for rel, _ in plan:
        _check_target(out, rel, force=force)
    with _Tree(out) as tree:
        for rel, resource in plan:
            tree.write(rel, resource.read_bytes(), force=force)
    return [out / rel for rel, _ in plan]


def _link_error(path: Path) -> FilesError:
    return FilesError(f"{path} is a symbolic link: refusing to write through it")


def _check_target(out: Path, rel: str, *, force: bool) -> None:
    """What copying ``rel`` under ``out`` would meet, without following any link."""
    folders = rel.split("/")[:-1]
    path = out
    for part in ("", *folders):
        path = path / part if part else path
        try:
            info = path.lstat()
        except FileNotFoundError:
            return  # created when written: nothing below it exists yet
        if stat.S_ISLNK(info.st_mode):
            raise _link_error(path)
        if not stat.S_ISDIR(info.st_mode):
            raise FilesError(f"{path} is not a directory")
    target = out / rel
    try:
        info = target.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise _link_error(target)
    if not stat.S_ISREG(info.st_mode):
        raise FilesError(f"{target} exists and is not a regular file")
    if not force:
        raise FilesError(f"{target} exists (--force overwrites)")


class _Tree:
    """``out`` and the folders under it, each opened once through no link."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._fds: dict[str, int] = {}

    def __enter__(self) -> _Tree:
        with contextlib.suppress(FileExistsError):
            self.out.mkdir(parents=True)
        self._fds[""] = _open_dir(self.out, lambda: os.open(self.out, _DIR_FLAGS))
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def folder(self, rel: str) -> int:
        """The descriptor of folder ``rel`` ("" for ``out``), made if missing."""
        if rel in self._fds:
            return self._fds[rel]
        parent_rel, _, name = rel.rpartition("/")
        parent = self.folder(parent_rel)
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o777, dir_fd=parent)
        path = self.out / rel
        fd = _open_dir(path, lambda: os.open(name, _DIR_FLAGS, dir_fd=parent))
        self._fds[rel] = fd
        return fd

    def write(self, rel: str, data: bytes, *, force: bool) -> None:
        folder_rel, _, name = rel.rpartition("/")
        folder = self.folder(folder_rel)
        target = self.out / rel
        try:
            fd = os.open(name, _NEW_FLAGS, 0o666, dir_fd=folder)
        except FileExistsError:
            if not force:
                if _is_link(name, folder):
                    raise _link_error(target) from None
                raise FilesError(f"{target} exists (--force overwrites)") from None
            self._replace(folder, name, target, data)
            return
        _write_all(fd, data)

    @staticmethod
    def _replace(folder: int, name: str, target: Path, data: bytes) -> None:
        """A temporary file beside ``name``, renamed over it: the old entry is replaced,
        never opened, so a link there would be replaced, not written through; it is
        refused all the same."""
        info = os.stat(name, dir_fd=folder, follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            raise _link_error(target)
        if not stat.S_ISREG(info.st_mode):
            raise FilesError(f"{target} exists and is not a regular file")
        temporary = f".{name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(temporary, _NEW_FLAGS, 0o666, dir_fd=folder)
        try:
            _write_all(fd, data)
            os.rename(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=folder)
            raise


def _open_dir(path: Path, opening: Callable[[], int]) -> int:
    """``opening()``: os.open of ``path`` with _DIR_FLAGS; a link there is a FilesError."""
    try:
        return opening()
    except OSError as exc:
        # O_NOFOLLOW on a link: ELOOP (Linux; EMLINK on FreeBSD).
        if exc.errno in (errno.ELOOP, errno.EMLINK) or path.is_symlink():
            raise _link_error(path) from None
        if exc.errno == errno.ENOTDIR:
            raise FilesError(f"{path} is not a directory") from None
        raise


def _is_link(name: str, folder: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _write_all(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)

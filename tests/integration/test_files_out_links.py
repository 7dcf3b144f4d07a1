"""`trigger-mesh files --out DIR [--force]` against links planted in DIR by someone who can
write there (a shared /tmp path, a directory root copies into): the copy refuses them, exit
2 naming the link, and the file or folder they point to outside is neither changed nor
created. The real command, in a subprocess, on real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.cli.errors import EXIT_USAGE

CLI = Path(sys.executable).parent / "trigger-mesh"
REPO = Path(__file__).resolve().parents[2]
PRECIOUS = b"root:precious:19000:0:99999:7:::\n"


def _files(out: Path, *, force: bool) -> subprocess.CompletedProcess[str]:
    argv = [str(CLI), "files", "configs", "--out", str(out), *(["--force"] if force else [])]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _refused(done: subprocess.CompletedProcess[str], link: Path) -> None:
    assert done.returncode == EXIT_USAGE, done.stdout + done.stderr
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line == f"error: {link} is a symbolic link: refusing to write through it", line


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    """DIR, which the attacker can write into, and a directory of the victim's outside it."""
    out, outside = tmp_path / "tm", tmp_path / "etc"
    out.mkdir()
    outside.mkdir()
    return out, outside


def _tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under root: a file's bytes, a link's target."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[rel] = path.read_bytes()
    return found


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_a_link_to_a_file_outside_is_not_written_through(
    places: tuple[Path, Path], force: bool
) -> None:
    out, outside = places
    victim = outside / "shadow"
    victim.write_bytes(PRECIOUS)
    (out / "configs").mkdir()
    link = out / "configs" / "gateway.yaml"
    link.symlink_to(victim)
    _refused(_files(out, force=force), link)
    assert victim.read_bytes() == PRECIOUS
    # Refused before anything was written: DIR holds what the attacker put there only.
    assert _tree(out) == {"configs/gateway.yaml": f"-> {victim}"}


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_a_dangling_link_creates_nothing_outside(places: tuple[Path, Path], force: bool) -> None:
    out, outside = places
    planted = outside / "cron.d-job"
    (out / "configs").mkdir()
    link = out / "configs" / "camera.yaml"
    link.symlink_to(planted)
    _refused(_files(out, force=force), link)
    assert not planted.exists()
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("folder", ["configs", "configs/can"])
def test_a_linked_folder_is_not_written_into(
    places: tuple[Path, Path], folder: str, force: bool
) -> None:
    out, outside = places
    (outside / "gateway.yaml").write_bytes(PRECIOUS)
    link = out / folder
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside, target_is_directory=True)
    _refused(_files(out, force=force), link)
    assert _tree(outside) == {"gateway.yaml": PRECIOUS}


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_the_output_directory_itself_may_not_be_a_link(
    places: tuple[Path, Path], force: bool
) -> None:
    out, outside = places
    link = out / "here"
    link.symlink_to(outside, target_is_directory=True)
    _refused(_files(link, force=force), link)
    assert list(outside.iterdir()) == []


def test_force_replaces_a_file_rather_than_writing_into_it(places: tuple[Path, Path]) -> None:
    """A second name of an outside file (a hard link) is replaced by --force, the outside
    file keeps its bytes; without links, --force overwrites and the copy is complete."""
    out, outside = places
    assert _files(out, force=False).returncode == 0
    mine = out / "configs" / "gateway.yaml"
    mine.unlink()
    victim = outside / "shadow"
    victim.write_bytes(PRECIOUS)
    os.link(victim, mine)
    (out / "configs" / "camera.yaml").write_text("edited\n")
    done = _files(out, force=True)
    assert done.returncode == 0, done.stderr
    assert victim.read_bytes() == PRECIOUS
    assert mine.read_bytes() == (REPO / "configs" / "gateway.yaml").read_bytes()
    assert (out / "configs" / "camera.yaml").read_bytes() == (
        REPO / "configs" / "camera.yaml"
    ).read_bytes()
    assert not [p for p in out.rglob(".*") if p.name.endswith(".tmp")]  # no temporary left


def test_without_force_an_existing_file_is_refused_as_before(places: tuple[Path, Path]) -> None:
    out, _ = places
    assert _files(out, force=False).returncode == 0
    done = _files(out, force=False)
    assert done.returncode == EXIT_USAGE
    assert done.stderr.strip().endswith("exists (--force overwrites)"), done.stderr

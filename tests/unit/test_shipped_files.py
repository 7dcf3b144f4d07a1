"""mesh/files: the configs, CAN rules, systemd units and schemas shipped in the package,
read through importlib.resources and copied out (`trigger-mesh files`). Links planted in the
output directory: tests/integration/test_files_out_links.py."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mesh.files import (
    MAX_FILES,
    NAMES,
    PRIVATE,
    SHIPPED,
    FilesError,
    copy_out,
    listing,
    matching,
)

REPO = Path(__file__).resolve().parents[2]
# Where each shipped name's files come from in the repository, and which of them ship.
SOURCES = {
    "configs": (
        (REPO / "configs", "configs", "*.yaml"),
        (REPO / "configs" / "can", "configs/can", "*.yaml"),
        (REPO / "configs" / "can", "configs/can", "*.dbc"),
    ),
    "systemd": ((REPO / "deploy" / "systemd", "systemd", "*"),),
    "schemas": ((REPO / "docs" / "schemas", "schemas", "*.json"),),
}


def _repo_files(name: str) -> dict[str, bytes]:
    if name == "asyncapi":
        return {"asyncapi.yaml": (REPO / "docs" / "asyncapi.yaml").read_bytes()}
    return {
        f"{prefix}/{p.name}": p.read_bytes()
        for root, prefix, glob in SOURCES[name]
        for p in root.glob(glob)
        if p.is_file() and f"{prefix}/{p.name}" not in PRIVATE
    }


def test_the_allowlist_is_pyprojects_package_data() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    data = {
        g.removeprefix("files/")
        for g in setuptools["package-data"]["mesh"]
        if g.startswith("files/")
    }
    assert {glob for item in SHIPPED for glob in item.globs} == data
    excluded = {g.removeprefix("files/") for g in setuptools["exclude-package-data"]["mesh"]}
    assert excluded == PRIVATE


@pytest.mark.parametrize("name", NAMES)
def test_each_name_lists_exactly_its_source_files(name: str) -> None:
    found = {rel: resource.read_bytes() for rel, resource in listing(name)}
    assert found == _repo_files(name)


def test_the_ford_rules_and_the_gateway_unit_are_shipped() -> None:
    assert "configs/can/ford-police-interceptor.yaml" in dict(listing("configs"))
    # gateway-can.yaml's DBC (a link to mesh/sim/data/ in the repository) comes with it.
    assert (
        dict(listing("configs"))["configs/can/demo-vehicle.dbc"].read_bytes()
        == (REPO / "mesh" / "sim" / "data" / "demo-vehicle.dbc").read_bytes()
    )
    assert "systemd/trigger-mesh-gateway.service" in dict(listing("systemd"))


def test_copy_out_writes_every_file_and_refuses_to_overwrite(tmp_path: Path) -> None:
    written = copy_out(["configs", "asyncapi"], tmp_path)
    expected = _repo_files("configs") | _repo_files("asyncapi")
    assert {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in written} == expected

    out = tmp_path / "again"
    edited = out / "configs" / "gateway.yaml"
    edited.parent.mkdir(parents=True)
    edited.write_text("unit: mine\n")
    with pytest.raises(FilesError, match=r"gateway\.yaml exists \(--force overwrites\)"):
        copy_out(["configs"], out)
    assert [p.name for p in out.rglob("*") if p.is_file()] == ["gateway.yaml"]  # none written
    assert edited.read_text() == "unit: mine\n"
    copy_out(["configs"], out, force=True)
    assert edited.read_bytes() == (REPO / "configs" / "gateway.yaml").read_bytes()


def test_an_unknown_name_is_an_error_listing_the_names() -> None:
    with pytest.raises(FilesError, match="no shipped files named 'units': configs, systemd"):
        listing("units")


def test_only_what_the_globs_name_is_listed(tmp_path: Path) -> None:
    """Not __pycache__, a sensor keystore, a stray file, a folder the globs do not name, a
    hidden file (setuptools' glob leaves those out of the wheel too)."""
    (tmp_path / "configs" / "can" / "__pycache__").mkdir(parents=True)
    (tmp_path / "configs" / "old").mkdir()
    (tmp_path / "configs" / "gateway.yaml").write_text("unit: car-1\n")
    (tmp_path / "configs" / "can" / "rules.yaml").write_text("rules: []\n")
    for stray in (
        "configs/keystore.yaml",
        "configs/notes.txt",
        "configs/.hidden.yaml",
        "configs/old/gateway.yaml",
        "configs/can/__pycache__/rules.cpython-311.pyc",
        "configs/can/rules.yaml~",
    ):
        (tmp_path / stray).write_text("")
    (tmp_path / "configs" / "folder.yaml").mkdir()
    configs = next(item for item in SHIPPED if item.name == "configs")
    assert [rel for rel, _ in matching(tmp_path, configs.globs)] == [
        "configs/can/rules.yaml",
        "configs/gateway.yaml",
    ]


def test_the_listing_is_bounded(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    for i in range(MAX_FILES + 1):
        (tmp_path / "configs" / f"{i}.yaml").write_text("")
    with pytest.raises(FilesError, match=f"more than {MAX_FILES} files match configs/\\*.yaml"):
        matching(tmp_path, ("configs/*.yaml",))

"""mesh/files: the configs, CAN rules, systemd units and schemas shipped in the package,
read through importlib.resources and copied out (`trigger-mesh files`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.files import MAX_FILES, NAMES, PRIVATE, FilesError, copy_out, listing, walk

REPO = Path(__file__).resolve().parents[2]
# Where each shipped name's files come from in the repository.
SOURCES = {
    "configs": (REPO / "configs", "configs"),
    "systemd": (REPO / "deploy" / "systemd", "systemd"),
    "schemas": (REPO / "docs" / "schemas", "schemas"),
}


def _repo_files(name: str) -> dict[str, bytes]:
    if name == "asyncapi":
        return {"asyncapi.yaml": (REPO / "docs" / "asyncapi.yaml").read_bytes()}
    root, prefix = SOURCES[name]
    return {
        f"{prefix}/{p.relative_to(root).as_posix()}": p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name not in PRIVATE
    }


@pytest.mark.parametrize("name", NAMES)
def test_each_name_lists_exactly_its_source_files(name: str) -> None:
    found = {rel: resource.read_bytes() for rel, resource in listing(name)}
    assert found == _repo_files(name)


def test_the_ford_rules_and_the_gateway_unit_are_shipped() -> None:
    assert "configs/can/ford-police-interceptor.yaml" in dict(listing("configs"))
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


def test_a_sensor_keystore_beside_the_configs_is_never_listed(tmp_path: Path) -> None:
    (tmp_path / "can").mkdir()
    (tmp_path / "gateway.yaml").write_text("unit: car-1\n")
    (tmp_path / "keystore.yaml").write_text("sensors: {}\n")
    (tmp_path / "can" / "rules.yaml").write_text("rules: []\n")
    assert sorted(rel for rel, _ in walk(tmp_path, "configs")) == [
        "configs/can/rules.yaml",
        "configs/gateway.yaml",
    ]


def test_the_walk_is_bounded(tmp_path: Path) -> None:
    for i in range(MAX_FILES + 1):
        (tmp_path / f"{i}.yaml").write_text("")
    with pytest.raises(FilesError, match=f"more than {MAX_FILES} files under configs"):
        list(walk(tmp_path, "configs"))

"""Config files report every problem at once, with a suggestion for a misspelled key; an
unknown key is refused at every depth; the kind of a file is told from its keys; a path a
daemon writes into must have its directory (the command line: tests/integration/
test_cli_first_contact.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.cli.config_check import (
    CHECKS,
    GatewayConfigError,
    check_file,
    detect_kind,
    load_gateway,
    missing_directory,
)
from mesh.cli.errors import EXIT_USAGE
from mesh.config import CameraConfig, GatewayConfig, load_gateway_config
from mesh.documents import ConfigError, did_you_mean, validate
from mesh.extras import EXIT_MISSING_EXTRA
from mesh.files import copy_out
from mesh.protocol.codec import known_keys
from triggers.ble.keystore import Keystore

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "configs").glob("*.yaml"))


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- did you mean -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("word", "known", "expected"),
    [
        ("brokr", {"broker", "unit", "log"}, "broker"),
        ("retension_days", {"retention_days", "retention_check_s"}, "retention_days"),
        ("Unit", {"unit", "log"}, "unit"),  # case only: below difflib's cutoff for 4 letters
        ("colour", {"unit", "log", "broker"}, None),  # nothing close: no guess
        ("x", set(), None),
    ],
)
def test_did_you_mean(word: str, known: set[str], expected: str | None) -> None:
    assert did_you_mean(word, known) == expected


def test_known_keys_follow_the_path_through_unions_and_containers() -> None:
    assert "retention_days" in known_keys(GatewayConfig, ["audit"])
    # policy: Policy | str | None → the Policy member's fields
    assert "defaults" in known_keys(GatewayConfig, ["policy"])
    assert "radius_m" in known_keys(GatewayConfig, ["policy", "defaults"])
    # a dict of models: the value model's fields, whatever the key
    assert "radius_m" in known_keys(GatewayConfig, ["policy", "kinds", "crash"])
    assert known_keys(GatewayConfig, ["position"]) == {"lat", "lon"}
    assert known_keys(GatewayConfig, ["unit"]) == set()  # text: no keys
    assert known_keys(GatewayConfig, ["nonsense", "deeper"]) == set()


# --- every error at once ---------------------------------------------------------------
THREE_MISTAKES = """\
unit: car-1
brokr: mqtt://127.0.0.1:1883
status_interval_s: -1
audit:
  retension_days: 3
"""


def test_every_problem_is_reported_with_suggestions(tmp_path: Path) -> None:
    path = write(tmp_path, THREE_MISTAKES)
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(path)
    problems = dict(caught.value.problems)
    assert problems == {
        "brokr": "unknown key (did you mean 'broker'?)",
        "status_interval_s": "Input should be greater than 0",
        "audit.retension_days": "unknown key (did you mean 'retention_days'?)",
    }
    lines = str(caught.value).splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{path}: key '") for line in lines)


def test_unknown_key_without_a_close_match_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(write(tmp_path, "unit: car-1\nposition: {lat: 1, lon: 2, zz: 3}\n"))
    assert caught.value.problems == (("position.zz", "unknown key (known here: lat, lon)"),)


def test_union_member_noise_is_left_out(tmp_path: Path) -> None:
    # policy: Policy | str — pydantic also says the mapping is not text; the user meant a mapping.
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(write(tmp_path, "unit: car-1\npolicy: {defaults: {radius_mm: 3}}\n"))
    assert caught.value.problems == (
        ("policy.defaults.radius_mm", "unknown key (did you mean 'radius_m'?)"),
    )


def test_a_single_problem_reads_as_before(tmp_path: Path) -> None:
    path = write(tmp_path, "unit: car-1\nbrokr: x\n")
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(path)
    assert str(caught.value) == f"{path}: key 'brokr': unknown key (did you mean 'broker'?)"
    assert caught.value.key == "brokr"


def test_the_report_of_a_broken_file_is_bounded(tmp_path: Path) -> None:
    groups = "\n".join(f"  - '{i} bad id'" for i in range(200))
    path = write(tmp_path, f"camera_id: c1\nunit: u1\ngroups:\n{groups}\n")
    with pytest.raises(ConfigError) as caught:
        validate(CameraConfig, yaml.safe_load(path.read_text()), path)
    assert len(caught.value.problems) == 51
    assert caught.value.problems[-1] == ("", "… and 150 more problems")


# --- unknown keys are refused at every depth --------------------------------------------
def _mappings(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        yield at
        for key, value in node.items():
            yield from _mappings(value, (*at, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _mappings(value, (*at, index))


def _kinds() -> list[tuple[Path, str]]:
    found = []
    for path in SHIPPED:
        kind = detect_kind(yaml.safe_load(path.read_text()))
        assert kind is not None, path
        found.append((path, kind))
    return found


@pytest.mark.parametrize(("source", "kind"), _kinds(), ids=lambda v: getattr(v, "name", v))
def test_a_misspelled_key_is_refused_at_every_depth_of_the_shipped_configs(
    tmp_path: Path, source: Path, kind: str
) -> None:
    document = yaml.safe_load(source.read_text())
    for at in _mappings(document):
        spoiled = yaml.safe_load(source.read_text())
        node = spoiled
        for part in at:
            node = node[part]
        node["zz_misspelled"] = 1
        path = tmp_path / source.name  # beside copies of what it names
        path.write_text(yaml.safe_dump(spoiled))
        for named in ("policy.yaml", "can", "keys"):
            if (source.parent / named).exists() and not (tmp_path / named).exists():
                (tmp_path / named).symlink_to(source.parent / named)
        _, problems = check_file(path, kind)
        # Refused naming the key: as an unknown key, or (in a mapping whose keys are names,
        # like ble.min_rssi_dbm's sensor kinds) as a name that is not one.
        assert any("zz_misspelled" in line for line in problems), (at, problems)


# --- kinds ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ({"unit": "car-1"}, "gateway"),
        ({"camera_id": "c", "unit": "car-1"}, "camera"),
        ({"defaults": {}}, "policy"),
        ({"policy": {}}, "policy"),
        ({"gateways": []}, "fleet"),
        ({"version": 1, "keys": []}, "trust"),
        ({"users": {}}, "users"),
        ({"colour": "red"}, None),
        ([1, 2], None),
        (None, None),
    ],
)
def test_detect_kind(data: object, kind: str | None) -> None:
    assert detect_kind(data) == kind


def test_every_shipped_config_is_valid_as_its_kind_from_a_fresh_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a user gets them (`trigger-mesh files configs --out DIR`), run from that folder:
    # what they write lands there and what they read (policy, rules, DBC) came with them.
    copy_out(["configs"], tmp_path)
    configs = tmp_path / "configs"
    monkeypatch.chdir(configs)
    # The one file no command ships: the BLE gateway's keystore, from `keys new-sensor`.
    Keystore.load("keystore.yaml", missing_ok=True).save("keystore.yaml")
    for source, kind in _kinds():
        assert check_file(Path(source.name), None) == (kind, []), source
    assert set(CHECKS) >= {kind for _, kind in _kinds()}
    assert sorted(p.name for p in configs.iterdir() if p.is_file()) == sorted(
        [p.name for p in SHIPPED] + ["keystore.yaml"]
    )  # nothing made beside them


# --- directories a daemon writes into --------------------------------------------------------
def test_missing_directory(tmp_path: Path) -> None:
    assert missing_directory(tmp_path / "x.db") is None
    why = missing_directory(tmp_path / "nope" / "x.db")
    missing = tmp_path / "nope"
    assert why == f"{missing / 'x.db'}: directory {missing} does not exist (create it first)"
    readonly = tmp_path / "ro"
    readonly.mkdir(mode=0o500)
    if os.geteuid() != 0:  # root may write anywhere
        assert missing_directory(readonly / "x.db") == (
            f"{readonly / 'x.db'}: directory {readonly} is not writable"
        )


def test_gateway_load_reports_file_and_directory_problems_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"unit: car-1\nlog: {tmp_path}/no/such/dir/x.db\npolicy: nope.yaml\n"
        "audit: {signing_key: missing.key}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_gateway(path)
    keys = [key for key, _ in caught.value.problems]
    assert keys == ["policy", "audit.signing_key", "log"]
    assert f"{tmp_path}/no/such/dir does not exist" in caught.value.problems[2][1]
    assert not (tmp_path / "no").exists()  # nothing was created


def test_gateway_load_reads_what_ble_and_can_name_without_opening_them(tmp_path: Path) -> None:
    (tmp_path / "keystore.yaml").write_text("sensors: [1\n")
    path = write(
        tmp_path,
        f"unit: car-1\nlog: {tmp_path}/x.db\n"
        f"ble: {{transport: 'tcp-client:127.0.0.1:7400', keystore: keystore.yaml, "
        f"counters: {tmp_path}/gone/counters.db}}\n"
        "can: {interface: virtual, channel: x, rules: rules.yaml, dbc: [car.dbc]}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_gateway(path)
    keys = [key for key, _ in caught.value.problems]
    assert keys == ["ble.keystore", "can", "ble.counters"]
    assert "rules.yaml" in caught.value.problems[1][1]
    assert not (tmp_path / "x.db").exists()  # nothing opened, nothing created


def test_a_missing_keystore_is_a_problem_naming_the_command_that_makes_it(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        f"unit: car-1\nlog: {tmp_path}/x.db\n"
        f"ble: {{transport: 'tcp-client:127.0.0.1:7400', keystore: keystore.yaml, "
        f"counters: {tmp_path}/counters.db}}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_gateway(path)
    keystore = tmp_path / "keystore.yaml"
    assert caught.value.problems == (
        (
            "ble.keystore",
            f"{keystore}: no such keystore (make it with `trigger-mesh keys new-sensor "
            f"--keystore {keystore} --kind KIND --unit UNIT --key-file FILE`)",
        ),
    )
    assert not keystore.exists()  # nothing made it
    Keystore.load(keystore, missing_ok=True).save(keystore)  # what `keys new-sensor` does
    assert load_gateway(path).config.ble is not None


def test_a_missing_extra_is_one_problem_among_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An install without bumble and python-can (None in sys.modules: not importable).
    monkeypatch.setitem(sys.modules, "bumble", None)
    monkeypatch.setitem(sys.modules, "can", None)
    path = write(
        tmp_path,
        f"unit: car-1\nlog: {tmp_path}/no/x.db\npolicy: nope.yaml\n"
        "ble: {transport: 'tcp-client:127.0.0.1:7400', keystore: keystore.yaml, "
        f"counters: {tmp_path}/gone/counters.db}}\n"
        "can: {interface: virtual, channel: x, rules: rules.yaml, dbc: [car.dbc]}\n",
    )
    with pytest.raises(GatewayConfigError) as caught:
        load_gateway(path)
    problems = dict(caught.value.problems)
    # The check went on past each missing extra: every other problem is there too.
    assert list(problems) == ["policy", "ble", "ble.keystore", "can", "log", "ble.counters"]
    assert problems["ble"] == (
        "backend bumble needs bumble, which is not installed: pip install 'trigger-mesh[bumble]'"
    )
    assert problems["can"] == (
        "this section needs python-can, which is not installed: pip install 'trigger-mesh[can]'"
    )
    assert [(e.package, e.extra) for e in caught.value.extras] == [
        ("bumble", "bumble"),
        ("python-can", "can"),
    ]
    assert caught.value.exit_code == EXIT_USAGE  # the file has problems of its own
    _, lines = check_file(path, None)
    assert lines == caught.value.lines
    assert lines[1] == f"{path}: key 'ble': {problems['ble']}"


def test_a_config_that_only_lacks_extras_is_unusable_here_not_invalid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "can", None)
    path = write(
        tmp_path,
        f"unit: car-1\nlog: {tmp_path}/x.db\n"
        "can: {interface: virtual, channel: x, rules: rules.yaml, dbc: [car.dbc]}\n",
    )
    with pytest.raises(GatewayConfigError) as caught:
        load_gateway(path)
    assert [key for key, _ in caught.value.problems] == ["can"]  # its rules cannot be read
    assert caught.value.exit_code == EXIT_MISSING_EXTRA  # the gateway's status: 69


def test_the_default_paths_a_gateway_writes_are_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No var/ to make first: a config that leaves them out works from any folder.
    monkeypatch.chdir(tmp_path)
    Keystore.load("keys.yaml", missing_ok=True).save("keys.yaml")
    path = write(tmp_path, "unit: car-1\nble: {backend: bluez, keystore: keys.yaml}\n")
    assert check_file(path, None) == ("gateway", [])
    config = load_gateway(path).config
    assert config.ble is not None
    assert (config.log, config.ble.counters) == ("activations.db", "ble-counters.db")

"""Every configuration file under arbitrary input (docs/fuzzing.md): the gateway's (with
its policy, ``ble:`` and ``can:`` sections), the camera's, the policy file, the BLE
keystore and a sensor's key file, and a vehicle-simulator scenario.

Arbitrary bytes, text and YAML documents, and the shipped files changed in one place,
either load or are refused with the loader's own error (ConfigError, KeystoreError,
ScenarioError) naming the file, and for a change in one place, the key changed (or the
section holding it). Nothing else is ever raised.
"""

from __future__ import annotations

import copy
import datetime
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mesh.config import load_camera_config, load_gateway_config, load_policy
from mesh.documents import ConfigError
from tests.fuzz_helpers import budget, json_values, paths
from triggers.ble.format import KEY_LEN, SensorKind
from triggers.ble.keystore import Keystore, KeystoreError, SensorKeyFile
from triggers.can.simulator import ScenarioError, load_scenario

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"

LOADERS: dict[str, tuple[Callable[[Path], object], type[Exception]]] = {
    "gateway": (load_gateway_config, ConfigError),
    "camera": (load_camera_config, ConfigError),
    "policy": (load_policy, ConfigError),
    "keystore": (Keystore.load, KeystoreError),
    "key file": (SensorKeyFile.load, KeystoreError),
    "scenario": (load_scenario, ScenarioError),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of configs/ (the gateway configs name policy.yaml beside them)."""
    path = tmp_path_factory.mktemp("configs")
    shutil.copytree(CONFIGS, path, dirs_exist_ok=True)
    return path


def load(name: str, path: Path) -> Exception | None:
    """Load with the named loader: None if it loaded, else its own error, which must name
    the file it is about. Any other exception fails the test."""
    loader, error = LOADERS[name]
    try:
        loader(path)
    except error as exc:
        refused = exc
    else:
        return None
    # A gateway config's error may be about the policy file it names: that file, then.
    named = refused.path if isinstance(refused, ConfigError) else str(path)
    assert str(refused).startswith(f"{named}: "), refused
    return refused


# --- anything at all -----------------------------------------------------------------------------
YAML_SCALARS = st.one_of(
    json_values,
    st.dates(),
    st.datetimes(timezones=st.none() | st.just(datetime.UTC)),
    st.sampled_from([".inf", "-.inf", ".nan", "0x1F", "0o17", "1_000", "~", "yes", "1e400"]),
)
YAML_DOCS = st.recursive(
    YAML_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
RISKY = st.sampled_from(
    [
        "a: 2020-13-01",
        "a: 2020-02-30",
        "a: 2001-12-14t21:59:43.10-99:00",
        "a: !!float abc",
        "a: !!int abc",
        "a: !!timestamp x",
        "a: !!binary '!!'",
        "a: !!set {b: 1}",
        "a: !!omap [1]",
        "a: !!python/name:os.system",
        "? [1]\n: 2",
        "a: &x [*x]",
        "a: *nowhere",
        "sensors: {.inf: {kind: holster, unit: car-1, key: '" + "00" * KEY_LEN + "'}}",
        '{"sensor_id": Infinity, "kind": "holster", "key": "' + "00" * KEY_LEN + '"}',
        '{"sensor_id": 1e400, "kind": "holster", "key": "' + "00" * KEY_LEN + '"}',
        "[" * 600 + "]" * 600,
        "{a: " * 600 + "1" + "}" * 600,
        "\ufeffunit: car-1",
        "unit: car-1\npolicy: " + "p" * 5000,
    ]
)


def _yaml(document: Any) -> str:
    return yaml.safe_dump(document, allow_unicode=True)


CONTENT = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    YAML_DOCS.map(_yaml).map(str.encode),
    YAML_DOCS.map(lambda d: json.dumps(d, default=str)).map(str.encode),
    RISKY.map(str.encode),
)


@budget(105)
@given(st.sampled_from(sorted(LOADERS)), CONTENT)
def test_any_file_loads_or_is_refused_naming_it(folder: Path, name: str, content: bytes) -> None:
    path = folder / "fuzz.yaml"
    path.write_bytes(content)
    load(name, path)


# --- the shipped files, changed in one place ---------------------------------------------------
SHIPPED = {
    "gateway": ["gateway.yaml", "gateway-ble.yaml", "gateway-can.yaml"],
    "camera": ["camera.yaml"],
    "policy": ["policy.yaml"],
    "scenario": ["can/patrol.yaml"],
}


@st.composite
def changed(draw: st.DrawFn, document: Any) -> tuple[Any, tuple[Any, ...], str]:
    """The document with one change: (document, where, how)."""
    document = copy.deepcopy(document)
    where = draw(st.sampled_from(list(paths(document))))
    how = draw(st.sampled_from(["drop", "set", "unknown key", "huge", "unicode"]))
    parent = document
    for part in where[:-1]:
        parent = parent[part]
    last = where[-1]
    if how == "drop":
        del parent[last]
    elif how == "unknown key" and isinstance(parent[last], dict):
        letters = st.characters(categories=("L", "N", "Pc"))
        key = draw(st.text(letters, min_size=1, max_size=8).filter(lambda k: k not in parent[last]))
        parent[last][key] = draw(json_values)
        where = (*where, key)
    elif how == "huge":
        parent[last] = draw(st.sampled_from(["x" * 100_000, 10**400, -(10**400), [0] * 5000]))
    elif how == "unicode":
        parent[last] = draw(st.text(min_size=1, max_size=30))
    else:
        how = "set"
        parent[last] = draw(YAML_DOCS)
    return document, where, how


@budget(25)
@given(st.data())
def test_a_shipped_config_changed_in_one_place_loads_or_names_the_key(
    folder: Path, data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(SHIPPED)))
    shipped = folder / data.draw(st.sampled_from(SHIPPED[name]))
    document, where, how = data.draw(changed(yaml.safe_load(shipped.read_text())))
    path = shipped.with_name("fuzz-" + shipped.name)
    path.write_text(_yaml(document))
    refused = load(name, path)
    if refused is None:
        return
    dotted = ".".join(str(p) for p in where)
    if isinstance(refused, ConfigError) and refused.path == str(path):
        # The key named is the one changed, the section (or list) holding it, or a key
        # inside what was put there.
        key = refused.key + "."
        assert refused.key, (refused, how)
        assert (dotted + ".").startswith(key) or key.startswith(dotted + "."), (refused, how)
    elif isinstance(refused, ScenarioError):
        assert "key '" in str(refused) or "not valid YAML" in str(refused), refused


# --- keystores and key files ------------------------------------------------------------------
def keystore_document() -> dict[str, Any]:
    return {
        "sensors": {
            1001: {"kind": "holster", "unit": "car-12", "officer": "Ofc. R", "key": "ab" * KEY_LEN},
            2002: {"kind": "taser", "unit": "car-12", "key": "cd" * KEY_LEN},
        }
    }


@budget(20)
@given(st.data())
def test_a_keystore_changed_in_one_place_loads_or_names_the_sensor(
    folder: Path, data: st.DataObject
) -> None:
    document, where, _ = data.draw(changed(keystore_document()))
    path = folder / "fuzz-keystore.yaml"
    path.write_text(_yaml(document))
    try:
        keystore = Keystore.load(path)
    except KeystoreError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: "), message
        if len(where) >= 2 and where[1] in (1001, 2002):
            assert f"sensors.{where[1]}: " in message, message
        return
    for sensor in keystore.sensors.values():
        assert 0 <= sensor.sensor_id < 2**32
        assert len(sensor.key) == KEY_LEN
        assert isinstance(sensor.kind, SensorKind)


@budget(105)
@given(st.data())
def test_a_key_file_changed_in_one_place_loads_or_is_refused(
    folder: Path, data: st.DataObject
) -> None:
    valid = {"sensor_id": 1001, "kind": "holster", "key": "ab" * KEY_LEN, "counter": 7}
    document, _, _ = data.draw(changed({**valid, "company_id": 0xFFFF}))
    path = folder / "fuzz-key.json"
    path.write_text(json.dumps(document, default=str))
    try:
        keys = SensorKeyFile.load(path)
    except KeystoreError as exc:
        assert str(exc).startswith(f"{path}: not a sensor key file: "), exc  # noqa: PT017
        return
    # What loads can sign an advert: every field in range.
    assert 0 <= keys.sensor_id < 2**32
    assert 0 <= keys.counter < 2**32
    assert 0 <= keys.company_id <= 0xFFFF
    assert len(keys.key) == KEY_LEN


# --- findings, each pinned by an explicit example ---------------------------------------------
@pytest.mark.parametrize("name", ["gateway", "camera", "policy", "keystore", "scenario"])
def test_a_file_that_is_not_utf8_is_refused_naming_the_byte(tmp_path: Path, name: str) -> None:
    """Finding: a config, policy, keystore or scenario that is not UTF-8 text raised
    UnicodeDecodeError (a traceback from the CLI) instead of the loader's error."""
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"unit: car-1\n\xff\xfe")
    refused = load(name, path)
    assert refused is not None
    assert "not UTF-8 text at byte 12" in str(refused)


@pytest.mark.parametrize("name", ["gateway", "keystore", "scenario"])
def test_a_document_nested_too_deep_is_refused(tmp_path: Path, name: str) -> None:
    """Finding: 600 levels of YAML nesting raised RecursionError out of PyYAML."""
    path = tmp_path / "deep.yaml"
    path.write_text("[" * 600 + "]" * 600)
    refused = load(name, path)
    assert refused is not None
    assert "not valid YAML: nested too deeply" in str(refused)


@pytest.mark.parametrize(
    "text", ["a: 2020-13-01", "a: !!float abc", "a: !!timestamp x", "a: 2001-12-14t21:59:43-99:00"]
)
def test_a_yaml_value_pyyaml_cannot_build_is_a_config_error(tmp_path: Path, text: str) -> None:
    """Finding: PyYAML raised ValueError / AttributeError out of safe_load for a date
    like 2020-13-01 or an explicit tag with a bad value."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="not valid YAML: a value cannot be read"):
        load_policy(path)


def test_a_policy_file_name_too_long_is_a_config_error(tmp_path: Path) -> None:
    """Finding: a policy path too long for the file system raised OSError (ENAMETOOLONG)."""
    path = tmp_path / "gateway.yaml"
    path.write_text("unit: car-1\npolicy: " + "p" * 5000 + ".yaml\n")
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path)
    assert (info.value.key, info.value.problem) == ("policy", "policy file: File name too long")


def test_a_union_key_is_named_as_written(tmp_path: Path) -> None:
    """Finding: the key named pydantic's union member (``policy.Policy.defaults…``), and a
    policy that is neither a mapping nor a file name said "instance of Policy"."""
    path = tmp_path / "gateway.yaml"
    path.write_text("unit: car-1\npolicy: {defaults: {radius_m: -1}}\n")
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path)
    assert info.value.key == "policy.defaults.radius_m"
    path.write_text("unit: car-1\npolicy: 5\n")
    with pytest.raises(ConfigError) as wrong:
        load_gateway_config(path)
    assert (wrong.value.key, wrong.value.problem) == (
        "policy",
        "expected a mapping or text, not a number",
    )


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (
            "{.inf: {kind: holster, unit: car-1, key: K}}",
            "sensors.inf: sensor id must be an integer",
        ),
        ("{1: abc}", "sensors.1: expected a mapping of kind, unit, key (and officer), got text"),
        ("{1: {kind: holster, unit: null, key: K}}", "sensors.1: unit must be text, not nothing"),
        ("{1: {kind: holster, unit: car-1, key: 12}}", "sensors.1: key must be text, not a number"),
        ("{true: {kind: holster, unit: car-1, key: K}}", "sensors.True: sensor id must be"),
    ],
)
def test_keystore_entries_are_checked_field_by_field(
    tmp_path: Path, entry: str, problem: str
) -> None:
    """Finding: `.inf` as a sensor id raised OverflowError; an entry that was not a mapping
    said "string indices must be integers"; ``unit: null`` made a sensor of unit "None"."""
    path = tmp_path / "keystore.yaml"
    path.write_text("sensors: " + entry.replace("K", "'" + "ab" * KEY_LEN + "'"))
    with pytest.raises(KeystoreError) as info:
        Keystore.load(path)
    assert f"{path}: {problem}" in str(info.value)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"sensor_id": "Infinity"}, "not valid JSON: Infinity is not a number JSON allows"),
        ({"sensor_id": "1e400"}, "not valid JSON: 1e400 is too large for a number"),
        ({"sensor_id": "-5"}, "sensor_id must be an integer in 0..4294967295"),
        ({"company_id": "70000"}, "company_id must be an integer in 0..65535"),
        ({"counter": "4294967296"}, "counter must be an integer in 0..4294967295"),
        ({"key": '"00"'}, "key must be 32 bytes (64 hex)"),
    ],
)
def test_a_key_file_a_sensor_could_not_sign_with_is_refused(
    tmp_path: Path, fields: dict[str, str], problem: str
) -> None:
    """Finding: Infinity or 1e400 as the sensor id raised OverflowError; a key file with a
    company id over 16 bits, a negative id or a 1-byte key loaded, and `ble-sensor` then
    crashed (OverflowError in to_bytes) or signed adverts no gateway could check."""
    body = {"sensor_id": "1001", "kind": '"holster"', "key": f'"{"ab" * KEY_LEN}"', **fields}
    path = tmp_path / "sensor.json"
    path.write_text("{" + ", ".join(f'"{k}": {v}' for k, v in body.items()) + "}")
    with pytest.raises(KeystoreError) as info:
        SensorKeyFile.load(path)
    assert str(info.value) == f"{path}: not a sensor key file: {problem}"


def test_a_provisioned_keystore_and_key_file_still_load(tmp_path: Path) -> None:
    keystore = Keystore()
    sensor = keystore.provision(SensorKind.HOLSTER, "car-12", officer="Ofc. R")
    keystore.save(tmp_path / "keystore.yaml")
    SensorKeyFile.of(sensor).save(tmp_path / "sensor.json")
    assert Keystore.load(tmp_path / "keystore.yaml").sensors == {sensor.sensor_id: sensor}
    keys = SensorKeyFile.load(tmp_path / "sensor.json")
    assert (keys.sensor_id, keys.kind, keys.key) == (sensor.sensor_id, sensor.kind, sensor.key)

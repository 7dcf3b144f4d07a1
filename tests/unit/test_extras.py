"""mesh/extras.py: a missing optional package is one error naming the extra to install, and
the table it checks agrees with pyproject.toml's extras."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

from mesh.extras import EXTRAS, MissingExtra, missing, require

REPO = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement: 'psycopg[binary]>=3' → psycopg."""
    found = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert found, requirement
    return re.sub(r"[-_.]+", "-", found.group(0)).lower()


def _pyproject_extras() -> dict[str, set[str]]:
    """Each extra's distributions, with self-references (trigger-mesh[ble,can]) expanded."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]

    def expand(extra: str) -> set[str]:
        out: set[str] = set()
        for requirement in declared[extra]:
            if requirement.startswith("trigger-mesh["):
                inner = requirement[len("trigger-mesh[") : requirement.index("]")]
                for name in inner.split(","):
                    out |= expand(name.strip())
            else:
                out.add(_name(requirement))
        return out

    return {extra: expand(extra) for extra in declared}


def test_a_missing_package_names_itself_the_extra_and_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules is how the import system marks a module as not importable.
    monkeypatch.setitem(sys.modules, "bumble", None)
    with pytest.raises(MissingExtra) as caught:
        require("ble", "trigger-mesh ble-radio")
    assert caught.value.package == "bumble"
    assert caught.value.extra == "ble"
    assert str(caught.value) == (
        "trigger-mesh ble-radio needs bumble, which is not installed: "
        "pip install 'trigger-mesh[ble]'"
    )


def test_the_first_missing_package_of_an_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msgpack", None)
    monkeypatch.setitem(sys.modules, "cantools", None)
    assert missing("can") == "cantools"
    assert missing("ble") is None


def test_every_extra_is_installed_in_the_dev_environment() -> None:
    # `.[dev]` pulls `.[all]`: nothing may be missing where the tests run.
    for extra in EXTRAS:
        require(extra, "the test suite")


def test_the_table_matches_pyproject() -> None:
    declared = _pyproject_extras()
    for extra, packages in EXTRAS.items():
        assert {_name(dist) for dist, _ in packages} == declared[extra], extra
    # Every extra a user can install is checked by the code, and `all` covers each of them.
    assert set(declared) - set(EXTRAS) == {"all", "dev"}
    assert set().union(*(declared[e] for e in EXTRAS)) == declared["all"]
    assert declared["all"] <= declared["dev"]


def test_the_core_dependencies_hold_no_optional_package() -> None:
    core = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    optional = {_name(dist) for packages in EXTRAS.values() for dist, _ in packages}
    assert {_name(r) for r in core} & optional == set()

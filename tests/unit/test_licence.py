"""The licence travels with the package: Apache-2.0 in the installed distribution's
metadata (PEP 639), its LICENSE and NOTICE files beside it."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_distribution_says_apache_2() -> None:
    meta = metadata.metadata("trigger-mesh")
    assert meta["License-Expression"] == "Apache-2.0"
    assert set(meta.get_all("License-File") or []) >= {"LICENSE", "NOTICE"}


def test_the_licence_file_is_the_apache_licence_2_0() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0")
    assert "END OF TERMS AND CONDITIONS" in text
    assert "Copyright" in (ROOT / "NOTICE").read_text()

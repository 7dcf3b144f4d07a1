"""docs/conformance.md lists every check the kit makes, with its level and the section of
the spec it comes from, and every section it links to exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mesh.conformance.camera import catalog as camera_catalog
from mesh.conformance.camera.runner import STEPS
from mesh.conformance.gateway import catalog as gateway_catalog
from mesh.conformance.gateway.runner import JUDGES
from mesh.conformance.verdict import Check

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC = (DOCS / "conformance.md").read_text()


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings."""
    out = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            title = re.sub(r"[^\w\- ]", "", title)
            out.add(title.replace(" ", "-"))
    return out


@pytest.mark.parametrize(
    "check", [*camera_catalog.CHECKS, *gateway_catalog.CHECKS], ids=lambda c: c.name
)
def test_every_check_is_in_the_document_with_its_level_and_section(check: Check) -> None:
    row = f"| `{check.name}` | {check.level.value} | "
    lines = [line for line in DOC.splitlines() if line.startswith(row)]
    assert len(lines) == 1, f"{check.name}: no row (or several) starting {row!r}"
    assert f"]({check.section})" in lines[0]
    assert ("(signed run)" in lines[0]) == check.signed


@pytest.mark.parametrize(
    "section",
    sorted({c.section for c in (*camera_catalog.CHECKS, *gateway_catalog.CHECKS)}),
)
def test_every_section_a_check_names_exists(section: str) -> None:
    name, anchor = section.split("#")
    assert anchor in _anchors((DOCS / name).read_text()), section


def test_the_runners_make_every_check_of_their_catalog_in_its_order() -> None:
    assert tuple(check for check, _ in STEPS) == camera_catalog.CHECKS
    assert tuple(check for check, _ in JUDGES) == gateway_catalog.CHECKS
    names = [c.name for c in (*camera_catalog.CHECKS, *gateway_catalog.CHECKS)]
    assert len(names) == len(set(names))

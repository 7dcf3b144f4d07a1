"""What a run reports: the table people read and the JUnit XML a CI reads. Pure.

JUnit: one ``testcase`` per check (``classname`` ``conformance.<suite>.<MUST|SHOULD>``).
A check that counts against the run (a MUST failed or not run) has a ``failure``; a
check out of scope, a SHOULD not run, and a SHOULD not met have ``skipped`` (a SHOULD
not met says so in its message: it stands out without failing the build); every
testcase carries its level, outcome, section and detail in ``system-out``.
"""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from mesh.conformance.verdict import Level, Outcome, Result, conformant, tally

_HEADERS = ("check", "level", "result", "detail")


def table(results: Sequence[Result], *, width: int = 120) -> str:
    """A fixed-width table, one row per check, the detail wrapped in its column."""
    name_w = max([len(_HEADERS[0]), *(len(r.check.name) for r in results)])
    level_w = max(len(_HEADERS[1]), *(len(level.value) for level in Level))
    result_w = max(len(_HEADERS[2]), *(len(o.value) for o in Outcome))
    detail_w = max(30, width - name_w - level_w - result_w - 6)
    lines = [
        f"{_HEADERS[0]:<{name_w}}  {_HEADERS[1]:<{level_w}}  {_HEADERS[2]:<{result_w}}  "
        f"{_HEADERS[3]}",
        f"{'-' * name_w}  {'-' * level_w}  {'-' * result_w}  {'-' * min(detail_w, 40)}",
    ]
    for r in results:
        shown = _shown(r)
        wrapped = textwrap.wrap(r.finding.detail, detail_w) or [""]
        lines.append(
            f"{r.check.name:<{name_w}}  {r.check.level.value:<{level_w}}  {shown:<{result_w}}  "
            f"{wrapped[0]}"
        )
        pad = " " * (name_w + level_w + result_w + 6)
        lines.extend(pad + more for more in wrapped[1:])
    return "\n".join(line.rstrip() for line in lines)


def _shown(result: Result) -> str:
    """The result column: FAIL in capitals where it fails the run."""
    if result.counts_against:
        return result.outcome.value.upper()
    return result.outcome.value


def summary(results: Sequence[Result]) -> str:
    counts = tally(results)
    must_bad = counts["MUST fail"] + counts["MUST not run"]
    parts = ", ".join(f"{counts[o.value]} {o.value}" for o in Outcome if counts[o.value])
    verdict = (
        "PASS: every MUST passed"
        if conformant(results)
        else f"FAIL: {must_bad} MUST check(s) failed or not run"
    )
    should = counts["SHOULD fail"]
    tail = f"; {should} SHOULD not met" if should else ""
    return f"{len(results)} checks: {parts}. {verdict}{tail}."


def junit(
    suite: str, results: Sequence[Result], *, seconds: float, properties: dict[str, str]
) -> str:
    """The JUnit XML document of one run (``suite``: camera or gateway)."""
    counts = tally(results)
    failures = sum(1 for r in results if r.counts_against)
    skipped = sum(1 for r in results if _skip_message(r) is not None)
    root = ET.Element("testsuites", name="trigger-mesh conformance")
    node = ET.SubElement(
        root,
        "testsuite",
        name=f"conformance {suite}",
        tests=str(len(results)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
        time=f"{seconds:.3f}",
    )
    props = ET.SubElement(node, "properties")
    for key, value in {**properties, "verdict": "pass" if conformant(results) else "fail"}.items():
        ET.SubElement(props, "property", name=key, value=value)
    for key in ("MUST fail", "MUST not run", "SHOULD fail"):
        ET.SubElement(props, "property", name=key.replace(" ", "_"), value=str(counts[key]))
    for r in results:
        case = ET.SubElement(
            node,
            "testcase",
            classname=f"conformance.{suite}.{r.check.level.value}",
            name=r.check.name,
            time=f"{r.seconds:.3f}",
        )
        if r.counts_against:
            failure = ET.SubElement(
                case,
                "failure",
                message=f"{r.outcome.value}: {r.finding.detail}",
                type=r.outcome.value.replace(" ", "_"),
            )
            failure.text = r.finding.detail
        else:
            message = _skip_message(r)
            if message is not None:
                ET.SubElement(case, "skipped", message=message)
        out = ET.SubElement(case, "system-out")
        out.text = (
            f"{r.check.level.value} {r.outcome.value} ({r.check.section}): {r.check.title}\n"
            f"{r.finding.detail}"
        )
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _skip_message(result: Result) -> str | None:
    if result.counts_against:
        return None
    if result.outcome is Outcome.OUT_OF_SCOPE:
        return f"out of scope: {result.finding.detail}"
    if result.outcome is Outcome.NOT_RUN:
        return f"not run: {result.finding.detail}"
    if result.outcome is Outcome.FAIL:
        return f"SHOULD not met: {result.finding.detail}"
    return None

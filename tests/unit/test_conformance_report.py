"""The conformance kit's verdict of a run and its reports (mesh/conformance/verdict.py,
report.py): the exit rule, --skip, the table and the JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from mesh.conformance import report
from mesh.conformance.verdict import (
    Check,
    Level,
    Outcome,
    Result,
    all_of,
    conformant,
    failed,
    not_run,
    out_of_scope,
    passed,
    scoped,
    unknown_names,
)

MUST_A = Check("must_a", Level.MUST, "protocol.md#a", "a must")
MUST_B = Check("must_b", Level.MUST, "protocol.md#b", "another must")
SHOULD_C = Check("should_c", Level.SHOULD, "protocol.md#c", "a should")
SIGNED_D = Check("signed_d", Level.MUST, "security.md#d", "a signed must", signed=True)


def results(a: str, b: str, c: str, d: str = "out") -> list[Result]:
    make = {"pass": passed, "fail": failed, "not": not_run, "out": out_of_scope}
    return [
        Result(MUST_A, make[a]("detail a")),
        Result(MUST_B, make[b]("detail b")),
        Result(SHOULD_C, make[c]("detail c")),
        Result(SIGNED_D, make[d]("detail d")),
    ]


def test_a_run_passes_only_when_every_must_passed() -> None:
    assert conformant(results("pass", "pass", "pass"))
    assert not conformant(results("pass", "fail", "pass"))


def test_a_must_not_run_fails_the_run_but_out_of_scope_does_not() -> None:
    assert not conformant(results("pass", "not", "pass"))
    assert conformant(results("pass", "pass", "pass", "out"))


def test_a_should_never_fails_the_run() -> None:
    assert conformant(results("pass", "pass", "fail"))
    assert conformant(results("pass", "pass", "not"))


def test_skip_puts_a_check_out_of_scope_and_keeps_what_it_found() -> None:
    run = results("pass", "fail", "pass")
    assert not conformant(run)
    skipped = scoped(run, ["must_b"])
    assert conformant(skipped)
    assert skipped[1].outcome is Outcome.OUT_OF_SCOPE
    assert "fail: detail b" in skipped[1].finding.detail
    assert unknown_names([MUST_A, MUST_B], ["must_b", "nope"]) == ["nope"]


def test_all_of_takes_the_first_failure() -> None:
    assert all_of([passed("x"), failed("y"), not_run("z")], "all good").outcome is Outcome.FAIL
    assert all_of([passed("x"), not_run("z")], "all good").outcome is Outcome.NOT_RUN
    assert all_of([passed("x")], "all good") == passed("all good")


def test_the_table_shows_every_check_and_capitalises_what_fails_the_run() -> None:
    text = report.table(results("pass", "fail", "fail", "out"), width=100)
    lines = text.splitlines()
    assert lines[0].split() == ["check", "level", "result", "detail"]
    row_b = next(line for line in lines if line.startswith("must_b"))
    row_c = next(line for line in lines if line.startswith("should_c"))
    assert "FAIL" in row_b  # a MUST failed: it fails the run
    assert " fail " in row_c  # a SHOULD not met: shown, lower case
    assert all(len(line) <= 100 for line in lines)
    assert "FAIL: 1 MUST" in report.summary(results("pass", "fail", "fail"))
    assert "PASS" in report.summary(results("pass", "pass", "fail"))


def test_the_table_wraps_a_long_detail_in_its_column() -> None:
    long = Result(MUST_A, passed("word " * 60))
    lines = report.table([long], width=90).splitlines()[2:]
    assert len(lines) > 3
    indent = lines[0].index("word")
    assert all(line[:indent].strip() == "" for line in lines[1:])


def test_junit_has_a_testcase_per_check_with_failure_and_skipped_by_the_exit_rule() -> None:
    run = results("pass", "not", "fail", "out")
    xml = report.junit("camera", run, seconds=1.5, properties={"camera_id": "cam-1"})
    root = ET.fromstring(xml)
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("tests") == "4"
    assert suite.get("failures") == "1"  # the MUST not run
    assert suite.get("skipped") == "2"  # the SHOULD not met, the signed check out of scope
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {"must_a", "must_b", "should_c", "signed_d"}
    assert cases["must_a"].find("failure") is None
    assert cases["must_a"].find("skipped") is None
    failure = cases["must_b"].find("failure")
    assert failure is not None
    assert failure.get("type") == "not_run"
    skipped = cases["should_c"].find("skipped")
    assert skipped is not None
    assert (skipped.get("message") or "").startswith("SHOULD not met")
    assert cases["signed_d"].find("skipped") is not None
    assert cases["must_b"].get("classname") == "conformance.camera.MUST"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["verdict"] == "fail"
    assert props["camera_id"] == "cam-1"

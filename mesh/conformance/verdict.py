"""Checks, their findings and the verdict of a run. Pure.

A check is a requirement of the spec the kit can test from outside (``Check``: a name,
MUST or SHOULD, the section it comes from). Running it gives a ``Finding``: passed,
failed, not run (the kit could not test it: a reason says why and what would let it), or
out of scope (excluded by an option of the run: ``--skip NAME``, or the signed checks in
an unsigned run). The rule of the exit status: a run passes when no MUST failed and no
MUST was left not run; a SHOULD never fails a run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum


class Level(StrEnum):
    MUST = "MUST"
    SHOULD = "SHOULD"


class Outcome(StrEnum):
    PASS = "pass"  # noqa: S105 (an outcome, not a password)
    FAIL = "fail"
    NOT_RUN = "not run"
    OUT_OF_SCOPE = "out of scope"


@dataclass(frozen=True)
class Check:
    """One requirement the kit tests. ``section``: where the spec states it
    (``protocol.md#anchor``); ``signed``: only a signed run tests it."""

    name: str
    level: Level
    section: str
    title: str
    signed: bool = False


@dataclass(frozen=True)
class Finding:
    outcome: Outcome
    detail: str


def passed(detail: str) -> Finding:
    return Finding(Outcome.PASS, detail)


def failed(detail: str) -> Finding:
    return Finding(Outcome.FAIL, detail)


def not_run(detail: str) -> Finding:
    return Finding(Outcome.NOT_RUN, detail)


def out_of_scope(detail: str) -> Finding:
    return Finding(Outcome.OUT_OF_SCOPE, detail)


def all_of(findings: Iterable[Finding], summary: str) -> Finding:
    """Several findings of one check as one: the first failure (or not run) decides,
    otherwise passed with ``summary``."""
    found = list(findings)
    for outcome in (Outcome.FAIL, Outcome.NOT_RUN):
        bad = [f.detail for f in found if f.outcome is outcome]
        if bad:
            return Finding(outcome, "; ".join(bad))
    return passed(summary)


@dataclass(frozen=True)
class Result:
    check: Check
    finding: Finding
    seconds: float = 0.0

    @property
    def outcome(self) -> Outcome:
        return self.finding.outcome

    @property
    def counts_against(self) -> bool:
        """A MUST that failed or was not run: the run does not pass."""
        return self.check.level is Level.MUST and self.outcome in (Outcome.FAIL, Outcome.NOT_RUN)


def scoped(results: Sequence[Result], skipped: Iterable[str]) -> list[Result]:
    """The results with the checks named by ``--skip`` out of scope (what they found is
    kept in the detail: skipping a check hides nothing)."""
    names = set(skipped)
    out = []
    for result in results:
        if result.check.name in names and result.outcome is not Outcome.OUT_OF_SCOPE:
            was = f"{result.outcome.value}: {result.finding.detail}"
            result = replace(result, finding=out_of_scope(f"--skip (found: {was})"))  # noqa: PLW2901
        out.append(result)
    return out


def unknown_names(checks: Iterable[Check], names: Iterable[str]) -> list[str]:
    known = {c.name for c in checks}
    return sorted(set(names) - known)


def conformant(results: Iterable[Result]) -> bool:
    return not any(r.counts_against for r in results)


def tally(results: Iterable[Result]) -> Counter[str]:
    """How many of each outcome, and ``MUST <outcome>`` for the MUSTs."""
    counts: Counter[str] = Counter()
    for r in results:
        counts[r.outcome.value] += 1
        counts[f"{r.check.level.value} {r.outcome.value}"] += 1
    return counts

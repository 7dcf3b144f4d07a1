"""Every benchmark in bench/, with tiny sizes: proof that each still runs, not its figures.

Each benchmark runs as ``python bench/NAME.py --smoke --json`` in a process of its own,
against the real parts it always uses (a mosquitto on a free loopback port, bumble's
virtual radio, python-can's udp_multicast bus, the PostgreSQL of the tests), and must exit
0 within the timeout with a last stdout line that is its JSON report ({"bench": NAME, …}).
Helpers are not benchmarks: they run as the children of the benchmark named in HELPERS.
Any other script added to bench/ is run as a benchmark, so it must take --smoke too.

    python bench/smoke.py [--timeout 180] [--only ble,can]

Last line: {"bench": "smoke", "ok": …, "seconds": …, "scripts": {NAME: {"ok": …,
"seconds": …}, …}}; a failure's reason and the tail of its stderr go to stderr. Exit
status 1 if any script failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# Helper -> the benchmark that runs it (range.py runs latency.py's floor too).
HELPERS = {
    "floor_fleet": "latency",
    "soak_collect": "soak",
    "soak_fleet": "soak",
    "soak_floor": "soak",
    "soak_report": "soak",
}
STDERR_TAIL = 40  # lines of a failed script's stderr to show


@dataclass(frozen=True)
class Outcome:
    name: str
    ok: bool
    seconds: float
    reason: str = ""
    stderr: str = ""


def benchmarks() -> list[str]:
    names = sorted(p.stem for p in BENCH.glob("*.py"))
    return [n for n in names if n not in HELPERS and n != Path(__file__).stem]


def check_report(name: str, stdout: str) -> str:
    """Why the last stdout line is not the benchmark's JSON report; "" if it is."""
    lines = stdout.strip().splitlines()
    if not lines:
        return "printed nothing"
    try:
        report = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        return f"last line is not JSON ({exc}): {lines[-1][:200]!r}"
    if not isinstance(report, dict):
        return f"last line is JSON but not an object: {lines[-1][:200]!r}"
    if report.get("bench") != name:
        return f'last line has "bench": {report.get("bench")!r}, not {name!r}'
    return ""


def kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def run_one(name: str, timeout_s: float) -> Outcome:
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / f"{name}.py"), "--smoke", "--json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=BENCH.parent,
        # A group of its own: on a timeout its brokers, gateways and fleets go with it.
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        stdout, stderr = proc.communicate()
        reason = f"timed out after {timeout_s:g} s"
        return Outcome(name, False, time.monotonic() - start, reason, stderr)
    finally:
        kill_group(proc.pid)  # whatever it failed to stop, so the next script starts clean
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        return Outcome(name, False, seconds, f"exit status {proc.returncode}", stderr)
    reason = check_report(name, stdout)
    return Outcome(name, not reason, seconds, reason, stderr if reason else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per script")
    parser.add_argument("--only", default="", help="comma-separated names (default: all)")
    args = parser.parse_args()
    names = benchmarks()
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"not benchmarks in bench/: {', '.join(unknown)}")
        names = [n for n in names if n in wanted]
    start = time.monotonic()
    outcomes: list[Outcome] = []
    for name in names:
        outcome = run_one(name, args.timeout)
        outcomes.append(outcome)
        print(
            f"{name:12} {'ok' if outcome.ok else 'FAILED':6} {outcome.seconds:6.1f} s"
            f"{'  ' + outcome.reason if outcome.reason else ''}",
            flush=True,
        )
        if not outcome.ok:
            tail = "\n".join(outcome.stderr.splitlines()[-STDERR_TAIL:])
            print(f"--- {name}: {outcome.reason}; its stderr ends:\n{tail}", file=sys.stderr)
    ok = all(o.ok for o in outcomes)
    summary = {
        "bench": "smoke",
        "ok": ok,
        "seconds": round(time.monotonic() - start, 1),
        "scripts": {
            o.name: {"ok": o.ok, "seconds": round(o.seconds, 1)}
            | ({"reason": o.reason} if o.reason else {})
            for o in outcomes
        },
    }
    print(json.dumps(summary, separators=(",", ":")))
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

"""bench/soak.py end to end, briefly: real mosquitto, gateways and camera fleets.

A behaviour check of the benchmark itself (its figures are not asserted: speed belongs to
the benchmark's own report): at a low rate on a small city every trigger must end in a
confirmed activation, the cross-checks must agree, and the JSON line must have the shape
docs and tooling read.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_mosquitto

ROOT = Path(__file__).resolve().parents[2]


def test_quick_soak_loses_nothing_and_reports_json() -> None:
    require_mosquitto()  # the soak starts its own private one
    args = [
        sys.executable, "bench/soak.py", "--minutes", "0.25", "--rate", "10",
        "--cameras", "60", "--gateways", "2", "--scene-cameras", "9",
        "--warmup-s", "3", "--floor-s", "3", "--stagger-s", "2", "--ack-check", "--json",
    ]  # fmt: skip
    # Its own process group: on a timeout its gateways, fleets and broker go with it.
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    report = json.loads(stdout.strip().splitlines()[-1])

    assert list(report)[:5] == [
        "bench",
        "lost",
        "p99_first_minute_ms",
        "p99_last_minute_ms",
        "rss_growth_pct",
    ]
    assert report["bench"] == "soak"
    assert report["lost"] == 0
    # 10/s for 3 s of warm-up and 15 s measured, every one of them confirmed.
    assert report["triggers"] == 180
    assert report["confirmed"] == 180
    assert report["expected_per_activation"]["min"] == 9
    for key in ("p99_first_minute_ms", "p99_last_minute_ms", "rss_growth_pct", "floor_p99_ms"):
        assert isinstance(report[key], float), key
    assert [w["window"] for w in report["windows"]] == [1, 2]
    assert sum(w["triggers"] for w in report["windows"]) == 150
    # The cross-checks: what the cameras and the gateways counted agrees with the records.
    assert report["ack_mismatches"] == 0
    assert report["cameras_acks_sent"] >= report["records_started_cameras"] == 180 * 9
    assert report["gateway_counters"]["activations.confirmed"] == 180
    assert report["dead_processes"] == []

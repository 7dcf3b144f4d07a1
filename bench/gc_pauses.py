"""Garbage-collector pauses in a gateway under load, with and without mesh.ops.runtime's tuning.

A gateway and 200 simulated cameras in one process (the collector then has plenty to
walk) on an embedded broker; 40 activations; every collection timed with gc.callbacks.

    python bench/gc_pauses.py [--json] [--cameras 200] [--activations 40] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bridge.mqtt.embedded import EmbeddedBroker
from bridge.topics import Topics
from mesh.decide.policy import Policy
from mesh.gateway.build import build_gateway, config_in_code
from mesh.ops import logs
from mesh.ops.runtime import settle_heap, tune_gc
from mesh.protocol.models import (
    CONFIRMED_OUTCOMES,
    ActivationRecord,
    ActivationState,
    GeoPoint,
    TriggerKind,
)
from mesh.sim.camera_fleet import build_agents, scatter, wait_all_up
from triggers.manual import manual_trigger

SMOKE_HELP = "tiny sizes: proves the script runs (make bench-smoke), not its figures"


def check_confirmed(record: ActivationRecord, cameras: int) -> None:
    """Every camera must have started: an activation that waited out its deadline for
    cameras that never heard it would time the deadline, not the collector."""
    confirmed = sum(1 for c in record.cameras if c.status in CONFIRMED_OUTCOMES)
    if record.state is not ActivationState.CONFIRMED or confirmed != cameras:
        raise RuntimeError(
            f"{record.activation_id}: {record.state}, {confirmed} of {cameras} cameras confirmed"
            f" {record.reason}"
        )


async def measure(cameras: int, activations: int, tuned: bool) -> dict[str, Any]:
    pauses: list[tuple[int, float]] = []
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            pauses.append((info["generation"], (time.perf_counter() - started.pop()) * 1000))

    if tuned:
        tune_gc()
    center = GeoPoint(lat=39.95, lon=-75.16)
    policy = Policy.model_validate({"kinds": {"manual": {"radius_m": 5000, "cooldown_s": 0}}})
    async with EmbeddedBroker() as broker:
        with tempfile.TemporaryDirectory() as tmp:
            finished: asyncio.Queue[ActivationRecord] = asyncio.Queue()
            gateway = build_gateway(
                config_in_code("u1", Path(tmp) / "log.db", position=center),
                policy,
                url=broker.url,
                on_finished=finished.put_nowait,
            )
            agents = build_agents(
                scatter(cameras, center, radius_m=300),
                url=broker.url,
                topics=Topics(),
                now_ns=time.time_ns(),
            )
            tasks = [asyncio.create_task(gateway.run())]
            tasks += [asyncio.create_task(a.run()) for a in agents]
            try:
                await gateway.ready.wait()
                await wait_all_up(agents)
                while len(gateway.presence) < cameras:
                    await asyncio.sleep(0.05)
                if tuned:
                    settle_heap()
                gc.callbacks.append(on_gc)
                start = time.perf_counter()
                for i in range(activations):
                    await gateway.submit(
                        manual_trigger(TriggerKind.MANUAL, "u1", source_id=f"gc-{i}")
                    )
                    check_confirmed(await finished.get(), cameras)
                elapsed = time.perf_counter() - start
            finally:
                gc.callbacks.remove(on_gc)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    by_generation: dict[str, dict[str, float]] = {}
    for generation in (0, 1, 2):
        times = [ms for g, ms in pauses if g == generation]
        by_generation[str(generation)] = {
            "collections": len(times),
            "max_ms": round(max(times), 2) if times else 0.0,
            "total_ms": round(sum(times), 1),
        }
    return {
        "tuned": tuned,
        "wall_s": round(elapsed, 2),
        "gc_total_ms": round(sum(ms for _, ms in pauses), 1),
        "gc_max_pause_ms": round(max((ms for _, ms in pauses), default=0.0), 2),
        "by_generation": by_generation,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cameras", type=int, default=200)
    parser.add_argument("--activations", type=int, default=40)
    parser.add_argument("--one", choices=["default", "tuned"], help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        args.cameras, args.activations = 10, 3
    logs.configure("console", "warning")
    if args.one:  # one configuration per process: gc settings are process-wide
        result = asyncio.run(measure(args.cameras, args.activations, args.one == "tuned"))
        print(json.dumps(result))
        return
    results = []
    for mode in ("default", "tuned"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                mode,
                "--cameras",
                str(args.cameras),
                "--activations",
                str(args.activations),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:  # its traceback, which check=True would swallow
            raise SystemExit(f"{mode} run failed ({out.returncode}):\n{out.stderr}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in results:
        print(
            f"{'tuned' if r['tuned'] else 'default':8s} gc total {r['gc_total_ms']:8.1f} ms  "
            f"longest pause {r['gc_max_pause_ms']:6.2f} ms  activations took {r['wall_s']} s"
        )
    if args.json:
        print(
            json.dumps(
                {
                    "bench": "gc_pauses",
                    "cameras": args.cameras,
                    "activations": args.activations,
                    "results": results,
                },
                separators=(",", ":"),
            )
        )


if __name__ == "__main__":
    main()

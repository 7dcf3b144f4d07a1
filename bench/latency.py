"""Trigger → all acks, against the bare-MQTT floor, same broker, same run.

For N = 1, 100, 1000 cameras:
- floor: one QoS1 publish → N bare subscribers → N QoS1 acks back to the publisher,
  timed by the publisher (publish call → Nth ack received);
- mesh: a trigger into the real gateway daemon → admission, durable (fsync'd) log
  append, broadcast → N camera agents decide, start and ack → the gateway records every
  ack; timed by the gateway itself (trigger accepted → last ack recorded, monotonic).
Both fleets are one process of N MqttLink clients on the same mosquitto (nodelay
config). The gateway runs as its own process so its RSS and CPU can be read.

    python bench/latency.py [--json] [--counts 1,100,1000] [--rounds-scale 1.0]

With --json the last line is {"bench": "latency", "results": [...], "gateway_rss_mb": …}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil

from bridge.client import Inbound, LinkOptions, MqttLink
from bridge.codec import encode
from bridge.embedded import MosquittoProcess, find_mosquitto, free_port
from bridge.topics import Topics
from mesh import logs
from mesh.models import (
    ActivationState,
    SourceRef,
    SourceType,
    TriggerEvent,
    TriggerKind,
)
from mesh.stats import percentile
from mesh.watch import ActivationWatcher

ROOT = Path(__file__).resolve().parent.parent
UNIT = "bench-1"
ROUNDS = {1: 300, 100: 80, 1000: 30}
WARMUP = 3
GAP_S = 0.02  # idle time between rounds so they do not overlap


def rounds_for(count: int, scale: float) -> int:
    base = ROUNDS.get(count) or max(20, int(3000 / count))
    return max(10, int(base * scale))


def summarise(samples: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(samples, 50), 3),
        "p99": round(percentile(samples, 99), 3),
        "max": round(max(samples), 3),
    }


class Child:
    """A subprocess that is stopped with SIGINT (clean shutdown) when we are done."""

    def __init__(self, args: list[str], *, ready_line: str | None = None) -> None:
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
        )
        self.ready_line = ready_line

    def wait_ready(self, timeout_s: float) -> None:
        if self.ready_line is None:
            return
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args} exited: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            if line.strip() == self.ready_line:
                return
        raise RuntimeError(f"{self.proc.args} not ready within {timeout_s} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def count_online(url: Any, topics: Topics, expected: int, timeout_s: float) -> None:
    """Wait until ``expected`` cameras have announced themselves online (retained presence)."""
    online: set[str] = set()
    done = asyncio.Event()

    def on_presence(message: Inbound) -> None:
        if b'"online":true' in message.payload:
            online.add(message.topic)
        if len(online) >= expected:
            done.set()

    link = MqttLink(
        url,
        LinkOptions(
            f"bench-count-{uuid.uuid4().hex[:6]}",
            persistent_session=False,
            subscriptions=((topics.all_presence(), 1),),
        ),
    )
    task = asyncio.create_task(link.run(on_presence))
    try:
        await asyncio.wait_for(done.wait(), timeout_s)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def floor_round_trips(url: Any, prefix: str, count: int, rounds: int) -> list[float]:
    acks = 0
    all_in = asyncio.Event()

    def on_ack(_message: Inbound) -> None:
        nonlocal acks
        acks += 1
        if acks >= count:
            all_in.set()

    link = MqttLink(
        url,
        LinkOptions(
            f"{prefix}-floor-commander",
            persistent_session=False,
            subscriptions=((f"{prefix}/floor/ack/+", 1),),
        ),
    )
    task = asyncio.create_task(link.run(on_ack))
    samples = []
    try:
        await link.wait_up(30)
        for i in range(rounds + WARMUP):
            acks = 0
            all_in.clear()
            start = time.perf_counter()
            link.publish_soon(f"{prefix}/floor/cmd", b"record", qos=1)
            await asyncio.wait_for(all_in.wait(), 30)
            if i >= WARMUP:
                samples.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(GAP_S)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return samples


async def mesh_round_trips(url: Any, topics: Topics, count: int, rounds: int) -> list[float]:
    watcher = ActivationWatcher(
        url, topics, client_id=f"bench-watch-{uuid.uuid4().hex[:6]}", unit_id=UNIT, final_only=True
    )
    sender = MqttLink(
        url, LinkOptions(f"bench-sender-{uuid.uuid4().hex[:6]}", persistent_session=False)
    )
    tasks = [asyncio.create_task(watcher.run()), asyncio.create_task(sender.run(lambda _m: None))]
    samples = []
    try:
        await watcher.link.wait_up(30)
        await sender.wait_up(30)
        for i in range(rounds + WARMUP):
            event = TriggerEvent(
                event_id=uuid.uuid4().hex,
                kind=TriggerKind.MANUAL,
                unit_id=UNIT,
                observed_at_ns=time.time_ns(),
                source=SourceRef(type=SourceType.MANUAL, id=f"bench-{i}", authenticated=False),
            )
            await sender.publish(topics.trigger(UNIT), encode(event), qos=1)
            receipt = await watcher.receipt(event.event_id, 30)
            if receipt is None or receipt.activation_id is None:
                raise RuntimeError(f"round {i}: no receipt from the gateway")
            record = await watcher.final_record(receipt.activation_id, 60)
            assert record is not None, "activation did not finish"
            if record.state is not ActivationState.CONFIRMED or record.all_acked_ms is None:
                raise RuntimeError(f"round {i}: {record.state}, {record.reason}")
            acked = sum(1 for c in record.cameras if c.status in ("started", "already_recording"))
            if acked != count:
                raise RuntimeError(f"round {i}: {acked} of {count} cameras confirmed")
            if i >= WARMUP:
                samples.append(record.all_acked_ms)
            await asyncio.sleep(GAP_S)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return samples


def gateway_config(directory: Path, broker: str, prefix: str) -> Path:
    config = directory / "gateway.yaml"
    config.write_text(
        f"unit: {UNIT}\n"
        f"broker: {broker}\n"
        f"topic_prefix: {prefix}\n"
        f"log: {directory / 'bench.db'}\n"
        "position: {lat: 39.952583, lon: -75.165222}\n"
        "status_interval_s: 60\n"
        "policy:\n"
        "  kinds:\n"
        # Every camera of the fleet is in range; no cooldown between rounds; no retries
        # (a retry would be a failure here, not part of the latency).
        "    manual: {radius_m: 5000, cooldown_s: 0, ack_deadline_ms: 20000, max_retries: 0,"
        " command_ttl_s: 60}\n"
    )
    return config


async def run(counts: list[int], scale: float) -> dict[str, Any]:
    binary = find_mosquitto()
    if binary is None:
        raise SystemExit("mosquitto is not installed (apt-get install -y mosquitto)")
    workdir = Path(tempfile.mkdtemp(prefix="trigger-mesh-bench-"))
    broker = MosquittoProcess(binary, free_port(), workdir / "mosquitto")
    broker.start()
    url = broker.url
    results = []
    gateway_rss_mb = 0.0
    try:
        for count in counts:
            rounds = rounds_for(count, scale)
            run_id = uuid.uuid4().hex[:6]
            # --- floor ---------------------------------------------------------------
            floor_prefix = f"bench-{run_id}"
            fleet = Child(
                [
                    sys.executable,
                    "bench/floor_fleet.py",
                    "--broker",
                    str(url),
                    "--prefix",
                    floor_prefix,
                    "--count",
                    str(count),
                ],
                ready_line="ready",
            )
            try:
                fleet.wait_ready(120)
                floor = await floor_round_trips(url, floor_prefix, count, rounds)
            finally:
                fleet.stop()
            # --- mesh ------------------------------------------------------------------
            topics = Topics(f"bench-{run_id}/mesh/v1")
            gw_dir = workdir / f"gw-{count}"
            gw_dir.mkdir()
            profile = os.environ.get("BENCH_PROFILE_GATEWAY")  # a path: cProfile the gateway
            profiler = ["-m", "cProfile", "-o", f"{profile}.{count}"] if profile else []
            gateway = Child(
                [
                    sys.executable,
                    *profiler,
                    "-m",
                    "mesh",
                    "gateway",
                    "--config",
                    str(gateway_config(gw_dir, str(url), topics.prefix)),
                    "--log-format",
                    "json",
                    "--log-level",
                    "warning",
                ]
            )
            cameras = Child(
                [
                    sys.executable,
                    "-m",
                    "mesh",
                    "cameras",
                    "--count",
                    str(count),
                    "--spread-m",
                    "300",
                    "--unit-prefix",
                    f"u{run_id}",
                    "--broker",
                    str(url),
                    "--prefix",
                    topics.prefix,
                ]
            )
            try:
                await count_online(url, topics, count, 120)
                await asyncio.sleep(0.5)  # the gateway has the same retained presence
                gw_proc = psutil.Process(gateway.proc.pid)
                rss_idle_mb = gw_proc.memory_info().rss / 2**20
                cpu_before = gw_proc.cpu_times()
                mesh = await mesh_round_trips(url, topics, count, rounds)
                cpu_after = gw_proc.cpu_times()
                rss_mb = gw_proc.memory_info().rss / 2**20
                gateway_rss_mb = max(gateway_rss_mb, rss_mb)
            finally:
                cameras.stop()
                gateway.stop()
            cpu_ms = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
            floor_s, mesh_s = summarise(floor), summarise(mesh)
            results.append(
                {
                    "cameras": count,
                    "rounds": rounds,
                    "floor_p50_ms": floor_s["p50"],
                    "floor_p99_ms": floor_s["p99"],
                    "mesh_p50_ms": mesh_s["p50"],
                    "mesh_p99_ms": mesh_s["p99"],
                    "ratio": round(mesh_s["p99"] / floor_s["p99"], 3),
                    "ratio_p50": round(mesh_s["p50"] / floor_s["p50"], 3),
                    "gateway_cpu_ms_per_trigger": round(cpu_ms * 1000 / (rounds + WARMUP), 3),
                    "gateway_rss_idle_mb": round(rss_idle_mb, 1),
                    "gateway_rss_mb": round(rss_mb, 1),
                }
            )
    finally:
        broker.stop()
    return {"bench": "latency", "results": results, "gateway_rss_mb": round(gateway_rss_mb, 1)}


def print_table(report: dict[str, Any]) -> None:
    print(
        f"{'cameras':>8} {'rounds':>6} {'floor p50':>10} {'floor p99':>10} {'mesh p50':>9} "
        f"{'mesh p99':>9} {'ratio p99':>9} {'ratio p50':>9} {'gw cpu/trig':>11} "
        f"{'gw rss idle/end':>16}"
    )
    for r in report["results"]:
        print(
            f"{r['cameras']:>8} {r['rounds']:>6} {r['floor_p50_ms']:>10.3f} "
            f"{r['floor_p99_ms']:>10.3f} {r['mesh_p50_ms']:>9.3f} {r['mesh_p99_ms']:>9.3f} "
            f"{r['ratio']:>9.3f} {r['ratio_p50']:>9.3f} {r['gateway_cpu_ms_per_trigger']:>9.3f}ms "
            f"{r['gateway_rss_idle_mb']:>7.1f}/{r['gateway_rss_mb']:.1f}MB"
        )
    print(f"gateway RSS (max over runs): {report['gateway_rss_mb']} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="last line: the report as JSON")
    parser.add_argument("--counts", default="1,100,1000")
    parser.add_argument(
        "--rounds-scale",
        type=float,
        default=1.0,
        help="multiply the number of rounds (0.2 for a quick look)",
    )
    args = parser.parse_args()
    logs.configure("console", "warning")
    counts = [int(c) for c in args.counts.split(",")]
    with suppress(KeyboardInterrupt):
        report = asyncio.run(run(counts, args.rounds_scale))
        print_table(report)
        if args.json:
            print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()

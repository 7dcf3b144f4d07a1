"""Trigger → all acks, against the bare-MQTT floor, same broker, same run.

For N = 1, 100, 1000 cameras:
- floor: one QoS1 publish → N bare subscribers → N QoS1 acks back to the publisher,
  timed by the publisher (publish call → Nth ack received);
- mesh: a trigger into the real gateway daemon → admission, durable (fsync'd) log
  append, broadcast → N camera agents decide, start and ack → the gateway records every
  ack; timed by the gateway itself (trigger accepted → last ack recorded, monotonic).

Both fleets are one process of N MqttLink clients (same client code, same collector
settings) on the same mosquitto (generated config, TCP_NODELAY); the gateway runs as its
own process so its RSS and CPU can be read. Floor and mesh rounds alternate, so whatever
else the machine does falls on both alike.

With --signed the gateway and every camera sign and check (docs/security.md): commands,
acks and the bench's own triggers carry Ed25519 signatures, checked against one trust store.

    python bench/latency.py [--json] [--counts 1,100,1000] [--rounds-scale 1.0] [--signed]
        [--smoke]

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
from typing import TYPE_CHECKING, Any

import psutil

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess, find_mosquitto, free_port
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.decide.stats import percentile
from mesh.dispatch.watch import ActivationWatcher
from mesh.ops import logs
from mesh.protocol.codec import encode
from mesh.protocol.models import ActivationState, TriggerKind
from triggers.manual import manual_trigger

if TYPE_CHECKING:
    from mesh.security.signing import PayloadSigner

ROOT = Path(__file__).resolve().parent.parent
UNIT = "bench-1"
ROUNDS = {1: 300, 100: 100, 1000: 40}
CENTER = (39.952583, -75.165222)  # `trigger-mesh cameras` defaults
SPREAD_M = 300
WARMUP = 3
GAP_S = 0.02  # idle time between rounds so they do not overlap
SMOKE_HELP = "tiny sizes: proves the script runs (make bench-smoke), not its figures"


def rounds_for(count: int, scale: float) -> int:
    base = ROUNDS.get(count) or max(20, int(3000 / count))
    return max(10, int(base * scale))


def summarise(samples: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(samples, 50), 3), "p99": round(percentile(samples, 99), 3)}


class Child:
    """A subprocess stopped with SIGINT (a clean shutdown) when we are done."""

    def __init__(self, *args: str, ready_line: str | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
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
                stderr = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"{self.proc.args} exited: {stderr}")
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


class Floor:
    """The commander of the floor: publish once, count N acks."""

    def __init__(self, url: BrokerUrl, prefix: str, count: int) -> None:
        self.prefix, self.count = prefix, count
        self.acks = 0
        self.all_in = asyncio.Event()
        self.link = MqttLink(
            url,
            LinkOptions(
                f"{prefix}-floor-commander",
                persistent_session=False,
                subscriptions=((f"{prefix}/floor/ack/+", 1),),
            ),
        )

    def _on_ack(self, _message: Inbound) -> None:
        self.acks += 1
        if self.acks >= self.count:
            self.all_in.set()

    async def start(self) -> asyncio.Task[None]:
        task = asyncio.create_task(self.link.run(self._on_ack))
        await self.link.wait_up(30)
        return task

    async def round(self, _index: int) -> float:
        self.acks = 0
        self.all_in.clear()
        start = time.perf_counter()
        self.link.publish_soon(f"{self.prefix}/floor/cmd", b"record", qos=1)
        await asyncio.wait_for(self.all_in.wait(), 60)
        return (time.perf_counter() - start) * 1000


class Mesh:
    """Sends a trigger to the gateway and reads its own measurement from the final record."""

    def __init__(
        self, url: BrokerUrl, topics: Topics, count: int, signer: PayloadSigner | None = None
    ) -> None:
        self.topics, self.count, self.signer = topics, count, signer
        tag = uuid.uuid4().hex[:6]
        self.watcher = ActivationWatcher(
            url, topics, client_id=f"bench-watch-{tag}", unit_id=UNIT, final_only=True
        )
        self.sender = MqttLink(url, LinkOptions(f"bench-sender-{tag}", persistent_session=False))

    async def start(self) -> list[asyncio.Task[None]]:
        tasks = [
            asyncio.create_task(self.watcher.run()),
            asyncio.create_task(self.sender.run(lambda _m: None)),
        ]
        await self.watcher.link.wait_up(30)
        await self.sender.wait_up(30)
        return tasks

    async def round(self, index: int) -> float:
        event = manual_trigger(TriggerKind.MANUAL, UNIT, source_id=f"bench-{index}")
        # The in-car terminal signs with the gateway's key (a JWS of the trigger).
        message = encode(event) if self.signer is None else self.signer.seal(event).to_bytes()
        await self.sender.publish(self.topics.trigger(UNIT), message, qos=1)
        receipt = await self.watcher.receipt(event.event_id, 30)
        if receipt is None or receipt.activation_id is None:
            raise RuntimeError(f"round {index}: no receipt from the gateway")
        record = await self.watcher.final_record(receipt.activation_id, 60)
        if record is None:
            raise RuntimeError(f"round {index}: activation did not finish")
        if record.state is not ActivationState.CONFIRMED or record.all_acked_ms is None:
            raise RuntimeError(f"round {index}: {record.state}, {record.reason}")
        confirmed = sum(1 for c in record.cameras if c.status in ("started", "already_recording"))
        if confirmed != self.count:
            raise RuntimeError(f"round {index}: {confirmed} of {self.count} cameras confirmed")
        return record.all_acked_ms


def gateway_child(config: Path, *profiler: str) -> Child:
    """The gateway daemon as a child process: JSON logs, warnings only."""
    return Child(
        *profiler,
        "-m",
        "mesh",
        "gateway",
        "--log-format",
        "json",
        "--log-level",
        "warning",
        "--config",
        str(config),
    )


async def count_online(url: BrokerUrl, topics: Topics, expected: int, timeout_s: float) -> None:
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
    except TimeoutError:
        raise RuntimeError(f"{len(online)} of {expected} cameras online") from None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def gateway_config(directory: Path, broker: str, prefix: str, *, signed: bool = False) -> Path:
    config = directory / "gateway.yaml"
    security = (
        f"security: {{signing_key: keys/gw-{UNIT}.key, trust_store: trust.yaml}}\n"
        if signed
        else ""
    )
    config.write_text(
        security + f"unit: {UNIT}\n"
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


def signed_fleet(directory: Path, count: int, unit_prefix: str) -> list[str]:
    """Keys for the gateway and for every camera `trigger-mesh cameras` builds with the same
    arguments, and the trust store naming them; returns the cameras' extra options."""
    from mesh.protocol.models import GeoPoint
    from mesh.security.keys import load_public_key, new_gateway_key
    from mesh.security.trust import KeyRole, TrustStore, trusted_key
    from mesh.sim.camera_fleet import scatter

    keys = directory / "keys"
    specs = scatter(
        count, GeoPoint(lat=CENTER[0], lon=CENTER[1]), radius_m=SPREAD_M, unit_prefix=unit_prefix
    )
    names = [(KeyRole.GATEWAY, f"gw-{UNIT}")] + [(KeyRole.CAMERA, s.camera_id) for s in specs]
    entries = []
    for role, ident in names:
        files = new_gateway_key(keys, ident)
        entries.append(trusted_key(load_public_key(files.public), role, ident))
    TrustStore(entries).save(directory / "trust.yaml")
    return ["--keys-dir", str(keys), "--trust", str(directory / "trust.yaml")]


async def measure(
    url: BrokerUrl, workdir: Path, count: int, rounds: int, *, signed: bool = False
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:6]
    floor_prefix = f"bench-{run_id}"
    topics = Topics(f"bench-{run_id}/mesh/v2")
    gw_dir = workdir / f"gw-{count}"
    gw_dir.mkdir()
    camera_security = signed_fleet(gw_dir, count, f"u{run_id}") if signed else []
    profile = os.environ.get("BENCH_PROFILE_GATEWAY")  # a path: cProfile the gateway
    profiler = ["-m", "cProfile", "-o", f"{profile}.{count}"] if profile else []
    children = [
        Child(
            "bench/floor_fleet.py",
            "--broker",
            str(url),
            "--prefix",
            floor_prefix,
            "--count",
            str(count),
            ready_line="ready",
        ),
        gateway_child(gateway_config(gw_dir, str(url), topics.prefix, signed=signed), *profiler),
        Child(
            "-m",
            "mesh",
            "cameras",
            "--count",
            str(count),
            "--spread-m",
            str(SPREAD_M),
            "--unit-prefix",
            f"u{run_id}",
            "--broker",
            str(url),
            "--prefix",
            topics.prefix,
            *camera_security,
        ),
    ]
    signer = None
    if signed:
        from mesh.security.signing import PayloadSigner

        signer = PayloadSigner.from_file(gw_dir / "keys" / f"gw-{UNIT}.key")
    floor, mesh = Floor(url, floor_prefix, count), Mesh(url, topics, count, signer)
    tasks: list[asyncio.Task[None]] = []
    try:
        children[0].wait_ready(120)
        await count_online(url, topics, count, 120)
        await asyncio.sleep(2.5)  # the gateway has the retained presence and settles its heap
        tasks.append(await floor.start())
        tasks += await mesh.start()
        gateway = psutil.Process(children[1].proc.pid)
        rss_idle_mb = gateway.memory_info().rss / 2**20
        samples: dict[str, list[float]] = {"floor": [], "mesh": []}
        cpu_before = gateway.cpu_times()
        for index in range(rounds + WARMUP):
            for name, side in (("floor", floor), ("mesh", mesh)):
                elapsed = await side.round(index)
                if index >= WARMUP:
                    samples[name].append(elapsed)
                await asyncio.sleep(GAP_S)
        cpu_after = gateway.cpu_times()
        rss_mb = gateway.memory_info().rss / 2**20
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for child in reversed(children):
            child.stop()
    cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    f, m = summarise(samples["floor"]), summarise(samples["mesh"])
    return {
        "cameras": count,
        "rounds": rounds,
        "floor_p50_ms": f["p50"],
        "floor_p99_ms": f["p99"],
        "mesh_p50_ms": m["p50"],
        "mesh_p99_ms": m["p99"],
        "ratio": round(m["p99"] / f["p99"], 3),
        "ratio_p50": round(m["p50"] / f["p50"], 3),
        "gateway_cpu_ms_per_trigger": round(cpu_s * 1000 / (rounds + WARMUP), 3),
        "gateway_rss_idle_mb": round(rss_idle_mb, 1),
        "gateway_rss_mb": round(rss_mb, 1),
    }


async def run(counts: list[int], scale: float, *, signed: bool = False) -> dict[str, Any]:
    binary = find_mosquitto()
    if binary is None:
        raise SystemExit("mosquitto is not installed (apt-get install -y mosquitto)")
    workdir = Path(tempfile.mkdtemp(prefix="trigger-mesh-bench-"))
    broker = MosquittoProcess(binary, free_port(), workdir / "mosquitto")
    broker.start()
    try:
        results = [
            await measure(broker.url, workdir, n, rounds_for(n, scale), signed=signed)
            for n in counts
        ]
    finally:
        broker.stop()
    return {
        "bench": "latency",
        "signed": signed,
        "results": results,
        "gateway_rss_mb": max(r["gateway_rss_mb"] for r in results),
    }


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
            f"{r['ratio']:>9.3f} {r['ratio_p50']:>9.3f} "
            f"{r['gateway_cpu_ms_per_trigger']:>9.1f}ms "
            f"{r['gateway_rss_idle_mb']:>9.1f}/{r['gateway_rss_mb']:.1f}MB"
        )
    print(f"gateway RSS (max over runs): {report['gateway_rss_mb']} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="last line: the report as JSON")
    parser.add_argument("--counts", default="1,100,1000")
    parser.add_argument(
        "--rounds-scale",
        type=float,
        default=1.0,
        help="multiply the number of rounds (0.2 for a quick look)",
    )
    parser.add_argument("--signed", action="store_true", help="signed commands, acks, triggers")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:  # the fewest rounds rounds_for allows
        args.counts, args.rounds_scale = "1,10", 0.0
    logs.configure("console", "warning")
    counts = [int(c) for c in args.counts.split(",")]
    with suppress(KeyboardInterrupt):
        report = asyncio.run(run(counts, args.rounds_scale, signed=args.signed))
        print_table(report)
        if args.json:
            print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()

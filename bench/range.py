"""Range resolution and fan-out against the size of the fleet.

1. resolution: a PresenceRegistry of N = 1,000 / 10,000 / 100,000 cameras (units of a dash
   and two body cameras, cars uniform over a city-sized disc, fresh fixes, all online);
   ``resolve_targets`` timed for triggers from random cars, with the Scope and Settings
   built as ``plan_activation`` builds them for the shipped weapon_draw (150 m) and
   emergency_lights (300 m) rules; the whole ``plan_activation`` call is timed too. Floor:
   a linear haversine scan over all N cameras, the least an unindexed resolver must do.
2. publishes per trigger: ``command_topics`` of the planned command at N = 10 … 100,000,
   same origins; then a real gateway and N camera agents (N = 10, 1,000) on a private
   mosquitto: the command messages counted by a subscriber on ``{p}/cmd/#`` and the
   gateway's own ``publish.commands`` counter, read from its status.
3. trigger → all acks at 1,000 cameras against the bare-MQTT floor: bench/latency.py's
   ``measure`` on the same broker.

    python bench/range.py [--json] [--quick] [--rounds-scale 1.0] [--parts resolve,publish,latency]
        [--smoke]

With --json the last line is {"bench": "range", "resolve_p99_ms": {...},
"publishes_per_trigger": {...}, "fanout_1000_ratio": …, ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import math
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess, find_mosquitto, free_port
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.decide.fanout import command_topics
from mesh.decide.geo import haversine_m, offset
from mesh.decide.planning import plan_activation
from mesh.decide.policy import KindRules, Policy
from mesh.decide.presence import PresenceRegistry
from mesh.decide.stats import percentile
from mesh.decide.targeting import Scope, Settings, resolve_targets
from mesh.dispatch.watch import ActivationWatcher
from mesh.ops import logs
from mesh.ops.runtime import settle_heap, tune_gc
from mesh.protocol.codec import decode, encode
from mesh.protocol.models import (
    ActivationState,
    CameraPresence,
    CameraRole,
    GatewayStatus,
    GeoPoint,
    Position,
    RecordStart,
    Targets,
    TriggerKind,
)
from mesh.sim.camera_fleet import CameraSpec, scatter
from triggers.manual import manual_trigger

BENCH_DIR = Path(__file__).resolve().parent
CENTER = GeoPoint(lat=39.952583, lon=-75.165222)  # the `cameras` command's default
# A disc of 900 km², the area of a 30 km x 30 km city (fleet.scatter spreads over a disc).
SPREAD_M = 16_926.0
MAX_FIX_AGE_S = 30.0  # fixes up to one heartbeat old: all fresh (the policy allows 120 s)
SIZES = (1_000, 10_000, 100_000)
KINDS = (TriggerKind.WEAPON_DRAW, TriggerKind.EMERGENCY_LIGHTS)
TRIGGERS = 2_000  # per size and kind
PLANS = 500  # plan_activation calls per size and kind
WARMUP = 20
BRUTE = {1_000: 400, 10_000: 100, 100_000: 25}  # the scan at 100k is ~100 ms a go
PLANNED_SIZES = (10, 1_000, 10_000, 100_000)
ORIGINS = 400  # random trigger positions for the publish count
REAL_SIZES = (10, 1_000)
REAL_TRIGGERS = 40  # per real run, kinds alternating
LATENCY_COUNT = 1_000
SMOKE_HELP = "tiny sizes: proves the script runs (make bench-smoke), not its figures"


@dataclass(frozen=True)
class Sizes:
    """The fleet sizes of each part."""

    resolve: tuple[int, ...] = SIZES  # each a key of BRUTE
    planned: tuple[int, ...] = PLANNED_SIZES
    real: tuple[int, ...] = REAL_SIZES  # each one of ``planned`` too
    latency: int = LATENCY_COUNT


SMOKE_SIZES = Sizes(resolve=(1_000,), planned=(10, 1_000), real=(10,), latency=10)


def latency_module() -> ModuleType:
    """bench/latency.py, reused as it is (its Child, count_online and measure)."""
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module("latency")


def ms(samples_ns: list[int]) -> dict[str, float]:
    values = [s / 1e6 for s in samples_ns]
    return {"p50": round(percentile(values, 50), 4), "p99": round(percentile(values, 99), 4)}


def fleet(count: int, unit_prefix: str = "unit") -> list[CameraSpec]:
    return scatter(count, CENTER, radius_m=SPREAD_M, unit_prefix=unit_prefix)


def registry(specs: list[CameraSpec], now_ns: int, rng: random.Random) -> PresenceRegistry:
    """The gateway's index as the retained presence messages leave it."""
    index = PresenceRegistry()
    for spec in specs:
        fix_at = now_ns - int(rng.uniform(0, MAX_FIX_AGE_S) * 1e9)
        index.update(
            CameraPresence(
                camera_id=spec.camera_id,
                unit_id=spec.unit_id,
                role=spec.role,
                online=True,
                recording=False,
                position=Position(lat=spec.position.lat, lon=spec.position.lon, fix_at_ns=fix_at),
                last_seen_ns=fix_at,
            )
        )
    return index


def scope_for(rules: KindRules, unit: str, origin: GeoPoint) -> Scope:
    """As plan_activation builds it for a trigger of ``unit`` without a fix of its own."""
    return Scope(
        origin=origin,
        radius_m=rules.radius_m,
        targets=Targets(units=(unit,) if rules.include_own_unit else ()),
        roles=rules.roles,
        groups=rules.groups,
        wake=rules.wake_sleeping,
    )


def settings_for(policy: Policy, now_ns: int, unit: str, car: GeoPoint) -> Settings:
    return Settings(
        now_ns=now_ns,
        offline_grace_s=policy.offline_grace_s,
        max_fix_age_s=policy.max_fix_age_s,
        own_unit=unit,
        own_position=car,
    )


def brute_force(cameras: list[CameraPresence], origin: GeoPoint, radius_m: float) -> int:
    lat, lon = origin.lat, origin.lon
    inside = 0
    for cam in cameras:
        pos = cam.position
        if pos is not None and haversine_m(lat, lon, pos.lat, pos.lon) <= radius_m:
            inside += 1
    return inside


# --- 1. resolution ----------------------------------------------------------------------------
def resolution(size: int, scale: float, policy: Policy) -> list[dict[str, Any]]:
    rng = random.Random(size)
    specs = fleet(size)
    now = time.time_ns()
    index = registry(specs, now, rng)
    settle_heap()  # as the gateway does once its retained presence is in
    cars = [s for s in specs if s.role is CameraRole.DASH]
    snapshot = index.snapshot()
    results: list[dict[str, Any]] = []
    for kind in KINDS:
        rules = policy.rules(kind)
        triggers = max(50, int(TRIGGERS * scale))
        chosen = [rng.choice(cars) for _ in range(triggers)]
        calls = [
            (
                scope_for(rules, c.unit_id, c.position),
                settings_for(policy, now, c.unit_id, c.position),
            )
            for c in chosen
        ]
        # The call timed is the one plan_activation makes: same arguments, same result.
        event = manual_trigger(kind, chosen[0].unit_id, source_id="bench")
        plan = plan_activation(
            event,
            activation_id="bench-0",
            rules=rules,
            issuer="gw-bench",
            gateway_position=chosen[0].position,
            cameras=index,
            now_ns=now,
            offline_grace_s=policy.offline_grace_s,
            max_fix_age_s=policy.max_fix_age_s,
            own_unit=chosen[0].unit_id,
        )
        if plan.decisions != resolve_targets(index, *calls[0]):
            raise RuntimeError("resolve_targets here and in plan_activation disagree")
        for scope, settings in calls[:WARMUP]:
            resolve_targets(index, scope, settings)
        samples: list[int] = []
        read: list[int] = []
        expected: list[int] = []
        for scope, settings in calls:
            start = time.perf_counter_ns()
            decisions = resolve_targets(index, scope, settings)
            samples.append(time.perf_counter_ns() - start)
            read.append(len(decisions))
            expected.append(sum(1 for d in decisions if d.expected))
        plan_samples: list[int] = []
        for i, car in enumerate(chosen[: WARMUP + max(20, int(PLANS * scale))]):
            event = manual_trigger(kind, car.unit_id, source_id=f"bench-{i}")
            start = time.perf_counter_ns()
            plan_activation(
                event,
                activation_id=f"bench-{i}",
                rules=rules,
                issuer="gw-bench",
                gateway_position=car.position,
                cameras=index,
                now_ns=now,
                offline_grace_s=policy.offline_grace_s,
                max_fix_age_s=policy.max_fix_age_s,
                own_unit=car.unit_id,
            )
            if i >= WARMUP:
                plan_samples.append(time.perf_counter_ns() - start)
        brute: list[int] = []
        agrees = True
        for i, car in enumerate(chosen[: max(10, int(BRUTE[size] * scale))]):
            start = time.perf_counter_ns()
            in_range = brute_force(snapshot, car.position, rules.radius_m)
            brute.append(time.perf_counter_ns() - start)
            # Fresh fixes, all online: the expected cameras are exactly those in range.
            agrees = agrees and in_range == expected[i]
        r, p, b = ms(samples), ms(plan_samples), ms(brute)
        results.append(
            {
                "cameras": size,
                "kind": kind.value,
                "radius_m": rules.radius_m,
                "triggers": len(samples),
                "read_mean": round(sum(read) / len(read), 1),
                "read_p99": percentile(read, 99),
                "expected_mean": round(sum(expected) / len(expected), 1),
                "ns_per_read": round(sum(samples) / sum(read)),
                "resolve_p50_ms": r["p50"],
                "resolve_p99_ms": r["p99"],
                "plan_p50_ms": p["p50"],
                "plan_p99_ms": p["p99"],
                "brute_scans": len(brute),
                "brute_p50_ms": b["p50"],
                "brute_p99_ms": b["p99"],
                "brute_agrees": agrees,
            }
        )
    del index, snapshot
    return results


# --- 2. publishes per trigger -----------------------------------------------------------------
def random_origins(count: int) -> list[GeoPoint]:
    """Uniform over the fleet's disc: trigger positions independent of the fleet size."""
    rng = random.Random(7)
    points: list[GeoPoint] = []
    for _ in range(count):
        r = SPREAD_M * math.sqrt(rng.random())
        theta = rng.uniform(0, 2 * math.pi)
        lat, lon = offset(CENTER.lat, CENTER.lon, r * math.cos(theta), r * math.sin(theta))
        points.append(GeoPoint(lat=lat, lon=lon))
    return points


def kind_of(i: int) -> TriggerKind:
    return KINDS[i % len(KINDS)]


def planned_publishes(
    size: int, origins: list[GeoPoint], policy: Policy, topics: Topics
) -> dict[str, Any]:
    """The topics the coordinator would publish the broadcast to, for the gateway of the
    fleet's first unit (at its car) and triggers carrying their own fix at ``origins``."""
    specs = fleet(size)
    now = time.time_ns()
    index = registry(specs, now, random.Random(size))
    unit, car = specs[0].unit_id, specs[0].position
    counts: list[int] = []
    expected = 0
    for i, origin in enumerate(origins):
        kind = kind_of(i)
        event = manual_trigger(
            kind,
            unit,
            source_id=f"bench-{i}",
            position=Position(lat=origin.lat, lon=origin.lon, fix_at_ns=now),
        )
        plan = plan_activation(
            event,
            activation_id=f"bench-{i}",
            rules=policy.rules(kind),
            issuer=f"gw-{unit}",
            gateway_position=car,
            cameras=index,
            now_ns=now,
            offline_grace_s=policy.offline_grace_s,
            max_fix_age_s=policy.max_fix_age_s,
            own_unit=unit,
        )
        counts.append(len(command_topics(topics, plan.command)))
        expected += len(plan.expected)
    return {
        "cameras": size,
        "triggers": len(origins),
        "counts": counts,
        "mean": round(sum(counts) / len(counts), 3),
        "min": min(counts),
        "max": max(counts),
        "expected_mean": round(expected / len(origins), 2),
    }


class CommandCounter:
    """Every command message the broker delivers on {p}/cmd/#, by activation, and the
    gateway's latest status."""

    def __init__(self, url: BrokerUrl, topics: Topics, issuer: str) -> None:
        self.by_activation: Counter[str] = Counter()
        self.status: GatewayStatus | None = None
        self.status_seen = asyncio.Event()
        self.status_topic = topics.gateway(issuer)
        self.link = MqttLink(
            url,
            LinkOptions(
                f"bench-cmd-count-{uuid.uuid4().hex[:6]}",
                persistent_session=False,
                subscriptions=((f"{topics.prefix}/cmd/#", 1), (self.status_topic, 1)),
            ),
        )

    def _on_message(self, message: Inbound) -> None:
        if message.topic == self.status_topic:
            self.status = decode(GatewayStatus, message.payload)
            self.status_seen.set()
        else:
            self.by_activation[decode(RecordStart, message.payload).activation_id] += 1

    async def start(self) -> asyncio.Task[None]:
        task = asyncio.create_task(self.link.run(self._on_message))
        await self.link.wait_up(30)
        return task

    async def counter_after(self, wall_ns: int, timeout_s: float = 10.0) -> int:
        """The gateway's publish.commands from a status it sent after ``wall_ns``."""
        deadline = time.monotonic() + timeout_s
        while self.status is None or self.status.last_seen_ns <= wall_ns:
            if time.monotonic() > deadline:
                raise RuntimeError("no gateway status")
            self.status_seen.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.status_seen.wait(), 1.0)
        return self.status.counters.get("publish.commands", 0)


def real_gateway_config(
    directory: Path, broker: str, prefix: str, unit: str, car: GeoPoint
) -> Path:
    config = directory / "gateway.yaml"
    config.write_text(
        f"unit: {unit}\n"
        f"broker: {broker}\n"
        f"topic_prefix: {prefix}\n"
        f"log: {directory / 'bench.db'}\n"
        f"position: {{lat: {car.lat}, lon: {car.lon}}}\n"
        "status_interval_s: 0.5\n"  # the counter is read from the status
        "policy:\n"
        "  kinds:\n"
        # The shipped rules (radii, retries), without the cooldown that would merge the
        # back-to-back triggers of the benchmark into one activation.
        "    weapon_draw: {cooldown_s: 0}\n"
        "    emergency_lights: {cooldown_s: 0}\n"
    )
    return config


async def real_publishes(
    latency: ModuleType,
    url: BrokerUrl,
    workdir: Path,
    size: int,
    origins: list[GeoPoint],
    planned: list[int],
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:6]
    topics = Topics(f"bench-{run_id}/mesh/v2")
    unit_prefix = f"u{run_id}"
    specs = fleet(size, unit_prefix)
    unit, car = specs[0].unit_id, specs[0].position
    gw_dir = workdir / f"publish-gw-{size}"
    gw_dir.mkdir()
    children = [
        latency.gateway_child(real_gateway_config(gw_dir, str(url), topics.prefix, unit, car)),
        latency.Child(
            "-m",
            "mesh",
            "cameras",
            "--count",
            str(size),
            "--lat",
            str(CENTER.lat),
            "--lon",
            str(CENTER.lon),
            "--spread-m",
            str(SPREAD_M),
            "--unit-prefix",
            unit_prefix,
            "--broker",
            str(url),
            "--prefix",
            topics.prefix,
        ),
    ]
    tag = uuid.uuid4().hex[:6]
    watcher = ActivationWatcher(
        url, topics, client_id=f"bench-watch-{tag}", unit_id=unit, final_only=True
    )
    sender = MqttLink(url, LinkOptions(f"bench-sender-{tag}", persistent_session=False))
    counter = CommandCounter(url, topics, f"gw-{unit}")
    tasks: list[asyncio.Task[None]] = []
    per_trigger: list[dict[str, Any]] = []
    try:
        await latency.count_online(url, topics, size, 120)
        await asyncio.sleep(2.5)  # the gateway has the retained presence
        tasks += [
            asyncio.create_task(watcher.run()),
            asyncio.create_task(sender.run(lambda _m: None)),
            await counter.start(),
        ]
        await watcher.link.wait_up(30)
        await sender.wait_up(30)
        before = await counter.counter_after(time.time_ns())
        for i, origin in enumerate(origins):
            event = manual_trigger(
                kind_of(i),
                unit,
                source_id=f"bench-{i}",
                position=Position(lat=origin.lat, lon=origin.lon, fix_at_ns=time.time_ns()),
            )
            await sender.publish(topics.trigger(unit), encode(event), qos=1)
            receipt = await watcher.receipt(event.event_id, 30)
            if receipt is None or receipt.activation_id is None:
                raise RuntimeError(f"trigger {i}: not accepted ({receipt})")
            record = await watcher.final_record(receipt.activation_id, 60)
            if record is None:
                raise RuntimeError(f"trigger {i}: activation did not finish")
            per_trigger.append(
                {
                    "activation": receipt.activation_id,
                    "state": record.state.value,
                    "expected": sum(1 for c in record.cameras if c.expected),
                }
            )
        finished = time.time_ns()
        await asyncio.sleep(0.5)  # the last command messages reach the counting subscriber
        after = await counter.counter_after(finished)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for child in reversed(children):
            child.stop()
    seen = [counter.by_activation[t["activation"]] for t in per_trigger]
    confirmed = sum(1 for t in per_trigger if t["state"] == ActivationState.CONFIRMED.value)
    return {
        "cameras": size,
        "triggers": len(per_trigger),
        "confirmed": confirmed,
        "expected_mean": round(sum(t["expected"] for t in per_trigger) / len(per_trigger), 2),
        "messages_seen": sum(seen),
        "counter_delta": after - before,
        "publishes_per_trigger": round((after - before) / len(per_trigger), 3),
        "min": min(seen),
        "max": max(seen),
        "matches_plan": seen == planned,
    }


# --- the run --------------------------------------------------------------------------------
async def mqtt_parts(
    parts: set[str],
    scale: float,
    sizes: Sizes,
    origins: list[GeoPoint],
    planned: dict[int, Any],
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    latency = latency_module()
    binary = find_mosquitto()
    if binary is None:
        raise SystemExit("mosquitto is not installed (apt-get install -y mosquitto)")
    workdir = Path(tempfile.mkdtemp(prefix="trigger-mesh-bench-range-"))
    broker = MosquittoProcess(binary, free_port(), workdir / "mosquitto")
    broker.start()
    real: list[dict[str, Any]] = []
    fanout: dict[str, Any] | None = None
    try:
        if "publish" in parts:
            count = max(4, int(REAL_TRIGGERS * scale))
            for size in sizes.real:
                real.append(
                    await real_publishes(
                        latency,
                        broker.url,
                        workdir,
                        size,
                        origins[:count],
                        planned[size]["counts"][:count],
                    )
                )
        if "latency" in parts:
            rounds = latency.rounds_for(sizes.latency, scale)
            fanout = await latency.measure(broker.url, workdir, sizes.latency, rounds)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return real, fanout


def run(parts: set[str], scale: float, sizes: Sizes) -> dict[str, Any]:
    tune_gc()  # the gateway's collector settings
    policy = Policy()
    report: dict[str, Any] = {"bench": "range"}
    resolved: list[dict[str, Any]] = []
    if "resolve" in parts:
        for size in sizes.resolve:
            resolved += resolution(size, scale, policy)
            gc.collect()
    origins = random_origins(max(40, int(ORIGINS * scale)))
    planned = {n: planned_publishes(n, origins, policy, Topics()) for n in sizes.planned}
    gc.collect()
    real, fanout = (
        asyncio.run(mqtt_parts(parts, scale, sizes, origins, planned))
        if parts & {"publish", "latency"}
        else ([], None)
    )
    # The headline: the worse of the two radii at each size.
    for key in ("resolve_p99_ms", "resolve_p50_ms", "brute_p99_ms"):
        report[key] = (
            {str(n): max(r[key] for r in resolved if r["cameras"] == n) for n in sizes.resolve}
            if resolved
            else {}
        )
    report["publishes_per_trigger"] = {str(r["cameras"]): r["publishes_per_trigger"] for r in real}
    report["publishes_source"] = "real gateway counter" if real else "planned"
    if not real:
        report["publishes_per_trigger"] = {str(n): planned[n]["mean"] for n in sizes.real}
    report["publishes_planned"] = {
        str(n): {k: v for k, v in p.items() if k != "counts"} for n, p in planned.items()
    }
    report["fanout_1000_ratio"] = fanout["ratio"] if fanout else None
    report["resolution"] = resolved
    report["publishes_real"] = real
    report["fanout_1000"] = fanout
    return report


def print_report(report: dict[str, Any]) -> None:
    if report["resolution"]:
        print("Range resolution (resolve_targets; plan = the whole plan_activation call)")
        print(
            f"{'cameras':>8} {'kind':>16} {'radius':>6} {'read':>6} {'read p99':>8} "
            f"{'expected':>8} {'resolve p50':>11} {'resolve p99':>11} {'plan p50':>9} "
            f"{'plan p99':>9} {'scan p50':>9} {'scan p99':>9} {'scans':>5} {'agree':>5}"
        )
        for r in report["resolution"]:
            print(
                f"{r['cameras']:>8} {r['kind']:>16} {r['radius_m']:>5.0f}m "
                f"{r['read_mean']:>6.1f} {r['read_p99']:>8} {r['expected_mean']:>8.1f} "
                f"{r['resolve_p50_ms']:>9.3f}ms {r['resolve_p99_ms']:>9.3f}ms "
                f"{r['plan_p50_ms']:>7.3f}ms {r['plan_p99_ms']:>7.3f}ms "
                f"{r['brute_p50_ms']:>7.2f}ms {r['brute_p99_ms']:>7.2f}ms "
                f"{r['brute_scans']:>5} {'yes' if r['brute_agrees'] else 'NO':>5}"
            )
        print()
    print("Publishes per trigger, planned (command_topics of plan_activation's command)")
    print(f"{'cameras':>8} {'triggers':>8} {'mean':>6} {'min':>4} {'max':>4} {'expected':>8}")
    for n, p in report["publishes_planned"].items():
        print(
            f"{n:>8} {p['triggers']:>8} {p['mean']:>6.2f} {p['min']:>4} {p['max']:>4} "
            f"{p['expected_mean']:>8.2f}"
        )
    if report["publishes_real"]:
        print()
        print("Publishes per trigger, real gateway + camera agents on mosquitto")
        print(
            f"{'cameras':>8} {'triggers':>8} {'confirmed':>9} {'counter':>7} {'per trig':>8} "
            f"{'seen':>5} {'min':>4} {'max':>4} {'= plan':>6} {'expected':>8}"
        )
        for r in report["publishes_real"]:
            print(
                f"{r['cameras']:>8} {r['triggers']:>8} {r['confirmed']:>9} "
                f"{r['counter_delta']:>7} {r['publishes_per_trigger']:>8.2f} "
                f"{r['messages_seen']:>5} {r['min']:>4} {r['max']:>4} "
                f"{'yes' if r['matches_plan'] else 'NO':>6} {r['expected_mean']:>8.2f}"
            )
    f = report["fanout_1000"]
    if f:
        print()
        print(f"Trigger -> all acks at {f['cameras']:,} cameras (bench/latency.py measure)")
        print(
            f"rounds {f['rounds']}: floor p50 {f['floor_p50_ms']:.1f} ms, p99 "
            f"{f['floor_p99_ms']:.1f} ms; mesh p50 {f['mesh_p50_ms']:.1f} ms, p99 "
            f"{f['mesh_p99_ms']:.1f} ms; ratio p99 {f['ratio']:.3f}, p50 {f['ratio_p50']:.3f}"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="last line: the report as JSON")
    parser.add_argument("--quick", action="store_true", help="same as --rounds-scale 0.2")
    parser.add_argument(
        "--rounds-scale", type=float, default=1.0, help="multiply triggers, scans and rounds"
    )
    parser.add_argument(
        "--parts", default="resolve,publish,latency", help="any of resolve,publish,latency"
    )
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    unknown = parts - {"resolve", "publish", "latency"}
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    logs.configure("console", "warning")
    scale = 0.2 if args.quick else args.rounds_scale
    sizes = Sizes()
    if args.smoke:
        scale, sizes = 0.02, SMOKE_SIZES
    with suppress(KeyboardInterrupt):
        report = run(parts, scale, sizes)
        print_report(report)
        if args.json:
            print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()

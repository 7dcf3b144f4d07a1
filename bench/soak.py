"""Soak: a steady trigger rate for minutes on end — nothing lost, latency and memory flat.

    python bench/soak.py [--minutes 10] [--rate 50] [--json] [--smoke]

What runs (every part a real process on a private mosquitto, logs in a temp dir):

- **Cameras**: 500 simulated cameras (`CameraAgent`, one MQTT client each, built by
  `mesh.sim.camera_fleet` as `trigger-mesh cameras` builds them) in `--fleet-processes` processes
  (`bench/soak_fleet.py`, default 2). G *scenes* of K cameras (default 5 x 15: five units
  of a dash and two body cameras within ~125 m of each other) stand at the centres of
  geohash-6 cells 2.5 km apart; the other 425 are background units over a 6 km disc around
  the city centre: online, heartbeating, tracked by every gateway, rarely in a commanded
  cell. An activation therefore targets the K cameras of one scene, not the fleet: a car's
  gateway broadcasting to all 500 at 50 triggers/s would be 25,000 acks/s, a load no car
  ever sees (a command goes to the cells around the trigger and the unit;
  docs/architecture.md). 50/s x 15 cameras is 750 commands and 750 acks a second. A
  simulated recording lasts 5 minutes, so after its first start a scene camera answers
  `already_recording`, as a real one would.
- **Gateways**: G real `trigger-mesh gateway` daemons, the gateway of the first unit of
  each scene, at its dash camera, with the shipped policy (configs/policy.yaml). Their
  RSS and CPU are read with psutil, apart from the cameras' and mosquitto's.
- **Load**: this process publishes `rate` manual triggers a second in total (QoS 1, as
  `trigger-mesh trigger` does), paced on the monotonic clock (trigger n at t0 + n/rate, not
  after the previous one), round robin over the gateways, kinds cycling over weapon_draw,
  taser_arm, emergency_lights and manual. Each trigger has its own source id, so cooldown
  never merges two (a merge would be counted, not hidden: a suppressed receipt).
- **Measure**: a subscriber here hears receipts, final activation records and the
  gateways' retained status (every 5 s). Latency = trigger published → its final record
  received (both on this process's monotonic clock); the record's `all_acked_ms` (the
  gateway's own trigger-accepted → last-ack time) is shown beside it. A trigger is
  **lost** unless it ends in a `confirmed` record in which every expected camera started
  (or was already recording), or is merged into such an activation. Cross-checks: the
  cameras' own counters (printed by each fleet as it stops) must show at least as many
  acks as the records report started cameras; the gateways' `activations.*` and `acks.*`
  counters are reported beside the records heard; with `--ack-check` this process also
  hears every ack and checks each record's started cameras against them (750 messages/s
  more for this process at 50/s, so off by default).
- **Windows**: after `--warmup-s` (default 30 s, load running, not in the figures) the
  measured time is cut into minutes (into two halves when it is shorter than 2 minutes, so
  `--minutes 0.5` still compares a first and a last window). Triggers are counted in the
  window they were sent in; RSS is the mean of the samples (every 2 s) in the window.
  The headline `rss_growth_pct` is the gateways' summed RSS, last window vs first window
  after warm-up; cameras and mosquitto are reported the same way beside it.
- **Floor**, same broker, same run, before the gateways start: a bare MQTT QoS 1 round
  trip at the same rate and fan-in — one publish to a group of K bare clients
  (`bench/soak_floor.py`, same client code), each echoing a QoS 1 ack, timed from the
  publish to the K-th ack — for `--floor-s` (default 30 s).

Beside this file: `soak_fleet.py` (the city and the camera processes), `soak_floor.py`
(the floor's clients), `soak_collect.py` (what is heard and sampled), `soak_report.py`
(windows, cross-checks, table, JSON). With --keep the temp dir stays, with every process's
output and `triggers.csv` (one line per trigger: sent at, outcome, latency).

With --json the last line is
{"bench": "soak", "lost": …, "p99_first_minute_ms": …, "p99_last_minute_ms": …,
 "rss_growth_pct": …, …the rest of the figures}.
Exit status 1 if a trigger was lost, a process died or the cameras' counts disagree.
``SOAK_PROFILE_GATEWAY=/tmp/prof`` runs each gateway under cProfile (/tmp/prof.<i>).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

# bench/ is on the path when this runs as a script
from latency import count_online
from soak_collect import Collector, Sample, Sent, sample
from soak_fleet import Scene, city
from soak_report import SAMPLE_S, Options, print_table, report

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess, find_mosquitto, free_port
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.ops import logs
from mesh.protocol.codec import encode
from mesh.protocol.models import TriggerKind
from triggers.manual import manual_trigger

ROOT = Path(__file__).resolve().parent.parent
KINDS = (
    TriggerKind.WEAPON_DRAW,
    TriggerKind.TASER_ARM,
    TriggerKind.EMERGENCY_LIGHTS,
    TriggerKind.MANUAL,
)
SMOKE_HELP = "tiny sizes: proves the script runs (make bench-smoke), not its figures"


# --- child processes ----------------------------------------------------------------------
class Child:
    """A subprocess whose output goes to files (a pipe nobody reads would block it once
    full, minutes into a soak); stopped with SIGINT, a clean shutdown."""

    def __init__(self, name: str, args: list[str], logdir: Path) -> None:
        self.name = name
        self.stdout_path = logdir / f"{name}.out"
        self.stderr_path = logdir / f"{name}.err"
        self._files: list[IO[bytes]] = [self.stdout_path.open("wb"), self.stderr_path.open("wb")]
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.DEVNULL,
            stdout=self._files[0],
            stderr=self._files[1],
            cwd=ROOT,
        )

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.stderr_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {tail}")

    async def wait_line(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.stdout_path.read_text(errors="replace").splitlines():
                return
            self.check()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready within {timeout_s} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in self._files:
            f.close()

    def final_json(self) -> dict[str, Any]:
        """The JSON line a fleet prints when it stops (its counters); {} if none."""
        for line in reversed(self.stdout_path.read_text(errors="replace").splitlines()):
            if line.startswith("{"):
                return dict(json.loads(line))
        return {}

    def warnings(self) -> int:
        """Lines the daemon logged at warning level or above (its stderr, JSON lines)."""
        text = self.stderr_path.read_text(errors="replace")
        return sum(1 for line in text.splitlines() if line.strip())


def fleet_child(url: BrokerUrl, prefix: str, logdir: Path, opts: Options, part: int) -> Child:
    return Child(
        f"cameras-{part}",
        ["bench/soak_fleet.py", "--broker", str(url), "--prefix", prefix,
         "--cameras", str(opts.cameras), "--scenes", str(opts.gateways),
         "--scene-size", str(opts.scene_cameras), "--part", str(part),
         "--parts", str(opts.fleet_processes), "--stagger-s", str(opts.stagger_s)],
        logdir,
    )  # fmt: skip


def gateway_child(scene: Scene, url: BrokerUrl, prefix: str, workdir: Path) -> Child:
    directory = workdir / f"gw-{scene.index}"
    directory.mkdir()
    config = directory / "gateway.yaml"
    pos = scene.gateway_position
    config.write_text(
        f"unit: {scene.gateway_unit}\n"
        f"broker: {url}\n"
        f"topic_prefix: {prefix}\n"
        f"log: {directory / 'activations.db'}\n"
        f"position: {{lat: {pos.lat!r}, lon: {pos.lon!r}}}\n"
        "status_interval_s: 5\n"
        f"policy: {ROOT / 'configs' / 'policy.yaml'}\n"
    )
    profile = os.environ.get("SOAK_PROFILE_GATEWAY")  # a path prefix: cProfile each gateway
    profiler = ["-m", "cProfile", "-o", f"{profile}.{scene.index}"] if profile else []
    return Child(
        f"gateway-{scene.index}",
        [*profiler, "-m", "mesh", "gateway", "--log-format", "json", "--log-level", "warning",
         "--config", str(config)],
        workdir,
    )  # fmt: skip


# --- the floor ----------------------------------------------------------------------------
async def measure_floor(
    url: BrokerUrl, prefix: str, groups: int, size: int, rate: float, seconds: float
) -> list[float]:
    """Publish ``rate`` rounds a second round robin over the groups; each round's time from
    its publish to the ``size``-th echo. Rounds still open at the end count as lost."""
    acks: Counter[int] = Counter()
    started: dict[int, float] = {}
    samples: list[float] = []

    def on_ack(message: Inbound) -> None:
        n = int(message.payload)
        acks[n] += 1
        if acks[n] == size and n in started:
            samples.append((time.monotonic() - started.pop(n)) * 1000)
            del acks[n]

    link = MqttLink(
        url,
        LinkOptions(
            f"{prefix}-floor-commander",
            persistent_session=False,
            subscriptions=((f"{prefix}/floor/ack/+/+", 1),),
        ),
    )
    task = asyncio.create_task(link.run(on_ack))
    try:
        await link.wait_up(30)
        total = max(1, int(rate * seconds))
        t0 = time.monotonic()
        for n in range(total):
            await asyncio.sleep(max(0.0, t0 + n / rate - time.monotonic()))
            started[n] = time.monotonic()
            link.publish_soon(f"{prefix}/floor/cmd/{n % groups}", str(n).encode(), qos=1)
        deadline = time.monotonic() + 10
        while started and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if started:
            raise RuntimeError(f"floor: {len(started)} of {total} rounds never completed")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return samples


# --- the run ------------------------------------------------------------------------------
async def run(opts: Options, workdir: Path) -> dict[str, Any]:
    binary = find_mosquitto()
    if binary is None:
        raise SystemExit("mosquitto is not installed (apt-get install -y mosquitto)")
    try:
        scenes, _ = city(opts.cameras, opts.gateways, opts.scene_cameras)
    except ValueError as exc:
        raise SystemExit(f"--cameras/--gateways/--scene-cameras: {exc}") from None
    run_id = uuid.uuid4().hex[:6]
    topics = Topics(f"soak-{run_id}/mesh/v2")
    logdir = workdir / "logs"
    logdir.mkdir()
    broker = MosquittoProcess(binary, free_port(), workdir / "mosquitto")
    broker.start()
    assert broker.process is not None
    url = broker.url
    cameras: list[Child] = []
    gateways: list[Child] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        cameras += [
            fleet_child(url, topics.prefix, logdir, opts, part)
            for part in range(opts.fleet_processes)
        ]
        print(f"# {opts.cameras} cameras coming online ...", file=sys.stderr, flush=True)
        for child in cameras:
            await child.wait_line("ready", 180)
        await count_online(url, topics, opts.cameras, 60)

        floor: list[float] = []
        if opts.floor_s > 0:
            print(f"# floor: {opts.floor_s:.0f} s of bare QoS 1 rounds", file=sys.stderr)
            fleet = Child(
                "floor-fleet",
                ["bench/soak_floor.py", "--broker", str(url), "--prefix", f"floor-{run_id}",
                 "--groups", str(opts.gateways), "--size", str(opts.scene_cameras)],
                logdir,
            )  # fmt: skip
            try:
                await fleet.wait_line("ready", 120)
                floor = await measure_floor(
                    url, f"floor-{run_id}", opts.gateways, opts.scene_cameras, opts.rate,
                    opts.floor_s,
                )  # fmt: skip
            finally:
                fleet.stop()

        gateways = [gateway_child(s, url, topics.prefix, logdir) for s in scenes]
        collector = Collector(topics, opts.ack_check)
        listener = MqttLink(
            url,
            LinkOptions(
                f"soak-listen-{run_id}",
                persistent_session=False,
                subscriptions=(
                    (topics.all_activations(), 1),
                    (topics.all_receipts(), 1),
                    (topics.all_gateways(), 1),
                    # Every ack too, with --ack-check (750 messages/s at 50 triggers/s).
                    *(((f"{topics.prefix}/ack/+/+", 1),) if opts.ack_check else ()),
                ),
            ),
        )
        sender = MqttLink(url, LinkOptions(f"soak-send-{run_id}", persistent_session=False))
        tasks += [
            asyncio.create_task(listener.run(collector.on_message)),
            asyncio.create_task(sender.run(lambda _m: None)),
        ]
        await listener.wait_up(30)
        await sender.wait_up(30)
        gateway_ids = {f"gw-{s.gateway_unit}" for s in scenes}
        deadline = time.monotonic() + 60
        while not all(g in collector.status and collector.status[g].online for g in gateway_ids):
            for child in gateways:
                child.check()
            if time.monotonic() > deadline:
                raise RuntimeError("gateways not online within 60 s")
            await asyncio.sleep(0.1)
        await asyncio.sleep(3)  # the gateways have the retained presence and settle

        groups = {
            "gateways": [(c.name, c.proc.pid) for c in gateways],
            "cameras": [(c.name, c.proc.pid) for c in cameras],
            "mosquitto": [("mosquitto", broker.process.pid)],
            "soak": [("soak", os.getpid())],  # this process: load generator and listener
        }
        samples: list[Sample] = []
        measured_s = opts.minutes * 60
        total = int(opts.rate * (opts.warmup_s + measured_s))
        print(
            f"# load: {opts.rate:g} triggers/s for {opts.warmup_s:.0f} s warm-up + "
            f"{measured_s:.0f} s ({total} triggers)",
            file=sys.stderr,
            flush=True,
        )

        async def sampler() -> None:
            shown = time.monotonic()
            while True:
                samples.append(sample(groups))
                for child in (*gateways, *cameras):
                    child.check()
                if samples[-1].at - shown >= 30:  # progress, for a long run
                    shown = samples[-1].at
                    print(
                        f"# {shown - t0:.0f} s: {len(collector.sent)} sent, "
                        f"{len(collector.finals)} final records, gateways "
                        f"{samples[-1].rss_mb['gateways']:.1f} MB",
                        file=sys.stderr,
                        flush=True,
                    )
                await asyncio.sleep(SAMPLE_S)

        publishes: set[asyncio.Task[None]] = set()
        publish_failures: list[str] = []

        async def publish(event_id: str, topic: str, payload: bytes) -> None:
            try:
                await sender.publish(topic, payload, qos=1)
            except Exception as exc:
                publish_failures.append(f"{event_id}: {exc}")

        sampling = asyncio.create_task(sampler())
        tasks.append(sampling)
        t0 = time.monotonic()
        for n in range(total):
            await asyncio.sleep(max(0.0, t0 + n / opts.rate - time.monotonic()))
            if sampling.done():
                sampling.result()  # a process died: raise its error now
            scene = scenes[n % len(scenes)]
            event = manual_trigger(
                KINDS[(n // len(scenes)) % len(KINDS)],
                scene.gateway_unit,
                source_id=f"soak-{run_id}-{n}",
            )
            collector.sent[event.event_id] = Sent(n, scene.index, event.kind, time.monotonic())
            task = asyncio.create_task(
                publish(event.event_id, topics.trigger(scene.gateway_unit), encode(event))
            )
            publishes.add(task)
            task.add_done_callback(publishes.discard)
        send_end = time.monotonic()
        print("# draining ...", file=sys.stderr, flush=True)
        drain_deadline = send_end + opts.drain_s
        while time.monotonic() < drain_deadline and any(
            collector.outcome(e) == "pending" for e in collector.sent
        ):
            await asyncio.sleep(0.25)
        await asyncio.sleep(SAMPLE_S + 5.5)  # a status round after the last activation
        samples.append(sample(groups))
        sampling.cancel()
        dead = [f"{c.name} exited {c.proc.returncode}" for c in (*gateways, *cameras)
                if c.proc.poll() is not None]  # fmt: skip
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for child in reversed([*cameras, *gateways]):
            child.stop()
        broker.stop()
    camera_counters: Counter[str] = Counter()
    camera_gc: dict[str, Any] = {}
    for child in cameras:
        final = child.final_json()
        camera_counters.update(final.get("counters", {}))
        if "gc" in final:  # pauses on the shared monotonic clock, made relative to t0
            gc_info = final["gc"]
            gc_info["over_50ms"] = [[round(t - t0, 1), g, ms] for t, g, ms in gc_info["over_50ms"]]
            camera_gc[child.name] = gc_info
    return report(
        opts, collector, samples, floor, t0=t0, send_end=send_end, cameras=camera_counters,
        camera_gc=camera_gc,
        warnings={c.name: c.warnings() for c in gateways}, dead=dead,
        publish_failures=publish_failures, logdir=logdir,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="measured time (fractions ok)")
    parser.add_argument("--rate", type=float, default=50.0, help="triggers per second, in all")
    parser.add_argument("--cameras", type=int, default=500)
    parser.add_argument("--gateways", type=int, default=5, help="gateways, one scene each")
    parser.add_argument("--scene-cameras", type=int, default=15, help="cameras per scene")
    parser.add_argument("--fleet-processes", type=int, default=2, help="camera processes")
    parser.add_argument(
        "--stagger-s",
        type=float,
        default=30.0,
        help="cameras power on over this time (their 30 s heartbeats spread out)",
    )
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--floor-s", type=float, default=30.0, help="0: no floor")
    parser.add_argument("--drain-s", type=float, default=60.0, help="wait for the last outcomes")
    parser.add_argument(
        "--ack-check", action="store_true", help="hear every ack: each record checked against them"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    parser.add_argument("--json", action="store_true", help="last line: the report as JSON")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:  # both fleet processes and both windows still exercised
        args.minutes, args.rate, args.cameras, args.gateways = 0.1, 5.0, 20, 2
        args.scene_cameras, args.stagger_s = 3, 0.0
        args.warmup_s, args.floor_s, args.drain_s = 1.0, 2.0, 10.0
    if args.minutes <= 0 or args.rate <= 0 or args.gateways < 1 or args.scene_cameras < 1:
        parser.error("--minutes and --rate must be > 0, --gateways and --scene-cameras >= 1")
    opts = Options(
        minutes=args.minutes, rate=args.rate, cameras=args.cameras, gateways=args.gateways,
        scene_cameras=args.scene_cameras, warmup_s=args.warmup_s, floor_s=args.floor_s,
        drain_s=args.drain_s, ack_check=args.ack_check, stagger_s=args.stagger_s,
        fleet_processes=args.fleet_processes,
    )  # fmt: skip
    logs.configure("console", "warning")
    workdir = Path(tempfile.mkdtemp(prefix="trigger-mesh-soak-"))
    try:
        with suppress(KeyboardInterrupt):
            result = asyncio.run(run(opts, workdir))
            print_table(result)
            if args.json:
                print(json.dumps(result, separators=(",", ":")))
            if result["lost"] or result["dead_processes"] or not result["cameras_agree"]:
                raise SystemExit(1)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"# kept {workdir}", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

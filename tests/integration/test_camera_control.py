"""The camera agent's local API (mesh/camera/control.py) on a real Unix socket: its mode, a
stale socket replaced, what is not a socket refused, and clear errors for bad requests
(too large, not JSON, not an object, an unknown op, a note too long, none at all)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mesh.camera import control
from mesh.camera.recording.base import Recording, StopReason
from mesh.protocol.models import MAX_STOP_NOTE

T0 = 1_790_000_000_000_000_000


class Camera:
    """What the API drives: a stop that records its reason and note."""

    def __init__(self) -> None:
        self.stops: list[tuple[StopReason, str]] = []
        self.recording = True

    async def stop(self, reason: StopReason, note: str) -> Recording | None:
        self.stops.append((reason, note))
        if not self.recording:
            return None
        self.recording = False
        return Recording(
            recording_id="r-1",
            camera_id="bwc-1",
            activations=["a-1"],
            command_at_ns=T0,
            started_at_ns=T0,
            first_frame_ns=T0,
            pre_event_kept_s=0.0,
            stopped_at_ns=T0 + 1,
            stop_reason=reason,
            stop_note=note,
        )

    def status(self) -> dict[str, Any]:
        return {"recording": self.recording}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Path, Camera]]:
    path = tmp_path / "cam.sock"
    camera = Camera()
    serving = asyncio.create_task(control.serve(path, camera.stop, camera.status))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not path.exists():
        assert loop.time() < deadline, "the socket never appeared"
        await asyncio.sleep(0.01)
    yield path, camera
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    assert not path.exists()  # removed on the way out


async def raw(path: Path, data: bytes) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    decoded = json.loads(answer)
    assert isinstance(decoded, dict)
    return decoded


async def test_the_socket_is_private_and_a_stop_says_what_it_stopped(
    api: tuple[Path, Camera],
) -> None:
    path, camera = api
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    answer = await control.request(path, {"op": "stop", "note": "  done here  "})
    assert answer == {
        "ok": True,
        "stopped": True,
        "recording_id": "r-1",
        "activation_ids": ["a-1"],
        "started_at_ns": str(T0),
        "stopped_at_ns": str(T0 + 1),
    }
    assert camera.stops == [(StopReason.OFFICER, "done here")]
    # The API accepts an empty note (the audit flags it); nothing runs now.
    assert await control.request(path, {"op": "stop"}) == {
        "ok": True,
        "stopped": False,
        "detail": "not recording",
    }
    assert camera.stops[-1] == (StopReason.OFFICER, "")
    assert await control.request(path, {"op": "status"}) == {"ok": True, "recording": False}


@pytest.mark.parametrize(
    ("request_bytes", "error"),
    [
        (b"x" * (control.MAX_REQUEST_BYTES + 10) + b"\n", "larger than 4096 bytes"),
        (b"{not json}\n", "not JSON"),
        (b"[1, 2]\n", "must be a JSON object"),
        (b'{"op": "format_disk"}\n', "unknown op 'format_disk'"),
        (b'{"op": "stop", "note": 5}\n', "note must be a string"),
        (
            json.dumps({"op": "stop", "note": "x" * (MAX_STOP_NOTE + 1)}).encode() + b"\n",
            f"note longer than {MAX_STOP_NOTE} characters",
        ),
        (b"", "not JSON"),  # connected, said nothing, closed
    ],
)
async def test_a_bad_request_gets_a_clear_error_and_stops_nothing(
    api: tuple[Path, Camera], request_bytes: bytes, error: str
) -> None:
    path, camera = api
    answer = await raw(path, request_bytes)
    assert answer["ok"] is False
    assert error in answer["error"]
    assert camera.stops == []


def test_a_stale_socket_is_replaced_anything_else_refused(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old.bind(str(stale))
    old.close()  # what a killed agent leaves behind
    sock = control.bind_socket(stale)
    sock.close()
    assert stat.S_IMODE(stale.stat().st_mode) == 0o600
    regular = tmp_path / "notes.txt"
    regular.write_text("keep me")
    with pytest.raises(control.ControlError, match="exists and is not a socket"):
        control.bind_socket(regular)
    assert regular.read_text() == "keep me"
    with pytest.raises(control.ControlError, match="control socket"):
        control.bind_socket(tmp_path / "missing" / "cam.sock")


async def test_another_user_is_refused_even_if_the_mode_is_loosened(
    api: tuple[Path, Camera],
) -> None:
    """The socket's mode keeps other users out; should an admin loosen it, the kernel's
    word on who connected (SO_PEERCRED) still refuses them: nothing is stopped."""
    path, camera = api
    path.chmod(0o666)
    for folder in path.parents:  # the test's own folders, so that another user reaches it
        if folder == Path(tempfile.gettempdir()):
            break
        folder.chmod(0o711)
    request = json.dumps({"op": "stop", "note": "not mine to stop"})
    client = (
        "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
        "s.sendall(sys.argv[2].encode() + b'\\n'); s.shutdown(socket.SHUT_WR); "
        "print(s.makefile().read())"
    )

    def as_nobody() -> None:
        os.setgid(65534)
        os.setuid(65534)

    done = await asyncio.to_thread(
        subprocess.run,
        ["/usr/bin/python3", "-c", client, str(path), request],  # the venv may be private
        capture_output=True, text=True, timeout=30, check=False, preexec_fn=as_nobody,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["ok"] is False
    assert "65534 may not use this camera" in answer["error"]
    assert camera.stops == []

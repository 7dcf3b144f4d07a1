"""The camera agent's local API: a Unix-domain socket on the camera itself (docs/cli.md,
`recording stop`), for what an officer does on the device: stop the recording, saying why.

One request per connection: a JSON object of at most ``MAX_REQUEST_BYTES``, ended by a
newline or by the client closing its side; one JSON answer, newline-terminated; then the
connection closes. The socket file is created mode 0600 (only the camera's user may
connect: the socket is the credential), replacing a stale socket left by an earlier run.

Requests:
- ``{"op": "stop", "note": "why"}``: stop the running recording with reason ``officer``
  and this note (at most 1,024 characters; an empty note is accepted and logged, and
  ``audit report`` flags the stop). Answer: ``{"ok": true, "stopped": true,
  "recording_id": …, "activation_ids": […], "started_at_ns": "…", "stopped_at_ns": "…"}``,
  or ``{"ok": true, "stopped": false, "detail": "not recording"}``.
- ``{"op": "status"}``: ``{"ok": true, "recording": bool, "recording_id": … | null,
  "recorder_fault": {code, reason} | null}``.

A bad request gets ``{"ok": false, "error": "…"}`` naming what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from mesh.camera.recording.base import Recording, StopReason
from mesh.protocol.models import MAX_STOP_NOTE

MAX_REQUEST_BYTES = 4096
# A client has this long to send its request.
REQUEST_TIMEOUT_S = 5.0
# Connections handled at once, at most; more wait in the listen backlog.
MAX_CLIENTS = 4

Stopper = Callable[[StopReason, str], Awaitable[Recording | None]]
Status = Callable[[], dict[str, Any]]


class ControlError(Exception):
    """The socket cannot be made (a path that is not a socket, a folder missing)."""


def bind_socket(path: Path) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600 from its creation on (a stale socket
    there is replaced; anything else is an error)."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    else:
        if not stat.S_ISSOCK(mode):
            raise ControlError(f"control socket {path}: exists and is not a socket")
        try:
            path.unlink()
        except OSError as exc:  # another user's, in a sticky folder, say
            raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(16)
    sock.setblocking(False)
    return sock


async def serve(
    path: Path, stop: Stopper, status: Status, sock: socket.socket | None = None
) -> None:
    """Serve the local API at ``path`` (on ``sock`` if already bound) until cancelled; the
    socket file goes with it."""
    log = structlog.get_logger("mesh.camera.control")
    if sock is None:
        sock = bind_socket(path)
    slots = asyncio.Semaphore(MAX_CLIENTS)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with slots:
            uid = _peer_uid(writer)
            try:
                if uid is not None and uid not in (0, os.geteuid()):
                    # The file's mode keeps others out; should it be loosened, the kernel's
                    # word on who connected still does.
                    log.warning("control request refused: another user", uid=uid)
                    with contextlib.suppress(OSError, TimeoutError):  # read, never acted on
                        async with asyncio.timeout(REQUEST_TIMEOUT_S):
                            await reader.read(MAX_REQUEST_BYTES + 1)
                    answer = {"ok": False, "error": f"user {uid} may not use this camera"}
                else:
                    answer = await _answer(reader, stop, status)
            except Exception as exc:  # an answer, whatever went wrong
                log.exception("control request failed")
                answer = {"ok": False, "error": f"internal error: {exc}"}
            with contextlib.suppress(OSError):
                writer.write(json.dumps(answer, ensure_ascii=False).encode() + b"\n")
                await writer.drain()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_unix_server(client, sock=sock, limit=MAX_REQUEST_BYTES + 1)
    log.info("control socket listening", path=str(path))
    try:
        await asyncio.Event().wait()
    finally:
        server.close()
        _remove(path)


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The connecting process's user id, as the kernel has it (SO_PEERCRED)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


async def _answer(reader: asyncio.StreamReader, stop: Stopper, status: Status) -> dict[str, Any]:
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            raw = await _read_request(reader)
    except TimeoutError:
        return {"ok": False, "error": f"no request within {REQUEST_TIMEOUT_S:g} s"}
    if raw is None:
        return {"ok": False, "error": f"request larger than {MAX_REQUEST_BYTES} bytes"}
    try:
        request = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {"ok": False, "error": f"request is not JSON: {exc}"}
    if not isinstance(request, dict):
        return {"ok": False, "error": "request must be a JSON object"}
    op = request.get("op")
    if op == "status":
        return {"ok": True, **status()}
    if op != "stop":
        return {"ok": False, "error": f"unknown op {op!r}: expected 'stop' or 'status'"}
    note = request.get("note", "")
    if not isinstance(note, str):
        return {"ok": False, "error": "note must be a string"}
    if len(note) > MAX_STOP_NOTE:
        return {"ok": False, "error": f"note longer than {MAX_STOP_NOTE} characters"}
    stopped = await stop(StopReason.OFFICER, note.strip())
    if stopped is None:
        return {"ok": True, "stopped": False, "detail": "not recording"}
    return {
        "ok": True,
        "stopped": True,
        "recording_id": stopped.recording_id,
        "activation_ids": list(stopped.activations),
        "started_at_ns": str(stopped.started_at_ns),
        "stopped_at_ns": str(stopped.stopped_at_ns),
    }


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    """The request's bytes (to a newline or the end), or None past the size limit."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        line = exc.partial  # the client closed its side: that is the request
    except asyncio.LimitOverrunError:
        return None
    if len(line) > MAX_REQUEST_BYTES + 1:
        return None
    return line.strip()


async def request(path: Path, payload: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
    """Send one request to the agent at ``path``; its answer. OSError if no agent listens
    there; ValueError for an answer that is not a JSON object."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(json.dumps(payload).encode() + b"\n")
            await writer.drain()
            raw = await reader.read(1 << 20)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    answer = json.loads(raw or b"null")
    if not isinstance(answer, dict):
        raise ValueError(f"the agent answered {raw[:200]!r}")
    return answer

"""The camera under test as a process the kit starts (``--camera-cmd``) and kills with
SIGKILL at the end, so that the broker publishes its last will; and the command that
moves it (``--move-cmd``). Commands are split like a shell would (no shell runs them)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from pathlib import Path


def split_command(text: str) -> list[str]:
    """A command line as its words; ValueError naming what is wrong with it."""
    words = shlex.split(text)
    if not words:
        raise ValueError("empty command")
    return words


def with_position(words: list[str], lat: float, lon: float) -> list[str]:
    """``{lat}`` and ``{lon}`` in the words replaced by the position."""
    return [w.replace("{lat}", f"{lat:.7f}").replace("{lon}", f"{lon:.7f}") for w in words]


class CameraProcess:
    """Started in a session of its own, so that a SIGKILL reaches everything it started
    (a shell script's children too), and nothing else."""

    def __init__(self, words: list[str], log: Path | None = None) -> None:
        self.words = words
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        out = self.log.open("ab") if self.log is not None else None
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.words,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out if out is not None else asyncio.subprocess.DEVNULL,
                stderr=out if out is not None else asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if out is not None:
                out.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def exit_status(self) -> int | None:
        return None if self.process is None else self.process.returncode

    async def kill(self, timeout_s: float = 10.0) -> None:
        """SIGKILL to its process group: no goodbye, the connection just dies."""
        await self._signal(signal.SIGKILL, timeout_s)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it is still there after ``timeout_s``."""
        if not self.running:
            return
        await self._signal(signal.SIGTERM, timeout_s)
        if self.running:
            await self.kill()

    async def _signal(self, sig: signal.Signals, timeout_s: float) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await process.wait()


async def run_once(words: list[str], timeout_s: float) -> str | None:
    """Run a command to its end; None if it exited 0, else what went wrong."""
    try:
        process = await asyncio.create_subprocess_exec(
            *words,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return f"cannot run {words[0]!r}: {exc.strerror or exc}"
    try:
        async with asyncio.timeout(timeout_s):
            _, err = await process.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        return f"{words[0]!r} still running after {timeout_s:g} s (killed)"
    if process.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return f"{words[0]!r} exited {process.returncode}: {tail[0]}"
    return None

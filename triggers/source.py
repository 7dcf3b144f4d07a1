"""The one small protocol every trigger source implements.

A source is an async iterator of TriggerEvents plus start/stop and a health summary.
The gateway runs each source it is given and submits every event it yields.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from mesh.protocol.models import TriggerEvent


@runtime_checkable
class TriggerSource(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def events(self) -> AsyncIterator[TriggerEvent]: ...

    def health(self) -> dict[str, int | float | str | bool]: ...


async def until_closed(queue: asyncio.Queue[TriggerEvent | None]) -> AsyncIterator[TriggerEvent]:
    """A source's queued events, until the None its ``stop`` puts there."""
    while True:
        event = await queue.get()
        if event is None:
            return
        yield event


class QueueSource:
    """A source fed by code: manual buttons, dispatch bridges, tests."""

    def __init__(self, name: str = "queue") -> None:
        self.name = name
        self._queue: asyncio.Queue[TriggerEvent | None] = asyncio.Queue()
        self.emitted = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._queue.put_nowait(None)

    def put(self, event: TriggerEvent) -> None:
        self._queue.put_nowait(event)

    async def events(self) -> AsyncIterator[TriggerEvent]:
        while True:
            event = await self._queue.get()
            if event is None:
                return
            self.emitted += 1
            yield event

    def health(self) -> dict[str, int | float | str | bool]:
        return {"queued": self._queue.qsize(), "emitted": self.emitted}

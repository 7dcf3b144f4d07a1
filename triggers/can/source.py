"""The CAN trigger source: any python-can bus, the rule engine, health, recovery.

The bus is opened with filters for the frame ids the rules read (in hardware where the
interface can, in python-can otherwise) and read on a thread that hands frames to the
event loop in batches. A reader error (bus-off on some interfaces, an unplugged adapter)
ends the reader, closes the bus and reopens it with backoff; error frames are counted.
Fired rules become TriggerEvents; signal loss and recovery are logged health events, never triggers.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import can
import structlog

from mesh.clock import SYSTEM_CLOCK, Clock
from mesh.protocol.models import SourceRef, SourceType, TriggerEvent
from triggers.can.engine import Fired, RuleEngine, RuleHealth
from triggers.source import until_closed

BusFactory = Callable[[list[dict[str, Any]]], can.BusABC]

_REOPEN_FIRST_S, _REOPEN_MAX_S = 0.2, 10.0
_STABLE_S = 30.0  # a bus open this long before failing was working: backoff starts afresh
_OWN_CLOCK_S = 60.0  # frame times further than this from the wall clock are a device clock


def bus_filters(engine: RuleEngine) -> list[dict[str, Any]]:
    return [
        {"can_id": frame_id, "can_mask": 0x1FFFFFFF if extended else 0x7FF, "extended": extended}
        for frame_id, extended in engine.frame_ids
    ]


def trigger_event(fired: Fired, unit_id: str, channel: str) -> TriggerEvent:
    """Deterministic: the same frame at the same time makes the same event id."""
    t_ns = round(fired.t * 1e9)
    return TriggerEvent(
        event_id=f"can-{unit_id}-{fired.rule}-{t_ns}",
        kind=fired.kind,
        source=SourceRef(type=SourceType.CAN, id=f"can:{fired.group}", authenticated=True),
        unit_id=unit_id,
        observed_at_ns=t_ns,
        detail={
            "rule": fired.rule,
            "signal": fired.where,
            "value": fired.value,
            "frame_id": f"0x{fired.frame_id:X}",
            "bus": channel,
        },
    )


class BusReader(threading.Thread):
    """Blocks in ``bus.recv`` on its own thread and hands frames to the event loop.

    Not python-can's Notifier: in asyncio mode it re-raises a reader error on its thread
    after reporting it, which prints a stray traceback past structlog. Frames are handed
    over in batches: one loop wake-up per burst instead of one per frame.
    """

    def __init__(
        self,
        bus: can.BusABC,
        loop: asyncio.AbstractEventLoop,
        on_frame: Callable[[can.Message], None],
        on_error: Callable[[Exception], None],
    ) -> None:
        super().__init__(name=f"can-reader {bus.channel_info}", daemon=True)
        self._bus, self._loop = bus, loop
        self._on_frame, self._on_error = on_frame, on_error
        self._pending: deque[can.Message] = deque()
        self._scheduled = False
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                msg = self._bus.recv(0.1)
            except Exception as exc:  # any failure of the bus ends this reader: reported
                if not self._stopped.is_set():
                    self._hand_over(self._on_error, exc)
                return
            if msg is None:
                continue
            self._pending.append(msg)
            if not self._scheduled:
                self._scheduled = True
                if not self._hand_over(self._drain):
                    return

    def _hand_over(self, callback: Callable[..., None], *args: Any) -> bool:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            return False  # the event loop is closed: nobody left to hand anything to
        return True

    def _drain(self) -> None:
        # Cleared before draining: a frame appended meanwhile is either drained here or
        # schedules its own drain, never stranded.
        self._scheduled = False
        while self._pending:
            self._on_frame(self._pending.popleft())

    def stop(self, timeout: float = 1.0) -> None:
        self._stopped.set()
        if threading.current_thread() is not self and self.is_alive():
            self.join(timeout)


class CanTriggerSource:
    name = "can"

    def __init__(
        self,
        engine: RuleEngine,
        *,
        unit_id: str,
        bus_factory: BusFactory,
        channel: str = "can",
        tick_s: float = 0.25,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.engine = engine
        self.unit_id = unit_id
        self.channel = channel
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self._bus_factory = bus_factory
        self._tick_s = tick_s
        self._bus: can.BusABC | None = None
        self._reader: BusReader | None = None
        self._queue: asyncio.Queue[TriggerEvent | None] = asyncio.Queue()
        self._last_bus_time: float | None = None
        self._last_mono = 0.0
        self._ticker_task: asyncio.Task[None] | None = None
        self._reopen_task: asyncio.Task[None] | None = None
        self._stopping = False
        # Reopen backoff survives a reopen: a bus that opens and fails again at once (a
        # link that is down) is retried ever more slowly, not five times a second.
        self._reopen_delay = _REOPEN_FIRST_S
        self._opened_mono = 0.0
        self._log = structlog.get_logger("triggers.can").bind(bus=channel)

    async def start(self) -> None:
        self._open()
        # Listening starts now, on the wall clock most interfaces stamp frames with; a
        # rule whose frame never comes is reported against it (see on_frame for others).
        self.engine.start(time.time())
        self._ticker_task = asyncio.create_task(self._ticker())
        self._log.info(
            "can source started",
            rules=len(self.engine.rules),
            frame_ids=[f"0x{i:X}" for i, _ in self.engine.frame_ids],
        )

    def _open(self) -> None:
        self._bus = self._bus_factory(bus_filters(self.engine))
        self._opened_mono = time.monotonic()
        self._reader = BusReader(
            self._bus, asyncio.get_running_loop(), self.on_frame, self.on_bus_error
        )
        self._reader.start()

    def _close(self) -> None:
        reader, self._reader = self._reader, None
        bus, self._bus = self._bus, None
        if reader is not None:
            reader.stop(timeout=1.0)
        if bus is not None:
            with contextlib.suppress(Exception):
                bus.shutdown()

    async def stop(self) -> None:
        self._stopping = True  # an error callback already queued must not reopen the bus
        tasks = [t for t in (self._ticker_task, self._reopen_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._close()
        self._queue.put_nowait(None)

    def events(self) -> AsyncIterator[TriggerEvent]:
        return until_closed(self._queue)

    def health(self) -> dict[str, int | float | str | bool]:
        out: dict[str, int | float | str | bool] = dict(self.counters)
        out.update(self.engine.counters)
        out["signals_lost"] = len(self.lost_signals())
        return out

    def lost_signals(self) -> list[str]:
        """Rules whose frames are currently missing."""
        return self.engine.lost_rules()

    # --- frames ---------------------------------------------------------------------------
    def on_frame(self, msg: can.Message) -> None:
        """Never raises: a frame is untrusted input."""
        try:
            t = msg.timestamp or time.time()
            if self._last_bus_time is None and abs(t - time.time()) > _OWN_CLOCK_S:
                # The interface stamps frames with its own clock (some adapters count from
                # power-on): listening began, on that clock, with this first frame.
                self.engine.start(t)
            self._last_bus_time, self._last_mono = t, time.monotonic()
            fired, health = self.engine.process(
                msg.arbitration_id,
                msg.is_extended_id,
                bytes(msg.data),
                t,
                is_error=msg.is_error_frame,
                is_remote=msg.is_remote_frame,
            )
            self._report(health)
            for f in fired:
                self.counters["events"] += 1
                self._log.info("can rule fired", rule=f.rule, kind=f.kind.value, value=f.value)
                self._queue.put_nowait(trigger_event(f, self.unit_id, self.channel))
        except Exception:
            self.counters["rejected.internal_error"] += 1
            self._log.exception("frame processing failed", frame_id=msg.arbitration_id)

    def _report(self, health: Sequence[RuleHealth]) -> None:
        for event in health:
            if event.event == "signal_lost":
                self._log.warning("can signal lost", rule=event.rule, detail=event.detail)
            else:
                self._log.info("can signal restored", rule=event.rule, detail=event.detail)

    async def _ticker(self) -> None:
        """Signal-loss checks on the bus's clock (frame timestamps run on it)."""
        while True:
            await asyncio.sleep(self._tick_s)
            if self._last_bus_time is None:
                now = time.time()  # nothing heard yet: the clock listening began on
            else:
                # Whatever clock the interface stamps frames with, it has advanced by the
                # monotonic time since the last frame.
                now = self._last_bus_time + (time.monotonic() - self._last_mono)
            self._report(self.engine.tick(now))

    # --- recovery ------------------------------------------------------------------------
    def on_bus_error(self, exc: Exception) -> None:
        if self._stopping:
            return
        self.counters["bus_errors"] += 1
        if self._reopen_task is not None and not self._reopen_task.done():
            return
        # A bus that worked for a while starts the backoff afresh; one that failed soon
        # after (re)opening continues it.
        if time.monotonic() - self._opened_mono > _STABLE_S:
            self._reopen_delay = _REOPEN_FIRST_S
        self._log.error("can bus error, reopening", error=str(exc), retry_in_s=self._reopen_delay)
        self._reopen_task = asyncio.create_task(self._reopen())

    async def _reopen(self) -> None:
        while True:
            self._close()
            await asyncio.sleep(self._reopen_delay)
            delay, self._reopen_delay = (
                self._reopen_delay,
                min(self._reopen_delay * 2, _REOPEN_MAX_S),
            )
            try:
                self._open()
            except Exception as exc:
                self._log.error(
                    "can bus reopen failed", error=str(exc), retry_in_s=self._reopen_delay
                )
                continue
            self.counters["reopened"] += 1
            self._log.info("can bus reopened", after_s=delay)
            return

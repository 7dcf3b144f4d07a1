"""What the gateway shows of itself: ``/metrics`` and ``/health`` over HTTP, and the systemd
notifications (ready, status, watchdog, stopping). docs/observability.md.

Reads the gateway's state on the event loop when asked; the decisions are in
``mesh.ops.health`` and the metric families in ``mesh.ops.metrics`` (both pure).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from mesh.journal.store import LogError
from mesh.ops.health import DEFAULT_LIMITS, GatewayState, Health, Limits, gateway_health
from mesh.ops.http import HttpEndpoints, Request, Response
from mesh.ops.metrics import GatewayMetrics, GatewaySnapshot
from mesh.ops.sd_notify import SystemdNotifier, watchdog_loop

if TYPE_CHECKING:
    from mesh.clock import Clock


@dataclass(frozen=True)
class GatewayReadout:
    """What a gateway shows its observer, read at one moment: the observer judges health
    and serves metrics from this alone, never from the gateway's parts."""

    log_error: str | None  # the activation log's last write failure, if it is failing
    link_up: bool
    link_connects: int
    outbox_depth: int
    outbox_oldest_queued_at_ns: int | None  # wall clock: the outbox outlives the process
    # Why the outbox is held in memory, not in its file (None: in its file, durable).
    outbox_fallback_error: str | None
    in_progress: int  # activations not yet finished
    # The daemon's, the coordinator's, the forwarder's and the presence lane's.
    counters: Counter[str]
    sources: dict[str, dict[str, int | float | str | bool]]  # each trigger source's health


class Observed(Protocol):
    """The gateway, as its observer sees it."""

    clock: Clock

    def readout(self) -> GatewayReadout: ...

    async def flush_log(self) -> None:
        """Return once the activation log's writer has written what it was given (raises
        LogError if it cannot)."""


class LoopLag:
    """How late the event loop wakes up, the worst over a recent window. A blocked loop
    shows here once it runs again (while blocked, nothing on it can answer anyway)."""

    def __init__(self, interval_s: float = 0.25, window_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval_s)
            now = loop.time()
            self._samples.append((now, max(0.0, now - before - self.interval_s)))
            while self._samples and self._samples[0][0] < now - self.window_s:
                self._samples.popleft()

    def lag_s(self) -> float:
        return max((lag for _, lag in self._samples), default=0.0)


class GatewayObserver:
    def __init__(
        self,
        gateway: Observed,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        notifier: SystemdNotifier | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.gateway = gateway
        self.limits = limits
        self.notifier = notifier
        self.lag = LoopLag()
        self.metrics = GatewayMetrics(self.snapshot)
        # Binds now: a port in use is an error at start, not a silent gap in the scrapes.
        self.endpoints = (
            None
            if port is None
            else HttpEndpoints(host, port, {"/metrics": self._metrics, "/health": self._health})
        )

    @property
    def port(self) -> int | None:
        return None if self.endpoints is None else self.endpoints.port

    # --- state --------------------------------------------------------------------------
    def state(self, readout: GatewayReadout | None = None) -> GatewayState:
        now = readout or self.gateway.readout()
        oldest = now.outbox_oldest_queued_at_ns
        # Wall clock: the outbox outlives the process, so its entries carry wall time.
        age = None if oldest is None else max(0.0, (self.gateway.clock.wall_ns() - oldest) / 1e9)
        return GatewayState(
            log_error=now.log_error,
            link_up=now.link_up,
            link_never_up=now.link_connects == 0,
            outbox_depth=now.outbox_depth,
            outbox_oldest_age_s=None if age is None else round(age, 3),
            outbox_fallback_error=now.outbox_fallback_error,
            loop_lag_s=round(self.lag.lag_s(), 4),
        )

    def health(self) -> Health:
        return gateway_health(self.state(), self.limits)

    def snapshot(self) -> GatewaySnapshot:
        now = self.gateway.readout()
        return GatewaySnapshot(
            counters=now.counters,
            link_up=now.link_up,
            link_connects=now.link_connects,
            in_progress=now.in_progress,
            health=gateway_health(self.state(now), self.limits),
            sources=now.sources,
            queue_depth=now.outbox_depth,
            queue_durable=now.outbox_fallback_error is None,
        )

    # --- serving ------------------------------------------------------------------------
    async def _metrics(self, request: Request) -> Response:
        body, content_type = self.metrics.render(request.headers.get("accept", ""))
        return Response(200, body, content_type)

    async def _health(self, request: Request) -> Response:
        health = self.health()
        return Response.json(health.http_status, health.as_json())

    async def _probe(self, timeout_s: float) -> str | None:
        """For the watchdog: the loop runs (we are here) and the log writer answers.

        A writer that answers with an error (a full disk) is alive: /health says the log
        cannot be written, and a restart would not free the disk, but would drop the
        records waiting in memory for it and miss triggers while the gateway starts."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.gateway.flush_log()
        except TimeoutError:
            return f"activation log writer did not answer within {timeout_s:.2f} s"
        except LogError:
            return None
        return None

    def status_line(self) -> str:
        readout = self.gateway.readout()
        health = gateway_health(self.state(readout), self.limits)
        live = readout.in_progress
        line = f"{health.status.value}; {live} activation(s) in progress"
        return f"{line}; {'; '.join(health.reasons)}" if health.reasons else line

    async def run(self) -> None:
        """Serve until cancelled. Started by the gateway once its log is open and unfinished
        activations are resumed: that is when systemd is told it is ready."""
        notifier = self.notifier
        if self.endpoints is None and (notifier is None or not notifier.enabled):
            return  # nobody to tell
        tasks = [asyncio.create_task(self.lag.run(), name="loop-lag")]
        if self.endpoints is not None:
            tasks.append(asyncio.create_task(self.endpoints.serve(), name="http-endpoints"))
        try:
            if notifier is not None and notifier.enabled:
                notifier.ready(self.status_line())
                tasks.append(
                    asyncio.create_task(
                        watchdog_loop(notifier, self._probe, self.status_line), name="watchdog"
                    )
                )
            await asyncio.gather(*tasks)
        finally:
            if notifier is not None:
                notifier.stopping("stopping")
                notifier.close()
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
            if self.endpoints is not None:
                self.endpoints.close()

"""The systemd notify protocol (sd_notify(3)), in plain Python: one datagram per message to
the unix socket systemd names in ``$NOTIFY_SOCKET``.

- ``READY=1`` once the daemon serves (a ``Type=notify`` unit is "started" only then);
- ``STATUS=…`` a line ``systemctl status`` shows;
- ``WATCHDOG=1`` every half of ``$WATCHDOG_USEC`` (``WatchdogSec=``), sent by a task on the
  daemon's event loop and only after a health probe passes: a blocked loop or a wedged log
  writer stops the pings, and systemd kills and restarts the daemon;
- ``STOPPING=1`` when shutdown begins.

Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Mapping

import structlog

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"

_log = structlog.get_logger("mesh.sd_notify")


class SystemdNotifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self.sent = 0
        self._socket: socket.socket | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        env = os.environ if environ is None else environ
        address = env.get(ENV_SOCKET) or None
        usec: int | None = None
        raw = env.get(ENV_WATCHDOG_USEC, "")
        if raw:
            try:
                usec = int(raw)
            except ValueError:
                _log.warning("ignoring a malformed watchdog interval", **{ENV_WATCHDOG_USEC: raw})
        # The watchdog may be meant for another process of the unit (its main PID).
        pid = env.get(ENV_WATCHDOG_PID, "")
        if pid and pid != str(os.getpid()):
            usec = None
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the timeout, as sd_watchdog_enabled(3) advises."""
        if self.address is None or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1e6

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines as one datagram. False if not sent (no systemd, or the
        socket is gone: a notification is never worth failing the daemon for)."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            if self._socket is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # "@name" is a socket in the abstract namespace.
                address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
                try:
                    sock.connect(address)
                except OSError:
                    sock.close()
                    raise
                self._socket = sock
            self._socket.send(message)
        except OSError as exc:
            _log.warning("systemd notification not sent", socket=self.address, error=str(exc))
            self.close()
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


async def watchdog_loop(
    notifier: SystemdNotifier,
    probe: Callable[[float], Awaitable[str | None]],
    status: Callable[[], str] | None = None,
) -> None:
    """Ping the watchdog every interval while ``probe`` passes; runs until cancelled.

    ``probe(timeout_s)`` returns None when healthy, else the problem (logged, and shown as
    the unit's status). A probe that has not answered within 3/4 of the interval has
    failed, so a ping is never later than 1.75 intervals (systemd waits two)."""
    interval = notifier.watchdog_interval_s
    if interval is None:
        return
    loop = asyncio.get_running_loop()
    shown = ""
    tick = loop.time()
    while True:
        try:
            # The probe bounds its own waits; this is the net for one that does not.
            async with asyncio.timeout(interval * 0.75):
                problem = await probe(interval / 2)
        except TimeoutError:
            problem = f"health probe took longer than {interval * 0.75:.2f} s"
        if problem is None:
            notifier.watchdog()
            text = status() if status is not None else ""
        else:
            _log.error("watchdog not fed", problem=problem)
            text = f"unhealthy: {problem}"
        if text and text != shown:
            notifier.status(text)
            shown = text
        # A fixed cadence: the probe's time is not added to the period.
        tick = max(tick + interval, loop.time())
        await asyncio.sleep(tick - loop.time())

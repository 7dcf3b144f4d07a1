"""The console as one asyncio task: the MQTT hub and the HTTP server in the same loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Collection, Generator

import uvicorn

from bridge.mqtt.client import ProtocolChoice
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.dispatch.console.app import create_app
from mesh.dispatch.console.auth import Users
from mesh.dispatch.console.hub import ConsoleHub
from mesh.dispatch.console.state import CameraLimits
from mesh.dispatch.console.tls import TlsFiles
from mesh.security.signing import PayloadSigner


class _Server(uvicorn.Server):
    # The caller owns the signals (the CLI cancels on SIGINT/SIGTERM); uvicorn's own
    # handlers would replace them and re-raise the signal after a clean stop.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ConsoleServer:
    """Binds at construction, so ``port`` is known (port 0: any free one) before serving."""

    def __init__(
        self,
        url: BrokerUrl,
        topics: Topics,
        users: Users,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        protocol: ProtocolChoice = "auto",
        signer: PayloadSigner | None = None,
        allowed_origins: Collection[str] = (),
        camera_limits: CameraLimits | None = None,
        tls: TlsFiles | None = None,
        map_tiles: str | None = None,
        map_attribution: str = "",
    ) -> None:
        self.hub = ConsoleHub(
            url, topics, protocol=protocol, signer=signer, camera_limits=camera_limits
        )
        self.app = create_app(
            self.hub,
            users,
            allowed_origins=allowed_origins,
            map_tiles=map_tiles,
            map_attribution=map_attribution,
        )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self.scheme = "http" if tls is None else "https"
        self._server = _Server(
            uvicorn.Config(
                self.app,
                log_config=None,  # structlog owns the logs
                access_log=False,
                # Open event streams never end by themselves: give them this long.
                timeout_graceful_shutdown=2,
                lifespan="off",
                # uvicorn reads them when it starts serving; check_tls has read them first.
                ssl_certfile=None if tls is None else tls.cert,
                ssl_keyfile=None if tls is None else tls.key,
                ssl_keyfile_password=None if tls is None else tls.key_password,
            )
        )

    @property
    def started(self) -> bool:
        return self._server.started

    async def run(self) -> None:
        hub = asyncio.create_task(self.hub.run(), name="console-mqtt")
        http = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="console-http")
        try:
            await asyncio.shield(http)
        finally:
            # Cancelled or not: let uvicorn close its connections before we go.
            self._server.should_exit = True
            await asyncio.gather(http, return_exceptions=True)
            hub.cancel()
            await asyncio.gather(hub, return_exceptions=True)
            self._socket.close()

    async def stop(self) -> None:
        self._server.should_exit = True

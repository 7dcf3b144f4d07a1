"""A very small HTTP/1.1 server for a daemon's ``/metrics`` and ``/health``.

It runs on the daemon's own event loop, so a scrape reads the counters where they are
written (no locks) and a stalled loop shows as a scrape that times out. One request per
connection, GET or HEAD, bounded in size and time: anything else gets a 4xx and the
daemon keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus

import structlog

# A scraper's request is one line and a few headers.
MAX_REQUEST_BYTES = 8 * 1024
REQUEST_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"

    @classmethod
    def json(cls, status: int, value: object) -> Response:
        return cls(status, json.dumps(value, indent=2).encode() + b"\n", "application/json")

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, text.encode() + b"\n")


Handler = Callable[[Request], Awaitable[Response]]


class ListenError(OSError):
    """The address cannot be listened on (in use, not this machine's, not allowed);
    ``errno`` is the bind's, which tells a port taken from a port forbidden."""

    def __init__(self, message: str, error_number: int | None) -> None:
        super().__init__(message)
        self.errno = error_number


class RequestError(ValueError):
    def __init__(self, status: HTTPStatus, problem: str) -> None:
        super().__init__(problem)
        self.status = status


def parse_request(head: bytes) -> Request:
    """The request line and headers (up to the blank line). Pure; raises RequestError."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise RequestError(HTTPStatus.BAD_REQUEST, "undecodable request") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"bad request line {lines[0][:80]!r}")
    method, target, _ = parts
    if not target.startswith("/"):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"bad request target {target[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    return Request(method, target.split("?", 1)[0], headers)


class HttpEndpoints:
    """Binds at construction (port 0: any free one), so ``port`` is known before serving."""

    def __init__(self, host: str, port: int, routes: Mapping[str, Handler]) -> None:
        self.routes = dict(routes)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host, port))
        except OSError as exc:
            self._socket.close()
            raise ListenError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}", exc.errno
            ) from None
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self.requests = 0
        self.bad_requests = 0
        self._log = structlog.get_logger("mesh.http").bind(port=self.port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def serve(self) -> None:
        """Serve until cancelled; the socket is closed then."""
        try:
            server = await asyncio.start_server(
                self._connection, sock=self._socket, limit=MAX_REQUEST_BYTES
            )
            async with server:
                self._log.info("http endpoints serving", url=self.url, paths=sorted(self.routes))
                await server.serve_forever()
        finally:
            self._socket.close()

    def close(self) -> None:
        """For a daemon that never served: free the port."""
        self._socket.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            response, head_only = await self._answer(reader)
            writer.write(_encode(response, head_only))
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                await writer.drain()
        except (ConnectionError, TimeoutError):
            pass  # the client went away or stopped reading: nothing to tell it
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[Response, bool]:
        self.requests += 1
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise RequestError(
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                    f"request head over {MAX_REQUEST_BYTES} bytes",
                ) from None
            except asyncio.IncompleteReadError:
                raise RequestError(HTTPStatus.BAD_REQUEST, "request ended early") from None
            except TimeoutError:
                raise RequestError(
                    HTTPStatus.REQUEST_TIMEOUT, f"no request within {REQUEST_TIMEOUT_S} s"
                ) from None
            request = parse_request(head[:-4])
            handler = self.routes.get(request.path)
            if handler is None:
                known = ", ".join(sorted(self.routes))
                raise RequestError(
                    HTTPStatus.NOT_FOUND, f"no such path {request.path[:80]!r} (try {known})"
                )
            if request.method not in ("GET", "HEAD"):
                raise RequestError(
                    HTTPStatus.METHOD_NOT_ALLOWED, f"method {request.method[:16]!r}: use GET"
                )
            return await handler(request), request.method == "HEAD"
        except RequestError as exc:
            self.bad_requests += 1
            self._log.info("http request refused", status=int(exc.status), problem=str(exc))
            return Response.text(exc.status, f"{int(exc.status)} {exc.status.phrase}: {exc}"), False
        except Exception as exc:
            # A bug in a handler must not take the daemon down: answer 500, log it.
            self._log.exception("http handler failed")
            return Response.text(500, f"500 Internal Server Error: {type(exc).__name__}"), False


def _encode(response: Response, head_only: bool) -> bytes:
    phrase = HTTPStatus(response.status).phrase
    head = (
        f"HTTP/1.1 {response.status} {phrase}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n"
    )
    if response.status == HTTPStatus.METHOD_NOT_ALLOWED:
        head += "Allow: GET, HEAD\r\n"
    return (head + "\r\n").encode() + (b"" if head_only else response.body)

"""A raw HTTP/1.1 client for the daemons' endpoints: one request per connection, on the
test's event loop (a blocking client would stall the loop that serves the answer)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


async def send_raw(port: int, request: bytes, host: str = "127.0.0.1") -> Answer:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        writer.write_eof()  # the whole request is sent: a server waiting for more sees EOF
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status, headers, body)


async def get(port: int, path: str, *, method: str = "GET", accept: str = "") -> Answer:
    extra = f"Accept: {accept}\r\n" if accept else ""
    request = f"{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n"
    return await send_raw(port, request.encode())


def parse_metrics(text: str) -> dict[str, Metric]:
    """Exposition text → families by name, with prometheus_client's own parser."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(
    families: dict[str, Metric], family: str, name: str | None = None, **labels: str
) -> float:
    """The value of the one sample of ``family`` (sample ``name``) with these labels."""
    metric = families[family]
    wanted = name or (f"{family}_total" if metric.type == "counter" else family)
    found = [
        s.value
        for s in metric.samples
        if s.name == wanted and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, f"{family}{labels}: {len(found)} samples"
    return found[0]

"""Rendering integer-nanosecond UTC times for people."""

from __future__ import annotations

from datetime import UTC, datetime

NS = 1_000_000_000


def iso_ns(at_ns: int) -> str:
    """RFC 3339 UTC with all nine fractional digits: 2026-11-22T10:15:30.123456789Z."""
    seconds, fraction = divmod(at_ns, NS)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{fraction:09d}Z"


def clock_ms(at_ns: int) -> str:
    """Local-terminal style HH:MM:SS.mmm (UTC), for tables."""
    seconds, fraction = divmod(at_ns, NS)
    return (
        datetime.fromtimestamp(seconds, UTC).strftime("%H:%M:%S") + f".{fraction // 1_000_000:03d}"
    )

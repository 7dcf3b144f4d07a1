"""Rendering integer-nanosecond UTC times for people."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mesh.clock import NS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


def parse_iso_ns(text: str) -> int:
    """ISO 8601 to UTC ns: ``2026-11-22T10:00:00Z``, an offset, or a date (midnight UTC).
    A time without an offset is taken as UTC, the only zone records use."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time (e.g. 2026-11-22T10:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return ((moment - _EPOCH) // timedelta(microseconds=1)) * 1000

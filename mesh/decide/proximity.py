"""What the car's radio hears: the BLE addresses of cameras near it, with signal strength.

A body camera advertises on BLE (real ones do, for pairing and for their own triggers), and
its presence names the address it advertises from. The gateway's scanner already listens
for sensors; every advert it hears is noted here by address, and when a trigger is resolved
the addresses heard recently and strongly enough stand for "this camera is at the car",
whatever its GPS says (indoors, in a stairwell, or without a fix at all). Pure: the caller
gives the monotonic time.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.clock import NS

# Past this many addresses, the stale ones are dropped first; a street can hold many phones.
MAX_ADDRESSES = 4096


@dataclass(frozen=True)
class Heard:
    rssi_dbm: int
    age_s: float

    def describe(self) -> str:
        return f"heard by the car's radio at {self.rssi_dbm} dBm {self.age_s:.0f} s ago"


class RadioProximity:
    """The last reading per address. A camera counts as near while its latest advert is no
    older than ``max_age_s`` and no weaker than ``min_rssi_dbm``."""

    def __init__(self, *, min_rssi_dbm: int = -80, max_age_s: float = 10.0) -> None:
        self.min_rssi_dbm = min_rssi_dbm
        self.max_age_ns = int(max_age_s * NS)
        self._last: dict[str, tuple[int, int]] = {}  # address -> (rssi, monotonic ns)
        self.dropped = 0

    def heard(self, address: str, rssi_dbm: int, mono_ns: int) -> None:
        address = address.upper()
        if address not in self._last and len(self._last) >= MAX_ADDRESSES:
            self._forget_before(mono_ns - self.max_age_ns)
            if len(self._last) >= MAX_ADDRESSES:
                self.dropped += 1
                return
        self._last[address] = (rssi_dbm, mono_ns)

    def near(self, mono_ns: int) -> dict[str, Heard]:
        """Every address heard recently and strongly enough, with its reading."""
        oldest = mono_ns - self.max_age_ns
        return {
            address: Heard(rssi, max(0.0, (mono_ns - at) / NS))
            for address, (rssi, at) in self._last.items()
            if at >= oldest and rssi >= self.min_rssi_dbm
        }

    def _forget_before(self, oldest: int) -> None:
        for address in [a for a, (_, at) in self._last.items() if at < oldest]:
            del self._last[address]

    def __len__(self) -> int:
        return len(self._last)

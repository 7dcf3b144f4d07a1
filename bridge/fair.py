"""A bounded queue shared fairly between the senders its items claim to come from.

Under a flood the sender of a message is not yet proven (its signature is checked later,
and costs more than reading it), but what it *claims* can be read cheaply. Items are
spread over a fixed number of shares by a salted hash of that claim, each share holding
at most ``capacity // shares`` items and dropping its own oldest when full, and the
shares are served round-robin. A flood under one claimed name then fills that name's
share and delays the others by at most one item per turn; a flood spread over many
names is spread over the shares. The salt is per queue, so a sender cannot choose names
that land in another's share without naming that sender.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    """``shares`` bounded FIFO queues of ``T``, by ``claim_of(item)``, served in turn."""

    def __init__(
        self,
        capacity: int,
        shares: int,
        claim_of: Callable[[T], str],
        *,
        salt: bytes | None = None,
    ) -> None:
        if shares < 1 or capacity < shares:
            raise ValueError(f"a fair queue needs 1 <= shares <= capacity: {shares}, {capacity}")
        self.share_capacity = capacity // shares
        self._claim_of = claim_of
        self._salt = secrets.token_bytes(16) if salt is None else salt
        self._queues: list[deque[T]] = [deque() for _ in range(shares)]
        self._turns: deque[int] = deque()  # shares with items waiting, in serving order
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def share_of(self, claim: str) -> int:
        digest = hashlib.blake2b(claim.encode(), key=self._salt, digest_size=4).digest()
        return int.from_bytes(digest) % len(self._queues)

    def put(self, item: T) -> T | None:
        """Queue ``item``; returns the oldest of its share if the share was full."""
        share = self.share_of(self._claim_of(item))
        queue = self._queues[share]
        if not queue:
            self._turns.append(share)
        dropped = None
        if len(queue) >= self.share_capacity:
            dropped = queue.popleft()
        else:
            self._size += 1
        queue.append(item)
        return dropped

    def popleft(self) -> T:
        """The oldest item of the share whose turn it is (IndexError if empty)."""
        share = self._turns.popleft()
        queue = self._queues[share]
        item = queue.popleft()
        self._size -= 1
        if queue:
            self._turns.append(share)
        return item

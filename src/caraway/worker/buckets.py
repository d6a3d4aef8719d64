"""Per-node rate limits: one token bucket per task, shared by all of a node's children.

Children consume independently, so a per-child bucket would let N children run N times
the rate. The buckets live in an anonymous shared memory map created by the supervisor
before it forks, guarded by one process-shared lock; the supervisor changes a rate in
place when remote control asks. A task that has no token is held by its consumer until
one is due, so it never blocks other tasks.
"""

from __future__ import annotations

import mmap
import multiprocessing
import struct
import time
from collections.abc import Iterable

from caraway.rates import parse_rate

_SLOT = struct.Struct("ddd")  # rate (tokens/s), tokens, last refill (monotonic)
_RATE = struct.Struct("d")
CAPACITY = 1.0  # a burst of one token, as in Celery


class SharedBuckets:
    """Token buckets for the tasks ``names``, usable from every forked child."""

    def __init__(self, rates: Iterable[tuple[str, str | float | None]]) -> None:
        items = list(rates)
        self._index = {name: number for number, (name, _) in enumerate(items)}
        self._map = mmap.mmap(-1, max(1, len(items)) * _SLOT.size)
        self._lock = multiprocessing.get_context("fork").Lock()
        now = time.monotonic()
        for name, rate in items:
            self._write(self._index[name], parse_rate(rate), CAPACITY, now)

    def _read(self, slot: int) -> tuple[float, float, float]:
        values: tuple[float, float, float] = _SLOT.unpack_from(self._map, slot * _SLOT.size)
        return values

    def _write(self, slot: int, rate: float, tokens: float, last: float) -> None:
        _SLOT.pack_into(self._map, slot * _SLOT.size, rate, tokens, last)

    def set_rate(self, name: str, rate: str | float | None) -> bool:
        """Change a task's rate at run time; False if the task had no slot at start."""
        slot = self._index.get(name)
        if slot is None:
            return False
        with self._lock:
            self._write(slot, parse_rate(rate), CAPACITY, time.monotonic())
        return True

    def limited(self, name: str) -> bool:
        slot = self._index.get(name)
        return slot is not None and self._read(slot)[0] > 0

    def take(self, name: str) -> float:
        """Take a token for ``name``: 0 if granted, else seconds until one will be there."""
        slot = self._index.get(name)
        if slot is None:
            return 0.0
        # most tasks have no limit: read the rate without the process-shared lock (an
        # aligned double; a rate set this instant applies from the next task)
        if _RATE.unpack_from(self._map, slot * _SLOT.size)[0] <= 0:
            return 0.0
        with self._lock:
            rate, tokens, last = self._read(slot)
            if rate <= 0:
                return 0.0
            now = time.monotonic()
            tokens = min(CAPACITY, tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._write(slot, rate, tokens - 1.0, now)
                return 0.0
            self._write(slot, rate, tokens, now)
            return (1.0 - tokens) / rate

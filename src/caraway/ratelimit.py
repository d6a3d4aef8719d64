"""Rate strings (``'10/s'``, ``'100/m'``, ``'1000/h'``) and the token bucket they drive."""

from __future__ import annotations

import time

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(rate: str | float | int | None) -> float:
    """Tasks per second for a Celery rate string; 0 means unlimited.

    A bare number is per second, as in Celery. Raises ValueError naming the value.
    """
    if rate is None or rate == "":
        return 0.0
    if isinstance(rate, (int, float)):
        if rate < 0:
            raise ValueError(f"rate limit {rate!r} is negative")
        return float(rate)
    text = str(rate).strip()
    count, _, unit = text.partition("/")
    try:
        number = float(count)
    except ValueError:
        raise ValueError(
            f"rate limit {rate!r} is not a number of tasks per unit, like '10/s', '100/m' or "
            "'1000/h'"
        ) from None
    unit = unit.strip() or "s"
    if unit[0] not in _UNITS:
        raise ValueError(f"rate limit {rate!r} has unit {unit!r}; use s, m or h")
    if number < 0:
        raise ValueError(f"rate limit {rate!r} is negative")
    return number / _UNITS[unit[0]]


class TokenBucket:
    """A classic token bucket: ``rate`` tokens a second, holding at most ``capacity``."""

    def __init__(self, rate: float, capacity: float = 1.0) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self) -> float:
        """Take a token; returns 0 when one was there, else seconds until one will be."""
        if self.rate <= 0:
            return 0.0
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

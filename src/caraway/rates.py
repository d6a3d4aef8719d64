"""Rate strings (``'10/s'``, ``'100/m'``, ``'1000/h'``) as tasks per second: what a
task's ``rate_limit`` means, for the app that checks it and the worker's token buckets.
"""

from __future__ import annotations

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

"""Wall-clock times and the instants they name in a zone with daylight saving.

A wall time names one instant, two (the repeated hour when clocks go back) or none (the
hour skipped when they go forward). :func:`instants_of` says which, using ``zoneinfo``'s
``fold`` (PEP 495); the end of a gap is found by bisecting the zone's offset. Pure.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

from caraway.schedules.base import UTC

_SECOND = timedelta(seconds=1)


def instants_of(wall: datetime, zone: tzinfo) -> tuple[str, datetime, datetime]:
    """``(kind, first, second)`` for the naive ``wall`` time in ``zone``.

    ``kind`` is ``"single"`` (first == second), ``"repeated"`` (clocks went back: ``first``
    and ``second`` are its two occurrences) or ``"skipped"`` (clocks went forward: ``first``
    is the end of the gap, the first instant that exists after it; ``second`` is ``first``).
    """
    if zone is UTC:
        instant = wall.replace(tzinfo=UTC)
        return "single", instant, instant
    early = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    late = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if early == late:
        return "single", early, early
    if early < late:
        return "repeated", early, late
    # skipped: fold=0 read it with the offset before the jump, fold=1 with the one after,
    # so the jump itself lies between the two readings
    end = _transition(late, early, zone)
    return "skipped", end, end


def resolve_wall(wall: datetime, zone: tzinfo, *, fold: int = 0) -> datetime:
    """The instant ``wall`` names in ``zone`` (UTC): ``fold`` picks the occurrence of a
    repeated time; a skipped time is the end of its gap."""
    kind, first, second = instants_of(wall, zone)
    return second if kind == "repeated" and fold else first


def _transition(before: datetime, after: datetime, zone: tzinfo) -> datetime:
    """The first instant in ``(before, after]`` that has ``after``'s offset, to the second."""
    target = after.astimezone(zone).utcoffset()
    low, high = before, after
    while high - low > _SECOND:
        middle = low + timedelta(seconds=int((high - low).total_seconds() // 2))
        if middle.astimezone(zone).utcoffset() == target:
            high = middle
        else:
            low = middle
    return high

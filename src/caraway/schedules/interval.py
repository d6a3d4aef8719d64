"""The interval schedule (Celery's ``schedule(run_every=...)``): every so many seconds.

Runs lie on a grid, ``last + run_every``, counted in elapsed time (UTC), so daylight
saving never stretches or squeezes an interval. ``relative=True`` rounds each run down to
the interval's resolution (day, hour, minute or second) on the app's clock, as Celery does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo
from typing import Any

from caraway.schedules.base import UTC, BaseSchedule, InvalidSchedule, aware, humanize_seconds
from caraway.schedules.wall import resolve_wall


def as_interval(value: object, *, what: str = "run_every") -> timedelta:
    """``value`` (seconds or a timedelta) as a positive timedelta; InvalidSchedule naming
    ``what`` and the value otherwise."""
    if isinstance(value, timedelta):
        interval = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        interval = timedelta(seconds=value)
    else:
        raise InvalidSchedule(
            f"{what}={value!r}: an interval is a number of seconds or a timedelta"
        )
    if interval <= timedelta(0):
        raise InvalidSchedule(f"{what}={value!r}: an interval must be longer than zero")
    return interval


def _resolution(interval: timedelta) -> str:
    seconds = interval.total_seconds()
    if seconds >= 86400:
        return "day"
    if seconds >= 3600:
        return "hour"
    if seconds >= 60:
        return "minute"
    return "second"


def round_down(moment: datetime, resolution: str, zone: tzinfo) -> datetime:
    """``moment`` rounded down to the start of its day, hour, minute or second on the
    clock of ``zone`` (a start that does not exist is the end of its gap)."""
    local = moment.astimezone(zone)
    if resolution == "day":
        wall = local.replace(hour=0, minute=0, second=0, microsecond=0)
    elif resolution == "hour":
        wall = local.replace(minute=0, second=0, microsecond=0)
    elif resolution == "minute":
        wall = local.replace(second=0, microsecond=0)
    else:
        wall = local.replace(microsecond=0)
    return resolve_wall(wall.replace(tzinfo=None), zone, fold=local.fold)


class schedule(BaseSchedule):
    """Every ``run_every`` (seconds or a timedelta); ``relative`` rounds each run down to
    the interval's resolution. Raises InvalidSchedule for an interval that is not positive.
    """

    relative: bool = False

    def __init__(
        self,
        run_every: float | timedelta | None = None,
        relative: bool = False,
        nowfun: Callable[[], datetime] | None = None,
        app: Any = None,
    ) -> None:
        self.run_every = as_interval(run_every)
        self.relative = bool(relative)
        super().__init__(nowfun=nowfun, app=app)

    @property
    def seconds(self) -> float:
        return max(self.run_every.total_seconds(), 0.0)

    @property
    def human_seconds(self) -> str:
        return humanize_seconds(self.seconds)

    def next_after(self, moment: datetime) -> datetime:
        start = aware(moment).astimezone(UTC)
        if not self.relative:
            return start + self.run_every
        resolution = _resolution(self.run_every)
        candidate = round_down(start + self.run_every, resolution, self.tz)
        while candidate <= start:  # only where a day boundary moved with the clocks
            candidate = round_down(candidate + self.run_every, resolution, self.tz)
        return candidate

    def latest_between(self, after: datetime, until: datetime) -> tuple[datetime | None, int]:
        after, until = aware(after).astimezone(UTC), aware(until).astimezone(UTC)
        if until <= after:
            return None, 0
        if self.relative:
            # the rounded grid is not last + k * run_every: scan the last few intervals only
            start = max(after, until - 3 * self.run_every)
            latest, count = self._scan(start, until)
            return latest, count + ((start - after) // self.run_every)
        count = (until - after) // self.run_every
        if count < 1:
            return None, 0
        return after + count * self.run_every, int(count)

    def __repr__(self) -> str:
        return f"<freq: {self.human_seconds}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, schedule):
            return self.run_every == other.run_every and self.relative == other.relative
        if isinstance(other, timedelta):
            return self.run_every == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.run_every, self.relative))

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.run_every, self.relative, self.nowfun)

"""Crontab schedules (Celery's ``crontab`` and ``crontab_parser``), read on the app's clock.

Fields as Celery takes them: numbers, names (``mon-fri``, ``jan``), ranges (wrapping
``fri-mon``), steps (``*/15``, ``1-30/2``, ``5/15``), lists, or Python ints and iterables.
A day must match day of month, month and day of week together (Celery's rule, not cron's
"either day field"). Daylight saving (docs/periodic-tasks.md has the table): an hour field
of ``*`` or ``*/n`` follows the clock (a skipped time does not run, a repeated one runs in
both passes); any other hour field names times of day, which run exactly once per day:
a skipped time at the first instant after the gap, a repeated one at its first occurrence.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from caraway.schedules.base import UTC, BaseSchedule, InvalidSchedule, aware
from caraway.schedules.wall import instants_of

Cronspec = int | str | Iterable[int]

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
#: the longest each month can be (February of a leap year)
_MONTH_DAYS = {
    1: 31,
    2: 29,
    3: 31,
    4: 30,
    5: 31,
    6: 30,
    7: 31,
    8: 31,
    9: 30,
    10: 31,
    11: 30,
    12: 31,
}
#: a day of month, month and weekday that can meet do so within 40 years (Feb 29 + weekday)
_SEARCH_DAYS = 366 * 41
#: no zone moves its clock by more than this at once
_MAX_SHIFT = timedelta(hours=3)


class ParseException(InvalidSchedule):
    """A crontab field that cannot be read."""


class crontab_parser:
    """Expands one crontab field into the set of values it names.

    ``crontab_parser(60).parse('*/15')`` -> ``{0, 15, 30, 45}``; ``crontab_parser(31, 1)``
    for 1-based fields. ``names`` maps lowercase names (``mon``, ``jan``) to values; a name
    is matched on its first three letters (``monday``). Raises :class:`ParseException`.
    """

    ParseException = ParseException

    def __init__(self, max_: int = 60, min_: int = 0, names: Mapping[str, int] | None = None):
        self.max_ = max_
        self.min_ = min_
        self.names = dict(names or {})

    @property
    def _top(self) -> int:
        return self.min_ + self.max_ - 1

    def parse(self, spec: str) -> set[int]:
        values: set[int] = set()
        for raw in spec.split(","):
            part = raw.strip()
            if not part:
                raise ParseException(f"{spec!r} has an empty part")
            values |= self._parse_part(part)
        return values

    def _parse_part(self, part: str) -> set[int]:
        body, slash, step_text = part.partition("/")
        step = self._step(step_text, part) if slash else 1
        if body == "*":
            items = list(range(self.min_, self._top + 1))
        elif "-" in body:
            low, _, high = body.partition("-")
            first, last = self._number(low), self._number(high)
            if last < first:  # wraps around the end: fri-mon
                items = [*range(first, self._top + 1), *range(self.min_, last + 1)]
            else:
                items = list(range(first, last + 1))
        elif slash:  # cron's "5/15": from 5 to the end, every 15
            items = list(range(self._number(body), self._top + 1))
        else:
            items = [self._number(body)]
        return set(items[::step])

    def _step(self, text: str, part: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise ParseException(f"{part!r}: the step after '/' must be a whole number >= 1")
        return int(text)

    def _number(self, text: str) -> int:
        text = text.strip()
        if text.startswith("-"):
            raise ParseException(f"{text!r}: negative numbers are not allowed")
        if text.isdigit():
            value = int(text)
        else:
            found = self.names.get(text[:3].lower()) if len(text) >= 3 else None
            if found is None:
                known = f" (names: {', '.join(self.names)})" if self.names else ""
                raise ParseException(f"{text!r} is not a number{known}")
            value = found
        if not self.min_ <= value <= self._top:
            raise ParseException(f"{value} is out of range {self.min_}-{self._top}")
        return value


def _expand(field: str, spec: Any, max_: int, min_: int, names: Iterable[str] = ()) -> set[int]:
    """One field as a set of values; InvalidSchedule naming ``field`` and ``spec``."""
    top = min_ + max_ - 1
    parser = crontab_parser(max_, min_, {name: index for index, name in enumerate(names, min_)})
    try:
        if isinstance(spec, bool):
            raise ParseException(f"{spec!r} is not a number")
        if isinstance(spec, int):
            values = {spec}
        elif isinstance(spec, str):
            values = parser.parse(spec)
        elif isinstance(spec, Iterable):
            values = {_whole(item) for item in spec}
        else:
            raise ParseException(f"a field is an int, a str or an iterable of ints, not {spec!r}")
        for value in values:
            if not min_ <= value <= top:
                raise ParseException(f"{value} is out of range {min_}-{top}")
        if not values:
            raise ParseException("it names no value")
    except ParseException as exc:
        raise ParseException(f"crontab {field}={spec!r}: {exc}") from None
    return values


def _whole(item: object) -> int:
    if isinstance(item, bool) or not isinstance(item, int):
        raise ParseException(f"{item!r} is not a whole number")
    return item


def _steady(instant: datetime, zone: Any) -> bool:
    """No clock change within _MAX_SHIFT either side of ``instant`` in ``zone``."""
    if zone is UTC:
        return True
    before = (instant - _MAX_SHIFT).astimezone(zone).utcoffset()
    return before == (instant + _MAX_SHIFT).astimezone(zone).utcoffset()


def _cronfield(spec: Cronspec | None) -> Cronspec:
    return "*" if spec is None else spec


class crontab(BaseSchedule):
    """A cron-like schedule: ``crontab(minute=0, hour='*/3')``, ``crontab.from_string(...)``.

    Fields: minute 0-59, hour 0-23, day_of_week 0-6 (Sunday is 0; names ``sun``-``sat``),
    day_of_month 1-31, month_of_year 1-12 (names ``jan``-``dec``). Read in the app's
    ``timezone``. Raises InvalidSchedule (a ValueError) naming the field and the value, and
    when the day of month never occurs in the months given (the 30th of February).
    """

    def __init__(
        self,
        minute: Cronspec = "*",
        hour: Cronspec = "*",
        day_of_week: Cronspec = "*",
        day_of_month: Cronspec = "*",
        month_of_year: Cronspec = "*",
        nowfun: Callable[[], datetime] | None = None,
        app: Any = None,
    ) -> None:
        self._orig_minute = _cronfield(minute)
        self._orig_hour = _cronfield(hour)
        self._orig_day_of_week = _cronfield(day_of_week)
        self._orig_day_of_month = _cronfield(day_of_month)
        self._orig_month_of_year = _cronfield(month_of_year)
        self.minute = _expand("minute", self._orig_minute, 60, 0)
        self.hour = _expand("hour", self._orig_hour, 24, 0)
        self.day_of_week = _expand("day_of_week", self._orig_day_of_week, 7, 0, DAY_NAMES)
        self.day_of_month = _expand("day_of_month", self._orig_day_of_month, 31, 1)
        self.month_of_year = _expand("month_of_year", self._orig_month_of_year, 12, 1, MONTH_NAMES)
        if not any(
            day <= _MONTH_DAYS[month] for month in self.month_of_year for day in self.day_of_month
        ):
            raise InvalidSchedule(
                f"crontab day_of_month={self._orig_day_of_month!r} never occurs in "
                f"month_of_year={self._orig_month_of_year!r}"
            )
        super().__init__(nowfun=nowfun, app=app)
        self._hours = sorted(self.hour)
        self._minutes = sorted(self.minute)
        spec = self._orig_hour
        #: an hour field of '*' or '*/n' follows the clock through daylight saving
        self.follows_clock = (isinstance(spec, str) and spec.strip().startswith("*")) or (
            len(self.hour) == 24
        )

    @classmethod
    def from_string(cls, crontab: str) -> crontab:
        """``crontab.from_string('*/15 9-17 * * mon-fri')``: minute, hour, day of month,
        month, day of week (cron's order)."""
        parts = crontab.split()
        if len(parts) != 5:
            raise InvalidSchedule(
                f"crontab {crontab!r}: expected 5 fields (minute hour day_of_month "
                f"month_of_year day_of_week), got {len(parts)}"
            )
        minute, hour, day_of_month, month_of_year, day_of_week = parts
        return cls(minute, hour, day_of_week, day_of_month, month_of_year)

    # -- when it fires -------------------------------------------------------------------
    def day_matches(self, day: date) -> bool:
        return (
            day.month in self.month_of_year
            and day.day in self.day_of_month
            and day.isoweekday() % 7 in self.day_of_week
        )

    def next_after(self, moment: datetime) -> datetime | None:
        moment = aware(moment).astimezone(UTC)
        zone = self.tz
        local = moment.astimezone(zone).replace(tzinfo=None)
        # Near a transition, an earlier wall time can name a later instant (the second
        # pass of a repeated hour), so look back as far as any clock ever moves.
        earliest_wall = local if _steady(moment, zone) else local - _MAX_SHIFT
        day = earliest_wall.date()
        for _ in range(_SEARCH_DAYS):
            if self.day_matches(day):
                found = self._first_on(day, moment, earliest_wall)
                if found is not None:
                    return found
            day += timedelta(days=1)
        return None

    def _first_on(self, day: date, moment: datetime, earliest_wall: datetime) -> datetime | None:
        """The first firing instant after ``moment`` among the wall times of ``day``."""
        zone = self.tz
        best: datetime | None = None
        stop_wall: datetime | None = None
        first_hour = (
            bisect_left(self._hours, earliest_wall.hour) if day == earliest_wall.date() else 0
        )
        for hour in self._hours[first_hour:]:
            for minute in self._minutes:
                wall = datetime(day.year, day.month, day.day, hour, minute)
                if wall < earliest_wall:
                    continue
                if stop_wall is not None and wall > stop_wall:
                    return best
                for instant in self._fires_at(wall, zone):
                    if instant > moment and (best is None or instant < best):
                        if _steady(instant, zone):
                            return instant  # wall order is instant order from here on
                        best, stop_wall = instant, wall + _MAX_SHIFT
        return best

    def _fires_at(self, wall: datetime, zone: Any) -> tuple[datetime, ...]:
        kind, first, second = instants_of(wall, zone)
        if kind == "single":
            return (first,)
        if kind == "repeated":
            return (first, second) if self.follows_clock else (first,)
        return () if self.follows_clock else (first,)

    # -- Celery's surface ----------------------------------------------------------------
    def __repr__(self) -> str:
        return (
            f"<crontab: {self._orig_minute} {self._orig_hour} {self._orig_day_of_month} "
            f"{self._orig_month_of_year} {self._orig_day_of_week} (m/h/dM/MY/d)>"
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, crontab):
            return (
                other.month_of_year == self.month_of_year
                and other.day_of_month == self.day_of_month
                and other.day_of_week == self.day_of_week
                and other.hour == self.hour
                and other.minute == self.minute
                and super().__eq__(other)
            )
        return NotImplemented

    def __hash__(self) -> int:
        fields = (self.minute, self.hour, self.day_of_week, self.day_of_month, self.month_of_year)
        return hash(tuple(frozenset(values) for values in fields))

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            self.__class__,
            (
                self._orig_minute,
                self._orig_hour,
                self._orig_day_of_week,
                self._orig_day_of_month,
                self._orig_month_of_year,
                self.nowfun,
            ),
        )

"""What every schedule is: the first instant it fires after a given one, in the app's time
zone, with Celery's ``is_due``/``remaining_estimate`` derived from that.

Pure apart from the clock (``nowfun``, else the app's ``now``). The one thing to know:
:meth:`BaseSchedule.next_after` is the only question beat asks; it takes and returns aware
instants, so daylight saving is decided once, inside each schedule, never by its callers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from caraway import current
from caraway.exceptions import ImproperlyConfigured

UTC = timezone.utc
#: how far back :meth:`BaseSchedule.latest_between` looks first for the latest due run
_LOOKBACK = timedelta(days=2)


class schedstate(NamedTuple):
    """Celery's answer of ``is_due``: due now?, and seconds until it is worth asking again."""

    is_due: bool
    next: float


class InvalidSchedule(ImproperlyConfigured, ValueError):
    """A schedule or beat entry that cannot work; the message names the field and value.

    A ValueError too, as Celery raises for a bad crontab field.
    """


def zone_named(name: str) -> tzinfo:
    """The zone called ``name`` (``Europe/Paris``); InvalidSchedule naming it otherwise."""
    if name.upper() in ("UTC", "Z", "ETC/UTC"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidSchedule(
            f"timezone {name!r} is not a known time zone ({exc}); use an IANA name such as "
            "'Europe/Paris' or 'America/New_York' (install the 'tzdata' package where the "
            "system has no zone database)"
        ) from None


def local_zone() -> tzinfo:
    """This machine's zone, with its daylight-saving rules where the system names them."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError):
        # a fixed offset: right today, wrong across a transition, the best there is
        fixed = datetime.now().astimezone().tzinfo
        return fixed if fixed is not None else UTC


def _utc_enabled(conf: Any) -> bool:
    # a Celery-shaped conf without the setting is Celery's default
    return bool(getattr(conf, "enable_utc", True))


def zone_of(conf: Any) -> tzinfo:
    """The app's zone as Celery decides it: ``timezone`` if set, else UTC with
    ``enable_utc`` (the default), else the machine's local zone."""
    name = conf.timezone
    if name:
        return zone_named(str(name))
    return UTC if _utc_enabled(conf) else local_zone()


def aware(moment: datetime, zone: tzinfo = UTC) -> datetime:
    """``moment`` with a zone; a naive one is read as UTC (Celery's rule), then shown in
    ``zone``."""
    if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
        return moment.replace(tzinfo=UTC).astimezone(zone)
    return moment


def humanize_seconds(seconds: float) -> str:
    """``10.00 seconds``, ``1.00 minute``, ``2.00 hours``: how Celery shows a frequency."""
    for unit, size in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0), ("second", 1.0)):
        if seconds >= size:
            count = seconds / size
            return f"{count:.2f} {unit}{'' if count == 1 else 's'}"
    return "now"


class BaseSchedule:
    """What the three schedules (interval, crontab, solar) share.

    ``nowfun`` returns the current time (default: the app's clock); ``app`` gives the time
    zone (default: the current app).
    """

    def __init__(self, nowfun: Callable[[], datetime] | None = None, app: Any = None) -> None:
        self.nowfun = nowfun
        self._app = app
        self._tz: tzinfo | None = None

    # -- Celery's surface ----------------------------------------------------------------
    @property
    def app(self) -> Any:
        return self._app if self._app is not None else current.get_current_app()

    @app.setter
    def app(self, app: Any) -> None:
        self._app = app
        self._tz = None

    @property
    def tz(self) -> tzinfo:
        """The zone the schedule is read in: the app's ``timezone``."""
        if self._tz is None:
            self._tz = zone_of(self.app.conf)
        return self._tz

    @property
    def utc_enabled(self) -> bool:
        return _utc_enabled(self.app.conf)

    def now(self) -> datetime:
        """The current time: ``nowfun()`` if given, else now in the app's zone."""
        if self.nowfun is not None:
            return self.nowfun()
        return datetime.now(UTC).astimezone(self.tz)

    def maybe_make_aware(self, dt: datetime, naive_as_utc: bool = True) -> datetime:
        """``dt`` with a zone: a naive one is UTC (or the app's zone with
        ``naive_as_utc=False``)."""
        if dt.tzinfo is not None and dt.tzinfo.utcoffset(dt) is not None:
            return dt
        if naive_as_utc:
            return aware(dt, self.tz)
        return dt.replace(tzinfo=self.tz)

    def to_local(self, dt: datetime) -> datetime:
        """``dt`` in the app's zone."""
        return self.maybe_make_aware(dt).astimezone(self.tz)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Time from now until the first run after ``last_run_at`` (negative when overdue)."""
        following = self.next_after(self.maybe_make_aware(last_run_at))
        if following is None:
            return timedelta(days=366)  # never within the search horizon: ask again later
        return following - self.maybe_make_aware(self.now())

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Celery's ``(is_due, seconds_until_next_check)`` for a task last run at
        ``last_run_at``: when due, the seconds are those until the run after this one."""
        remaining = self.remaining_estimate(last_run_at).total_seconds()
        if remaining > 0:
            return schedstate(False, remaining)
        following = self.remaining_estimate(self.now()).total_seconds()
        return schedstate(True, max(following, 0.0))

    # -- what beat asks ------------------------------------------------------------------
    def next_after(self, moment: datetime) -> datetime | None:
        """The first instant strictly after ``moment`` at which this schedule fires, as an
        aware UTC datetime; None when it never fires again (within a search horizon)."""
        raise NotImplementedError

    def latest_between(self, after: datetime, until: datetime) -> tuple[datetime | None, int]:
        """The latest firing instant in ``(after, until]`` and how many fire there (at
        least that many: beyond a short look-back, only the recent ones are counted)."""
        start = max(after, until - _LOOKBACK)
        while True:
            latest, count = self._scan(start, until)
            if latest is not None or start <= after:
                return latest, count
            start = max(after, until - (until - start) * 16)

    def _scan(self, start: datetime, until: datetime) -> tuple[datetime | None, int]:
        latest, count = None, 0
        moment = self.next_after(start)
        while moment is not None and moment <= until:
            latest, count = moment, count + 1
            moment = self.next_after(moment)
        return latest, count

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BaseSchedule):
            return other.nowfun == self.nowfun
        return NotImplemented

    def __hash__(self) -> int:
        return hash((type(self), self.nowfun))

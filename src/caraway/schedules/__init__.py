"""Schedules for periodic tasks, as ``celery.schedules``: ``schedule`` (an interval),
``crontab``, ``solar``, ``crontab_parser``, ``maybe_schedule`` and ``schedstate``.

Pure (the clock aside): workers, beat and the dashboard all read schedules through here.
Each answers :meth:`BaseSchedule.next_after`, the first instant it fires after a given
one; Celery's ``is_due`` and ``remaining_estimate`` are built on that.
"""

from __future__ import annotations

from caraway.schedules.base import BaseSchedule, InvalidSchedule, schedstate
from caraway.schedules.crontab import ParseException, crontab, crontab_parser
from caraway.schedules.entries import maybe_schedule
from caraway.schedules.interval import schedule
from caraway.schedules.solar import solar

__all__ = [
    "BaseSchedule",
    "InvalidSchedule",
    "ParseException",
    "crontab",
    "crontab_parser",
    "maybe_schedule",
    "schedstate",
    "schedule",
    "solar",
]

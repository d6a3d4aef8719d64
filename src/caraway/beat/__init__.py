"""Periodic tasks: ``caraway beat``, ``caraway worker -B`` and the schedule at runtime.

Any number of beat instances may run; they elect one leader on the broker the app already
has, and each due run is claimed there before it is sent, so it is sent once. The
schedule math is in :mod:`caraway.schedules`; the broker side is each broker's BeatStore.
"""

from __future__ import annotations

from caraway.beat.schedule import namespace_of
from caraway.beat.service import Beat, BeatLazyFunc, EmbeddedBeat
from caraway.beat.status import BeatStatus, EntryStatus, PeriodicTasks, beat_status

#: Celery's name for the service class
Service = Beat

__all__ = [
    "Beat",
    "BeatLazyFunc",
    "BeatStatus",
    "EmbeddedBeat",
    "EntryStatus",
    "PeriodicTasks",
    "Service",
    "beat_status",
    "namespace_of",
]

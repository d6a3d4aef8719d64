"""The schedule from outside beat: what each entry is, when it last ran and runs next, who
leads (``caraway inspect beat``, ``caraway beat list``, the dashboard), and runtime edits
(``caraway beat add|remove``).

Reads the broker's state and the app's own entries; never takes part in the election.
The one thing to know: an entry defined in code cannot be added or removed here, because
the code is the source of truth for the names it defines.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from caraway.beat.schedule import (
    RuntimeEntries,
    check_options,
    code_entries,
    namespace_of,
    new_holder,
    open_store,
)
from caraway.brokers.contracts import BeatEntryState, BeatLeader, BeatStore
from caraway.schedules.base import InvalidSchedule, zone_of
from caraway.schedules.entries import Entry, entry_from_config, entry_spec

if TYPE_CHECKING:
    from caraway.app import Caraway

UTC = timezone.utc


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@dataclass(frozen=True)
class EntryStatus:
    """One entry as the schedule stands: what it sends, and when."""

    name: str
    task: str
    schedule: str
    source: str
    missed: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    options: Mapping[str, Any]
    #: the scheduled instant of the last run sent (None before the first)
    last_run: datetime | None
    last_task_id: str | None
    total_run_count: int
    #: the next scheduled instant (None if the schedule never fires again)
    next_run: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "schedule": self.schedule,
            "source": self.source,
            "missed": self.missed,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "options": dict(self.options),
            "last_run": _iso(self.last_run),
            "last_task_id": self.last_task_id,
            "total_run_count": self.total_run_count,
            "next_run": _iso(self.next_run),
        }


@dataclass(frozen=True)
class BeatStatus:
    """The schedule of one app: its name on the broker, its leader and its entries."""

    namespace: str
    timezone: str
    leader: BeatLeader | None
    entries: list[EntryStatus] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        leader = self.leader
        return {
            "namespace": self.namespace,
            "timezone": self.timezone,
            "leader": None
            if leader is None
            else {
                "node": leader.node,
                "holder": leader.holder,
                "since": leader.since,
                "renewed": leader.renewed,
            },
            "entries": [entry.as_dict() for entry in self.entries],
        }


def _entry_status(entry: Entry, known: BeatEntryState | None, now: datetime) -> EntryStatus:
    mark = datetime.fromtimestamp(known.last_ms / 1000, UTC) if known is not None else now
    last_run = known.last_run if known is not None else None
    return EntryStatus(
        name=entry.name,
        task=entry.task,
        schedule=repr(entry.schedule),
        source=entry.source,
        missed=entry.missed,
        args=tuple(entry.args),
        kwargs=dict(entry.kwargs),
        options=dict(entry.options),
        last_run=None
        if last_run is None
        else datetime.fromtimestamp(last_run.scheduled_ms / 1000, UTC),
        last_task_id=None if last_run is None else last_run.task_id,
        total_run_count=known.count if known is not None else 0,
        next_run=entry.schedule.next_after(mark),
    )


class PeriodicTasks:
    """The app's schedule at runtime: read it, add and remove entries that live on the
    broker (no redeploy needed), as ``caraway beat add|remove|list`` does.

    ``PeriodicTasks(app).add('report', 'proj.tasks.report', crontab(hour=7), args=(1,))``.
    Use it as a context manager, or :meth:`close` it.
    """

    def __init__(self, app: Caraway, *, schedule_filename: str | None = None) -> None:
        self.app = app
        self.schedule_filename = schedule_filename
        self.namespace = namespace_of(app, schedule_filename)
        self._store: BeatStore | None = None

    @property
    def store(self) -> BeatStore:
        if self._store is None:
            self._store = open_store(
                self.app,
                holder=new_holder("reader"),
                node="reader",
                schedule_filename=self.schedule_filename,
            )
        return self._store

    def add(
        self,
        name: str,
        task: str,
        schedule: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        missed: str = "one",
    ) -> Entry:
        """Store an entry (or replace the runtime entry of that name); the leader picks it
        up within a tick. Raises InvalidSchedule for a bad entry, or for a name the code
        defines."""
        self._refuse_code_name(name, "added")
        item = {
            "task": task,
            "schedule": schedule,
            "args": tuple(args),
            "kwargs": dict(kwargs or {}),
            "options": dict(options or {}),
            "missed": missed,
        }
        entry = entry_from_config(name, item, app=self.app, source="runtime")
        check_options(self.app, entry)
        self.store.put_entry(name, entry_spec(entry))
        return entry

    def remove(self, name: str) -> bool:
        """Delete a runtime entry; whether one of that name was known. Raises
        InvalidSchedule for a name the code defines."""
        self._refuse_code_name(name, "removed")
        return self.store.remove_entry(name)

    def _refuse_code_name(self, name: str, done: str) -> None:
        if name in self.app.conf.beat_schedule:
            raise InvalidSchedule(
                f"entry {name!r} is defined in the code (beat_schedule or "
                f"add_periodic_task) and cannot be {done} at runtime; change the code, or "
                "use another name"
            )

    def status(self) -> BeatStatus:
        """The leader and every entry (code and runtime) with its last and next run."""
        code = code_entries(self.app)
        state = self.store.state()
        entries = RuntimeEntries(self.app).merged(code, state.runtime)
        now = datetime.now(UTC)
        listed = [
            _entry_status(entry, state.entries.get(name), now)
            for name, entry in sorted(entries.items())
        ]
        leader = state.leader
        return BeatStatus(self.namespace, str(zone_of(self.app.conf)), leader, listed)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> PeriodicTasks:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def beat_status(app: Caraway, *, schedule_filename: str | None = None) -> BeatStatus:
    """The schedule's leader and entries, read once (the dashboard's and inspect's view)."""
    with PeriodicTasks(app, schedule_filename=schedule_filename) as tasks:
        return tasks.status()


def leader_age(status: BeatStatus) -> float | None:
    """Seconds since the leader last renewed its lease, or None without a leader."""
    return None if status.leader is None else max(0.0, time.time() - status.leader.renewed)

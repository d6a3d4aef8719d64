"""The app's schedule as beat sees it: which entries exist (code first, then runtime), which
schedule on the broker they belong to, and the store that holds its state.

Entries defined in code (``beat_schedule``, ``add_periodic_task``) are the source of truth
for their names: a runtime entry of the same name is ignored (with a warning). Everything
here is checked when beat starts, so a bad entry stops it with a clear error, never at a
tick. The one thing to know: the schedule's name on the broker comes from
``beat_schedule_filename`` and the app's name, so every beat of one app shares one schedule.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from caraway import publish
from caraway.brokers.contracts import BeatStore
from caraway.brokers.registry import open_beat_store
from caraway.exceptions import ImproperlyConfigured
from caraway.schedules.base import InvalidSchedule, zone_of
from caraway.schedules.entries import Entry, entry_from_config, entry_from_spec

if TYPE_CHECKING:
    from caraway.app import Caraway

logger = logging.getLogger("caraway.beat")

#: Celery's scheduler names that mean "the default": caraway's beat is what they get
DEFAULT_SCHEDULERS = frozenset(
    {
        "celery.beat:PersistentScheduler",
        "celery.beat.PersistentScheduler",
        "celery.beat:Scheduler",
        "celery.beat.Scheduler",
        "caraway.beat:Beat",
    }
)
#: suffixes Celery's shelve adds to beat_schedule_filename
_SHELVE_SUFFIXES = (".db", ".dat", ".bak", ".dir")


def namespace_of(app: Caraway, schedule_filename: str | None = None) -> str:
    """The schedule's name on the broker: ``<schedule file's base name>.<app name>``.

    ``-s /var/run/celerybeat-schedule`` on one host and ``-s celerybeat-schedule`` on another
    name the same schedule, so their beats share one leader; two apps on one broker, or two
    ``-s`` names, get separate schedules (as separate files did for Celery).
    """
    name = os.path.basename(str(schedule_filename or app.conf.beat_schedule_filename))
    for suffix in _SHELVE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if not name:
        raise ImproperlyConfigured(
            f"beat_schedule_filename={schedule_filename!r} has no file name to name the schedule by"
        )
    return f"{name}.{app.main or '__main__'}"


def default_node() -> str:
    """Celery's name for a beat node: ``celerybeat@<host>``."""
    return f"celerybeat@{socket.gethostname()}"


def new_holder(node: str) -> str:
    """A lease holder id unique to this process (a restart is a new holder)."""
    return f"{node}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def check_scheduler(app: Caraway, scheduler: str | None = None) -> None:
    """Refuse a custom scheduler class: caraway's beat keeps its state on the broker."""
    name = scheduler or str(app.conf.beat_scheduler)
    if name not in DEFAULT_SCHEDULERS:
        raise ImproperlyConfigured(
            f"beat_scheduler={name!r}: caraway beat does not load scheduler classes; it keeps "
            "the schedule's state on the broker. Remove the setting (or -S), and add entries "
            "that live outside the code with 'caraway beat add' or caraway.beat.PeriodicTasks"
        )


def check_options(app: Caraway, entry: Entry) -> None:
    """Build the entry's message once (without sending it), so options that ``apply_async``
    would refuse fail now, naming the entry."""
    try:
        publish.build(
            entry.task,
            entry.args,
            entry.kwargs,
            entry.options,
            conf=app.conf,
            task=app.tasks.get(entry.task),
        )
    except (TypeError, ValueError) as exc:
        raise InvalidSchedule(
            f"beat_schedule entry {entry.name!r}: 'options' {dict(entry.options)!r}: {exc}"
        ) from None


def code_entries(app: Caraway) -> dict[str, Entry]:
    """The entries the code defines, checked: ``beat_schedule`` (with what
    ``add_periodic_task`` added). Raises ImproperlyConfigured naming the bad one."""
    app.finalize()
    zone_of(app.conf)  # an unknown timezone fails here, not at the first crontab
    schedule: Mapping[str, Any] = app.conf.beat_schedule
    entries = {name: entry_from_config(name, item, app=app) for name, item in schedule.items()}
    for entry in entries.values():
        check_options(app, entry)
    return entries


class RuntimeEntries:
    """Runtime entries read from the broker, parsed once per spec; code shadows them."""

    def __init__(self, app: Caraway) -> None:
        self.app = app
        self._parsed: dict[str, tuple[bytes, Entry | None]] = {}
        self._warned: set[str] = set()

    def merged(self, code: Mapping[str, Entry], specs: Mapping[str, bytes]) -> dict[str, Entry]:
        """Code entries, plus the runtime entries whose names the code does not define."""
        entries: dict[str, Entry] = {}
        for name, spec in specs.items():
            if name in code:
                self._warn_once(
                    name,
                    "beat: runtime entry %r is ignored: beat_schedule defines that name, and "
                    "code is the source of truth for the names it defines",
                    name,
                )
                continue
            entry = self._parse(name, spec)
            if entry is not None:
                entries[name] = entry
        self._parsed = {name: self._parsed[name] for name in specs if name in self._parsed}
        entries.update(code)
        return entries

    def _parse(self, name: str, spec: bytes) -> Entry | None:
        known = self._parsed.get(name)
        if known is not None and known[0] == spec:
            return known[1]
        entry: Entry | None
        try:
            entry = entry_from_spec(name, spec, app=self.app)
        except InvalidSchedule as exc:
            logger.error("beat: runtime entry %r is ignored: %s", name, exc)
            entry = None
        self._parsed[name] = (spec, entry)
        return entry

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)


def open_store(
    app: Caraway,
    *,
    holder: str,
    node: str,
    schedule_filename: str | None = None,
    lease_seconds: float | None = None,
) -> BeatStore:
    """The beat store on the app's broker for this app's schedule (the caller closes it)."""
    return open_beat_store(
        app.broker_url,
        options=app._broker_options(),
        namespace=namespace_of(app, schedule_filename),
        holder=holder,
        node=node,
        lease_seconds=float(lease_seconds or app.conf.beat_lease_seconds),
    )

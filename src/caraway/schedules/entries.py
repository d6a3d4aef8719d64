"""Beat entries: a ``beat_schedule`` item checked into an :class:`Entry`, runtime entries
as JSON specs, and :func:`plan`, the pure decision of which runs are due.

Everything here is checked when it is configured (``app.conf.beat_schedule = ...``,
``add_periodic_task``, ``caraway beat add``), so a bad entry fails with its name, field
and value before beat ever ticks. The one thing to know: a run is identified by its
*scheduled* instant, so every beat instance computes the same runs from the same state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from caraway.schedules.base import UTC, BaseSchedule, InvalidSchedule
from caraway.schedules.crontab import crontab
from caraway.schedules.interval import schedule
from caraway.schedules.solar import solar

#: what a missed run becomes: one catch-up run (Celery's behaviour), none, or every one
MISSED_POLICIES = ("one", "none", "all")
#: the keys a beat_schedule entry may have (Celery's, plus caraway's ``missed``)
ENTRY_KEYS = ("task", "schedule", "args", "kwargs", "options", "relative", "missed")
#: runs a ``missed='all'`` entry sends per tick while it catches up (the rest next tick)
CATCH_UP_BATCH = 100
#: seconds a run may be late and still be sent under ``missed='none'``
ON_TIME = 5.0


@dataclass(frozen=True, eq=False)
class Entry:
    """One periodic task: what to send (task, args, kwargs, options) and when (schedule)."""

    name: str
    task: str
    schedule: BaseSchedule
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    missed: str = "one"
    #: "code" (beat_schedule, add_periodic_task) or "runtime" (stored on the broker)
    source: str = "code"

    def same_call(self, other: Entry) -> bool:
        """Whether ``other`` sends the same thing on the same schedule."""
        return (self.task, self.args, dict(self.kwargs), dict(self.options), self.missed) == (
            other.task,
            other.args,
            dict(other.kwargs),
            dict(other.options),
            other.missed,
        ) and _same_schedule(self.schedule, other.schedule)


def _same_schedule(left: BaseSchedule, right: BaseSchedule) -> bool:
    try:
        return bool(left == right)
    except Exception:  # a user's schedule with a broken __eq__: treat as changed
        return False


def maybe_schedule(value: Any, relative: bool = False, app: Any = None) -> BaseSchedule:
    """A schedule from seconds, a timedelta or a schedule object (Celery's helper)."""
    if isinstance(value, BaseSchedule):
        if app is not None:
            value.app = app
        if type(value).next_after is BaseSchedule.next_after:
            raise InvalidSchedule(
                f"schedule={value!r}: a custom schedule must implement next_after(moment), "
                "the first instant it fires after a given one"
            )
        return value
    if isinstance(value, (int, float, timedelta)) and not isinstance(value, bool):
        return schedule(value, relative=relative, app=app)
    if type(value).__module__.startswith("celery."):
        raise InvalidSchedule(
            f"schedule={value!r} is Celery's own object: import {type(value).__name__} from "
            "caraway.schedules instead of celery.schedules"
        )
    raise InvalidSchedule(
        f"schedule={value!r}: use a number of seconds, a timedelta, crontab(...), "
        "solar(...) or schedule(...)"
    )


def entry_from_config(
    name: str, value: Any, *, app: Any = None, source: str = "code", missed: str = "one"
) -> Entry:
    """Check one ``beat_schedule`` item; InvalidSchedule naming the entry, field and value."""
    where = f"beat_schedule entry {name!r}"
    if not isinstance(name, str) or not name:
        raise InvalidSchedule(f"beat_schedule entry name {name!r}: must be a non-empty string")
    if not isinstance(value, Mapping):
        raise InvalidSchedule(f"{where}: must be a dict with 'task' and 'schedule', got {value!r}")
    unknown = sorted(set(value) - set(ENTRY_KEYS))
    if unknown:
        raise InvalidSchedule(
            f"{where}: unknown key(s) {unknown}; an entry takes {', '.join(ENTRY_KEYS)}"
        )
    task = value.get("task")
    if not isinstance(task, str) or not task:
        raise InvalidSchedule(f"{where}: 'task' must be a task name, got {task!r}")
    if "schedule" not in value:
        raise InvalidSchedule(f"{where}: 'schedule' is missing")
    try:
        when = maybe_schedule(value["schedule"], bool(value.get("relative", False)), app)
    except InvalidSchedule as exc:
        raise InvalidSchedule(f"{where}: {exc}") from None
    return Entry(
        name=name,
        task=task,
        schedule=when,
        args=_args(where, value.get("args")),
        kwargs=_mapping(where, "kwargs", value.get("kwargs")),
        options=_mapping(where, "options", value.get("options")),
        missed=_missed(where, value.get("missed", missed)),
        source=source,
    )


def _args(where: str, value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise InvalidSchedule(f"{where}: 'args' must be a list or tuple, got {value!r}")
    return tuple(value)


def _mapping(where: str, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidSchedule(f"{where}: {key!r} must be a dict with str keys, got {value!r}")
    return dict(value)


def _missed(where: str, value: Any) -> str:
    if value not in MISSED_POLICIES:
        raise InvalidSchedule(
            f"{where}: 'missed' must be one of {', '.join(MISSED_POLICIES)}, got {value!r}"
        )
    return str(value)


def check_beat_schedule(value: Any) -> dict[str, Any]:
    """The ``beat_schedule`` setting's check: every entry is valid (the dict is kept as given)."""
    if not isinstance(value, Mapping):
        raise InvalidSchedule(f"beat_schedule must be a dict of entries, got {value!r}")
    for name, item in value.items():
        entry_from_config(name, item)
    return dict(value)


def periodic_task_entry(
    schedule_: Any,
    sig: Any,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    name: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """``app.add_periodic_task``'s entry: ``(key, beat_schedule item)``, checked.

    ``sig`` is a signature (``add.s(2, 2)``: partial ``args`` are prepended, as Celery's
    ``clone`` does), a task, or a task name. The key is ``name`` or ``repr(sig)``.
    """
    if isinstance(sig, Mapping) and "task" in sig and hasattr(sig, "clone"):
        sig = sig.clone(tuple(args or ()), dict(kwargs or {}))
        task, call_args = str(sig["task"]), tuple(sig.get("args") or ())
        call_kwargs = dict(sig.get("kwargs") or {})
        merged = {**dict(sig.get("options") or {}), **dict(options or {})}
    else:
        named = sig if isinstance(sig, str) else getattr(sig, "name", None)
        if not isinstance(named, str):
            raise InvalidSchedule(
                f"add_periodic_task: {sig!r} is not a signature, a task or a task name"
            )
        task = named
        call_args, call_kwargs = tuple(args or ()), dict(kwargs or {})
        merged = dict(options or {})
        sig = f"{task}({', '.join(repr(a) for a in call_args)})"
    key = name or repr(sig)
    item = {
        "schedule": schedule_,
        "task": task,
        "args": call_args,
        "kwargs": call_kwargs,
        "options": merged,
    }
    entry_from_config(key, item)
    return key, item


# -- runtime entries: stored on the broker as JSON -------------------------------------


def schedule_spec(value: BaseSchedule) -> dict[str, Any]:
    """A schedule as JSON data; InvalidSchedule for a kind that cannot be stored."""
    if isinstance(value, crontab):
        return {
            "crontab": [
                _field(value._orig_minute),
                _field(value._orig_hour),
                _field(value._orig_day_of_week),
                _field(value._orig_day_of_month),
                _field(value._orig_month_of_year),
            ]
        }
    if isinstance(value, schedule):
        return {"every": value.run_every.total_seconds(), "relative": value.relative}
    if isinstance(value, solar):
        return {"solar": [value.event, value.lat, value.lon]}
    raise InvalidSchedule(
        f"schedule={value!r}: runtime entries take intervals, crontab or solar schedules"
    )


def _field(spec: Any) -> Any:
    return spec if isinstance(spec, (int, str)) else sorted(spec)


def schedule_from_spec(spec: Mapping[str, Any]) -> BaseSchedule:
    if "crontab" in spec:
        minute, hour, day_of_week, day_of_month, month_of_year = spec["crontab"]
        return crontab(minute, hour, day_of_week, day_of_month, month_of_year)
    if "every" in spec:
        return schedule(float(spec["every"]), relative=bool(spec.get("relative", False)))
    if "solar" in spec:
        event, lat, lon = spec["solar"]
        return solar(str(event), float(lat), float(lon))
    raise InvalidSchedule(f"stored schedule {dict(spec)!r} is of no known kind")


def entry_spec(entry: Entry) -> bytes:
    """``entry`` as the JSON a broker stores for a runtime entry."""
    document = {
        "task": entry.task,
        "schedule": schedule_spec(entry.schedule),
        "args": list(entry.args),
        "kwargs": dict(entry.kwargs),
        "options": dict(entry.options),
        "missed": entry.missed,
    }
    try:
        return json.dumps(document, sort_keys=True).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidSchedule(
            f"runtime entry {entry.name!r}: args, kwargs and options must be JSON data ({exc})"
        ) from None


def entry_from_spec(name: str, raw: bytes, *, app: Any = None) -> Entry:
    """A runtime entry back from its JSON; InvalidSchedule if it cannot be read."""
    try:
        document = json.loads(raw)
        item = dict(document, schedule=schedule_from_spec(document["schedule"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidSchedule(f"runtime entry {name!r} cannot be read: {exc!r}") from None
    return entry_from_config(name, item, app=app, source="runtime")


# -- which runs are due ------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What one entry does this tick: the runs to send (scheduled instants) and the new
    mark (the latest scheduled instant consumed, sent or skipped)."""

    runs: tuple[datetime, ...]
    mark: datetime
    skipped: int = 0


def plan(
    when: BaseSchedule,
    last: datetime | None,
    now: datetime,
    *,
    missed: str = "one",
    deadline: float | None = None,
) -> Plan | None:
    """The runs of a schedule last consumed at ``last`` that are due at ``now``; None when
    nothing is due. With no ``last`` (a new entry), the mark starts at ``now``, as Celery
    starts a new entry's clock when beat loads it.

    ``missed``: ``one`` sends only the latest due run (a catch-up after downtime, Celery's
    behaviour), ``none`` sends it only if it is at most ON_TIME seconds late, ``all`` sends
    every due run in order (CATCH_UP_BATCH per tick). ``deadline`` (seconds,
    ``beat_cron_starting_deadline``) drops a catch-up run later than that.
    """
    now = now.astimezone(UTC)
    if last is None:
        return Plan((), now)
    first = when.next_after(last)
    if first is None or first > now:
        return None
    if missed == "all":
        runs = [first]
        following = when.next_after(first)
        while following is not None and following <= now and len(runs) < CATCH_UP_BATCH:
            runs.append(following)
            following = when.next_after(following)
        return Plan(tuple(runs), runs[-1])
    latest, count = when.latest_between(last, now)
    latest = latest or first
    late = (now - latest).total_seconds()
    send = missed == "one" or late <= ON_TIME
    if deadline is not None and late > deadline:
        send = False
    return Plan((latest,) if send else (), latest, max(count, 1) - (1 if send else 0))

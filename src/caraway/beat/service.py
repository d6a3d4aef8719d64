"""The beat service: one instance of ``caraway beat`` or of a ``worker -B``.

Every instance ticks; only the one holding the schedule's lease on the broker sends. A
tick reads the state, asks :func:`caraway.schedules.entries.plan` which runs are due,
claims them on the broker (:meth:`BeatStore.advance`, the fence), and only then sends
them through the app's publish path, with Celery's headers plus the entry's name and the
run's scheduled instant. The one thing to know: claim first, send second, so a crash
between the two loses one run and a failover can never send one twice.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from caraway import signals
from caraway.beat.control import BeatControl
from caraway.beat.schedule import (
    RuntimeEntries,
    check_scheduler,
    code_entries,
    default_node,
    new_holder,
    open_store,
)
from caraway.brokers.contracts import BeatAdvance, BeatRun, BeatState, BeatStore
from caraway.events.dispatcher import EventDispatcher
from caraway.exceptions import CarawayError, SerializationError
from caraway.schedules.crontab import crontab
from caraway.schedules.entries import Entry, plan

if TYPE_CHECKING:
    from caraway.app import Caraway

logger = logging.getLogger("caraway.beat")

UTC = timezone.utc
#: Celery's default for beat_max_loop_interval (0): five minutes
DEFAULT_MAX_INTERVAL = 300.0
#: seconds between retries after the broker failed, growing to the lease length
ERROR_PAUSE = 1.0


def to_ms(moment: datetime) -> int:
    return math.floor(moment.timestamp() * 1000)


def from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


class BeatLazyFunc:
    """An argument evaluated when the run is sent, as Celery's ``celery.beat.BeatLazyFunc``:
    ``'kwargs': {'when': BeatLazyFunc(datetime.now)}``. Code entries only."""

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._func = func
        self._args = args
        self._kwargs = kwargs

    def __call__(self) -> Any:
        return self.delay()

    def delay(self) -> Any:
        return self._func(*self._args, **self._kwargs)


def _evaluated(value: Any) -> Any:
    return value() if isinstance(value, BeatLazyFunc) else value


class Beat:
    """Runs the app's periodic tasks: ``Beat(app).run()`` until :meth:`stop`.

    ``node`` is the name shown as leader (default ``celerybeat@<host>``); ``max_interval``
    caps how long a tick sleeps (``beat_max_loop_interval``, default 300 s; the lease is
    renewed more often regardless); ``schedule_filename`` names the schedule on the broker
    (``beat_schedule_filename``). ``embedded`` marks a ``worker -B`` beat.
    """

    def __init__(
        self,
        app: Caraway,
        *,
        node: str | None = None,
        max_interval: float | None = None,
        schedule_filename: str | None = None,
        scheduler: str | None = None,
        remote_control: bool | None = None,
        embedded: bool = False,
        lease_seconds: float | None = None,
    ) -> None:
        conf = app.conf
        self.app = app
        self.node = node or default_node()
        self.max_interval = float(
            max_interval or conf.beat_max_loop_interval or DEFAULT_MAX_INTERVAL
        )
        self.schedule_filename = schedule_filename or str(conf.beat_schedule_filename)
        self.scheduler = scheduler
        self.remote_control = (
            bool(conf.beat_enable_remote_control) if remote_control is None else remote_control
        )
        self.embedded = embedded
        self.lease_seconds = float(lease_seconds or conf.beat_lease_seconds)
        self.holder = new_holder(self.node)
        self.entries: dict[str, Entry] = {}
        self.store: BeatStore | None = None
        self.leading = False
        self.last_tick: float | None = None
        self._runtime = RuntimeEntries(app)
        #: entry -> ((its mark in ms, its schedule's id), the first run after the mark)
        self._next: dict[str, tuple[tuple[int, int], datetime | None]] = {}
        self._stop = threading.Event()
        self._failures = 0
        self._events: EventDispatcher | None = None
        self._control: BeatControl | None = None

    # -- life ----------------------------------------------------------------------------
    def check(self) -> None:
        """Read and check the schedule (entries, options, time zone, scheduler); raises
        ImproperlyConfigured naming what is wrong. Opens no connection."""
        check_scheduler(self.app, self.scheduler)
        self.entries = code_entries(self.app)

    def open(self) -> None:
        """Check the schedule, then open the broker store (and remote control)."""
        if self.store is not None:
            return
        self.check()
        self.store = open_store(
            self.app,
            holder=self.holder,
            node=self.node,
            schedule_filename=self.schedule_filename,
            lease_seconds=self.lease_seconds,
        )
        if self.remote_control:
            self._control = BeatControl(self)
            self._control.start()

    def run(self) -> None:
        """Tick until :meth:`stop`; gives the lease up on the way out."""
        self.open()
        logger.info(
            "beat: Starting %s with %d entr%s from the code (max interval %.0fs)",
            self.node,
            len(self.entries),
            "y" if len(self.entries) == 1 else "ies",
            self.max_interval,
        )
        signals.beat_init.send(sender=self)
        if self.embedded:
            signals.beat_embedded_init.send(sender=self)
        try:
            while not self._stop.is_set():
                delay = self.tick()
                self._stop.wait(delay)
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Give the lease up (so a standby takes over at once) and close everything."""
        if self._control is not None:
            self._control.stop()
            self._control = None
        store, self.store = self.store, None
        if store is not None:
            try:
                if self.leading:
                    store.resign()
                    logger.info("beat: %s gave up the lead", self.node)
            except CarawayError as exc:
                logger.warning("beat: could not give up the lead (it lapses by itself): %s", exc)
            finally:
                store.close()
        self.leading = False
        if self._events is not None:
            self._events.close()
            self._events = None

    # -- ticking -------------------------------------------------------------------------
    def tick(self, now: datetime | None = None) -> float:
        """One pass: lead or stand by, send what is due; returns seconds until the next."""
        self.last_tick = time.monotonic()
        try:
            delay = self._tick(now or datetime.now(UTC))
        except Exception as exc:
            return self._failed(exc)
        self._failures = 0
        return delay

    def _failed(self, exc: Exception) -> float:
        self._failures += 1
        if self.leading:
            logger.error("beat: %s lost the lead: %s", self.node, exc)
        self.leading = False
        if isinstance(exc, CarawayError):
            logger.warning("beat: the broker failed (%s); trying again", exc)
        else:
            logger.exception("beat: tick failed; trying again")
        return min(ERROR_PAUSE * self._failures, max(self.lease_seconds, ERROR_PAUSE))

    def _tick(self, now: datetime) -> float:
        store = self.store
        assert store is not None, "open() the beat first"
        leading = store.lead()
        if leading != self.leading:
            logger.info(
                "beat: %s %s the schedule",
                self.node,
                "now leads" if leading else "no longer leads",
            )
            self.leading = leading
        renew = max(self.lease_seconds / 3.0, 0.05)
        if not leading:
            return min(renew, 1.0, self.max_interval)
        state = store.state()
        entries = self._runtime.merged(self.entries, state.runtime)
        gone = [name for name in state.entries if name not in entries]
        if gone:
            store.forget(gone)
        marks = self._advance(store, state, entries, now)
        if marks is None:
            return 0.05  # another leader moved an entry on: read the state again
        return min(self._until_next(entries, marks, now), renew, self.max_interval)

    def _advance(
        self, store: BeatStore, state: BeatState, entries: dict[str, Entry], now: datetime
    ) -> dict[str, datetime] | None:
        """Claim and send what is due; the entries' marks after it, or None if a claim
        was refused."""
        deadline = self.app.conf.beat_cron_starting_deadline
        marks: dict[str, datetime] = {}
        changes: list[tuple[Entry, BeatAdvance, int]] = []
        for name, entry in entries.items():
            known = state.entries.get(name)
            last = None
            if known is not None:
                last = marks[name] = from_ms(known.last_ms)
                following = self._following(name, entry, known.last_ms)
                if following is None or following > now:
                    continue  # nothing due: the common case, without planning
            cron_deadline = deadline if isinstance(entry.schedule, crontab) else None
            due = plan(entry.schedule, last, now, missed=entry.missed, deadline=cron_deadline)
            if due is None:
                continue
            runs = tuple(
                BeatRun(to_ms(run), str(uuid.uuid4()), self.holder, time.time()) for run in due.runs
            )
            expected = known.last_ms if known is not None else None
            changes.append((entry, BeatAdvance(name, expected, to_ms(due.mark), runs), due.skipped))
            marks[name] = due.mark
        if not changes:
            return marks
        applied = store.advance([change for _, change, _ in changes])
        claimed = [change for ok, change in zip(applied, changes, strict=True) if ok]
        self._send_claimed(claimed)
        return marks if all(applied) else None

    def _following(self, name: str, entry: Entry, last_ms: int) -> datetime | None:
        """``entry``'s first run after ``last_ms``, remembered until its mark moves."""
        key = (last_ms, id(entry.schedule))
        cached = self._next.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        following = entry.schedule.next_after(from_ms(last_ms))
        self._next[name] = (key, following)
        return following

    def _until_next(
        self, entries: dict[str, Entry], marks: dict[str, datetime], now: datetime
    ) -> float:
        soonest = self.max_interval
        for name, entry in entries.items():
            mark = marks.get(name)
            if mark is None:
                following = entry.schedule.next_after(now)
            else:
                following = self._following(name, entry, to_ms(mark))
            if following is not None:
                soonest = min(soonest, (following - now).total_seconds())
        for name in [name for name in self._next if name not in entries]:
            del self._next[name]
        return max(soonest, 0.0)

    # -- sending -------------------------------------------------------------------------
    def _send_claimed(self, claimed: list[tuple[Entry, BeatAdvance, int]]) -> None:
        """Send the claimed runs in one round trip; if one of them cannot be encoded
        (nothing was sent then), each on its own, so one bad entry costs only its runs."""
        runs: list[tuple[Entry, BeatRun]] = []
        for entry, change, skipped in claimed:
            if skipped:
                logger.warning(
                    "beat: %s: %d missed run(s) not sent (missed=%r)",
                    entry.name,
                    skipped,
                    entry.missed,
                )
            runs.extend((entry, run) for run in change.runs)
        if not runs:
            return
        if len(runs) > 1:
            try:
                with self.app.publishing_batch():
                    for entry, run in runs:
                        self._apply(entry, run)
            except (SerializationError, TypeError, ValueError):
                pass  # encoded before anything was sent: send them one by one below
            except Exception:
                for entry, run in runs:
                    self._lost(entry, run)
                return
            else:
                for entry, run in runs:
                    self._event(entry, run)
                return
        for entry, run in runs:
            self.send(entry, run)

    def send(self, entry: Entry, run: BeatRun) -> None:
        """Send one claimed run as any other call of its task (the task's own routing
        unless the entry's options say otherwise), with Celery's beat header and the
        entry's name and scheduled instant as headers."""
        try:
            self._apply(entry, run)
        except Exception:
            self._lost(entry, run)
            return
        self._event(entry, run)

    def _apply(self, entry: Entry, run: BeatRun) -> None:
        options = dict(entry.options)
        headers = dict(options.pop("headers", None) or {})
        headers.update(
            celery_beat_task=True,
            periodic_task_name=entry.name,
            periodic_task_scheduled=from_ms(run.scheduled_ms).isoformat(),
        )
        args = [_evaluated(value) for value in entry.args]
        kwargs = {key: _evaluated(value) for key, value in entry.kwargs.items()}
        logger.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        task = self.app.tasks.get(entry.task)
        if task is not None:
            task.apply_async(args, kwargs, task_id=run.task_id, headers=headers, **options)
        else:
            self.app.send_task(
                entry.task, args, kwargs, task_id=run.task_id, headers=headers, **options
            )

    @staticmethod
    def _lost(entry: Entry, run: BeatRun) -> None:
        logger.exception(
            "beat: %s: the run scheduled at %s (task id %s) was claimed but could not be "
            "sent; it is lost",
            entry.name,
            from_ms(run.scheduled_ms).isoformat(),
            run.task_id,
        )

    def _event(self, entry: Entry, run: BeatRun) -> None:
        if self._events is None:
            self._events = EventDispatcher(self.app, hostname=self.node)
        self._events.send(
            "beat-sent",
            entry=entry.name,
            task=entry.task,
            uuid=run.task_id,
            scheduled=run.scheduled_ms / 1000,
            leader=self.node,
        )


class EmbeddedBeat:
    """``worker -B``: a :class:`Beat` on a thread of the worker's supervisor (never in a
    pool child), started when the node is ready and stopped with it.

    The schedule is checked when this is made, so a bad entry stops the worker before it
    starts. Safe on every node: the instances elect one leader on the broker.
    """

    def __init__(self, app: Caraway, **options: Any) -> None:
        self.beat = Beat(app, embedded=True, **options)
        self.beat.check()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.beat.open()
        self._thread = threading.Thread(target=self._run, name="caraway-beat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.beat.run()
        except Exception:
            logger.exception("beat: the embedded beat stopped; this node no longer schedules")

    def stop(self, *, wait: bool = True, timeout: float = 10.0) -> None:
        """Stop ticking; with ``wait``, until the lease is given up (or ``timeout``)."""
        self.beat.stop()
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

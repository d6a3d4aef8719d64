"""EventDispatcher: Celery-format events sent off the caller's thread, task events batched.

``send()`` only builds a dict and appends it to a buffer; a background thread (one per
process, started on first use, so a forked child makes its own) publishes ``task-*``
events as one ``task.multi`` message per flush and every other event on its own routing
key. Broker failures are logged (rate-limited) and retried; they never reach the caller.
``bus_for(app)`` opens the app's event bus with its event settings (``settings_of``).
"""

from __future__ import annotations

import atexit
import logging
import os
import platform
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Any

from caraway._version import __version__
from caraway.brokers.contracts import BusSettings, EventBus
from caraway.brokers.registry import open_bus
from caraway.exceptions import ImproperlyConfigured
from caraway.protocol import events as proto
from caraway.protocol.message import default_origin
from caraway.protocol.serializers import signing_ready
from caraway.taskbase import AppLike

logger = logging.getLogger("caraway.events")


def settings_of(app: AppLike) -> BusSettings:
    """The app's event settings, with Celery's defaults for unset ones."""
    conf = app.conf
    return BusSettings(
        exchange=str(conf.event_exchange or proto.EXCHANGE),
        queue_prefix=str(conf.event_queue_prefix or "celeryev"),
        queue_ttl=float(conf.event_queue_ttl if conf.event_queue_ttl is not None else 5.0),
        queue_expires=float(
            conf.event_queue_expires if conf.event_queue_expires is not None else 60.0
        ),
    )


def bus_for(app: AppLike) -> EventBus:
    """A new event bus on ``app``'s broker (the caller closes it)."""
    options = dict(app.conf.broker_transport_options)
    if app.conf.broker_use_ssl:
        options.setdefault("ssl", app.conf.broker_use_ssl)
    return open_bus(app.broker_url, options, settings=settings_of(app))


#: what worker events say about the software (Celery sends "py-celery", its version, OS)
SW_IDENT = "py-caraway"
SW_SYS = platform.system()

#: seconds between flushes of buffered task events (Celery flushes every loop tick)
FLUSH_INTERVAL = 0.2
#: a buffer this long wakes the flusher at once (each wake takes the GIL from the worker
#: for a while: a 2-core drain with events showed it; the interval bounds the delay anyway)
BUFFER_LIMIT = 500
#: events per task.multi message
BATCH_SIZE = 500
#: events kept while the broker is unreachable; older ones are dropped beyond this
MAX_BUFFER = 10_000
#: seconds a caller leaves publishing to the flusher after a failure (a broker that is
#: down must not cost the worker's consumer a connection attempt per batch)
_CALLER_PAUSE = 5.0
#: at most one warning per this many seconds while the broker keeps failing
_WARN_EVERY = 30.0


#: this process's pid, kept by a fork hook: os.getpid() is a system call, and send() runs
#: per event (three per task)
class _Process:
    pid = os.getpid()

    @classmethod
    def forked(cls) -> None:
        cls.pid = os.getpid()


os.register_at_fork(after_in_child=_Process.forked)

#: event type -> its group, for the few types a process sends (send() runs per event)
_GROUPS: dict[str, str] = {}


class _Outbox:
    """One process's buffer, flusher thread and bus (rebuilt after fork)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.buffer: deque[dict[str, Any]] = deque()
        self.wake = threading.Event()
        self.cond = threading.Condition()
        self.queued = 0
        self.done = 0
        self.dropped = 0
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.bus: EventBus | None = None
        #: held by whoever publishes: the flusher thread, or a caller draining a full batch
        self.drain_lock = threading.Lock()
        #: after a failed publish, callers leave the retries to the flusher until then
        self.caller_pause_until = 0.0


class EventDispatcher:
    """Sends events for ``hostname`` on ``app``'s broker.

    ``enabled`` may be flipped at any time (``enable_events``/``disable_events``); a send
    while disabled does nothing. ``group`` (``"worker"``) limits sending to one event
    group, as Celery does for a worker without ``-E``. ``buffer_group`` names the groups
    batched as ``<group>.multi``; others are published singly.
    """

    def __init__(
        self,
        app: AppLike,
        hostname: str | None = None,
        enabled: bool = True,
        group: str | None = None,
        *,
        buffer_group: tuple[str, ...] = ("task",),
        flush_interval: float = FLUSH_INTERVAL,
        bus_factory: Any = None,
        caller_flushes: bool = False,
        serializer: str | None = None,
    ) -> None:
        self.app = app
        #: 'auth' signs every event message (``event_serializer``, as Celery's dispatcher)
        self.serializer = serializer or str(app.conf.event_serializer)
        if self.serializer == "auth" and not signing_ready():
            raise ImproperlyConfigured(
                "event_serializer='auth' signs events with the key app.setup_security() "
                "loads; call it where the app is created (or drop event_serializer)"
            )
        self.hostname = hostname or default_origin()
        self.enabled = enabled
        self.group = group
        self.buffer_group = buffer_group
        self.flush_interval = flush_interval
        self.clock = proto.LamportClock()
        self.offset = proto.utcoffset()
        self._bus_factory = bus_factory or bus_for
        self.caller_flushes = caller_flushes
        self._outbox = _Outbox()
        self._pid = self._outbox.pid
        self._lock = threading.Lock()
        self._next_warning = 0.0
        self._closed = False

    # -- the caller's side: cheap, never blocks on I/O --------------------------------------
    def send(self, event_type: str, **fields: Any) -> dict[str, Any] | None:
        """Queue one event; returns the document, or None when nothing is sent."""
        if not self.enabled or self._closed:
            return None
        group = _GROUPS.get(event_type)
        if group is None:
            group = proto.group_of(event_type)
            if len(_GROUPS) < 64:  # the task and worker types, and a few custom ones
                _GROUPS[event_type] = group
        if self.group is not None and group != self.group:
            return None
        if event_type in proto.WORKER_EVENTS:
            fields.setdefault("sw_ident", SW_IDENT)
            fields.setdefault("sw_ver", __version__)
            fields.setdefault("sw_sys", SW_SYS)
        pid = _Process.pid
        event = proto.build_event(
            event_type,
            hostname=self.hostname,
            pid=pid,
            clock=self.clock.forward(),
            offset=self.offset,
            fields=fields,
        )
        box = self._outbox if pid == self._pid else self._after_fork(pid)
        if len(box.buffer) >= MAX_BUFFER:
            box.buffer.popleft()
            box.dropped += 1
        box.buffer.append(event)
        box.queued += 1
        if box.thread is None:
            self._start(box)
        batched = group in self.buffer_group
        if batched and self.caller_flushes:
            # A worker's consumer publishes a full batch itself, between two tasks: waking
            # the flusher instead made the consumer hand it the GIL and then wait, on a busy
            # machine, for the flusher to be scheduled (a drain with -E lost a quarter of
            # its rate). The flusher's timer still sends a trickle.
            if (
                len(box.buffer) >= BATCH_SIZE
                and box.caller_pause_until <= time.monotonic()
                and box.drain_lock.acquire(blocking=False)
            ):
                try:
                    if not self._drain(box, pause_on_failure=False):
                        box.caller_pause_until = time.monotonic() + _CALLER_PAUSE
                finally:
                    box.drain_lock.release()
            return event
        # is_set() first: set() takes a lock and notifies even when already set
        wake = not batched or len(box.buffer) >= BUFFER_LIMIT
        if wake and not box.wake.is_set():
            box.wake.set()
        return event

    def _after_fork(self, pid: int) -> _Outbox:
        # The parent's thread and connection do not exist here; start afresh.
        with self._lock:
            if self._pid != pid:
                self._outbox = _Outbox()
                self._pid = pid
                self.clock = proto.LamportClock(self.clock.value)
            return self._outbox

    def _start(self, box: _Outbox) -> None:
        with self._lock:
            if box.thread is not None:
                return
            box.thread = threading.Thread(
                target=self._run, args=(box,), name="caraway-events", daemon=True
            )
            box.thread.start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is published; False if ``timeout`` passed."""
        box = self._outbox
        if box.pid != os.getpid() or box.thread is None:
            return True
        target = box.queued
        box.wake.set()
        deadline = time.monotonic() + timeout
        with box.cond:
            while box.done < target:
                left = deadline - time.monotonic()
                if left <= 0 or not box.thread.is_alive():
                    return False
                box.cond.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Flush (up to ``timeout``), stop the thread and close the connection."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        box = self._outbox
        box.stopping = True
        box.wake.set()
        if box.thread is not None and box.pid == os.getpid():
            box.thread.join(timeout)

    # -- the flusher thread ----------------------------------------------------------------
    def _run(self, box: _Outbox) -> None:
        try:
            while not box.stopping:
                box.wake.wait(self.flush_interval)
                box.wake.clear()
                with box.drain_lock:
                    self._drain(box)
            with box.drain_lock:
                self._drain(box)  # whatever close() raced with
        finally:
            bus, box.bus = box.bus, None
            if bus is not None:
                self._quietly(bus.close)

    def _drain(self, box: _Outbox, *, pause_on_failure: bool = True) -> bool:
        """Publish what is buffered; False when some could not go (they stay buffered)."""
        pending: list[dict[str, Any]] = []
        while box.buffer:
            pending.append(box.buffer.popleft())
        if not pending:
            return True
        failed = self._publish_all(box, pending)
        if failed:
            # put back what did not go out, oldest first, and try again next tick
            box.buffer.extendleft(reversed(failed))
            if pause_on_failure and not box.stopping:
                time.sleep(min(1.0, self.flush_interval * 5))
        with box.cond:
            box.done += len(pending) - len(failed)
            box.cond.notify_all()
        return not failed

    def _publish_all(self, box: _Outbox, pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Publish ``pending`` in order; return the events that could not be sent."""
        batch: list[dict[str, Any]] = []
        sent = 0
        for index, event in enumerate(pending):
            group = proto.group_of(event["type"])
            if group in self.buffer_group:
                batch.append(event)
                continue
            if batch and not self._send_batch(box, batch):
                return pending[sent:]
            sent, batch = index, []
            if not self._send_one(box, event):
                return pending[sent:]
            sent = index + 1
        if batch and not self._send_batch(box, batch):
            return pending[sent:]
        return []

    def _send_batch(self, box: _Outbox, batch: list[dict[str, Any]]) -> bool:
        key = f"{proto.group_of(batch[0]['type'])}.multi"
        for chunk in proto.batches(batch, BATCH_SIZE):
            message = proto.encode(chunk, hostname=self.hostname, serializer=self.serializer)
            if not self._publish(box, message, key):
                return False
        return True

    def _send_one(self, box: _Outbox, event: dict[str, Any]) -> bool:
        message = proto.encode(event, hostname=self.hostname, serializer=self.serializer)
        return self._publish(box, message, proto.routing_key(event["type"]))

    def _publish(self, box: _Outbox, message: Any, routing_key: str) -> bool:
        try:
            if box.bus is None:
                box.bus = self._bus_factory(self.app)
            box.bus.publish(message, routing_key=routing_key)
            return True
        except Exception as exc:  # any broker failure: the worker must never see it
            bus, box.bus = box.bus, None
            if bus is not None:
                self._quietly(bus.close)
            self._warn(box, exc)
            return False

    def _warn(self, box: _Outbox, exc: BaseException) -> None:
        now = time.monotonic()
        if now >= self._next_warning:
            self._next_warning = now + _WARN_EVERY
            logger.warning(
                "cannot send events from %s (%d waiting, %d dropped so far); retrying: %s",
                self.hostname,
                len(box.buffer),
                box.dropped,
                exc,
            )

    @staticmethod
    def _quietly(close: Any) -> None:
        try:
            close()
        except Exception as exc:  # closing a broken connection; nothing left to save
            logger.debug("closing an event bus: %s", exc)


_SENT_DISPATCHERS: weakref.WeakKeyDictionary[Any, EventDispatcher] = weakref.WeakKeyDictionary()
_SENT_LOCK = threading.Lock()


def _sent_dispatcher(app: AppLike) -> EventDispatcher:
    with _SENT_LOCK:
        dispatcher = _SENT_DISPATCHERS.get(app)
        if dispatcher is None:
            # Celery publishes task-sent singly on "task.sent" (vectors/event-task-sent.json)
            dispatcher = EventDispatcher(app, buffer_group=())
            _SENT_DISPATCHERS[app] = dispatcher
            atexit.register(_flush_at_exit, weakref.ref(dispatcher))
        return dispatcher


def _flush_at_exit(ref: weakref.ref[EventDispatcher]) -> None:
    dispatcher = ref()
    if dispatcher is not None:
        # a short-lived client would otherwise exit with its task-sent events unsent
        dispatcher.close(timeout=2.0)


def send_task_sent(app: AppLike, message_fields: Mapping[str, Any]) -> None:
    """Send ``task-sent`` for one published task when ``task_send_sent_event`` is on.

    ``message_fields`` are the event's fields (see ``protocol.events.task_sent_fields``).
    Costs one setting lookup when the setting is off.
    """
    if not app.conf.task_send_sent_event:
        return
    _sent_dispatcher(app).send("task-sent", **message_fields)

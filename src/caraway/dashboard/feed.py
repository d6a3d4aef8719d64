"""Where the dashboard's data comes from: an event source, remote control, the broker.

``EventSource`` is the one seam: anything with ``itercapture()`` yielding Celery-format
event dicts (``caraway.events.EventReceiver`` when present, ``QueueFeed`` in tests).
``Monitor`` runs two daemon threads: one feeds events into the Cluster and reopens the
source with backoff when the broker goes away; one polls remote control and queue sizes
and saves the history (store.py) every ``save_interval`` seconds and at stop.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, Protocol

from caraway import states
from caraway.brokers.contracts import Backend, QueueAdmin
from caraway.clients.urls import mask_url
from caraway.dashboard.model import Cluster
from caraway.dashboard.store import HistoryStore
from caraway.events.receiver import EventReceiver
from caraway.exceptions import BackendError
from caraway.protocol.message import safe_repr
from caraway.protocol.results import decode_document

logger = logging.getLogger("caraway.dashboard")

_BACKOFF_START = 0.5
_BACKOFF_MAX = 5.0
#: a task silent this long in a state that is not final is looked up in the result backend
_SETTLE_AFTER = 15.0
_SETTLE_BATCH = 200


class EventSource(Protocol):
    """Yields event dicts until ``stop()``; reconnects itself or raises on broker loss."""

    def itercapture(
        self, limit: int | None = None, timeout: float | None = None
    ) -> Iterator[dict[str, Any]]: ...

    def stop(self) -> None: ...


class QueueFeed:
    """An in-memory EventSource: ``push()`` events, ``itercapture()`` yields them."""

    def __init__(self) -> None:
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def push(self, *events: dict[str, Any]) -> None:
        for event in events:
            self._queue.put(event)

    def stop(self) -> None:
        self._queue.put(None)

    def itercapture(
        self, limit: int | None = None, timeout: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield pushed events; stop after ``limit`` events or ``timeout`` s of silence."""
        count = 0
        while limit is None or count < limit:
            try:
                event = self._queue.get(timeout=timeout)
            except queue.Empty:
                return
            if event is None:
                return
            count += 1
            yield event


def receiver_factory(app: Any) -> Callable[[], EventSource]:
    """Makes a :class:`~caraway.events.receiver.EventReceiver` bound to ``app``."""

    def make() -> EventSource:
        return EventReceiver(app)

    return make


class Monitor:
    """Keeps a Cluster current from an event source, remote control and the broker."""

    def __init__(
        self,
        app: Any,
        cluster: Cluster,
        *,
        source: Callable[[], EventSource] | None,
        poll_interval: float = 2.0,
        queues: Sequence[str] = (),
        store: HistoryStore | None = None,
        save_interval: float = 10.0,
    ) -> None:
        self.app = app
        self.cluster = cluster
        self.source = source
        self.poll_interval = poll_interval
        self.extra_queues = list(queues)
        self.store = store
        self.save_interval = save_interval
        self.restored = False
        self._source: EventSource | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._admin: QueueAdmin | None = None
        #: the result backend for settle_from_backend; False when the app has none
        self._backend: Backend | Literal[False] | None = None

    def start(self) -> None:
        if self.store is not None:
            try:
                self.restored = self.store.load(self.cluster)
            except Exception as exc:
                logger.warning("could not restore the dashboard's history: %s", exc)
        targets: list[Callable[[], None]] = [self._poll_loop]
        if self.source is not None:
            targets.append(self._capture_loop)
        for target in targets:
            thread = threading.Thread(target=target, name=f"dashboard-{target.__name__}")
            thread.daemon = True
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        source = self._source
        if source is not None:
            source.stop()
        for thread in self._threads:
            thread.join(timeout)
        self._close_admin()
        backend, self._backend = self._backend, None
        if backend:
            with contextlib.suppress(Exception):
                backend.close()
        self.save()
        if self.store is not None:
            self.store.close()

    def save(self) -> None:
        """Save the history now (the poll thread does it every ``save_interval``)."""
        if self.store is None:
            return
        try:
            self.store.save(self.cluster)
        except Exception as exc:
            logger.warning("could not save the dashboard's history: %s", exc)

    # -- events ----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the event source is subscribed (a source without the flag: running)."""
        source = self._source
        return source is not None and bool(getattr(source, "connected", True))

    def _capture_loop(self) -> None:
        # one long-lived capture: events are fire-and-forget, so every resubscription
        # would lose what was sent meanwhile; the receiver reconnects by itself
        assert self.source is not None
        backoff = _BACKOFF_START
        while not self._stop.is_set():
            source = self._source = self.source()
            try:
                for event in source.itercapture():
                    self.cluster.event(event)
                    backoff = _BACKOFF_START
            except Exception as exc:  # a source that gives up: say so, wait, start again
                logger.warning("event capture failed (%s); restarting in %.1fs", exc, backoff)
            finally:
                self._source = None
                _close(source)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    # -- polling ---------------------------------------------------------------

    def _poll_loop(self) -> None:
        next_save = time.monotonic() + self.save_interval
        while not self._stop.is_set():
            self.poll_once()
            if time.monotonic() >= next_save:
                self.save()
                next_save = time.monotonic() + self.save_interval
            self._stop.wait(self.poll_interval)

    def poll_once(self) -> None:
        """Ask the nodes about themselves and the broker about its queues, once."""
        queues = set(self.extra_queues) | {str(self.app.conf.task_default_queue)}
        try:
            queues |= self._poll_workers()
        except Exception as exc:
            logger.warning("remote control poll failed: %s", exc)
        try:
            names = sorted(queues)
            self.cluster.set_queue_lengths(self._queue_lengths(names))
            assert self._admin is not None
            self.cluster.set_queue_unacked(self._admin.unacked(names))
        except Exception as exc:
            logger.warning("queue length poll failed: %s", exc)
            self._close_admin()
        try:
            self.settle_from_backend()
        except Exception as exc:
            logger.warning("reading final states from the result backend failed: %s", exc)

    def settle_from_backend(self) -> int:
        """Give tasks whose final event never came the final state the result backend
        holds (a Celery node that died, events dropped); returns how many changed."""
        stale = self.cluster.unsettled(quiet_for=_SETTLE_AFTER, limit=_SETTLE_BATCH)
        if not stale:
            return 0
        backend = self._results()
        if backend is None:
            return 0
        settled = 0
        for uuid, raw in zip(stale, backend.load_many(stale), strict=True):
            final = _final_fields(raw)
            if final is not None:
                self.cluster.settle(uuid, *final)
                settled += 1
        return settled

    def _results(self) -> Backend | None:
        if self._backend is None:
            self._backend = self.app.new_backend() or False
        backend = self._backend
        if backend is False or backend is None or not backend.shared:
            return None
        return backend

    def _poll_workers(self) -> set[str]:
        # stop waiting once every known node answered; a new node is found by its events,
        # or on the next poll while none is known
        known = self.cluster.hostnames()
        inspect = self.app.control.inspect(timeout=1.0, limit=len(known) or None)
        stats = inspect.stats() or {}
        active_queues = inspect.active_queues() or {}
        active = inspect.active() or {}
        consumers: dict[str, list[str]] = {}
        for hostname, reply in stats.items():
            pool = reply.get("pool") or {}
            names = [str(q.get("name")) for q in active_queues.get(hostname) or ()]
            for name in names:
                consumers.setdefault(name, []).append(hostname)
            self.cluster.set_worker_info(
                hostname,
                {
                    "pool": pool.get("implementation"),
                    "concurrency": pool.get("max-concurrency"),
                    "queues": names,
                    "active_tasks": [_brief(task) for task in active.get(hostname) or ()],
                    "processed": sum((reply.get("total") or {}).values()),
                    # messages the node set aside undecoded (caraway's nodes; Celery's
                    # send none)
                    "rejected": reply.get("rejected"),
                },
                freq=self.poll_interval,
            )
        self.cluster.set_queue_consumers(consumers)
        return set(consumers)

    def node_detail(self, hostname: str, timeout: float = 1.0) -> dict[str, Any]:
        """Everything remote control tells of one node, for its page (Flower's tabs)."""
        inspect = self.app.control.inspect(destination=[hostname], timeout=timeout, limit=1)
        detail: dict[str, Any] = {}
        for name in _NODE_INSPECTS:
            try:
                if name == "registered":  # Celery's nodes add each task's limits
                    replies = inspect.registered(*_TASK_INFO) or {}
                else:
                    replies = getattr(inspect, name)() or {}
            except Exception as exc:
                detail[name] = {"error": str(exc)}
                continue
            detail[name] = masked(replies.get(hostname))
        return detail

    def _queue_lengths(self, names: list[str]) -> dict[str, int]:
        if self._admin is None:
            self._admin = self.app.admin()
        admin = self._admin
        return {name: int(admin.size(name)) for name in names}

    def _close_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()


#: the inspect calls behind a node's page
_NODE_INSPECTS = ("stats", "active_queues", "active", "reserved", "scheduled", "revoked",
                  "registered", "conf")  # fmt: skip


#: setting names whose values are secrets whatever they look like
_SECRET_NAME = re.compile(r"pass|secret|token|credential|private|api_?key|_key$", re.IGNORECASE)


def masked(value: Any, name: str = "") -> Any:
    """A node's reply with its secrets hidden before any page shows it: URLs lose their
    passwords, settings with a secret's name lose their values. Nodes should mask them
    already (Celery censors ``inspect conf``); a node that does not is not trusted to."""
    if isinstance(value, dict):
        return {key: masked(item, str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [masked(item, name) for item in value]
    if value not in (None, "", False) and _SECRET_NAME.search(name):
        return "********"
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return value


def _final_fields(raw: bytes | None) -> tuple[str, dict[str, Any]] | None:
    """(state, event fields) of a final result document; None for anything else."""
    if not raw:
        return None
    try:
        document = decode_document(raw)
    except BackendError:
        return None  # a document we cannot read settles nothing
    state = document.get("status")
    if state not in states.READY_STATES:
        return None
    result = document.get("result")
    if state == states.SUCCESS:
        return state, {"result": safe_repr(result)}
    error = result if isinstance(result, dict) else {}
    args = error.get("exc_message")
    args = args if isinstance(args, (list, tuple)) else [args]
    exception = f"{error.get('exc_type') or 'Exception'}({', '.join(map(repr, args))})"
    fields: dict[str, Any] = {"exception": exception}
    if state == states.FAILURE:
        fields["traceback"] = str(document.get("traceback") or "")
    return str(state), fields


#: what ``inspect registered`` is asked to tell of each task (Celery: "name [k=v ...]")
_TASK_INFO = ("rate_limit", "time_limit", "soft_time_limit")


def _brief(task: dict[str, Any]) -> dict[str, Any]:
    return {key: task.get(key) for key in ("id", "name", "args", "kwargs", "time_start")}


def _close(source: object) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()

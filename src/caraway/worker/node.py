"""What a node tells and does for remote control (``inspect``/``control``).

``NodeControl`` holds a node's remote-control state (revoked ids, counts, queues, events on
or off) and answers from it and from the children's reports of what they run and hold; it
changes the node through what the supervisor offers it (:class:`Supervised`: relay a
command to the consumers, terminate a task, grow, shrink, shut down). A ControlServer talks
to it as its ``NodeView``. Reply shapes follow Celery's so that Celery's tools read them.
"""

from __future__ import annotations

import resource
import signal
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from caraway.clients.urls import mask_url
from caraway.config import mask_settings
from caraway.exceptions import ImproperlyConfigured
from caraway.lifecycle import revoked_by_stamps
from caraway.protocol.message import TaskMessage
from caraway.rates import parse_rate
from caraway.utils.files import read_file, write_file
from caraway.worker.ipc import (
    AddConsumer,
    CancelConsumer,
    Command,
    Revoke,
    RevokeStamps,
    SetRateLimit,
    SetTaskEvents,
    SetTimeLimit,
)

#: how long and how many revoked ids a node remembers (Celery's defaults)
REVOKE_EXPIRES = 10800.0
REVOKES_MAX = 50000

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.brokers.contracts import QueueAdmin, Transport
    from caraway.worker.buckets import SharedBuckets
    from caraway.worker.children import Child


class Supervised(Protocol):
    """What NodeControl needs of the supervisor it answers for (the Supervisor is one)."""

    @property
    def children(self) -> Mapping[int, Child]: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def transport(self) -> Transport: ...
    @property
    def admin(self) -> QueueAdmin: ...

    def relay(self, command: Command, /) -> None: ...
    def terminate(self, task_id: str, signum: int, /) -> bool: ...
    def grow(self, count: int, /) -> int: ...
    def shrink(self, count: int, /) -> int: ...
    def set_autoscale(self, high: int | None, low: int | None, /) -> tuple[int, int]: ...
    def request_shutdown(self) -> None: ...


class NodeControl:
    """A node's remote-control state and answers: the ``NodeView`` a ControlServer talks to."""

    def __init__(
        self,
        app: Caraway,
        *,
        hostname: str,
        pool: str,
        pid: int,
        queues: Sequence[str],
        buckets: SharedBuckets,
        supervisor: Supervised,
    ) -> None:
        self.app = app
        self.hostname = hostname
        self.pool = pool
        self.pid = pid
        #: the queues the node's consumers take from; remote control adds and cancels
        self.queues = list(queues)
        self.buckets = buckets
        self._supervisor = supervisor
        self.started_at = time.monotonic()
        self.totals: Counter[str] = Counter()
        self.failures = 0
        #: messages set aside unrun (dead-lettered at the decode boundary or on receipt)
        self.rejected = 0
        self.revoked_ids: dict[str, float] = {}
        #: stamp name -> revoked values (revoke_by_stamped_headers; kept in memory, as Celery)
        self.revoked_stamps: dict[str, list[Any]] = {}
        self.events_enabled = bool(app.conf.worker_send_task_events)

    @property
    def concurrency(self) -> int:
        return self._supervisor.concurrency

    # -- revoked ids survive restarts with --statedb ------------------------------------------
    def load_state(self) -> None:
        path = self.app.conf.worker_state_db
        if not path:
            return
        try:
            stored = orjson.loads(read_file(path))
        except FileNotFoundError:
            return
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ImproperlyConfigured(f"cannot read the state db {path}: {exc}") from exc
        cutoff = time.time() - REVOKE_EXPIRES
        self.revoked_ids = {
            key: when for key, when in stored.get("revoked", {}).items() if when > cutoff
        }

    def save_state(self) -> None:
        path = self.app.conf.worker_state_db
        if not path:
            return
        cutoff = time.time() - REVOKE_EXPIRES
        recent = sorted(
            ((when, key) for key, when in self.revoked_ids.items() if when > cutoff), reverse=True
        )[:REVOKES_MAX]
        self.revoked_ids = {key: when for when, key in recent}
        # task ids are the node's business only: owner-readable, never through a link
        write_file(path, orjson.dumps({"revoked": self.revoked_ids}), mode=0o600)

    def learn_revoked(self, task_ids: Iterable[str]) -> None:
        """Revocations recorded elsewhere (on the broker): keep and relay the ones not known."""
        new = sorted(set(task_ids) - set(self.revoked_ids))
        if new:
            now = time.time()
            for task_id in new:
                self.revoked_ids[task_id] = now
            self._supervisor.relay(Revoke(tuple(new)))

    # -- bookkeeping -----------------------------------------------------------------------
    def count_processed(self, name: str, outcome: str, count: int = 1) -> None:
        self.totals[name] += count
        if outcome == "failure":
            self.failures += count

    @property
    def processed(self) -> int:
        return sum(self.totals.values())

    # -- inspect ---------------------------------------------------------------------------
    def active(self) -> list[dict[str, Any]]:
        found = []
        for child in self._supervisor.children.values():
            running = child.running
            if running is None:
                continue
            found.append(
                {
                    "id": running.task_id,
                    "name": running.name,
                    "args": running.argsrepr,
                    "kwargs": running.kwargsrepr,
                    "type": running.name,
                    "hostname": self.hostname,
                    "time_start": running.wall_started,
                    "acknowledged": not running.acks_late,
                    "delivery_info": {"routing_key": running.queue, "redelivered": False},
                    "worker_pid": child.pid,
                }
            )
        return found

    def reserved(self) -> list[dict[str, Any]]:
        return [
            self._request_info(ref, child.pid)
            for child in self._supervisor.children.values()
            for ref in child.holding.reserved
        ]

    def scheduled(self) -> list[dict[str, Any]]:
        """Countdown tasks this node holds, then those parked on the broker (marked so).

        Celery's shape: ``eta`` an ISO-8601 string, ``request`` a request's info (Flower's
        worker page reads its ``args``, ``kwargs`` and ``delivery_info``).
        """
        held = [
            {"eta": _iso(eta), "priority": 0, "request": self._request_info(ref, child.pid)}
            for child in self._supervisor.children.values()
            for eta, ref in child.holding.scheduled
        ]
        return held + self.parked_on_broker()

    def parked_on_broker(self) -> list[dict[str, Any]]:
        try:
            parked = self._supervisor.admin.scheduled(limit=100)
        except Exception:
            return []
        found = []
        for eta, queue, message in parked:
            headers = message.headers
            ref = (
                str(headers.get("id", "")),
                str(headers.get("task", "")),
                str(headers.get("argsrepr") or "()"),
                str(headers.get("kwargsrepr") or "{}"),
                queue,
            )
            found.append(
                {
                    "eta": _iso(eta),
                    "priority": message.properties.get("priority") or 0,
                    "request": self._request_info(ref, 0),
                    "parked": True,
                }
            )
        return found

    def _request_info(self, ref: Sequence[str], pid: int) -> dict[str, Any]:
        """Celery's ``Request.info()`` for a message held and not started."""
        task_id, name, args, kwargs, queue = (*ref, "()", "{}", "")[:5] if len(ref) < 5 else ref[:5]
        return {
            "id": task_id,
            "name": name,
            "args": args,
            "kwargs": kwargs,
            "type": name,
            "hostname": self.hostname,
            "time_start": None,
            "acknowledged": False,
            "delivery_info": {
                "exchange": "",
                "routing_key": queue,
                "priority": 0,
                "redelivered": False,
            },
            "worker_pid": pid or None,
        }

    def registered(self) -> list[str]:
        return sorted(name for name in self.app.tasks if not name.startswith("celery."))

    def revoked(self) -> list[str]:
        return sorted(self.revoked_ids)

    def query_task(self, ids: list[str]) -> dict[str, Any]:
        wanted = set(ids)
        found: dict[str, Any] = {}
        for item in self.active():
            if item["id"] in wanted:
                found[item["id"]] = ["active", item]
        for item in self.reserved():
            if item["id"] in wanted:
                found[item["id"]] = ["reserved", item]
        return found

    def stats(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        pids = [child.pid for child in self._supervisor.children.values()]
        return {
            "total": dict(self.totals),
            "pid": self.pid,
            "clock": 0,
            "uptime": int(time.monotonic() - self.started_at),
            "pool": {
                "implementation": self.pool,
                "max-concurrency": self.concurrency,
                "processes": pids,
                "max-tasks-per-child": self.app.conf.worker_max_tasks_per_child,
                "put-guarded-by-semaphore": False,
                "timeouts": [
                    self.app.conf.task_soft_time_limit or 0,
                    self.app.conf.task_time_limit or 0,
                ],
            },
            "prefetch_count": self.concurrency * int(self.app.conf.worker_prefetch_multiplier),
            "broker": {
                "transport": self.app.broker_url.partition("://")[0],
                # host and port only: what is left of the URL is credentials and paths
                "hostname": _host(self.app.broker_url),
            },
            "rusage": {
                "utime": usage.ru_utime + children.ru_utime,
                "stime": usage.ru_stime + children.ru_stime,
                "maxrss": usage.ru_maxrss,
            },
            "failed": self.failures,
            # caraway's: messages dead-lettered without running (bad input, unknown tasks)
            "rejected": self.rejected,
            "sw_ident": "caraway",
        }

    def conf(self) -> dict[str, Any]:
        return mask_settings(self.app.conf.changes())

    # -- control ---------------------------------------------------------------------------
    def revoke(
        self, task_ids: list[str], terminate: bool = False, signal_name: str = "SIGTERM"
    ) -> None:
        now = time.time()
        for task_id in task_ids:
            self.revoked_ids[task_id] = now
        self.save_state()
        self._supervisor.relay(Revoke(tuple(task_ids)))
        if terminate:
            signum = _signal_number(signal_name)
            for task_id in task_ids:
                self._supervisor.terminate(task_id, signum)

    def revoke_by_stamps(
        self, headers: Mapping[str, list[Any]], terminate: bool, signal_name: str
    ) -> dict[str, set[Any]]:
        """Do not run tasks stamped with these values; with ``terminate``, also stop the
        running ones whose stamps match. Returns what was terminated, by stamp name."""
        for name, values in headers.items():
            self.revoked_stamps.setdefault(name, []).extend(values)
        self._supervisor.relay(RevokeStamps({name: list(v) for name, v in headers.items()}))
        terminated: dict[str, set[Any]] = {}
        if not terminate:
            return terminated
        signum = _signal_number(signal_name)
        for child in list(self._supervisor.children.values()):
            running = child.running
            if running is None or not running.stamps:
                continue
            message = TaskMessage(id=running.task_id, task=running.name, stamps=running.stamps)
            match = revoked_by_stamps(message, headers)
            if match is not None and self._supervisor.terminate(running.task_id, signum):
                for name, value in match.items():
                    terminated.setdefault(name, set()).add(value)
        return terminated

    def set_rate_limit(self, task: str, rate: str | None) -> None:
        parse_rate(rate)
        found = self.app._tasks.get(task)
        if found is None:
            raise KeyError(f"unknown task {task!r}")
        found.rate_limit = rate
        self.buckets.set_rate(task, rate)
        self._supervisor.relay(SetRateLimit(task, rate))

    def set_time_limit(self, task: str, soft: float | None, hard: float | None) -> None:
        found = self.app._tasks.get(task)
        if found is None:
            raise KeyError(f"unknown task {task!r}")
        found.soft_time_limit, found.time_limit = soft, hard
        self._supervisor.relay(SetTimeLimit(task, soft, hard))

    def add_consumer(self, queue: str) -> None:
        if queue not in self.queues:
            self.queues.append(queue)
        self._supervisor.relay(AddConsumer(queue))

    def cancel_consumer(self, queue: str) -> None:
        if queue in self.queues:
            self.queues.remove(queue)
        self._supervisor.relay(CancelConsumer(queue))

    def pool_grow(self, n: int = 1) -> int:
        return self._supervisor.grow(n)

    def pool_shrink(self, n: int = 1) -> int:
        return self._supervisor.shrink(n)

    def autoscale(self, high: int | None, low: int | None) -> tuple[int, int]:
        """New ``--autoscale`` bounds; ValueError when the node does not autoscale."""
        return self._supervisor.set_autoscale(high, low)

    def report(self) -> str:
        """What ``caraway report`` prints, for ``inspect report``."""
        return self.app.bugreport()

    def shutdown(self) -> None:
        self._supervisor.request_shutdown()

    def set_events(self, enabled: bool) -> None:
        self.events_enabled = enabled
        self._supervisor.relay(SetTaskEvents(enabled))


def _host(url: str) -> str:
    """``host:port`` of the (first) broker URL, without user, password or path."""
    first = mask_url(url).split(";")[0]
    return first.partition("://")[2].partition("/")[0].rpartition("@")[2].partition("?")[0]


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat()


def _signal_number(name: str | int | None) -> int:
    if name is None:
        return signal.SIGTERM
    if isinstance(name, int):
        return name
    text = name.upper()
    if not text.startswith("SIG"):
        text = f"SIG{text}"
    return int(getattr(signal, text, signal.SIGTERM))

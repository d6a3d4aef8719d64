"""The dashboard's picture of the cluster, built from Celery-format event dicts.

Owns workers (online by heartbeat), a bounded LRU of tasks, a change log the live page
follows, and per-second throughput buckets. Pure and thread-safe: the event thread
writes through ``event()``, the web handlers read snapshots (plain dicts), and nothing
here does I/O. Timestamps shown are the events'; throughput is bucketed on arrival time.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from caraway import states
from caraway.events.state import is_late, merge_retries

#: event type -> the state it reports (Celery's events.state mapping)
TASK_EVENT_STATES = {
    "task-sent": states.PENDING,
    "task-received": states.RECEIVED,
    "task-started": states.STARTED,
    "task-succeeded": states.SUCCESS,
    "task-failed": states.FAILURE,
    "task-retried": states.RETRY,
    "task-revoked": states.REVOKED,
    "task-rejected": states.REJECTED,
}
#: fields copied from task events when present (None never overwrites a known value)
_TASK_FIELDS = (
    "name",
    "args",
    "kwargs",
    "result",
    "exception",
    "traceback",
    "runtime",
    "retries",
    "eta",
    "expires",
    "parent_id",
    "root_id",
    "queue",
    "routing_key",
)
_WORKER_FIELDS = ("freq", "active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys", "pid")
#: Celery's HEARTBEAT_EXPIRE_WINDOW: a worker is offline after 2x its heartbeat interval
_EXPIRE_FACTOR = 2.0
_THROUGHPUT_SECONDS = 600
_CHANGELOG_SIZE = 4096


@dataclass
class TaskQuery:
    """What the task list is filtered by; empty fields do not filter."""

    state: str | None = None
    name: str | None = None
    worker: str | None = None
    since: float | None = None
    until: float | None = None
    search: str | None = None
    limit: int = 200

    def matches(self, task: dict[str, Any]) -> bool:
        if self.state and task["state"] != self.state.upper():
            return False
        if self.name and self.name.lower() not in (task["name"] or "").lower():
            return False
        if self.worker and task["worker"] != self.worker:
            return False
        when = task["timestamp"] or 0.0
        if self.since is not None and when < self.since:
            return False
        if self.until is not None and when > self.until:
            return False
        if self.search:
            needle = self.search.lower()
            haystack = " ".join(str(task[key] or "") for key in ("uuid", "args", "kwargs"))
            return needle in haystack.lower()
        return True


@dataclass
class _Task:
    uuid: str
    state: str = states.PENDING
    fields: dict[str, Any] = field(default_factory=dict)
    worker: str | None = None
    times: dict[str, float] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    timestamp: float = 0.0
    #: the timestamp of the newest event applied, to tell late events from current ones
    stamp: float | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {key: self.fields.get(key) for key in _TASK_FIELDS}
        data["retries"] = self.fields.get("retries") or 0
        data.update(
            uuid=self.uuid,
            state=self.state,
            worker=self.worker,
            timestamp=self.timestamp,
            times=dict(self.times),
            children=list(self.children),
        )
        return data


@dataclass
class _Worker:
    hostname: str
    fields: dict[str, Any] = field(default_factory=dict)
    last_seen: float = 0.0
    offline: bool = False
    succeeded: int = 0
    failed: int = 0
    info: dict[str, Any] = field(default_factory=dict)


class Cluster:
    """Workers, recent tasks and throughput, fed one event dict at a time."""

    def __init__(self, *, max_tasks: int = 10000, clock: Callable[[], float] = time.time) -> None:
        self.max_tasks = max_tasks
        self._clock = clock
        self._lock = threading.Lock()
        self._tasks: OrderedDict[str, _Task] = OrderedDict()
        self._workers: dict[str, _Worker] = {}
        self._seq = 0
        self._changes: deque[tuple[int, str]] = deque(maxlen=_CHANGELOG_SIZE)
        self._buckets: deque[list[int]] = deque(maxlen=_THROUGHPUT_SECONDS)
        self.event_counts: Counter[str] = Counter()
        self.queue_lengths: dict[str, int] = {}

    # -- writing ---------------------------------------------------------------

    def event(self, event: dict[str, Any]) -> None:
        """Apply one event; unknown types are counted and otherwise ignored."""
        kind = str(event.get("type", ""))
        with self._lock:
            self.event_counts[kind] += 1
            if kind.startswith("worker-"):
                self._worker_event(kind, event)
            elif kind in TASK_EVENT_STATES and event.get("uuid"):
                self._task_event(kind, event)

    def events(self, batch: Iterable[dict[str, Any]]) -> None:
        for item in batch:
            self.event(item)

    def _worker_event(self, kind: str, event: dict[str, Any]) -> None:
        hostname = str(event.get("hostname") or "")
        if not hostname:
            return
        worker = self._workers.setdefault(hostname, _Worker(hostname))
        for key in _WORKER_FIELDS:
            if key in event:
                worker.fields[key] = event[key]
        worker.last_seen = self._clock()
        worker.offline = kind == "worker-offline"

    def _task_event(self, kind: str, event: dict[str, Any]) -> None:
        uuid = str(event["uuid"])
        task = self._tasks.get(uuid)
        if task is None:
            task = self._tasks[uuid] = _Task(uuid, timestamp=float(event.get("timestamp") or 0))
            while len(self._tasks) > self.max_tasks:
                self._tasks.popitem(last=False)
        else:
            self._tasks.move_to_end(uuid)
        new_state = TASK_EVENT_STATES[kind]
        stamp = event.get("timestamp")
        stamp = float(stamp) if isinstance(stamp, (int, float)) else None
        # a retried attempt may report before the one it replaced: late news fills gaps only
        late = is_late(task.state, task.stamp, new_state, stamp)
        if not late:
            task.state, task.stamp = new_state, stamp
        for key in _TASK_FIELDS:
            if event.get(key) is not None and (not late or key not in task.fields):
                task.fields[key] = event[key]
        task.fields["retries"] = merge_retries(task.fields.get("retries"), event.get("retries"))
        task.times[kind.removeprefix("task-")] = float(event.get("timestamp") or 0)
        if kind != "task-sent" and event.get("hostname"):
            task.worker = str(event["hostname"])
        self._link_parent(task)
        self._count(kind, task.worker)
        self._seq += 1
        self._changes.append((self._seq, uuid))

    def _link_parent(self, task: _Task) -> None:
        parent = self._tasks.get(str(task.fields.get("parent_id") or ""))
        if parent is not None and task.uuid not in parent.children:
            parent.children.append(task.uuid)

    def _count(self, kind: str, hostname: str | None) -> None:
        if kind not in ("task-succeeded", "task-failed"):
            return
        failed = kind == "task-failed"
        worker = self._workers.get(hostname or "")
        if worker is not None:
            worker.succeeded += 0 if failed else 1
            worker.failed += 1 if failed else 0
        bucket = self._bucket(int(self._clock()))
        bucket[2 if failed else 1] += 1

    def _bucket(self, second: int) -> list[int]:
        if self._buckets and self._buckets[-1][0] == second:
            return self._buckets[-1]
        bucket = [second, 0, 0]
        self._buckets.append(bucket)
        return bucket

    def set_worker_info(self, hostname: str, info: dict[str, Any], *, freq: float) -> None:
        """Record what remote control said about a node (pool, concurrency, queues).

        A reply is as good as a heartbeat: a node that answers is online, even when it
        sends no events; ``freq`` is how often we ask.
        """
        with self._lock:
            worker = self._workers.setdefault(hostname, _Worker(hostname))
            worker.info.update(info)
            worker.fields.setdefault("freq", freq)
            worker.last_seen = self._clock()
            worker.offline = False

    def set_queue_lengths(self, lengths: dict[str, int]) -> None:
        with self._lock:
            self.queue_lengths = dict(lengths)

    # -- reading ---------------------------------------------------------------

    def _online(self, worker: _Worker, now: float) -> bool:
        if worker.offline or not worker.last_seen:
            return False
        freq = float(worker.fields.get("freq") or 2.0)
        return now - worker.last_seen <= freq * _EXPIRE_FACTOR

    def workers(self) -> list[dict[str, Any]]:
        now = self._clock()
        with self._lock:
            active: Counter[str] = Counter(
                task.worker or "" for task in self._tasks.values() if task.state == states.STARTED
            )
            return [
                self._worker_dict(worker, now, active[worker.hostname])
                for worker in sorted(self._workers.values(), key=lambda w: w.hostname)
            ]

    def _worker_dict(self, worker: _Worker, now: float, started: int) -> dict[str, Any]:
        data: dict[str, Any] = {key: worker.fields.get(key) for key in _WORKER_FIELDS}
        info = worker.info
        data.update(
            hostname=worker.hostname,
            status="online" if self._online(worker, now) else "offline",
            last_seen=worker.last_seen or None,
            succeeded=worker.succeeded,
            failed=worker.failed,
            pool=info.get("pool"),
            concurrency=info.get("concurrency"),
            queues=list(info.get("queues") or []),
            active_tasks=info.get("active_tasks") or [],
        )
        if data["active"] is None:
            data["active"] = started
        if data["processed"] is None:
            data["processed"] = info.get("processed")
        return data

    def hostnames(self) -> list[str]:
        with self._lock:
            return sorted(self._workers)

    def tasks(self, query: TaskQuery | None = None) -> list[dict[str, Any]]:
        """Newest first, at most ``query.limit``."""
        query = query or TaskQuery()
        with self._lock:
            snapshot = [task.as_dict() for task in reversed(self._tasks.values())]
        selected = [task for task in snapshot if query.matches(task)]
        return selected[: max(query.limit, 0)]

    def task(self, uuid: str) -> dict[str, Any] | None:
        """One task with ``tree``: the canvas it belongs to, nested from its root."""
        with self._lock:
            task = self._tasks.get(uuid)
            if task is None:
                return None
            data = task.as_dict()
            data["tree"] = self._tree(str(task.fields.get("root_id") or uuid))
        return data

    def _tree(self, root_id: str) -> dict[str, Any] | None:
        members = {
            task.uuid: task
            for task in self._tasks.values()
            if task.uuid == root_id or task.fields.get("root_id") == root_id
        }
        if root_id not in members:
            return None

        def node(uuid: str, depth: int) -> dict[str, Any]:
            task = members[uuid]
            kids = [kid for kid in task.children if kid in members] if depth < 64 else []
            return {
                "uuid": uuid,
                "name": task.fields.get("name"),
                "state": task.state,
                "children": [node(kid, depth + 1) for kid in kids],
            }

        return node(root_id, 0)

    def changes_since(self, seq: int) -> tuple[int, list[dict[str, Any]], bool]:
        """Tasks changed after ``seq``: (latest seq, tasks, reset). ``reset`` says the
        caller fell behind the bounded change log and should reload the whole list."""
        with self._lock:
            latest = self._seq
            if seq >= latest:
                return latest, [], False
            oldest = self._changes[0][0] if self._changes else latest + 1
            if seq + 1 < oldest:
                return latest, [], True
            uuids = dict.fromkeys(uuid for number, uuid in self._changes if number > seq)
            changed = [self._tasks[uuid].as_dict() for uuid in uuids if uuid in self._tasks]
        return latest, changed, False

    def throughput(self, seconds: int = 120) -> list[dict[str, int]]:
        """One point per second for the last ``seconds``, zeros included."""
        now = int(self._clock())
        with self._lock:
            counts = {bucket[0]: (bucket[1], bucket[2]) for bucket in self._buckets}
        points = []
        for second in range(now - seconds + 1, now + 1):
            succeeded, failed = counts.get(second, (0, 0))
            points.append({"t": second, "succeeded": succeeded, "failed": failed})
        return points

    def state_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(task.state for task in self._tasks.values()))

    def runtimes(self) -> dict[str, tuple[int, float]]:
        """Per task name: (count, total seconds) over the tasks in history that finished."""
        totals: dict[str, tuple[int, float]] = {}
        with self._lock:
            for task in self._tasks.values():
                runtime = task.fields.get("runtime")
                if runtime is None:
                    continue
                name = str(task.fields.get("name") or "unknown")
                count, total = totals.get(name, (0, 0.0))
                totals[name] = (count + 1, total + float(runtime))
        return totals

"""The cluster as events describe it: workers, tasks and throughput, for monitors.

Feed every event to :meth:`State.event`; read with the ``*_snapshot`` methods, which
return plain dicts for JSON APIs. A worker is online while its last heartbeat (arrival
time) is younger than 2 x its ``freq`` (Celery's rule), so a worker that died silently
goes offline. Tasks are an LRU bounded by ``max_tasks``; late events never move a task's
state back. The dashboard's ``Cluster`` is a thin layer over this one model.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from caraway import states

#: event type -> the state it reports (Celery's mapping; task-sent is PENDING)
TASK_EVENT_TO_STATE = {
    "task-sent": states.PENDING,
    "task-received": states.RECEIVED,
    "task-started": states.STARTED,
    "task-succeeded": states.SUCCESS,
    "task-failed": states.FAILURE,
    "task-retried": states.RETRY,
    "task-revoked": states.REVOKED,
    "task-rejected": states.REJECTED,
}
#: Celery: a heartbeat counts for freq x 200 %
HEARTBEAT_EXPIRE_FACTOR = 2.0
#: heartbeat frequency assumed until a worker tells its own
DEFAULT_FREQ = 2.0

#: fields a task event may carry, copied onto the Task
TASK_FIELDS = frozenset(
    {
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
        "root_id",
        "parent_id",
        "queue",
        "exchange",
        "routing_key",
        "terminated",
        "signum",
        "expired",
        "requeue",
    }
)
#: fields a worker event may carry, copied onto the Worker
WORKER_FIELDS = frozenset(
    {"pid", "freq", "active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys"}
)


def is_late(state: str, stamp: float | None, new_state: str, new_stamp: float | None) -> bool:
    """True when an event reporting ``new_state`` at ``new_stamp`` is older news than the task.

    Events from one task can arrive out of order: a retried task's attempts may run in two
    processes (or two workers) whose event buffers flush at different times. A final state is
    never undone by a non-final one, two final states follow precedence, and between other
    states the event's own timestamp decides. A late event only fills in unknown fields.
    """
    if state in states.READY_STATES or new_state in states.READY_STATES:
        return new_state != state and not states.outranks(new_state, state)
    if stamp is None or new_stamp is None:
        return False
    return new_stamp < stamp


def merge_retries(known: int | None, reported: Any) -> int | None:
    """Attempts only ever add up: the highest ``retries`` seen is the task's."""
    if not isinstance(reported, int):
        return known
    return reported if known is None else max(known, reported)


@dataclass
class Worker:
    """One node as its events describe it."""

    hostname: str
    pid: int | None = None
    freq: float = DEFAULT_FREQ
    active: int = 0
    processed: int = 0
    loadavg: list[float] = field(default_factory=list)
    sw_ident: str | None = None
    sw_ver: str | None = None
    sw_sys: str | None = None
    clock: int = 0
    last_heartbeat: float | None = None
    #: set by worker-offline; cleared by the next online/heartbeat
    offline: bool = False
    #: task events seen from this worker, by outcome
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    #: worker-* events received; 0 means known only from its task events or a
    #: remote-control reply, so ``active``/``processed`` are not its own figures
    worker_events: int = 0

    @property
    def heartbeat_expires(self) -> float | None:
        if self.last_heartbeat is None:
            return None
        return self.last_heartbeat + self.freq * HEARTBEAT_EXPIRE_FACTOR

    def alive(self, now: float | None = None) -> bool:
        expires = self.heartbeat_expires
        if self.offline or expires is None:
            return False
        return (time.time() if now is None else now) < expires

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        data = asdict(self)
        alive = self.alive(now)
        data.update(alive=alive, status="online" if alive else "offline")
        data["heartbeat_expires"] = self.heartbeat_expires
        return data


@dataclass
class Task:
    """One task as its events describe it; timestamps are unix seconds (local zone)."""

    uuid: str
    state: str = states.PENDING
    name: str | None = None
    args: str | None = None
    kwargs: str | None = None
    result: str | None = None
    exception: str | None = None
    traceback: str | None = None
    runtime: float | None = None
    retries: int | None = None
    eta: str | None = None
    expires: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    queue: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    terminated: bool | None = None
    signum: Any = None
    expired: bool | None = None
    requeue: bool | None = None
    worker: str | None = None
    client: str | None = None
    sent: float | None = None
    received: float | None = None
    started: float | None = None
    succeeded: float | None = None
    failed: float | None = None
    retried: float | None = None
    revoked: float | None = None
    rejected: float | None = None
    #: when the first event seen was sent (its timestamp), else when it arrived
    first_seen: float = 0.0
    timestamp: float | None = None
    clock: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class State:
    """The cluster model: thread-safe, fed by :meth:`event`, read through snapshots.

    ``max_tasks``/``max_workers`` bound memory (least recently updated dropped first);
    ``throughput_window`` is how many seconds of per-second counters are kept; ``clock``
    stamps arrivals of events that carry no ``local_received`` (tests pass a fake one).
    Hold ``lock`` to read several things consistently or to extend an update.
    """

    def __init__(
        self,
        max_tasks: int = 10_000,
        max_workers: int = 5_000,
        throughput_window: int = 300,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_tasks = max_tasks
        self.max_workers = max_workers
        self.throughput_window = throughput_window
        self.workers: OrderedDict[str, Worker] = OrderedDict()
        self.tasks: OrderedDict[str, Task] = OrderedDict()
        self.children: dict[str, list[str]] = {}
        self.event_count = 0
        self.task_count = 0
        self._seconds: deque[list[int]] = deque()  # [second, succeeded, failed]
        self._clock = clock
        self.lock = threading.RLock()

    # -- feeding ---------------------------------------------------------------------------
    def event(self, event: dict[str, Any]) -> str | None:
        """Apply one event; return the id of the task it changed, if any.

        Unknown types, and worker events without a hostname, are counted and otherwise
        ignored. A task event of a type Celery does not define sets a custom state
        (``task-progress`` -> ``PROGRESS``), as Celery's monitors do.
        """
        kind = str(event.get("type", ""))
        with self.lock:
            self.event_count += 1
            if kind.startswith("worker-") and event.get("hostname"):
                self._worker_event(kind, event)
            elif kind.startswith("task-") and event.get("uuid"):
                return self._task_event(kind, event)
        return None

    def _worker_event(self, kind: str, event: dict[str, Any]) -> None:
        worker = self._worker(str(event["hostname"]))
        for key in WORKER_FIELDS.intersection(event):
            setattr(worker, key, event[key])
        worker.freq = float(worker.freq or DEFAULT_FREQ)
        worker.clock = max(worker.clock, int(event.get("clock") or 0))
        worker.worker_events += 1
        if kind == "worker-offline":
            worker.offline = True
            worker.last_heartbeat = None
        else:
            worker.offline = False
            worker.last_heartbeat = self._received(event)

    def heartbeat(self, hostname: str, *, freq: float) -> None:
        """Count a sign of life that is not an event, such as a remote-control reply.

        A node that answers is online even when it sends no events; ``freq`` is how often
        the caller asks, and stands for the node's own until the node sends events.
        """
        with self.lock:
            worker = self._worker(hostname)
            if not worker.worker_events:
                worker.freq = freq
            worker.offline = False
            worker.last_heartbeat = self._clock()

    def _worker(self, hostname: str) -> Worker:
        worker = self.workers.get(hostname)
        if worker is None:
            worker = self.workers[hostname] = Worker(hostname=hostname)
            while len(self.workers) > self.max_workers:
                self.workers.popitem(last=False)
        else:
            self.workers.move_to_end(hostname)
        return worker

    def _task_event(self, kind: str, event: dict[str, Any]) -> str:
        stamp = event.get("timestamp")
        stamp = float(stamp) if isinstance(stamp, (int, float)) else None
        task = self._task(str(event["uuid"]), self._received(event) if stamp is None else stamp)
        new_state = TASK_EVENT_TO_STATE.get(kind, kind[5:].upper())
        if kind in TASK_EVENT_TO_STATE and stamp is not None:
            setattr(task, kind[5:], stamp)  # task.received = the task-received timestamp
        late = is_late(task.state, task.timestamp, new_state, stamp)
        for key in TASK_FIELDS.intersection(event):
            # None never erases a known value; a late event (RECEIVED after SUCCESS) only
            # fills in what is still unknown
            if event[key] is not None and (not late or getattr(task, key) is None):
                setattr(task, key, event[key])
        task.retries = merge_retries(task.retries, event.get("retries"))
        if not late:
            task.state = new_state
            task.timestamp = stamp
        task.clock = max(task.clock, int(event.get("clock") or 0))
        self._link(task)
        hostname = event.get("hostname")
        if kind == "task-sent":
            task.client = hostname
        elif hostname:
            task.worker = str(hostname)
            self._count(self._worker(str(hostname)), kind)
        if kind in ("task-succeeded", "task-failed"):
            self._tick(self._received(event), 1 if kind == "task-succeeded" else 2)
        return task.uuid

    def _count(self, worker: Worker, kind: str) -> None:
        if kind == "task-succeeded":
            worker.succeeded += 1
        elif kind == "task-failed":
            worker.failed += 1
        elif kind == "task-retried":
            worker.retried += 1

    def _received(self, event: dict[str, Any]) -> float:
        # arrival, not the sender's clock: a worker whose clock is skewed stays online
        value = event.get("local_received")
        return float(value) if isinstance(value, (int, float)) else self._clock()

    def _task(self, uuid: str, first_seen: float) -> Task:
        task = self.tasks.get(uuid)
        if task is not None:
            self.tasks.move_to_end(uuid)
            return task
        task = self.tasks[uuid] = Task(uuid=uuid, first_seen=first_seen)
        self.task_count += 1
        while len(self.tasks) > self.max_tasks:
            _, old = self.tasks.popitem(last=False)
            self._forget(old)
        return task

    def _link(self, task: Task) -> None:
        parent = task.parent_id
        if parent and parent != task.uuid:
            siblings = self.children.setdefault(parent, [])
            if task.uuid not in siblings:
                siblings.append(task.uuid)

    def _forget(self, task: Task) -> None:
        # keep ``children`` bounded by the tasks we still hold
        if task.parent_id and task.parent_id in self.children:
            siblings = self.children[task.parent_id]
            if task.uuid in siblings:
                siblings.remove(task.uuid)
            if not siblings:
                del self.children[task.parent_id]
        if task.uuid in self.children and not any(
            child in self.tasks for child in self.children[task.uuid]
        ):
            del self.children[task.uuid]

    def _tick(self, when: float, column: int) -> None:
        second = int(when)
        buckets = self._seconds
        if not buckets or buckets[-1][0] < second:
            buckets.append([second, 0, 0])
            bucket = buckets[-1]
        else:
            # events can arrive slightly out of order; find the right second
            bucket = next((b for b in reversed(buckets) if b[0] <= second), buckets[0])
            if bucket[0] != second:
                return  # older than the window we keep
        bucket[column] += 1
        while buckets and buckets[0][0] <= second - self.throughput_window:
            buckets.popleft()

    # -- reading ---------------------------------------------------------------------------
    def alive_workers(self, now: float | None = None) -> list[Worker]:
        now = self._clock() if now is None else now
        with self.lock:
            return [w for w in self.workers.values() if w.alive(now)]

    def workers_snapshot(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every known worker as a dict, with ``status`` online/offline and the ids of
        the tasks ``running`` on it (STARTED), least recently heard from first."""
        now = self._clock() if now is None else now
        with self.lock:
            running: dict[str, list[str]] = {}
            for task in self.tasks.values():
                if task.state == states.STARTED and task.worker is not None:
                    running.setdefault(task.worker, []).append(task.uuid)
            return [
                {**w.as_dict(now), "running": running.get(w.hostname, [])}
                for w in self.workers.values()
            ]

    def task_snapshot(self, uuid: str) -> dict[str, Any] | None:
        """One task with its ``children`` ids, or None when unknown (or evicted)."""
        with self.lock:
            task = self.tasks.get(uuid)
            if task is None:
                return None
            data = task.as_dict()
            data["children"] = list(self.children.get(uuid, ()))
            return data

    def tasks_snapshot(
        self,
        *,
        limit: int | None = 100,
        state: str | None = None,
        name: str | None = None,
        worker: str | None = None,
        since: float | None = None,
        until: float | None = None,
        search: str | None = None,
    ) -> list[dict[str, Any]]:
        """Tasks newest first, filtered: exact ``state``/``worker``, ``name`` substring,
        ``since``/``until`` on first sight, ``search`` in the id, args or kwargs."""
        out: list[dict[str, Any]] = []
        with self.lock:
            for task in reversed(self.tasks.values()):
                if _matches(task, state, name, worker, since, until, search):
                    data = task.as_dict()
                    data["children"] = list(self.children.get(task.uuid, ()))
                    out.append(data)
                    if limit is not None and len(out) >= limit:
                        break
        return out

    def counts(self) -> dict[str, int]:
        """How many held tasks are in each state."""
        result: dict[str, int] = {}
        with self.lock:
            for task in self.tasks.values():
                result[task.state] = result.get(task.state, 0) + 1
        return result

    def throughput(self, window: int = 60, now: float | None = None) -> list[dict[str, int]]:
        """Succeeded/failed per second for the last ``window`` seconds, zeros included."""
        end = int(self._clock() if now is None else now)
        with self.lock:
            seen = {b[0]: (b[1], b[2]) for b in self._seconds if b[0] > end - window}
        return [
            {
                "t": second,
                "succeeded": seen.get(second, (0, 0))[0],
                "failed": seen.get(second, (0, 0))[1],
            }
            for second in range(end - window + 1, end + 1)
        ]

    def clear(self) -> None:
        with self.lock:
            self.workers.clear()
            self.tasks.clear()
            self.children.clear()
            self._seconds.clear()
            self.event_count = self.task_count = 0


def _matches(
    task: Task,
    state: str | None,
    name: str | None,
    worker: str | None,
    since: float | None,
    until: float | None,
    search: str | None,
) -> bool:
    if state is not None and task.state != state:
        return False
    if name is not None and name not in (task.name or ""):
        return False
    if worker is not None and task.worker != worker:
        return False
    if since is not None and task.first_seen < since:
        return False
    if until is not None and task.first_seen > until:
        return False
    if search:
        haystack = f"{task.uuid} {task.args or ''} {task.kwargs or ''}"
        return search in haystack
    return True

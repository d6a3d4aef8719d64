"""The dashboard's picture of the cluster: an events ``State`` plus what only the page needs.

Workers, tasks, the heartbeat rule, the task merge rule, the LRU and throughput are
``caraway.events.state.State``'s; this module adds the change log the live page follows,
remote-control info per worker, queue lengths, event counts by type, the groups tasks
belong to (for canvas trees), the charts' History, and shapes State's records into the
API's dicts (schema in api.py). Counts per worker are those seen since ``since`` (the
history's start, kept across restarts by ``snapshot``/``restore``). Thread-safe: the event
thread writes through ``event()`` under State's lock, web handlers read snapshots. No I/O.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from caraway import states
from caraway.dashboard import canvas
from caraway.dashboard.history import History
from caraway.events.state import TASK_EVENT_TO_STATE, TASK_FIELDS, WORKER_FIELDS, State, Task

#: State's task fields the API leaves out: routing and revocation details it never showed
_UNSHOWN_TASK_FIELDS = frozenset({"exchange", "terminated", "signum", "expired", "requeue"})
#: shown beside uuid, state, worker, timestamp, times and children
_TASK_FIELDS = tuple(sorted(TASK_FIELDS - _UNSHOWN_TASK_FIELDS))
#: the Task attributes holding when each kind of event was sent ("received", "started"...)
_TIMES = tuple(kind.removeprefix("task-") for kind in TASK_EVENT_TO_STATE)
_THROUGHPUT_SECONDS = 600
_CHANGELOG_SIZE = 4096
#: how the task list may be sorted: key -> what of a task dict it compares
SORT_KEYS = ("received", "started", "succeeded", "timestamp", "name", "state", "runtime", "worker")
#: tasks a snapshot keeps for the next start (the newest)
SNAPSHOT_TASKS = 2000


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
    offset: int = 0
    sort: str = "timestamp"
    descending: bool = True

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
            keys = ("uuid", "args", "kwargs", "result", "exception")
            haystack = " ".join(str(task[key] or "") for key in keys)
            return needle in haystack.lower()
        return True

    @property
    def filters(self) -> bool:
        return any((self.state, self.name, self.worker, self.search)) or (
            self.since is not None or self.until is not None
        )

    def key(self, task: Task) -> tuple[int, Any]:
        """Sort key: unknown values sort last whichever the order."""
        value = task.first_seen if self.sort == "timestamp" else getattr(task, self.sort)
        if value is None:
            return (0 if self.descending else 1, 0)
        return (1 if self.descending else 0, value)


class Cluster:
    """Workers, recent tasks and throughput, fed one event dict at a time."""

    def __init__(self, *, max_tasks: int = 10000, clock: Callable[[], float] = time.time) -> None:
        self.state = State(max_tasks=max_tasks, throughput_window=_THROUGHPUT_SECONDS, clock=clock)
        self._lock = self.state.lock
        self._seq = 0
        self._changes: deque[tuple[int, str]] = deque(maxlen=_CHANGELOG_SIZE)
        self._event_counts: Counter[str] = Counter()
        self._info: dict[str, dict[str, Any]] = {}
        self._groups: dict[str, tuple[str, int | None]] = {}
        #: task id -> when this dashboard sent revoke or terminate for it (bounded by tasks)
        self._revoking: dict[str, float] = {}
        self.queue_lengths: dict[str, int] = {}
        self.queue_consumers: dict[str, list[str]] = {}
        #: None when the broker cannot count unacked messages (RabbitMQ)
        self.queue_unacked: dict[str, int] | None = None
        self.history = History()
        self.clock = clock
        #: when the counts began (the first start; a restored snapshot keeps its own)
        self.since = clock()
        #: remote control has been asked at least once (the page says "looking" until then)
        self.polled = False

    @property
    def max_tasks(self) -> int:
        return self.state.max_tasks

    @property
    def event_counts(self) -> Counter[str]:
        """Events received by type (a copy: the event thread keeps counting)."""
        with self._lock:
            return self._event_counts.copy()

    # -- writing ---------------------------------------------------------------

    def event(self, event: dict[str, Any]) -> None:
        """Apply one event; unknown types are counted and otherwise ignored."""
        kind = str(event.get("type", ""))
        with self._lock:
            self._event_counts[kind] += 1
            uuid = self.state.event(event)
            if uuid is None:
                return
            self._seq += 1
            self._changes.append((self._seq, uuid))
            group = event.get("group")
            if isinstance(group, str) and group:
                index = event.get("group_index")
                self._groups[uuid] = (group, index if isinstance(index, int) else None)
                if len(self._groups) > 2 * self.state.max_tasks:
                    self._groups = {u: g for u, g in self._groups.items() if u in self.state.tasks}
            if kind in ("task-succeeded", "task-failed"):
                self._finished(self.state.tasks[uuid], event, ok=kind == "task-succeeded")

    def _finished(self, task: Task, event: dict[str, Any], *, ok: bool) -> None:
        arrived = event.get("local_received")
        when = float(arrived) if isinstance(arrived, (int, float)) else self.clock()
        runtime = task.runtime
        if runtime is None and task.started is not None:
            runtime = (task.failed or task.succeeded or task.started) - task.started
        queued = task.sent or task.received
        wait = task.started - queued if task.started is not None and queued else None
        self.history.task_finished(
            when,
            task.name or "unknown",
            ok=ok,
            runtime=runtime,
            wait=wait,
            exception=task.exception,
        )

    def events(self, batch: Iterable[dict[str, Any]]) -> None:
        for item in batch:
            self.event(item)

    def set_worker_info(self, hostname: str, info: dict[str, Any], *, freq: float) -> None:
        """Record what remote control said about a node (pool, concurrency, queues).

        A reply is as good as a heartbeat: a node that answers is online, even when it
        sends no events; ``freq`` is how often we ask.
        """
        with self._lock:
            self.state.heartbeat(hostname, freq=freq)
            self._info.setdefault(hostname, {}).update(info)
            for gone in self._info.keys() - self.state.workers.keys():
                del self._info[gone]  # evicted from State's bounded worker list

    def set_queue_lengths(self, lengths: dict[str, int]) -> None:
        with self._lock:
            self.queue_lengths = dict(lengths)
            self.history.queue_depth(self.clock(), lengths)

    def unsettled(self, *, quiet_for: float, limit: int) -> list[str]:
        """Tasks not final whose last event is ``quiet_for`` seconds old, oldest first:
        those whose final event may have been lost (a killed process, a full buffer)."""
        cutoff = self.clock() - quiet_for
        with self._lock:
            found = []
            for task in self.state.tasks.values():
                last = task.timestamp or task.first_seen
                if task.state not in states.READY_STATES and last < cutoff:
                    found.append(task.uuid)
                    if len(found) >= limit:
                        break
            return found

    def revoke_sent(self, uuid: str) -> None:
        """Note that a revoke went out, so the page can say so until the node acts on it
        (a task held for its ETA is revoked when it falls due, as in Celery)."""
        with self._lock:
            self._revoking[uuid] = self.clock()
            if len(self._revoking) > self.state.max_tasks:
                self._revoking = {u: t for u, t in self._revoking.items() if u in self.state.tasks}
            if uuid in self.state.tasks:
                self._seq += 1
                self._changes.append((self._seq, uuid))

    def settle(self, uuid: str, state: str, fields: dict[str, Any]) -> None:
        """Take the final ``state`` the result backend holds for a task whose final event
        never came; not counted as an event, nor for a worker."""
        kind = {states.SUCCESS: "task-succeeded", states.FAILURE: "task-failed"}.get(
            state, "task-revoked"
        )
        with self._lock:
            if uuid not in self.state.tasks:
                return
            self.state.event({"type": kind, "uuid": uuid, **fields})
            self._seq += 1
            self._changes.append((self._seq, uuid))

    def set_queue_unacked(self, unacked: dict[str, int] | None) -> None:
        with self._lock:
            self.queue_unacked = dict(unacked) if unacked is not None else None

    def set_queue_consumers(self, consumers: dict[str, list[str]]) -> None:
        """Which nodes consume each queue (from their ``active_queues`` replies)."""
        with self._lock:
            self.queue_consumers = {queue: sorted(nodes) for queue, nodes in consumers.items()}
            self.polled = True

    def queues(self) -> list[dict[str, Any]]:
        with self._lock:
            names = sorted(self.queue_lengths.keys() | self.queue_consumers.keys())
            unacked = self.queue_unacked
            return [
                {
                    "name": name,
                    "length": self.queue_lengths.get(name),
                    "unacked": unacked.get(name) if unacked is not None else None,
                    "consumers": list(self.queue_consumers.get(name, [])),
                }
                for name in names
            ]

    # -- reading ---------------------------------------------------------------

    def workers(self) -> list[dict[str, Any]]:
        with self._lock:
            snapshot = self.state.workers_snapshot()
            info = {hostname: dict(known) for hostname, known in self._info.items()}
        workers = [_worker_dict(worker, info.get(worker["hostname"], {})) for worker in snapshot]
        return sorted(workers, key=lambda worker: str(worker["hostname"]))

    def hostnames(self) -> list[str]:
        with self._lock:
            return sorted(self.state.workers)

    def tasks(self, query: TaskQuery | None = None) -> list[dict[str, Any]]:
        """One page of the matching tasks (newest first unless sorted otherwise)."""
        return self.page(query)[1]

    def page(self, query: TaskQuery | None = None) -> tuple[int, list[dict[str, Any]]]:
        """(how many tasks match, the page ``query.offset``..+``query.limit`` of them)."""
        query = query or TaskQuery()
        with self._lock:
            # dicts only for the filters and the page: 10,000 of them cost a third of a second
            matching = list(reversed(self.state.tasks.values()))
            if query.filters:
                matching = [t for t in matching if query.matches(self._task_dict(t))]
            if query.sort != "timestamp" or not query.descending:
                matching.sort(key=query.key, reverse=query.descending)
            start = max(query.offset, 0)
            window = matching[start : start + max(query.limit, 0)]
            return len(matching), [self._task_dict(t) for t in window]

    def task(self, uuid: str) -> dict[str, Any] | None:
        """One task with ``tree``: the canvas it belongs to, nested from its root."""
        with self._lock:
            task = self.state.tasks.get(uuid)
            if task is None:
                return None
            data = self._task_dict(task)
            members = {
                t.uuid: canvas.Member(
                    uuid=t.uuid,
                    name=t.name,
                    state=t.state,
                    parent_id=t.parent_id,
                    root_id=t.root_id,
                    group=self._groups.get(t.uuid, (None, None))[0],
                    group_index=self._groups.get(t.uuid, (None, None))[1],
                )
                for t in self.state.tasks.values()
            }
        data["tree"] = canvas.tree(members, uuid)
        return data

    def _task_dict(self, task: Task) -> dict[str, Any]:
        data: dict[str, Any] = {key: getattr(task, key) for key in _TASK_FIELDS}
        times = {kind: getattr(task, kind) for kind in _TIMES}
        data.update(
            uuid=task.uuid,
            state=task.state,
            retries=task.retries or 0,
            worker=task.worker,
            group=self._groups.get(task.uuid, (None, None))[0],
            revoke_sent=self._revoking.get(task.uuid),
            timestamp=task.first_seen,
            times={kind: when for kind, when in times.items() if when is not None},
            children=list(self.state.children.get(task.uuid, ())),
        )
        return data

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
            tasks = self.state.tasks
            changed = [self._task_dict(tasks[uuid]) for uuid in uuids if uuid in tasks]
        return latest, changed, False

    def throughput(self, seconds: int = 120) -> list[dict[str, int]]:
        """One point per second for the last ``seconds``, zeros included."""
        return self.state.throughput(window=seconds)

    def state_counts(self) -> dict[str, int]:
        return self.state.counts()

    def runtimes(self) -> dict[str, tuple[int, float]]:
        """Per task name: (count, total seconds) over the tasks in history that finished."""
        totals: dict[str, tuple[int, float]] = {}
        with self._lock:
            for task in self.state.tasks.values():
                if task.runtime is None:
                    continue
                name = task.name or "unknown"
                count, total = totals.get(name, (0, 0.0))
                totals[name] = (count + 1, total + float(task.runtime))
        return totals


_SAVED_WORKER_FIELDS = ("hostname", "succeeded", "failed", "retried", "processed", "pid")
_SAVED_TASK_FIELDS = tuple(Task.__dataclass_fields__)


def snapshot(
    cluster: Cluster, *, tasks: int = SNAPSHOT_TASKS, buckets: int | None = None
) -> dict[str, Any]:
    """What the next start restores: counts, the newest ``tasks``, groups and the newest
    ``buckets`` of History (all by default)."""
    with cluster._lock:
        kept = list(cluster.state.tasks.values())[-tasks:] if tasks > 0 else []
        return {
            "since": cluster.since,
            "workers": [
                {key: getattr(w, key) for key in _SAVED_WORKER_FIELDS}
                for w in cluster.state.workers.values()
            ],
            "task_fields": list(_SAVED_TASK_FIELDS),
            "tasks": [[getattr(t, key) for key in _SAVED_TASK_FIELDS] for t in kept],
            "groups": {t.uuid: cluster._groups[t.uuid] for t in kept if t.uuid in cluster._groups},
            "history": cluster.history.dump(buckets=buckets),
        }


def restore(cluster: Cluster, saved: dict[str, Any]) -> None:
    """Start from a snapshot: workers (offline until they speak), tasks, counts, charts.

    Events already applied win: a restored task never replaces one seen live.
    """
    with cluster._lock:
        state = cluster.state
        cluster.since = min(cluster.since, float(saved.get("since") or cluster.since))
        for item in saved.get("workers", []):
            worker = state._worker(str(item["hostname"]))
            for key in ("succeeded", "failed", "retried"):
                setattr(worker, key, getattr(worker, key) + int(item.get(key) or 0))
        restored = []
        # by name: a snapshot from another version may have other fields
        fields = [str(name) for name in saved.get("task_fields", ())]
        known = set(_SAVED_TASK_FIELDS)
        # newest first, each put in front: the oldest ends up oldest
        for values in reversed(saved.get("tasks", [])[-state.max_tasks :]):
            pairs = zip(fields, values, strict=False)
            data = {key: value for key, value in pairs if key in known}
            uuid = str(data.get("uuid"))
            if uuid in state.tasks:
                continue
            state.tasks[uuid] = Task(**data)
            state.tasks.move_to_end(uuid, last=False)  # older than anything seen live
            restored.append(state.tasks[uuid])
        for task in restored:
            state._link(task)
        while len(state.tasks) > state.max_tasks:
            state.tasks.popitem(last=False)
        for uuid, (group, index) in (saved.get("groups") or {}).items():
            cluster._groups.setdefault(uuid, (str(group), index))
        cluster.history.load(saved.get("history") or {})
        cluster._seq += 1  # pages following the stream reload


def _worker_dict(worker: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """State's worker snapshot in the API's shape, with what remote control told.

    ``succeeded``/``failed``/``retried``/``processed`` are what the dashboard saw since
    its counts began, so they add up; ``processed_total`` is the node's own lifetime
    figure (worker events, or ``inspect stats`` for a node that sends none).
    """
    data: dict[str, Any] = {key: worker[key] for key in WORKER_FIELDS}
    lifetime = worker["processed"] if worker["worker_events"] else info.get("processed")
    if not worker["worker_events"]:
        # known only from task events or a remote-control reply: no figures of its own
        data.update(active=len(worker["running"]))
    data.update(
        hostname=worker["hostname"],
        status=worker["status"],
        last_seen=worker["last_heartbeat"],
        succeeded=worker["succeeded"],
        failed=worker["failed"],
        retried=worker["retried"],
        processed=worker["succeeded"] + worker["failed"],
        processed_total=lifetime,
        rejected=info.get("rejected"),
        pool=info.get("pool"),
        concurrency=info.get("concurrency"),
        queues=list(info.get("queues") or []),
        active_tasks=info.get("active_tasks") or [],
    )
    return data

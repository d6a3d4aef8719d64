"""The dashboard's picture of the cluster: an events ``State`` plus what only the page needs.

Workers, tasks, the heartbeat rule, the task merge rule, the LRU and throughput are
``caraway.events.state.State``'s; this module adds the change log the live page follows,
remote-control info per worker, queue lengths and event counts by type, and shapes State's
records into the API's dicts (schema in api.py). Thread-safe: the event thread writes
through ``event()`` under State's lock, web handlers read snapshots. No I/O here.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from caraway.events.state import TASK_EVENT_TO_STATE, TASK_FIELDS, WORKER_FIELDS, State, Task

#: State's task fields the API leaves out: routing and revocation details it never showed
_UNSHOWN_TASK_FIELDS = frozenset({"exchange", "terminated", "signum", "expired", "requeue"})
#: shown beside uuid, state, worker, timestamp, times and children
_TASK_FIELDS = tuple(sorted(TASK_FIELDS - _UNSHOWN_TASK_FIELDS))
#: the Task attributes holding when each kind of event was sent ("received", "started"...)
_TIMES = tuple(kind.removeprefix("task-") for kind in TASK_EVENT_TO_STATE)
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


class Cluster:
    """Workers, recent tasks and throughput, fed one event dict at a time."""

    def __init__(self, *, max_tasks: int = 10000, clock: Callable[[], float] = time.time) -> None:
        self.state = State(max_tasks=max_tasks, throughput_window=_THROUGHPUT_SECONDS, clock=clock)
        self._lock = self.state.lock
        self._seq = 0
        self._changes: deque[tuple[int, str]] = deque(maxlen=_CHANGELOG_SIZE)
        self._event_counts: Counter[str] = Counter()
        self._info: dict[str, dict[str, Any]] = {}
        self.queue_lengths: dict[str, int] = {}

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
            if uuid is not None:
                self._seq += 1
                self._changes.append((self._seq, uuid))

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
        """Newest first, at most ``query.limit``."""
        query = query or TaskQuery()
        selected: list[dict[str, Any]] = []
        if query.limit <= 0:
            return selected
        with self._lock:
            for task in reversed(self.state.tasks.values()):
                data = self._task_dict(task)
                if query.matches(data):
                    selected.append(data)
                    if len(selected) >= query.limit:
                        break
        return selected

    def task(self, uuid: str) -> dict[str, Any] | None:
        """One task with ``tree``: the canvas it belongs to, nested from its root."""
        with self._lock:
            task = self.state.tasks.get(uuid)
            if task is None:
                return None
            data = self._task_dict(task)
            data["tree"] = self._tree(task.root_id or uuid)
        return data

    def _task_dict(self, task: Task) -> dict[str, Any]:
        data: dict[str, Any] = {key: getattr(task, key) for key in _TASK_FIELDS}
        times = {kind: getattr(task, kind) for kind in _TIMES}
        data.update(
            uuid=task.uuid,
            state=task.state,
            retries=task.retries or 0,
            worker=task.worker,
            timestamp=task.first_seen,
            times={kind: when for kind, when in times.items() if when is not None},
            children=list(self.state.children.get(task.uuid, ())),
        )
        return data

    def _tree(self, root_id: str) -> dict[str, Any] | None:
        members = {
            task.uuid: task
            for task in self.state.tasks.values()
            if root_id in (task.uuid, task.root_id)
        }
        if root_id not in members:
            return None
        children = self.state.children

        def node(uuid: str, depth: int) -> dict[str, Any]:
            task = members[uuid]
            kids = [kid for kid in children.get(uuid, ()) if kid in members] if depth < 64 else []
            return {
                "uuid": uuid,
                "name": task.name,
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


def _worker_dict(worker: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """State's worker snapshot in the API's shape, with what remote control told."""
    data: dict[str, Any] = {key: worker[key] for key in WORKER_FIELDS}
    if not worker["worker_events"]:
        # known only from task events or a remote-control reply: no figures of its own
        data.update(active=len(worker["running"]), processed=info.get("processed"))
    data.update(
        hostname=worker["hostname"],
        status=worker["status"],
        last_seen=worker["last_heartbeat"],
        succeeded=worker["succeeded"],
        failed=worker["failed"],
        pool=info.get("pool"),
        concurrency=info.get("concurrency"),
        queues=list(info.get("queues") or []),
        active_tasks=info.get("active_tasks") or [],
    )
    return data

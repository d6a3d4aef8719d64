"""Shared by the remote-control tests (no tests here): a FakeNode and a polled ControlServer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from caraway.worker.control import ControlServer


class FakeNode:
    """Records what remote control asked of it; answers with fixed, recognisable data."""

    def __init__(self, hostname: str = "w1@test", queues: list[str] | None = None) -> None:
        self.hostname = hostname
        self.pool = "solo"
        self.concurrency = 1
        self.queues = list(queues or ["celery"])
        self.pid = 4242
        self.app: Any = None
        self.calls: list[tuple[Any, ...]] = []
        self.stopped = threading.Event()
        self.rate_limits: dict[str, str | None] = {}
        self.known_tasks = {"tasks.add", "tasks.mul"}

    def active(self) -> list[dict[str, Any]]:
        return [{"id": "t-active", "name": "tasks.add", "hostname": self.hostname}]

    def reserved(self) -> list[dict[str, Any]]:
        return [{"id": "t-reserved", "name": "tasks.mul"}]

    def scheduled(self) -> list[dict[str, Any]]:
        return [{"eta": "2030-01-01T00:00:00", "priority": 0, "request": {"id": "t-eta"}}]

    def stats(self) -> dict[str, Any]:
        return {"total": {"tasks.add": 3}, "pid": self.pid, "clock": 0, "pool": {}}

    def registered(self) -> list[str]:
        return sorted(self.known_tasks)

    def revoked(self) -> list[str]:
        return ["t-revoked"]

    def query_task(self, ids: list[str], /) -> dict[str, Any]:
        return {task_id: ["active", {"id": task_id}] for task_id in ids}

    def conf(self) -> dict[str, Any]:
        return {"broker_url": "memory://"}

    def revoke(self, task_ids: list[str], terminate: bool, signal: str, /) -> None:
        self.calls.append(("revoke", task_ids, terminate, signal))

    def set_rate_limit(self, task: str, rate: str | None, /) -> None:
        if task not in self.known_tasks:
            raise KeyError(f"unknown task {task!r}")
        self.rate_limits[task] = rate

    def set_time_limit(self, task: str, soft: float | None, hard: float | None, /) -> None:
        self.calls.append(("time_limit", task, soft, hard))

    def add_consumer(self, queue: str, /) -> None:
        self.queues.append(queue)

    def cancel_consumer(self, queue: str, /) -> None:
        self.queues.remove(queue)

    def pool_grow(self, n: int, /) -> int:
        self.concurrency += n
        return self.concurrency

    def pool_shrink(self, n: int, /) -> int:
        self.concurrency -= n
        return self.concurrency

    def shutdown(self) -> None:
        self.stopped.set()

    def set_events(self, enabled: bool, /) -> None:
        self.calls.append(("events", enabled))


@contextmanager
def served(server: ControlServer, interval: float = 0.02) -> Iterator[ControlServer]:
    """Poll ``server`` in a thread, as the supervisor's loop does, until the block ends."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            server.poll()
            stop.wait(interval)

    thread = threading.Thread(target=loop, name=f"control-{server.hostname}", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(5)
        server.close()

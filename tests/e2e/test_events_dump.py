"""``caraway events --dump`` as a process, printing the event stream of a real -E worker.

On the embedded SQLite broker: the dump is started first and proven subscribed (it prints
a probe event this test sends), then a prefork worker with ``-E`` runs a task that
succeeds and one that fails; the dumped JSON lines must hold the node's online and
heartbeat events and each task's received/started/succeeded or failed events.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from caraway.events.dispatcher import EventDispatcher
from tests.helpers import Worker, wait_until

pytestmark = [pytest.mark.slow]


class Dump:
    """The ``caraway -A proj events --dump --json`` process; ``lines()`` drains what it printed."""

    def __init__(self, project: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "caraway", "-A", "proj", "events", "--dump", "--json"],
            cwd=project, env={**os.environ, "PYTHONPATH": str(project)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        self.events: list[dict[str, Any]] = []
        self.other: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,))
        self._reader.daemon = True
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)

    def drain(self) -> list[dict[str, Any]]:
        while not self._lines.empty():
            line = self._lines.get()
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.other.append(line)
        return self.events

    def seen(self, kind: str, **match: Any) -> bool:
        return any(
            e["type"] == kind and all(e.get(k) == v for k, v in match.items()) for e in self.drain()
        )

    def stop(self) -> str:
        """Interrupt the dump; returns its stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._reader.join(5)
        assert self.process.stderr is not None
        errors = self.process.stderr.read()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return errors


@pytest.fixture
def dump(project: Path) -> Iterator[Dump]:
    from proj.caraway import app  # type: ignore[import-not-found]  # written by `project`

    started = Dump(project)
    probe = EventDispatcher(app, hostname="probe@test")
    try:

        def subscribed() -> bool:
            # events are fire-and-forget: beat until the dump prints one
            if started.process.poll() is not None:
                raise AssertionError(f"events --dump exited: {started.stop()}")
            probe.send("worker-heartbeat", freq=2.0, active=0, processed=0, loadavg=[0, 0, 0])
            probe.flush(5)
            return started.seen("worker-heartbeat", hostname="probe@test")

        wait_until(subscribed, timeout=30, interval=0.3, message="events --dump to subscribe")
        yield started
    finally:
        probe.close()
        started.stop()


def test_events_dump_prints_a_real_workers_node_and_task_events(
    project: Path, workers: list[Worker], dump: Dump
) -> None:
    worker = Worker(project, "-E", "-c", "1").wait_ready()
    workers.append(worker)
    import proj.tasks  # type: ignore[import-not-found]  # written by `project`

    ok = proj.tasks.add.delay(2, 2)
    bad = proj.tasks.boom.delay("dumped")
    assert ok.get(timeout=20) == 4
    with pytest.raises(ValueError, match="dumped"):
        bad.get(timeout=20)

    wait_until(lambda: dump.seen("task-failed", uuid=bad.id), timeout=15, message="task-failed")
    wait_until(lambda: dump.seen("task-succeeded", uuid=ok.id), timeout=15, message="succeeded")
    hostname = next(e["hostname"] for e in dump.events if e["type"] == "worker-online")
    assert hostname.startswith("w1@")
    wait_until(lambda: dump.seen("worker-heartbeat", hostname=hostname), timeout=10,
               message="the worker's heartbeat")  # fmt: skip

    def kinds(task_id: str) -> list[str]:
        return [e["type"] for e in dump.events if e.get("uuid") == task_id]

    assert kinds(ok.id) == ["task-received", "task-started", "task-succeeded"]
    assert kinds(bad.id) == ["task-received", "task-started", "task-failed"]
    received = next(e for e in dump.events if e.get("uuid") == ok.id)
    assert (received["name"], received["args"], received["hostname"]) == (
        "proj.tasks.add", "(2, 2)", hostname,
    )  # fmt: skip
    succeeded = next(e for e in dump.events if e["type"] == "task-succeeded")
    assert succeeded["result"] == "4" and succeeded["runtime"] >= 0
    failed = next(e for e in dump.events if e["type"] == "task-failed")
    assert "ValueError: dumped" in failed["traceback"]
    assert all("timestamp" in e and "clock" in e for e in dump.events)

    worker.stop()
    wait_until(lambda: dump.seen("worker-offline", hostname=hostname), timeout=15,
               message="worker-offline after the worker stopped")  # fmt: skip
    assert dump.other == []

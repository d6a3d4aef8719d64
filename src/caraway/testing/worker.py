"""``start_worker(app)``: a real caraway worker on a thread of the test process.

It runs :class:`caraway.worker.consumer.Consumer`, the loop every ``caraway worker``
child runs (fetch, decide, run, store, ack), with the app's rate limits, and stops and
joins it when the ``with`` block ends, even on failure. What it does not have is the
supervisor: no remote control, no hard time limits, no child processes.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from caraway import signals
from caraway.app import Caraway
from caraway.exceptions import ImproperlyConfigured
from caraway.worker.buckets import SharedBuckets
from caraway.worker.consumer import Consumer

logger = logging.getLogger("caraway.testing")

#: the task Celery's test worker pings to know it runs (``celery.contrib.testing.tasks``)
PING_TASK = "celery.ping"
#: how long an idle test worker waits on the broker before it looks at its stop flag
IDLE_WAIT = 0.05

_numbers = itertools.count(1)


class _TestConsumer(Consumer):
    """The worker's consumer, waking often enough when idle that stopping it is prompt.

    A node's consumer waits up to a second for messages; a test suite stops a worker per
    test, and a second each adds up. Everything else is the consumer's own loop.
    """

    def _idle_timeout(self) -> float:
        return min(super()._idle_timeout(), IDLE_WAIT)


class TestWorker:
    """The handle ``start_worker`` yields: the app, the node name, the consumer."""

    __test__ = False  # a class named Test*: not a test for pytest to collect

    def __init__(
        self, app: Caraway, *, hostname: str, queues: Sequence[str], concurrency: int
    ) -> None:
        self.app = app
        self.hostname = hostname
        self.queues = list(queues)
        self._stop = threading.Event()
        self.consumer = _TestConsumer(
            app,
            queues=self.queues,
            slots=concurrency,
            hostname=hostname,
            stop=self._stop,
            buckets=SharedBuckets(
                (name, task.rate_limit or app.conf.task_default_rate_limit)
                for name, task in app.tasks.items()
            ),
        )
        self._thread = threading.Thread(target=self._run, name=f"caraway-test-{hostname}")
        self.error: BaseException | None = None

    @property
    def processed(self) -> int:
        """How many tasks this worker has finished."""
        return self.consumer.processed

    def _run(self) -> None:
        try:
            self.consumer.run()
        except BaseException as exc:  # handed to the test by stop(), never lost
            logger.exception("test worker %s crashed", self.hostname)
            self.error = exc

    def start(self) -> None:
        signals.worker_init.send(sender=self)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float) -> None:
        """Stop the loop (messages fetched but not started go back) and join its thread.

        Raises RuntimeError if the thread is still running after ``timeout`` seconds (a
        task that does not return), or the exception that ended the loop early.
        """
        self._stop.set()
        self._thread.join(timeout)
        signals.worker_shutdown.send(sender=self)
        if self._thread.is_alive():
            raise RuntimeError(
                f"test worker {self.hostname} did not stop within {timeout}s: a task is "
                "still running; give it a time limit or raise shutdown_timeout"
            )
        if self.error is not None:
            raise RuntimeError(f"test worker {self.hostname} crashed") from self.error

    def __repr__(self) -> str:
        return f"<TestWorker {self.hostname} queues={','.join(self.queues)}>"


@contextmanager
def start_worker(
    app: Caraway,
    *,
    concurrency: int = 1,
    queues: Sequence[str] | None = None,
    hostname: str | None = None,
    perform_ping_check: bool = True,
    ping_task_timeout: float = 10.0,
    shutdown_timeout: float = 10.0,
) -> Iterator[TestWorker]:
    """Run a worker for ``app`` on a thread while the block runs; stop and join it after.

    ``concurrency`` above 1 runs tasks on that many threads (``-P threads``). ``queues``
    defaults to ``task_default_queue``, as ``caraway worker`` without ``-Q``. With
    ``perform_ping_check`` (and results enabled), the block starts once the worker has run
    the ``celery.ping`` task, as Celery's ``start_worker`` does. Raises RuntimeError when
    the worker cannot be started or stopped, and ``ImproperlyConfigured`` for an eager app
    (its tasks run in the caller; a worker would never see one).
    """
    _refuse_eager(app)
    if perform_ping_check and app.result_backend_url:
        _register_ping(app)
    worker = TestWorker(
        app,
        hostname=hostname or f"testworker{next(_numbers)}-{os.getpid()}@{socket.gethostname()}",
        queues=list(queues or [str(app.conf.task_default_queue)]),
        concurrency=concurrency,
    )
    worker.start()
    try:
        if perform_ping_check and app.result_backend_url:
            _ping(app, worker, timeout=ping_task_timeout)
        signals.worker_ready.send(sender=worker)
        yield worker
    finally:
        worker.stop(shutdown_timeout)


def _refuse_eager(app: Caraway) -> None:
    if app.conf.task_always_eager:
        raise ImproperlyConfigured(
            "task_always_eager is on: tasks run in the caller and no worker would receive "
            "one; drop the worker, or turn eager mode off for this test"
        )


def _register_ping(app: Caraway) -> None:
    if PING_TASK not in app._tasks:
        app.task(name=PING_TASK)(_pong)


def _pong() -> str:
    return "pong"


def _ping(app: Caraway, worker: TestWorker, *, timeout: float) -> None:
    queue = worker.queues[0]
    try:
        reply: Any = app.send_task(PING_TASK, queue=queue).get(timeout=timeout)
    except Exception as exc:
        raise RuntimeError(
            f"test worker {worker.hostname} did not answer a ping on queue {queue!r} within "
            f"{timeout}s: {exc}"
        ) from exc
    if reply != "pong":
        raise RuntimeError(f"test worker {worker.hostname} answered the ping with {reply!r}")

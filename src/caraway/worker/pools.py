"""How user code runs inside one consumer: inline (one slot) or on a few threads.

A pool takes a callable per task and reports completion through a queue the consumer
drains, so broker I/O stays on the consumer's thread (AMQP acks must use the channel
that received the message).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import Any

Job = Callable[[], Any]


class InlinePool:
    """One slot: the job runs on the consumer's own thread (prefork children, solo)."""

    slots = 1

    def __init__(self, done: queue.SimpleQueue[Any]) -> None:
        self._done = done

    def submit(self, job: Job) -> None:
        self._done.put(job())

    def stop(self) -> None:
        """Nothing runs in the background."""


class ThreadPool:
    """``slots`` threads taking jobs from a queue (``-P threads``)."""

    def __init__(self, slots: int, done: queue.SimpleQueue[Any]) -> None:
        self.slots = slots
        self._done = done
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"caraway-slot-{n}", daemon=True)
            for n in range(slots)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self._done.put(job())

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    def stop(self) -> None:
        """Let running jobs finish, then end the threads."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()


class AsyncLoop:
    """An event loop on its own thread, running a consumer's ``async def`` tasks.

    Many coroutines run at once (the consumer bounds them by ``worker_async_concurrency``)
    beside the pool's sync slots; each one's result goes to the same completion queue.
    """

    def __init__(self, done: queue.SimpleQueue[Any]) -> None:
        self._done = done
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="caraway-async", daemon=True
        )
        self._thread.start()

    def submit(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        future = asyncio.run_coroutine_threadsafe(make(), self.loop)
        future.add_done_callback(lambda finished: self._done.put(finished.result()))

    def stop(self) -> None:
        """Let running coroutines finish (the consumer waits for them), then stop."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()

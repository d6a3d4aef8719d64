"""How user code runs inside one consumer: inline (one slot), on threads, or on greenlets.

A pool takes a callable per task and reports completion through a queue the consumer
drains, so broker I/O stays on the consumer's thread (AMQP acks must use the channel
that received the message). ``-P gevent``/``-P eventlet`` are the threads pool after
:func:`patch_concurrency` monkey-patched the process: its threads are greenlets and
every socket cooperative, so ``-c 500`` I/O-bound tasks wait together in one process.
There, :func:`green_time_limits` enforces time limits as Celery's gevent pool does: with
the library's timeout, raised in the task's greenlet at its next cooperative wait.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from caraway import signals
from caraway.exceptions import ImproperlyConfigured, SoftTimeLimitExceeded

Job = Callable[[], Any]

#: pools that run the threads pool on greenlets, after monkey-patching the process
GREEN_POOLS = ("gevent", "eventlet")

_patched: str | None = None


def pool_from_argv(argv: Sequence[str]) -> str | None:
    """The ``-P``/``--pool`` a command line asks for (``-P x``, ``-Px``, ``--pool[=]x``)."""
    for index, arg in enumerate(argv):
        if arg in ("-P", "--pool") and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--pool="):
            return arg.partition("=")[2]
        if arg.startswith("-P") and len(arg) > 2 and not arg.startswith("--"):
            return arg[2:]
    return None


def maybe_patch_concurrency(argv: Sequence[str]) -> None:
    """Monkey-patch for ``-P gevent``/``-P eventlet`` before anything opens a connection
    or starts a thread (Celery does this first thing too); other pools patch nothing."""
    pool = pool_from_argv(argv)
    if pool in GREEN_POOLS:
        patch_concurrency(pool)


def patch_concurrency(pool: str) -> None:
    """Make the process cooperative for ``pool``; ImproperlyConfigured when its library is
    not installed. Patching twice is a no-op."""
    global _patched  # noqa: PLW0603 - once per process: monkey-patching is process-wide
    if _patched == pool:
        return
    if _patched is not None:
        raise ImproperlyConfigured(f"this process is already patched for {_patched}, not {pool}")
    if pool == "gevent":
        try:
            from gevent import monkey  # noqa: PLC0415 - optional: only for -P gevent
        except ImportError:
            raise ImproperlyConfigured(
                "-P gevent needs gevent: pip install gevent (or 'caraway[gevent]')"
            ) from None
        monkey.patch_all()
    elif pool == "eventlet":
        try:
            import eventlet  # noqa: PLC0415 - optional: only for -P eventlet
        except ImportError:
            raise ImproperlyConfigured(
                "-P eventlet needs eventlet: pip install eventlet (or 'caraway[eventlet]')"
            ) from None
        eventlet.monkey_patch()
    else:
        raise ValueError(f"{pool!r} is not a green pool; choose from {', '.join(GREEN_POOLS)}")
    _patched = pool


def patched() -> str | None:
    """The green pool this process was patched for, if any."""
    return _patched


class HardTimeLimit(BaseException):
    """Raised in a greenlet at its hard time limit; a BaseException so that the task's own
    ``except Exception`` cannot swallow it. The runner turns it into TimeLimitExceeded."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


def _green_timeout(seconds: float, error: BaseException) -> Any:
    if _patched == "gevent":
        import gevent  # noqa: PLC0415 - optional: only under -P gevent

        return gevent.Timeout(seconds, error)
    import eventlet  # noqa: PLC0415 - optional: only under -P eventlet

    return eventlet.Timeout(seconds, error)


@contextmanager
def green_time_limits(soft: float | None, hard: float | None) -> Iterator[None]:
    """Time limits for a task on a green pool (nothing elsewhere): SoftTimeLimitExceeded
    in the task at ``soft`` s, HardTimeLimit at ``hard`` s, each at the greenlet's next
    cooperative wait (as Celery's gevent pool: a loop that never yields runs on). On the
    main greenlet the soft limit is left to the SIGALRM one the runner sets."""
    if _patched is None or not (soft or hard):
        yield
        return
    with ExitStack() as stack:
        if hard:
            stack.enter_context(_green_timeout(hard, HardTimeLimit(hard)))
        if soft and threading.current_thread() is not threading.main_thread():
            error = SoftTimeLimitExceeded(f"soft time limit ({soft}s) exceeded")
            stack.enter_context(_green_timeout(soft, error))
        yield


def _eventlet_signal(signal: signals.Signal, pool: object, **fields: Any) -> None:
    """Celery's eventlet pool signals, sent by a pool on an eventlet-patched process (its
    gevent and other pools send none, as Celery's)."""
    if _patched == "eventlet" and signal.receivers:
        signal.send(sender=pool, **fields)


class InlinePool:
    """One slot: the job runs on the consumer's own thread (prefork children, solo)."""

    slots = 1

    def __init__(self, done: queue.SimpleQueue[Any]) -> None:
        self._done = done
        _eventlet_signal(signals.eventlet_pool_started, self)

    def submit(self, job: Job) -> None:
        _eventlet_signal(signals.eventlet_pool_apply, self, target=job, args=(), kwargs={})
        self._done.put(job())

    def stop(self) -> None:
        """Nothing runs in the background."""
        _eventlet_signal(signals.eventlet_pool_preshutdown, self)
        _eventlet_signal(signals.eventlet_pool_postshutdown, self)


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
        _eventlet_signal(signals.eventlet_pool_started, self)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self._done.put(job())

    def submit(self, job: Job) -> None:
        _eventlet_signal(signals.eventlet_pool_apply, self, target=job, args=(), kwargs={})
        self._jobs.put(job)

    def stop(self) -> None:
        """Let running jobs finish, then end the threads."""
        _eventlet_signal(signals.eventlet_pool_preshutdown, self)
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        _eventlet_signal(signals.eventlet_pool_postshutdown, self)


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

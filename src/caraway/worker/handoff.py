"""Fair dispatch for a one-slot consumer: what waits behind a long task goes to an idle process.

A prefork child (and ``-P solo``) fetches a batch of ``worker_prefetch_multiplier``
messages and runs them one by one on its main thread. Batching the claims is what makes a
drain of short tasks fast, but a task that runs long would keep the rest of its batch
waiting while a sibling process sits idle: on RabbitMQ a short task sent during a 4 s task
waited for it in half the trials. Celery's prefork pool dispatches fairly by default (its
parent gives a task only to an idle child); caraway's children fetch for themselves, so a
busy child hands back instead.

The rule: once the task in hand has run for :data:`HAND_OFF_AFTER`, the child gives back to
the broker every message it holds and has not started (``Transport.give_back``: uncounted,
first served first, at the head of its queue), and an idle sibling claims it; on RabbitMQ it
also stops consuming, so the broker pushes nothing more to a busy child, and the next fetch
consumes again. A countdown message the child holds (due within ``broker_park_horizon``)
stays held while it is not due, since the task in hand may well end first, and is given back
the moment it falls due while the task still runs. A task shorter than the threshold costs
nothing: no give-back, no thread woken, so a drain of short tasks keeps its batches.

Why a fixed threshold rather than "when a sibling is idle": giving back costs one round trip
per long task, nothing beside a task that long, and it is right even when every sibling is
busy (whichever finishes first should take the next message, not the one that fetched it),
so the child need not know what its siblings do. 100 ms bounds how long a message can wait
behind a task that turned out long.

Why a thread: the task runs on the child's main thread (soft time limits are signals to it),
so only another thread can act while it runs. Ownership of the consumer's transport and of
its buffers is the :attr:`HandOff.io` lock: the main thread holds it at all times except
while the task runs, and the helper thread touches either only while holding it. py-amqp
channels and redis-py connections are safe used by one thread at a time, which this gives.
A give-back racing with the end of the task is decided by the lock: the helper either gave
back before the main thread took the lock again (and the consumer fetches anew) or finds the
run over and gives back nothing; a message is never both given back and kept. The helper
ticks every ``HAND_OFF_AFTER / 2`` while tasks run, and parks on an event after a second
without one, so an idle child wakes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger("caraway.worker")
T = TypeVar("T")
R = TypeVar("R")

#: how long a task runs before the messages waiting behind it are given back (seconds)
HAND_OFF_AFTER = 0.1
#: the helper parks after this long without a task running (seconds)
PARK_AFTER = 1.0


class HandOff:
    """The helper thread of one consumer, and the lock that says who may use its transport.

    ``give_back(first)`` is the consumer's: called on the helper thread with :attr:`io`
    held while a task has run past the threshold (``first`` once per task, then again at
    the time it returns, monotonic, while the same task runs); None when nothing is due.
    """

    def __init__(
        self, give_back: Callable[[bool], float | None], *, after: float = HAND_OFF_AFTER
    ) -> None:
        self.io = threading.Lock()
        self.after = after
        self._give_back = give_back
        #: the task running now: its number and when it started (None between tasks);
        #: written by the main thread only while it holds ``io``
        self._run = 0
        self._since: float | None = None
        self._parked = False
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="caraway-handoff", daemon=True)

    def start(self) -> None:
        """Take :attr:`io` for the calling (main) thread and start the helper."""
        self.io.acquire()
        self._thread.start()

    def stop(self) -> None:
        """End the helper (the main thread keeps :attr:`io`)."""
        self._stopped.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def run(self, job: Callable[[T], R], arg: T) -> R:
        """``job(arg)`` (the task) with :attr:`io` released: the helper may give back meanwhile."""
        self._run += 1
        self._since = time.monotonic()
        if self._parked:
            self._wake.set()
        self.io.release()
        try:
            return job(arg)
        finally:
            self.io.acquire()
            self._since = None

    def _watch(self) -> None:
        tick = max(self.after / 2, 0.01)  # 0 (give back at once) must not spin
        given_for = 0  # the run whose first give-back is done
        again: float | None = None  # when to look again during that run (a countdown due)
        not_before = 0.0  # after a failed give-back: when to try again
        idle = 0.0
        while not self._stopped.is_set():
            since, run = self._since, self._run
            if since is None:
                idle += tick
                if idle >= PARK_AFTER:
                    idle = 0.0
                    self._park()
                else:
                    self._stopped.wait(tick)
                continue
            idle = 0.0
            first = run != given_for
            due = max(since + self.after, not_before) if first else again
            now = time.monotonic()
            if due is None or now < due:
                self._stopped.wait(tick if due is None else min(tick, due - now))
                continue
            if not self.io.acquire(timeout=tick):
                continue  # the main thread has it: that task ended
            try:
                if self._run != run or self._since is None:
                    continue  # ended (the main thread waits for io): nothing to give back
                try:
                    again = self._give_back(first)
                except Exception as exc:
                    # kept where they were: tried again in a second, or run by this process
                    logger.warning("could not give back the messages behind a long task: %s", exc)
                    not_before = time.monotonic() + 1.0
                    again = not_before
                else:
                    given_for, not_before = run, 0.0
            finally:
                self.io.release()

    def _park(self) -> None:
        self._parked = True
        if self._since is None and not self._stopped.is_set():
            self._wake.wait()
        self._wake.clear()
        self._parked = False

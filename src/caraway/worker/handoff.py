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

The fixed threshold is right even when every sibling is busy (whichever finishes first
should take the next message, not the one that fetched it) and costs one round trip per long
task. But when a sibling is known to be idle, waiting 100 ms is waste, so a prefork node
also keeps a small shared table (:class:`Siblings`, made by the supervisor before it forks,
one slot per child index): a child's transport flags its slot just before its fetch blocks
on an empty broker (``Transport.on_wait``) and clears it when it wakes. A child starting a
task while a sibling is flagged gives back what it holds before the task (``at_start``;
Redis: with ``CLIENT UNBLOCK`` of the sibling's waiting connection in the same round trip,
so that it claims from every list now rather than at its next poll), and the threshold for
that task is :data:`QUICK_AFTER`. A child that starts waiting while a sibling runs a task
writes to that sibling's pipe (once per task), which wakes its helper to give back at once.
Only a sibling blocked on an empty broker counts, so a drain of a full queue, where nobody
waits, never gives back. A broker that pushes (RabbitMQ, ``Transport.pushes``) has an empty
inbox for a moment between batches even in a drain: its fetch flags only after 3 ms with
nothing, and nothing is given back before a task there, only past :data:`QUICK_AFTER`.

Why a thread: the task runs on the child's main thread (soft time limits are signals to it),
so only another thread can act while it runs. Ownership of the consumer's transport and of
its buffers is the :attr:`HandOff.io` lock: the main thread holds it at all times except
while the task runs, and the helper thread touches either only while holding it. py-amqp
channels and redis-py connections are safe used by one thread at a time, which this gives.
A give-back racing with the end of the task is decided by the lock: the helper either gave
back before the main thread took the lock again (and the consumer fetches anew) or finds the
run over and gives back nothing; a message is never both given back and kept. The helper
ticks every ``HAND_OFF_AFTER / 2`` (at most 50 ms in a prefork child) while tasks run, and
parks on an event (a prefork child's: its pipe) after a second without one, so an idle child
wakes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger("caraway.worker")
T = TypeVar("T")
R = TypeVar("R")

#: how long a task runs before the messages waiting behind it are given back (seconds)
HAND_OFF_AFTER = 0.1
#: the threshold instead while a sibling waits on an empty broker (seconds)
QUICK_AFTER = 0.005
#: the longest the helper goes, while a task runs, without looking whether a sibling waits
TICK_WITH_SIBLINGS = 0.05
#: the helper parks after this long without a task running (seconds)
PARK_AFTER = 1.0
_ID = struct.Struct("q")


class Siblings:
    """Which of a prefork node's children wait on an empty broker: one slot per child index.

    An anonymous shared map made by the supervisor before it forks: the first ``slots``
    bytes say "waiting" (1) or not (0), then one 8-byte wake id per slot (-1: none), then
    one 8-byte number per slot: the task the child runs now (0: none), then one byte per
    slot: 1 while the child waits holding no claim at all. A child writes its
    own slot only (its id, then its flag), just before its fetch blocks and again when it
    wakes, and its task number as a task starts and ends; a replacement child, and the
    supervisor when one exits, clear it. Reads take no lock: a flag read a moment stale
    costs one give-back too many or too few, never a message.

    And one pipe per slot, its helper thread's wake-up: a child that starts waiting writes
    to the pipe of each sibling running a task (once per task), whose helper then gives back
    at once what waits behind that task, rather than at its next tick.
    """

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self._map = mmap.mmap(-1, self.slots * (2 + 2 * _ID.size))
        #: after the task numbers, one byte per slot: 1 while the child waits holding nothing
        self._empty = self.slots * (1 + 2 * _ID.size)
        self.pipes = [os.pipe() for _ in range(self.slots)]
        for reader, writer in self.pipes:
            os.set_blocking(reader, False)
            os.set_blocking(writer, False)
        for index in range(self.slots):
            self.clear(index)

    def clear(self, index: int) -> None:
        if 0 <= index < self.slots:
            self._map[index] = 0
            self._map[self._empty + index] = 0
            _ID.pack_into(self._map, self.slots + index * _ID.size, -1)
            _ID.pack_into(self._map, self.slots * (1 + _ID.size) + index * _ID.size, 0)

    def holds_nothing(self, index: int) -> bool:
        """Whether child ``index`` waits on an empty broker holding no message: its supervisor
        need not renew its claims (an idle fleet's renewals were a fifth of its commands).
        Read a moment stale, a claim it made since is younger than one renewal period."""
        return 0 <= index < self.slots and self._map[self._empty + index] == 1

    def view(self, index: int) -> SiblingView | None:
        """The child ``index``'s side (None beyond the table: that child simply never
        hands over at once); its slot starts cleared, whatever a dead child left there."""
        if not 0 <= index < self.slots:
            return None
        self.clear(index)
        return SiblingView(self, index)


class SiblingView:
    """One child's use of :class:`Siblings`."""

    def __init__(self, table: Siblings, index: int) -> None:
        self._map = table._map
        self._slots = table.slots
        self._runs = table.slots * (1 + _ID.size)  # where the task numbers start
        self._empty = table._empty + index
        self._pipes = [writer for _, writer in table.pipes]
        self.index = index
        self._pid = os.getpid()
        #: this child's helper thread waits on this
        self.wake_up = _PipeEvent(table.pipes[index][0], table.pipes[index][1])
        #: sibling index -> the task number it was told about (once per task)
        self._told: dict[int, int] = {}
        #: the transport's :meth:`~caraway.brokers.contracts.Transport.wake_id`
        self.wake_id: Callable[[], int | None] = lambda: None
        #: set by the consumer before each fetch: it holds no claim (nothing running,
        #: held for later, or unacked), so a wait of that fetch says so in its slot
        self.empty_handed = False

    def waiting(self, flag: bool) -> None:
        """``Transport.on_wait``: this child is about to block on an empty broker, or woke.

        About to block, it tells each sibling running a task (once for that task) by its
        pipe, so that what waits there comes here now."""
        if not flag:
            self._map[self.index] = 0
            self._map[self._empty] = 0
            return
        wake = self.wake_id()
        _ID.pack_into(self._map, self._slots + self.index * _ID.size, -1 if wake is None else wake)
        self._map[self._empty] = 1 if self.empty_handed else 0
        self._map[self.index] = 1
        for index in range(self._slots):
            if index == self.index:
                continue
            run: int = _ID.unpack_from(self._map, self._runs + index * _ID.size)[0]
            if run and self._told.get(index) != run:
                self._told[index] = run
                with contextlib.suppress(BlockingIOError):  # full: it has been told
                    os.write(self._pipes[index], b"\0")

    def running(self, run: int) -> None:
        """This child started task number ``run`` (0: it ended); with its pid, so that a
        replacement child's first task is news to a sibling that told its predecessor's."""
        value = (self._pid << 32) | (run & 0xFFFFFFFF) if run else 0
        _ID.pack_into(self._map, self._runs + self.index * _ID.size, value)

    def slot(self) -> tuple[mmap.mmap, int, int, int]:
        """What :meth:`running` and :meth:`any_waiting` use, for a caller that inlines them
        on every task: the table, this child's task-number offset, its pid bits, the flags'
        length."""
        return self._map, self._runs + self.index * _ID.size, self._pid << 32, self._slots

    def any_waiting(self) -> bool:
        """Whether a sibling waits on an empty broker (this child's own flag is down while
        it runs a task, the only time it asks)."""
        found: int = self._map.find(b"\x01", 0, self._slots)
        return found >= 0 and (
            found != self.index or self._map.find(b"\x01", found + 1, self._slots) >= 0
        )

    def waiting_ids(self) -> list[int]:
        """The wake ids of the siblings waiting now (those that have one)."""
        ids = []
        for index in range(self._slots):
            if index != self.index and self._map[index]:
                wake: int = _ID.unpack_from(self._map, self._slots + index * _ID.size)[0]
                if wake >= 0:
                    ids.append(wake)
        return ids


class _PipeEvent:
    """The part of :class:`threading.Event` the helper uses, on a pipe another process can
    write to (non-blocking both ends)."""

    def __init__(self, reader: int, writer: int) -> None:
        self._reader, self._writer = reader, writer

    def set(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: set already
            os.write(self._writer, b"\0")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._reader, 512):
                pass

    def wait(self, timeout: float | None = None) -> bool:
        return bool(select.select([self._reader], [], [], timeout)[0])


class HandOff:
    """The helper thread of one consumer, and the lock that says who may use its transport.

    ``give_back(first)`` is the consumer's: called on the helper thread with :attr:`io`
    held while a task has run past the threshold (``first`` once per task, then again at
    the time it returns, monotonic, while the same task runs); None when nothing is due.
    ``sibling_idle()`` says whether a sibling process waits on an empty broker; while one
    does, the threshold is ``quick``, and ``at_start()`` (the consumer's: give back what is
    held, waking that sibling) runs on the main thread before the task.
    """

    def __init__(
        self,
        give_back: Callable[[bool], float | None],
        *,
        after: float = HAND_OFF_AFTER,
        quick: float = QUICK_AFTER,
        sibling_idle: Callable[[], bool] | None = None,
        at_start: Callable[[], None] | None = None,
        siblings: SiblingView | None = None,
    ) -> None:
        self.io = threading.Lock()
        self.after = after
        self.quick = min(quick, after)
        self._give_back = give_back
        self._sibling_idle = sibling_idle
        #: None: nothing given back before a task (a transport that pushes)
        self.at_start = at_start
        #: the task running now: its number and when it started (None between tasks);
        #: written by the main thread only while it holds ``io``
        self._run = 0
        self._since: float | None = None
        #: the run that started while a sibling waited (its threshold is ``quick``)
        self._quick_run = 0
        self._parked = False
        self._wake: threading.Event | _PipeEvent = threading.Event()
        #: a prefork child's: its task numbers go to the table, its helper waits on its pipe
        self._slot: tuple[mmap.mmap, int, int, int] | None = None
        if siblings is not None:
            self._sibling_idle = siblings.any_waiting
            self._wake = siblings.wake_up
            self._slot = siblings.slot()
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
        slot = self._slot
        if slot is not None:  # a prefork child: two C calls a task, nothing more (a drain)
            table, offset, tag, slots = slot
            _ID.pack_into(table, offset, tag | (self._run & 0xFFFFFFFF))
            # its own flag is down while it runs tasks: any flag up is a sibling's
            quick = table.find(b"\x01", 0, slots) >= 0
        else:
            idle = self._sibling_idle
            quick = idle is not None and idle()
        if quick:
            if self.at_start is not None:
                self.at_start()
            self._quick_run = self._run
            self._since = time.monotonic()
            self._wake.set()  # to look at the quick threshold, not at its next tick
        else:
            self._since = time.monotonic()
            if self._parked:
                self._wake.set()
        self.io.release()
        try:
            return job(arg)
        finally:
            self.io.acquire()
            self._since = None
            if slot is not None:
                _ID.pack_into(slot[0], slot[1], 0)

    def _threshold(self, run: int) -> float:
        if run == self._quick_run:
            return self.quick
        idle = self._sibling_idle
        return self.quick if idle is not None and idle() else self.after

    def _watch(self) -> None:
        tick = max(self.after / 2, 0.01)  # 0 (give back at once) must not spin
        if self._sibling_idle is not None:
            tick = min(tick, TICK_WITH_SIBLINGS)  # a sibling that starts waiting is seen soon
        given_for = 0  # the run whose first give-back is done
        again: float | None = None  # when to look again during that run (a countdown due)
        not_before = 0.0  # after a failed give-back: when to try again
        idle = 0.0
        while not self._stopped.is_set():
            self._wake.clear()  # before reading the state: a wake-up after it is kept
            since, run = self._since, self._run
            if since is None:
                idle += tick
                if idle >= PARK_AFTER:
                    idle = 0.0
                    self._park()
                else:
                    self._wake.wait(tick)
                continue
            idle = 0.0
            first = run != given_for
            due = max(since + self._threshold(run), not_before) if first else again
            now = time.monotonic()
            if due is None or now < due:
                self._wake.wait(tick if due is None else min(tick, due - now))
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
        self._parked = False

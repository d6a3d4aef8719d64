"""Sending from asyncio code without blocking the event loop (``await add.adelay(2, 2)``).

The loop hands the send to a sender thread, with a copy of the caller's context (so a send
from inside a task still becomes its child); the thread builds the message there, publishes
it through the app's :class:`~caraway.publish.Publisher` (the one publish path) on a broker
connection of its own, and resolves the caller's future once the broker has it (after the
confirm, on RabbitMQ). The loop's own cost is a future and a queue entry. The one thing to
know: what arrives while the thread is busy goes out together in one round trip, so a
thousand concurrent sends cost a few round trips on every broker, where an asyncio client
would cost one each, and exists for Redis alone (unless publish signals have receivers,
which must see each caller's context: then each caller's messages go out on their own).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from caraway import signals
from caraway.brokers.contracts import Transport
from caraway.exceptions import SerializationError
from caraway.publish import Outgoing, Publisher

logger = logging.getLogger("caraway.publish")

#: most messages one round trip carries; more wait for the next
BATCH_LIMIT = 500


#: what the sender thread runs for one send: its result for the caller, and the messages
Build = Callable[[], "tuple[Any, list[Outgoing]]"]


@dataclass(slots=True)
class _Send:
    build: Build
    context: contextvars.Context
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    value: Any = None
    outgoings: list[Outgoing] = field(default_factory=list)


class AsyncSender:
    """One app's sender thread in this process, started on the first async send.

    ``connect`` opens the thread's broker connection. A forked child gets a new thread
    on its first send (the parent's is not in the child). :meth:`close` stops the thread
    after what was handed to it is sent.
    """

    def __init__(self, connect: Callable[[], Transport], publisher: Publisher) -> None:
        self._connect = connect
        self._publisher = publisher
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Send | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0

    async def send(self, build: Build) -> Any:
        """Run ``build`` on the sender thread in the caller's context and publish the
        messages it returns; returns its result once the broker has them, and raises what
        building or sending raised. Cancelling the caller after the hand-off does not take
        the messages back."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._ensure_thread()
        self._queue.put(_Send(build, contextvars.copy_context(), loop, future))
        return await future

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._queue = queue.SimpleQueue()
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, args=(self._queue,), name="caraway-async-sender", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread once it has sent what it holds, and close its connection."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None or self._pid != os.getpid():
                return
            self._queue.put(None)
        thread.join(timeout)

    # -- the sender thread -----------------------------------------------------------------
    def _run(self, inbox: queue.SimpleQueue[_Send | None]) -> None:
        transport: Transport | None = None
        try:
            while True:
                batch, stop = _take_batch(inbox)
                if batch:
                    if transport is None:
                        transport = self._open(batch)
                    if transport is not None:
                        self._build_and_send(transport, batch)
                if stop:
                    return
        finally:
            if transport is not None:
                transport.close()

    def _open(self, batch: Sequence[_Send]) -> Transport | None:
        try:
            return self._connect()
        except Exception as exc:
            _settle([(item, exc) for item in batch])
            return None

    def _build_and_send(self, transport: Transport, batch: Sequence[_Send]) -> None:
        built: list[_Send] = []
        failed: list[tuple[_Send, BaseException | None]] = []
        for item in batch:
            try:  # the caller's context: its running task, its options, its checks
                item.value, item.outgoings = item.context.run(item.build)
            except Exception as exc:
                failed.append((item, exc))
            else:
                built.append(item)
        _settle(failed)
        if not built:
            return
        if signals.before_task_publish.receivers or signals.after_task_publish.receivers:
            # receivers (tracing) read the publishing caller's context: each caller's
            # messages go out on their own, inside it, at a round trip each
            for item in built:
                item.context.run(self._send_batch, transport, [item])
        else:
            self._send_batch(transport, built)

    def _send_batch(self, transport: Transport, batch: Sequence[_Send]) -> None:
        try:
            self._publisher.send(transport, [out for item in batch for out in item.outgoings])
        except SerializationError as exc:
            if len(batch) == 1:
                _settle([(batch[0], exc)])
                return
            # nothing went out (every message is encoded before any is sent): send each
            # caller's on its own, so a message that cannot be encoded fails its caller only
            for item in batch:
                self._send_batch(transport, [item])
        except Exception as exc:
            _settle([(item, exc) for item in batch])
        else:
            _settle([(item, None) for item in batch])


def _take_batch(inbox: queue.SimpleQueue[_Send | None]) -> tuple[list[_Send], bool]:
    """Block for one send, then take what else is waiting; (batch, whether to stop)."""
    first = inbox.get()
    if first is None:
        return [], True
    batch = [first]
    while len(batch) < BATCH_LIMIT:
        try:
            item = inbox.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return batch, True
        batch.append(item)
    return batch, False


def _settle(outcomes: Sequence[tuple[_Send, BaseException | None]]) -> None:
    """Resolve each caller's future on its own loop: one wake-up per loop per batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Send, BaseException | None]]] = {}
    for item, error in outcomes:
        by_loop.setdefault(item.loop, []).append((item, error))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, items)
        except RuntimeError:  # the caller's loop closed meanwhile: nobody waits any more
            logger.debug("an event loop closed before its %d send(s) were settled", len(items))


def _resolve(items: Sequence[tuple[_Send, BaseException | None]]) -> None:
    for item, error in items:
        if item.future.done():  # cancelled by its caller
            continue
        if error is None:
            item.future.set_result(item.value)
        else:
            item.future.set_exception(error)

"""EventReceiver: every event on the broker as a dict, ``task.multi`` batches expanded.

Subscribes with binding ``#`` (a monitor) unless told otherwise, and survives broker loss:
a failed receive closes the bus and reconnects with capped exponential backoff, so a
dashboard outlives a broker restart. Events sent while it was disconnected are lost (as
with Celery). Each event gains ``local_received`` and a timestamp moved into this zone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from caraway.brokers.contracts import EventBus
from caraway.events.dispatcher import bus_for
from caraway.exceptions import CarawayError
from caraway.protocol import events as proto
from caraway.protocol.message import Message
from caraway.protocol.serializers import normalize_accept
from caraway.taskbase import AppLike

logger = logging.getLogger("caraway.events")

Handler = Callable[[dict[str, Any]], Any]

#: longest single wait on the bus, so stop() and deadlines are noticed promptly
_POLL = 0.5
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 10.0


class EventReceiver:
    """Reads events from ``app``'s broker.

    ``handlers`` maps an event type (or ``"*"`` for any) to a callable taking the event,
    for :meth:`capture`. ``binding`` is an AMQP topic pattern over routing keys
    (``worker.#`` for worker events only).
    """

    def __init__(
        self,
        app: AppLike,
        handlers: Mapping[str, Handler] | None = None,
        *,
        binding: str = "#",
        bus_factory: Callable[[AppLike], EventBus] | None = None,
        accept: Iterable[str] | None = None,
    ) -> None:
        self.app = app
        # Celery's receiver: the app's event_serializer and JSON (signed events verified)
        names = accept if accept is not None else (app.conf.event_serializer, "json")
        self.accept = normalize_accept(list(names))
        self.handlers = dict(handlers or {})
        self.binding = binding
        self.clock = proto.LamportClock()
        self.should_stop = False
        self._bus_factory = bus_factory or bus_for
        self._bus: EventBus | None = None
        self._connected = threading.Event()

    @property
    def connected(self) -> bool:
        """True once subscribed, until the next broker failure."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block until subscribed (events sent from now on are seen); False on timeout."""
        return self._connected.wait(timeout)

    def stop(self) -> None:
        """Make a running :meth:`itercapture` return at its next poll (any thread)."""
        self.should_stop = True

    def itercapture(
        self, limit: int | None = None, timeout: float | None = None, wakeup: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Yield events until ``limit`` were yielded, ``timeout`` seconds passed, or stop().

        ``wakeup`` asks every worker for a heartbeat once subscribed (remote control).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        count = 0
        backoff = _BACKOFF_FIRST
        try:
            while not self.should_stop and (limit is None or count < limit):
                left = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
                if left <= 0:
                    return
                try:
                    batch = self._receive(left, wakeup)
                except (CarawayError, OSError) as exc:
                    self._disconnect()
                    logger.warning(
                        "event receiver lost the broker (%s); retrying in %.1fs", exc, backoff
                    )
                    self._sleep(backoff, deadline)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
                    continue
                backoff = _BACKOFF_FIRST
                for event in batch:
                    yield event
                    count += 1
                    if limit is not None and count >= limit:
                        return
        finally:
            self._disconnect()

    def capture(
        self, limit: int | None = None, timeout: float | None = None, wakeup: bool = False
    ) -> None:
        """Run :meth:`itercapture`, calling the handler of each event's type (or ``"*"``)."""
        for event in self.itercapture(limit=limit, timeout=timeout, wakeup=wakeup):
            handler = self.handlers.get(event["type"]) or self.handlers.get("*")
            if handler is not None:
                handler(event)

    def _receive(self, timeout: float, wakeup: bool) -> list[dict[str, Any]]:
        if self._bus is None:
            bus = self._bus_factory(self.app)
            try:
                bus.subscribe(self.binding)
            except BaseException:
                bus.close()
                raise
            self._bus = bus
            self._connected.set()
            if wakeup:
                self._wakeup_workers()
        events: list[dict[str, Any]] = []
        for message in self._bus.receive(timeout):
            events.extend(self._expand(message))
        return events

    def _expand(self, message: Message) -> list[dict[str, Any]]:
        try:
            events = proto.decode(
                message.body, content_type=message.content_type, accept=self.accept
            )
        except CarawayError as exc:
            logger.warning("ignoring a message on the event exchange: %s", exc)
            return []
        now = time.time()
        for event in events:
            clock = event.get("clock")
            if isinstance(clock, int):
                self.clock.adjust(clock)
            event["local_received"] = now
            if "timestamp" in event:
                event["timestamp"] = proto.adjust_timestamp(event)
        return events

    def _wakeup_workers(self) -> None:
        try:
            self.app.control.broadcast("heartbeat")
        except Exception as exc:  # only a nudge; heartbeats arrive on their own anyway
            logger.info("could not ask workers for a heartbeat: %s", exc)

    def _disconnect(self) -> None:
        self._connected.clear()
        bus, self._bus = self._bus, None
        if bus is not None:
            try:
                bus.close()
            except Exception as exc:  # the connection is broken already
                logger.debug("closing the event bus: %s", exc)

    def _sleep(self, seconds: float, deadline: float | None) -> None:
        until = time.monotonic() + seconds
        if deadline is not None:
            until = min(until, deadline)
        while not self.should_stop and time.monotonic() < until:
            time.sleep(min(0.1, max(0.0, until - time.monotonic())))

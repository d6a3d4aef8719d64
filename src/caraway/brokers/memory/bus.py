"""In-process event bus for tests and eager mode: every bus on ``memory://name`` shares a hub.

Published messages get a sequence number; a subscriber remembers the last number it read,
so it sees only what was sent after it subscribed (as with pub/sub). Messages older than
``queue_ttl`` are dropped. Nothing crosses a process.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque

from caraway.brokers.contracts import EventBus, topic_matches
from caraway.protocol.message import Message


class _Hub:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.seq = itertools.count(1)
        self.last = 0
        self.messages: deque[tuple[int, float, str, Message]] = deque()


_HUBS: dict[str, _Hub] = {}
_HUBS_LOCK = threading.Lock()


def _hub(url: str, exchange: str) -> _Hub:
    key = f"{url}#{exchange}"
    with _HUBS_LOCK:
        hub = _HUBS.get(key)
        if hub is None:
            hub = _HUBS[key] = _Hub()
        return hub


class MemoryBus(EventBus):
    """The event bus of ``memory://`` brokers (one hub per URL and exchange, per process)."""

    def _prepare(self) -> None:
        self._hub = _hub(self.url, self.settings.exchange)
        self._read_up_to: int | None = None
        self._binding = "#"

    def publish(self, message: Message, *, routing_key: str) -> None:
        hub = self._hub
        now = time.monotonic()
        with hub.cond:
            hub.last = next(hub.seq)
            hub.messages.append((hub.last, now, routing_key, message))
            while hub.messages and hub.messages[0][1] < now - self.settings.queue_ttl:
                hub.messages.popleft()
            hub.cond.notify_all()

    def subscribe(self, binding: str = "#") -> None:
        self._binding = binding
        with self._hub.cond:
            self._read_up_to = self._hub.last

    def receive(self, timeout: float) -> list[Message]:
        if self._read_up_to is None:
            return []
        hub = self._hub
        deadline = time.monotonic() + timeout
        with hub.cond:
            while hub.last == self._read_up_to:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                hub.cond.wait(left)
            after = self._read_up_to
            fresh = [
                message
                for seq, _, key, message in hub.messages
                if seq > after and topic_matches(self._binding, key)
            ]
            self._read_up_to = hub.last
        return fresh

    def close(self) -> None:
        self._read_up_to = None

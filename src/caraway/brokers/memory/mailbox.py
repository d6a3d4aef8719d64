"""In-process pidbox for tests and eager mode: every mailbox on ``memory://name`` shares one hub.

Broadcasts are appended with a sequence number; each listening node remembers the last
number it read, so a node sees only what was sent after it started listening (as on
Redis pub/sub). Replies sit in per-oid deques until read; nothing crosses a process.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from typing import Any

from caraway.brokers.contracts import Mailbox
from caraway.protocol.message import Message

#: broadcasts older than this are dropped even if a slow node has not read them
_KEEP_SECONDS = 60.0


class _Hub:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.seq = itertools.count(1)
        self.last = 0
        self.broadcasts: deque[tuple[int, float, Message]] = deque()
        self.replies: dict[str, deque[Message]] = {}

    def append(self, message: Message) -> None:
        now = time.monotonic()
        self.last = next(self.seq)
        self.broadcasts.append((self.last, now, message))
        while self.broadcasts and self.broadcasts[0][1] < now - _KEEP_SECONDS:
            self.broadcasts.popleft()


_HUBS: dict[str, _Hub] = {}
_HUBS_LOCK = threading.Lock()


def _hub(url: str) -> _Hub:
    with _HUBS_LOCK:
        hub = _HUBS.get(url)
        if hub is None:
            hub = _HUBS[url] = _Hub()
        return hub


class MemoryMailbox(Mailbox):
    """The pidbox of ``memory://`` brokers (one hub per URL, per process)."""

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self._hub = _hub(url)
        self._read_up_to: int | None = None

    def listen(self, hostname: str) -> None:
        with self._hub.cond:
            self._read_up_to = self._hub.last

    def receive(self) -> list[Message]:
        if self._read_up_to is None:
            return []
        with self._hub.cond:
            fresh = [(seq, msg) for seq, _, msg in self._hub.broadcasts if seq > self._read_up_to]
            self._read_up_to = self._hub.last
        return [message for _, message in fresh]

    def reply(self, message: Message, *, exchange: str, routing_key: str) -> None:
        with self._hub.cond:
            queue = self._hub.replies.get(routing_key)
            if queue is None:
                return  # nobody waits for it any more
            queue.append(message)
            self._hub.cond.notify_all()

    def publish(self, message: Message) -> None:
        with self._hub.cond:
            self._hub.append(message)
            self._hub.cond.notify_all()

    def open_replies(self, oid: str) -> None:
        with self._hub.cond:
            self._hub.replies.setdefault(oid, deque())

    def next_reply(self, oid: str, timeout: float) -> Message | None:
        deadline = time.monotonic() + timeout
        with self._hub.cond:
            while True:
                queue = self._hub.replies.get(oid)
                if queue:
                    return queue.popleft()
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._hub.cond.wait(left)

    def close_replies(self, oid: str) -> None:
        with self._hub.cond:
            self._hub.replies.pop(oid, None)

    def close(self) -> None:
        self._read_up_to = None

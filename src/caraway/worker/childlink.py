"""A prefork child's end of its link with the supervisor: reports up, commands down.

Two pipes and a shared page (:class:`~caraway.worker.slot.RunningSlot`). The task a child
starts is announced in the page, before it runs, without a syscall; everything else the
child reports ("done", what it holds) is queued and written in one go when the consumer
flushes. Commands are read from their pipe only when the page's count says one was sent.
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections.abc import Sequence
from typing import Any

import orjson

from caraway.worker.slot import CAPACITY, RunningSlot

_CHUNK = 65536
logger = logging.getLogger("caraway.worker")


class ChildLink:
    def __init__(self, slot: RunningSlot, reports_fd: int, commands_fd: int) -> None:
        self.slot = slot
        self.reports_fd = reports_fd
        self.commands_fd = commands_fd
        os.set_blocking(commands_fd, False)
        self._outbox: list[bytes] = []
        self._pending = b""
        self._read_up_to = 0

    def report(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "start":  # before the task runs, without waking the supervisor
            self.slot.write(encode_running(event[1:]))
            return
        if kind == "done":
            self.slot.clear()
        self._outbox.append(orjson.dumps(event))

    def flush_reports(self) -> None:
        if self._outbox:
            write_all(self.reports_fd, b"\n".join(self._outbox) + b"\n")
            self._outbox.clear()

    def commands(self) -> list[list[Any]]:
        sent = self.slot.commands_sent()
        if sent == self._read_up_to and not self._pending:
            return []  # nothing new in the pipe: no read(2) per turn of the loop
        self._read_up_to = sent
        while True:  # all of it: the count will not say again that more is there
            try:
                chunk = os.read(self.commands_fd, _CHUNK)
            except BlockingIOError:
                break
            self._pending += chunk
            if len(chunk) < _CHUNK:
                break
        *lines, self._pending = self._pending.split(b"\n")
        commands = []
        for line in lines:
            if line:
                try:
                    commands.append(orjson.loads(line))
                except orjson.JSONDecodeError:  # as in the supervisor: drop it, carry on
                    logger.error("unreadable command from the supervisor: %.200r", line)
        return commands


def write_all(fd: int, data: bytes) -> None:
    """Write every byte: a pipe write returns early when a signal or a stop (a debugger, py-spy)
    interrupts it midway, or when a non-blocking pipe fills; a torn line would be read as
    garbage by the other end."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        view = view[written:]


def encode_running(fields: Sequence[Any]) -> bytes:
    """A child's announcement: the "start" report's fields and when it started."""
    payload = orjson.dumps([*fields, time.monotonic(), time.time()])
    if len(payload) > CAPACITY:  # huge argument reprs: the rest matters more
        shortened = [*fields[:7], None, None, *fields[9:]]
        payload = orjson.dumps([*shortened, time.monotonic(), time.time()])
    return payload

"""The supervisor's record of its children: what each is and what it runs, how to signal
one and how to describe its exit.

A prefork child announces its running task in shared memory (``slot``); a threads/solo
consumer reports it in-process (``announced``). ``supervisor.py`` re-exports ``Child``
and ``Running`` for those who import them from there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from caraway.worker.slot import RunningSlot


@dataclass(slots=True)
class Running:
    """What a child reported it is running."""

    task_id: str
    name: str
    tag: str
    acks_late: bool
    reject_on_worker_lost: bool
    time_limit: float | None
    soft_time_limit: float | None
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    queue: str | None = None
    started: float = field(default_factory=time.monotonic)
    wall_started: float = field(default_factory=time.time)


@dataclass(slots=True)
class Child:
    index: int
    pid: int
    reader: int = -1
    writer: int = -1
    #: prefork: what the child announced in shared memory
    slot: RunningSlot | None = None
    #: threads/solo: what the in-process consumer reported
    announced: Running | None = None
    buffer: bytes = b""
    #: commands the pipe could not take yet (see ``Supervisor._send_command``)
    outbox: bytes = b""
    killed_for: str | None = None
    retiring: bool = False

    @property
    def running(self) -> Running | None:
        if self.slot is None:
            return self.announced
        return self.slot.read(_decode_running)

    reserved: list[list[str]] = field(default_factory=list)
    scheduled: list[list[Any]] = field(default_factory=list)


def _decode_running(payload: bytes) -> Running:
    return Running(*orjson.loads(payload))


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return f"was killed by {name}"
    return f"exited with code {os.WEXITSTATUS(status)}"

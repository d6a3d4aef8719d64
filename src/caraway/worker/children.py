"""The supervisor's record of its children: what each is and what it runs, how to signal
one and how to describe its exit, and what to do before forking them.

A prefork child announces its running task in shared memory (``slot``); a threads/solo
consumer reports it in-process (``announced``). ``supervisor.py`` re-exports ``Child``
and ``Running`` for those who import them from there.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from caraway.brokers import preload
from caraway.worker.slot import RunningSlot

if TYPE_CHECKING:
    from caraway.app import Caraway


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


#: modules a prefork child imports only on its first chord, retry or callback; imported
#: before the fork instead, since an import in a child writes the new code and the import
#: system's tables to that child's own pages (measured: the first chord and retry in a child
#: cost it 0.7 MiB more when these came after the fork; preloading them costs nothing seen)
CHILD_MODULES = ("caraway.canvas", "caraway.worker.chords", "caraway.worker.retry")


def prepare_to_fork(app: Caraway) -> None:
    """Make the children share as much of this process's memory as they can.

    A forked child shares every page with the parent until either writes to it. So,
    before the first fork: import what this node opens only after forking (result
    backend, remote-control mailbox, event bus) and what children import on first use,
    so that neither the parent nor each child imports it again on its own pages; then
    move every object alive now to the collector's permanent generation
    (``gc.freeze``), so that a full collection in a child, which writes to the header of
    every object it examines, never examines (and copies) the objects it inherited.
    Frozen objects are never collected, which costs nothing for the ones that live as
    long as the process (modules, the app); later forks do not freeze again.
    """
    preload(app.broker_url, backend_url=app.result_backend_url)
    for name in ("caraway.worker.control", *CHILD_MODULES):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    gc.collect()  # garbage frozen now would never be freed, here or in any child
    gc.freeze()

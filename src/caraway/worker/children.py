"""The supervisor's record of its children: what each is and what it runs, how to signal
one and how to describe its exit, and what to do before forking them.

A prefork child announces its running task through its link's shared page
(:class:`~caraway.worker.ipc.SupervisorEnd`); a threads/solo consumer reports it
in-process (``announced``). How either talks to the supervisor is :mod:`caraway.worker.ipc`.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from caraway.brokers.registry import preload
from caraway.worker.ipc import Holding, SupervisorEnd, TaskStarted

if TYPE_CHECKING:
    from caraway.app import Caraway


@dataclass(slots=True)
class Child:
    """One consumer of the node: a forked process, or the in-process one (threads/solo)."""

    index: int
    pid: int
    #: prefork: the supervisor's end of the link with the child process
    link: SupervisorEnd | None = None
    #: threads/solo: what the in-process consumer reported it runs
    announced: TaskStarted | None = None
    #: what the consumer last reported it holds, not started
    holding: Holding = field(default_factory=Holding)
    #: why the supervisor killed it: "time_limit" or "revoked"
    killed_for: str | None = None
    #: the signal revoke(terminate=True) asked for
    killed_with: int | None = None
    #: the hard time limit it was killed for exceeding (seconds)
    limit_hit: float | None = None
    retiring: bool = False

    @property
    def running(self) -> TaskStarted | None:
        if self.link is None:
            return self.announced
        return self.link.running()


def kill(pid: int, signum: int) -> None:
    """Send ``signum`` to ``pid`` unless it has gone already."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def describe_exit(status: int) -> str:
    """``waitpid``'s status in words, for a log line."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return f"was killed by {name}"
    return f"exited with code {os.WEXITSTATUS(status)}"


#: prctl(2)'s option: the signal a process gets when its parent dies (Linux)
_PR_SET_PDEATHSIG = 1


def _c_library() -> ctypes.CDLL | None:
    """The C library this process runs on (``dlopen(NULL)``), or None where there is none."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except (OSError, TypeError):
        return None


# Looked up once, at import, in the supervisor before it forks: a lookup in each child
# built ctypes' function-pointer class there, 250 KiB of the child's own pages (measured).
_libc = _c_library()
_prctl: Callable[..., int] | None = (
    getattr(_libc, "prctl", None) if sys.platform.startswith("linux") else None
)
_malloc_trim: Callable[..., int] | None = getattr(_libc, "malloc_trim", None)


def stop_with_supervisor(supervisor: int, stop: threading.Event) -> None:
    """In a prefork child: set ``stop`` once the supervisor (pid ``supervisor``) is gone.

    A child left alone by a SIGKILLed supervisor would go on claiming messages that nobody
    renews (another node then runs them too), with no time limit enforced and nobody
    reading its reports. Told, it finishes and settles the task in hand, gives back what it
    holds, and exits. Linux signals the child (SIGTERM, whose handler sets ``stop``) the
    moment the parent dies; elsewhere a thread looks at the parent once a second.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    else:
        threading.Thread(
            target=_watch_parent, args=(supervisor, stop), name="caraway-parent", daemon=True
        ).start()
    if os.getppid() != supervisor:  # died between the fork and the line above
        stop.set()


def _watch_parent(supervisor: int, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        if os.getppid() != supervisor:
            stop.set()


#: modules a prefork child imports only on its first chord, retry or callback; imported
#: before the fork instead, since an import in a child writes the new code and the import
#: system's tables to that child's own pages (measured: the first chord and retry in a child
#: cost it 0.7 MiB more when these came after the fork; preloading them costs nothing seen)
CHILD_MODULES = ("caraway.canvas", "caraway.chords")


def prepare_to_fork(app: Caraway) -> None:
    """Make the children share as much of this process's memory as they can.

    A forked child shares every page with the parent until either writes to it. So,
    before the first fork: import what this node opens only after forking (result
    backend, remote-control mailbox, event bus) and what children import on first use,
    so that neither the parent nor each child imports it again on its own pages; give
    the C heap's free pages back (:func:`release_free_heap`); then move every object
    alive now to the collector's permanent generation (``gc.freeze``), so that a full
    collection in a child, which writes to the header of every object it examines,
    never examines (and copies) the objects it inherited. Frozen objects are never
    collected, which costs nothing for the ones that live as long as the process
    (modules, the app); later forks do not freeze again.
    """
    preload(app.broker_url, backend_url=app.result_backend_url)
    for name in CHILD_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    gc.collect()  # garbage frozen now would never be freed, here or in any child
    release_free_heap()
    gc.freeze()


def release_free_heap() -> None:
    """Return the free pages inside the C heap to the system (glibc's ``malloc_trim``).

    Start-up (imports, opening the broker, the collection above) leaves free chunks
    between live ones, and ``free`` gives back only the top of the heap. A free page
    still mapped is inherited by every child, and the first allocation a child makes
    there copies it: the parent keeps a page of garbage beside each child's copy.
    Trimmed, that memory is nobody's until a process allocates it. Measured after the
    Redis drain benchmark (W5): 1.0 MiB less PSS for the parent and its two children
    (20.2 -> 19.2 MiB of pages shared by all three, ``python -m benchmarks.fork_pages``).
    A no-op where the C library has no ``malloc_trim`` (musl, macOS).
    """
    if _malloc_trim is not None:
        _malloc_trim(0)

"""The node's parent: children, signals, leases, lost tasks and hard time limits.

With the prefork pool the supervisor forks ``concurrency`` children that each consume
on their own connection; the parent never touches task messages. It stays
single-threaded (a selector over the children's report pipes and a signal wake-up fd),
so forking a replacement child is always safe. ``-P solo``/``-P threads`` run the same
consumer on a thread of this process instead of forking.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from caraway import exceptions, states
from caraway.protocol import results as docs
from caraway.worker.child import Consumer

if TYPE_CHECKING:
    from caraway.app import Caraway

logger = logging.getLogger("caraway.worker")

RENEW_INTERVAL = 5.0


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
    started: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class Child:
    index: int
    pid: int
    reader: int
    running: Running | None = None
    buffer: bytes = b""
    killed_for: str | None = None


class Supervisor:
    """Runs one worker node until it is told to stop."""

    def __init__(
        self,
        app: Caraway,
        *,
        hostname: str,
        queues: Sequence[str],
        concurrency: int,
        pool: str,
        on_ready: Callable[[], None] | None = None,
        child_init: Callable[[int], None] | None = None,
    ) -> None:
        self.app = app
        self.hostname = hostname
        self.queues = list(queues)
        self.concurrency = concurrency
        self.pool = pool
        self.on_ready = on_ready or (lambda: None)
        self.child_init = child_init or (lambda index: None)
        self.children: dict[int, Child] = {}
        self.selector = selectors.DefaultSelector()
        self.shutdown: str | None = None  # None, "warm" or "cold"
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._stop_thread = threading.Event()
        self.default_time_limit = app.conf.task_time_limit

    # -- entry point -----------------------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        if self.pool == "prefork":
            for index in range(self.concurrency):
                self._spawn(index)
            thread = None
        else:
            thread = self._start_in_process_consumer()
        self.transport = self.app.connection()
        self.backend = self.app.new_backend()
        self.on_ready()
        logger.info("%s ready.", self.hostname)
        try:
            self._loop(thread)
        finally:
            self.transport.close()
            if self.backend is not None:
                self.backend.close()
        return 0

    def _start_in_process_consumer(self) -> threading.Thread:
        slots = 1 if self.pool == "solo" else self.concurrency
        self.consumer = Consumer(
            self.app,
            queues=self.queues,
            slots=slots,
            hostname=self.hostname,
            stop=self._stop_thread,
        )
        thread = threading.Thread(target=self.consumer.run, name="caraway-consumer")
        thread.start()
        return thread

    def _loop(self, thread: threading.Thread | None) -> None:
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        next_renew = time.monotonic() + RENEW_INTERVAL
        while True:
            if thread is not None and not thread.is_alive():
                return
            if thread is None and self.shutdown and not self.children:
                return
            for key, _ in self.selector.select(timeout=0.5):
                if key.data is None:
                    self._drain_wakeups()
                else:
                    self._read_reports(key.data)
            self._reap()
            self._enforce_time_limits()
            if time.monotonic() >= next_renew:
                self._renew_leases()
                next_renew = time.monotonic() + RENEW_INTERVAL

    # -- children --------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(reader)
            code = 0
            try:
                self._child_main(index, writer)
            except BaseException:
                logger.exception("child %d crashed", index)
                code = 1
            finally:
                os._exit(code)
        os.close(writer)
        os.set_blocking(reader, False)
        child = Child(index=index, pid=pid, reader=reader)
        self.children[pid] = child
        self.selector.register(reader, selectors.EVENT_READ, child)

    def _child_main(self, index: int, writer: int) -> None:
        stop = threading.Event()
        for child in self.children.values():
            os.close(child.reader)
        self.selector.close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.child_init(index)

        def report(event: tuple[Any, ...]) -> None:
            os.write(writer, orjson.dumps(event) + b"\n")

        Consumer(
            self.app,
            queues=self.queues,
            slots=1,
            hostname=self.hostname,
            report=report,
            stop=stop,
        ).run()

    def _read_reports(self, child: Child) -> None:
        try:
            data = os.read(child.reader, 65536)
        except (BlockingIOError, OSError):
            return
        if not data:
            self._unregister(child.reader)
            return
        child.buffer += data
        *lines, child.buffer = child.buffer.split(b"\n")
        for line in lines:
            event = orjson.loads(line)
            if event[0] == "start":
                child.running = Running(*event[1:])
            elif event[0] == "done":
                child.running = None

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            self._read_reports(child)
            self._close_child(child)
            self._child_exited(child, status)

    def _close_child(self, child: Child) -> None:
        self._unregister(child.reader)
        os.close(child.reader)

    def _unregister(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(fd)

    def _child_exited(self, child: Child, status: int) -> None:
        owner = f"{self.hostname}/{child.pid}"
        running = child.running
        clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and running is None
        if not clean:
            how = _describe_exit(status)
            logger.error(
                "child %d (pid %d) %s%s",
                child.index,
                child.pid,
                how,
                f" while running {running.name}[{running.task_id}]" if running else "",
            )
        if running is not None:
            self._lost_task(running, child)
        try:
            recovered = self.transport.recover(owner)
        except Exception:
            logger.exception(
                "could not hand back the messages child pid %d held; they "
                "return when their lease expires",
                child.pid,
            )
            recovered = 0
        if recovered:
            logger.info("handed back %d message(s) held by child pid %d", recovered, child.pid)
        if self.shutdown is None:
            self._spawn(child.index)

    def _lost_task(self, running: Running, child: Child) -> None:
        """Record the fate of the task a dead child was running."""
        if child.killed_for == "time_limit":
            error: BaseException = exceptions.TimeLimitExceeded(
                f"task {running.name}[{running.task_id}] exceeded its time limit "
                f"({running.time_limit}s) and its process was killed"
            )
        elif running.acks_late and running.reject_on_worker_lost:
            logger.warning(
                "task %s[%s] will be redelivered (acks_late, task_reject_on_worker_lost)",
                running.name,
                running.task_id,
            )
            return
        else:
            error = exceptions.WorkerLostError(
                f"worker process (pid {child.pid}) exited while running task "
                f"{running.name}[{running.task_id}]"
            )
        self._store_failure(running.task_id, error)

    def _store_failure(self, task_id: str, error: BaseException) -> None:
        if self.backend is None:
            return
        document = docs.result_document(task_id, states.FAILURE, docs.exception_to_dict(error))
        self.backend.store(
            task_id,
            docs.encode_document(document),
            state=states.FAILURE,
            expires=self.app.result_expires_seconds(),
        )

    def _enforce_time_limits(self) -> None:
        now = time.monotonic()
        for child in list(self.children.values()):
            running = child.running
            if running is None or child.killed_for:
                continue
            limit = running.time_limit or self.default_time_limit
            if limit and now - running.started > limit:
                logger.error(
                    "task %s[%s] hit its hard time limit (%ss); killing pid %d",
                    running.name,
                    running.task_id,
                    limit,
                    child.pid,
                )
                child.killed_for = "time_limit"
                running.time_limit = limit
                _kill(child.pid, signal.SIGKILL)

    def _renew_leases(self) -> None:
        owners = [f"{self.hostname}/{pid}" for pid in self.children]
        if self.pool != "prefork":
            owners.append(f"{self.hostname}/{os.getpid()}")
        for owner in owners:
            try:
                self.transport.renew(owner)
            except Exception as exc:
                logger.warning("could not renew the claims of %s: %s", owner, exc)

    # -- signals ---------------------------------------------------------------------------
    def _install_signals(self) -> None:
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGQUIT, self._on_cold_signal)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        if self.shutdown is None:
            self.shutdown = "warm"
            logger.warning(
                "worker: warm shutdown (running tasks finish; send the signal "
                "again or SIGQUIT for a cold shutdown)"
            )
            self._signal_children(signal.SIGTERM)
            self._stop_thread.set()
        else:
            self._on_cold_signal(signum, frame)

    def _on_cold_signal(self, signum: int, frame: Any) -> None:
        self.shutdown = "cold"
        logger.warning(
            "worker: cold shutdown (running tasks are stopped; with acks_late "
            "their messages are redelivered)"
        )
        self._signal_children(signal.SIGKILL)
        self._stop_thread.set()
        if self.pool != "prefork":
            os._exit(1)

    def _signal_children(self, signum: int) -> None:
        for pid in list(self.children):
            _kill(pid, signum)


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

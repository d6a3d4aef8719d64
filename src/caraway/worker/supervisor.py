"""The node's parent: children, signals, leases, lost tasks and hard time limits.

With the prefork pool the supervisor forks ``concurrency`` children that each consume
on their own connection; the parent never touches task messages. It stays
single-threaded (a selector over the children's report pipes and a signal wake-up fd),
so forking a replacement child is always safe. ``-P solo``/``-P threads`` run the same
consumer on a thread of this process instead of forking. Remote-control requests are
answered here (see ``node.py``) and relayed to the children over command pipes.
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
from typing import TYPE_CHECKING, Any

import orjson

from caraway import exceptions, signals, states
from caraway.brokers.contracts import Revocations
from caraway.protocol import results as docs
from caraway.worker.child import Consumer
from caraway.worker.childlink import ChildLink
from caraway.worker.children import Child, Running, _describe_exit, _kill, prepare_to_fork
from caraway.worker.monitor import HEARTBEAT_FREQ, TaskEvents
from caraway.worker.node import NodeControl
from caraway.worker.ratelimits import SharedBuckets
from caraway.worker.slot import RunningSlot

if TYPE_CHECKING:
    from caraway.app import Caraway

logger = logging.getLogger("caraway.worker")

RENEW_INTERVAL = 5.0
AUTOSCALE_KEEPALIVE = 5.0  # seconds of spare children before one is retired
REVOKED_SYNC_INTERVAL = 10.0  # seconds between reads of the broker's revoked ids


class Supervisor(NodeControl):
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
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        autoscale: tuple[int, int] | None = None,
        heartbeats: bool = True,
    ) -> None:
        super().__init__()
        self.max_tasks_per_child = max_tasks_per_child or app.conf.worker_max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child or app.conf.worker_max_memory_per_child
        self.autoscale = autoscale
        self.heartbeats = heartbeats
        self._idle_since: float | None = None
        self.buckets = SharedBuckets(
            (name, getattr(task, "rate_limit", None) or app.conf.task_default_rate_limit)
            for name, task in app.tasks.items()
        )
        self.app = app
        self.hostname = hostname
        self.queues = list(queues)
        self.concurrency = concurrency
        self.pool = pool
        self.pid = os.getpid()
        self.on_ready = on_ready or (lambda: None)
        self.child_init = child_init or (lambda index: None)
        self.children: dict[int, Child] = {}
        self.selector = selectors.DefaultSelector()
        self.shutdown_mode: str | None = None  # None, "warm" or "cold"
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._stop_thread = threading.Event()
        self._inline_commands: list[list[Any]] = []
        self._inline_lock = threading.Lock()
        self.default_time_limit = app.conf.task_time_limit
        self.control: Any = None
        self._next_revoked_sync = 0.0
        visibility = float(app.conf.broker_transport_options.get("visibility_timeout", 3600))
        # renew well inside the lease, however short the user made it
        self.renew_interval = min(RENEW_INTERVAL, max(0.2, visibility / 4))

    # -- entry point -----------------------------------------------------------------------
    def run(self) -> int:
        self.load_state()
        self._install_signals()
        self.transport = self.app.connection()
        self.admin = self.app.admin()  # revoked ids and the schedule, for remote control
        self._sync_revoked()  # before any consumer starts, so none runs a revoked task
        if self.pool == "prefork":
            prepare_to_fork(self.app)
            for index in range(self.concurrency):
                self._spawn(index)
            thread = None
        else:
            thread = self._start_in_process_consumer()
        self.backend = self.app.new_backend()
        self.control = self._open_control()
        self.events = TaskEvents(
            self.app, self.hostname, enabled=bool(self.app.conf.worker_send_task_events)
        )
        self.events_enabled = self.events.enabled
        self._beat("worker-online")
        self.on_ready()
        logger.info("%s ready.", self.hostname)
        signals.worker_ready.send(sender=self)
        try:
            self._loop(thread)
        finally:
            signals.worker_shutdown.send(sender=self)
            self._beat("worker-offline")
            self.events.close()
            if self.control is not None:
                self.control.close()
            self.transport.close()
            self.admin.close()
            if self.backend is not None:
                self.backend.close()
        return 0

    def _open_control(self) -> Any:
        try:
            from caraway.worker.control import ControlServer
        except ImportError:  # remote control lands in its own change
            return None
        try:
            return ControlServer(self.app, node=self)
        except Exception as exc:
            logger.error("remote control is unavailable on this node: %s", exc)
            return None

    def _start_in_process_consumer(self) -> threading.Thread:
        slots = 1 if self.pool == "solo" else self.concurrency
        inline = Child(index=0, pid=os.getpid())
        self.children[inline.pid] = inline

        def report(event: tuple[Any, ...]) -> None:
            self._handle_event(inline, list(event))

        self.consumer = Consumer(
            self.app,
            queues=self.queues,
            slots=slots,
            hostname=self.hostname,
            stop=self._stop_thread,
            report=report,
            commands=self._take_inline_commands,
            buckets=self.buckets,
        )
        thread = threading.Thread(target=self.consumer.run, name="caraway-consumer")
        thread.start()
        return thread

    def _take_inline_commands(self) -> list[list[Any]]:
        with self._inline_lock:
            commands, self._inline_commands = self._inline_commands, []
        return commands

    def _loop(self, thread: threading.Thread | None) -> None:
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        next_renew = time.monotonic() + self.renew_interval
        next_beat = time.monotonic() + HEARTBEAT_FREQ
        while True:
            if thread is not None and not thread.is_alive():
                return
            if thread is None and self.shutdown_mode and not self.children:
                return
            for key, _ in self.selector.select(timeout=0.2):
                if key.data is None:
                    self._drain_wakeups()
                else:
                    self._read_reports(key.data)
            for child in self.children.values():
                if child.outbox:
                    self._flush_commands(child)
            self._reap()
            self._enforce_time_limits()
            self._autoscale()
            if self.control is not None and self.shutdown_mode is None:
                self._poll_control()
            if time.monotonic() >= next_beat:
                self._beat("worker-heartbeat")
                next_beat = time.monotonic() + HEARTBEAT_FREQ
            if time.monotonic() >= next_renew:
                self._renew_leases()
                if time.monotonic() >= self._next_revoked_sync:
                    self._sync_revoked()
                next_renew = time.monotonic() + self.renew_interval

    def _sync_revoked(self) -> None:
        """Pick up revocations recorded on the broker (made while this node was away)."""
        self._next_revoked_sync = time.monotonic() + REVOKED_SYNC_INTERVAL
        admin = self.admin
        if not isinstance(admin, Revocations):
            return
        try:
            recorded = set(admin.revoked_ids())
        except Exception as exc:
            logger.warning("could not read revoked ids from the broker: %s", exc)
            return
        new = sorted(recorded - set(self.revoked_ids))
        if new:
            now = time.time()
            for task_id in new:
                self.revoked_ids[task_id] = now
            self.relay("revoke", new)

    def _beat(self, kind: str) -> None:
        if not self.heartbeats:
            return
        self.events.enabled = self.events_enabled
        active = sum(1 for child in self.children.values() if child.running is not None)
        try:
            self.events.worker(kind, active=active, processed=sum(self.totals.values()))
        except Exception:
            logger.exception("could not send %s", kind)

    def _poll_control(self) -> None:
        try:
            self.control.poll()
        except Exception:
            logger.exception("remote control request failed; the node carries on")

    # -- children --------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        reader, child_writer = os.pipe()
        child_reader, writer = os.pipe()
        slot = RunningSlot()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(reader)
            os.close(writer)
            code = 0
            try:
                self._child_main(index, child_writer, child_reader, slot)
            except BaseException:
                logger.exception("child %d crashed", index)
                code = 1
            finally:
                os._exit(code)
        os.close(child_writer)
        os.close(child_reader)
        os.set_blocking(reader, False)
        os.set_blocking(writer, False)
        child = Child(index=index, pid=pid, reader=reader, writer=writer, slot=slot)
        self.children[pid] = child
        self.selector.register(reader, selectors.EVENT_READ, child)
        if self.revoked_ids:
            self._send_command(child, orjson.dumps(["revoke", list(self.revoked_ids)]) + b"\n")

    def _child_main(self, index: int, writer: int, commands_fd: int, slot: RunningSlot) -> None:
        stop = threading.Event()
        for child in self.children.values():
            os.close(child.reader)
            os.close(child.writer)
            if child.slot is not None:
                child.slot.close()  # a sibling's: not ours to read or write
        self.selector.close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.child_init(index)
        link = ChildLink(slot, writer, commands_fd)
        signals.worker_process_init.send(sender=None)
        try:
            Consumer(
                self.app,
                queues=self.queues,
                slots=1,
                hostname=self.hostname,
                report=link.report,
                stop=stop,
                commands=link.commands,
                flush_reports=link.flush_reports,
                buckets=self.buckets,
                max_tasks=self.max_tasks_per_child,
                max_memory_kib=self.max_memory_per_child,
            ).run()
        finally:
            signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)

    def relay(self, *command: Any) -> None:
        """Send a command to every consumer of this node."""
        line = orjson.dumps(list(command)) + b"\n"
        for child in self.children.values():
            if child.writer >= 0:
                self._send_command(child, line)
        if self.pool != "prefork":
            with self._inline_lock:
                self._inline_commands.append(list(command))

    def _send_command(self, child: Child, line: bytes) -> None:
        """Queue ``line`` for the child's command pipe and write what the pipe takes now.

        The pipe is non-blocking (a child deep in a task must not stall the node): what does
        not fit waits in the child's outbox, in order, and the loop writes it as the child
        reads. A line is never cut short and left so, which the child would read as garbage.
        """
        child.outbox += line
        self._flush_commands(child)

    def _flush_commands(self, child: Child) -> None:
        while child.outbox:
            try:
                written = os.write(child.writer, child.outbox)
            except BlockingIOError:
                break  # the pipe is full: the loop tries again
            except OSError as exc:
                logger.warning("could not send commands to pid %d: %s", child.pid, exc)
                child.outbox = b""
                return
            child.outbox = child.outbox[written:]
        if child.slot is not None:
            child.slot.note_command()

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
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                # never the case since reports are written whole; if it were, one lost
                # report is better than a dead node
                logger.error("unreadable report from child pid %d: %.200r", child.pid, line)
                continue
            self._handle_event(child, event)

    def _handle_event(self, child: Child, event: list[Any]) -> None:
        kind = event[0]
        if kind == "start":
            child.announced = Running(*event[1:11])
        elif kind == "done":
            child.announced = None
            self.count_processed(event[2], event[3])
        elif kind == "queued":
            child.reserved, child.scheduled = event[1], event[2]

    def _reap(self) -> None:
        while self.pool == "prefork" and self.children:
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
            if child.slot is not None:
                child.slot.close()

    def _close_child(self, child: Child) -> None:
        self._unregister(child.reader)
        os.close(child.reader)
        os.close(child.writer)

    def _unregister(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(fd)

    def _child_exited(self, child: Child, status: int) -> None:
        owner = f"{self.hostname}/{child.pid}"
        running = child.running
        clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and running is None
        if not clean:
            how = _describe_exit(status)
            doing = f" while running {running.name}[{running.task_id}]" if running else ""
            logger.error("child %d (pid %d) %s%s", child.index, child.pid, how, doing)
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
        if self.shutdown_mode is None and not child.retiring:
            self._spawn(child.index)

    def _lost_task(self, running: Running, child: Child) -> None:
        """Record the fate of the task a dead child was running."""
        if child.killed_for == "revoked":
            self._store(running.task_id, states.REVOKED, exceptions.TaskRevokedError("terminated"))
            return
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
        self.count_processed(running.name, "failure")
        self._store(running.task_id, states.FAILURE, error)

    def _store(self, task_id: str, state: str, error: BaseException) -> None:
        if self.backend is None:
            return
        document = docs.result_document(task_id, state, docs.exception_to_dict(error))
        if state == states.REVOKED:
            document["children"] = None
        try:
            self.backend.store(
                task_id,
                docs.encode_document(document),
                state=state,
                expires=self.app.result_expires_seconds(),
            )
        except Exception:
            logger.exception(
                "could not store %s for task %s; the result backend failed", state, task_id
            )

    def _enforce_time_limits(self) -> None:
        if self.pool != "prefork":
            return
        now = time.monotonic()
        for child in list(self.children.values()):
            running = child.running
            if running is None or child.killed_for:
                continue
            limit = running.time_limit or self.task_time_limit(running.name)
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

    def task_time_limit(self, name: str) -> float | None:
        task = self.app._tasks.get(name)
        limit = getattr(task, "time_limit", None) if task is not None else None
        value = limit or self.default_time_limit
        return float(value) if value else None

    def terminate(self, task_id: str, signum: int) -> bool:
        """Stop the child running ``task_id`` (revoke with terminate=True)."""
        for child in self.children.values():
            if child.running is not None and child.running.task_id == task_id:
                if child.pid == os.getpid():
                    logger.warning(
                        "cannot terminate %s: the %s pool runs tasks in the worker's own process",
                        task_id,
                        self.pool,
                    )
                    return False
                child.killed_for = "revoked"
                # the child takes SIGTERM as a warm stop and ignores SIGINT; terminate means now
                if signum in (signal.SIGTERM, signal.SIGINT):
                    signum = signal.SIGKILL
                _kill(child.pid, signum)
                return True
        return False

    def grow(self, count: int) -> int:
        if self.pool != "prefork":
            return 0
        used = {child.index for child in self.children.values()}
        for _ in range(count):
            index = next(i for i in range(len(used) + 1) if i not in used)
            used.add(index)
            self._spawn(index)
        self.concurrency += count
        return self.concurrency

    def shrink(self, count: int) -> int:
        if self.pool != "prefork":
            return 0
        live = [child for child in self.children.values() if not child.retiring]
        idle_first = sorted(live, key=lambda child: child.running is not None)
        for child in idle_first[: max(0, min(count, len(live) - 1))]:
            child.retiring = True
            _kill(child.pid, signal.SIGTERM)
            self.concurrency -= 1
        return self.concurrency

    def _autoscale(self) -> None:
        """Grow while every child is busy, shrink after a while of idleness (--autoscale)."""
        if self.autoscale is None or self.pool != "prefork" or self.shutdown_mode:
            return
        high, low = self.autoscale
        live = [child for child in self.children.values() if not child.retiring]
        busy = sum(1 for child in live if child.running is not None or child.reserved)
        if busy == len(live) and len(live) < high:
            self._idle_since = None
            self.grow(1)
        elif busy < len(live) - 1 and len(live) > low:
            now = time.monotonic()
            if self._idle_since is None:
                self._idle_since = now
            elif now - self._idle_since > AUTOSCALE_KEEPALIVE:
                self._idle_since = None
                self.shrink(1)
        else:
            self._idle_since = None

    def _renew_leases(self) -> None:
        owners = [f"{self.hostname}/{pid}" for pid in self.children]
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

    def request_shutdown(self) -> None:
        """Warm shutdown: running tasks finish, unstarted messages go back."""
        if self.shutdown_mode is None:
            self.shutdown_mode = "warm"
            logger.warning(
                "worker: warm shutdown (running tasks finish; send the signal "
                "again or SIGQUIT for a cold shutdown)"
            )
            self._signal_children(signal.SIGTERM)
            self._stop_thread.set()

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        if self.shutdown_mode is None:
            self.request_shutdown()
        else:
            self._on_cold_signal(signum, frame)

    def _on_cold_signal(self, signum: int, frame: Any) -> None:
        self.shutdown_mode = "cold"
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
            if pid != os.getpid():
                _kill(pid, signum)


__all__ = ["Child", "Running", "Supervisor"]

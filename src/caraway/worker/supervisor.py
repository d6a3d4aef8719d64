"""The node's parent: children, signals, leases, lost tasks and hard time limits.

With the prefork pool the supervisor forks ``concurrency`` children that each consume
on their own connection; the parent never touches task messages. It stays
single-threaded (a selector over the children's report pipes and a signal wake-up fd),
so forking a replacement child is always safe. ``-P solo``/``-P threads`` run the same
consumer on a thread of this process instead of forking. Remote-control requests are
answered by the node's NodeControl (``node.py``), which the supervisor holds and serves
(``Supervised``): it relays commands to the consumers (``ipc.py``), kills, grows, shrinks.
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

from caraway import exceptions, lifecycle, signals, states
from caraway.brokers.contracts import Revocations
from caraway.lifecycle import WORKER_LOST_KEY
from caraway.protocol import results as docs
from caraway.worker.buckets import SharedBuckets
from caraway.worker.children import (
    Child,
    describe_exit,
    kill,
    prepare_to_fork,
    stop_with_supervisor,
)
from caraway.worker.consumer import Consumer
from caraway.worker.control import ControlServer
from caraway.worker.handoff import Siblings
from caraway.worker.ipc import (
    ChildEnd,
    Command,
    Counted,
    Holding,
    Link,
    Rejected,
    Report,
    Revoke,
    RevokeStamps,
    TaskFinished,
    TaskStarted,
    encode,
)
from caraway.worker.monitor import HEARTBEAT_FREQ, TaskEvents
from caraway.worker.node import NodeControl

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.beat import EmbeddedBeat
    from caraway.brokers.contracts import Backend, Transport

logger = logging.getLogger("caraway.worker")

RENEW_INTERVAL = 5.0
AUTOSCALE_KEEPALIVE = 5.0  # seconds of spare children before one is retired
REVOKED_SYNC_INTERVAL = 10.0  # seconds between reads of the broker's revoked ids
#: the longest the loop goes, while children report, without reaping, enforcing hard time
#: limits, autoscaling and answering remote control (a signal does them at once). A drain
#: wakes the loop once per batch a child finishes; doing these on every wake-up cost the
#: supervisor about 15 us of CPU per task, on cores the children need.
CHORES_INTERVAL = 0.05
#: the selector's mark for the remote-control mailbox's descriptor
CONTROL = object()


class Supervisor:
    """Runs one worker node until it is told to stop."""

    transport: Transport  # opened by run()
    #: prefork: which children wait on an empty broker (made by run() before forking)
    siblings: Siblings

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
        heartbeat_interval: float = HEARTBEAT_FREQ,
        beat: EmbeddedBeat | None = None,
    ) -> None:
        #: ``-B``: beat on a thread of this process, never in a child; stops with the node
        self.beat = beat
        self.max_tasks_per_child = max_tasks_per_child or app.conf.worker_max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child or app.conf.worker_max_memory_per_child
        self.autoscale = autoscale
        self.heartbeats = heartbeats
        self.heartbeat_interval = heartbeat_interval
        self._idle_since: float | None = None
        limits = () if app.conf.worker_disable_rate_limits else app.tasks.items()
        self.buckets = SharedBuckets(
            (name, getattr(task, "rate_limit", None) or app.conf.task_default_rate_limit)
            for name, task in limits
        )
        self.app = app
        self.hostname = hostname
        self.concurrency = concurrency
        #: how far remote control may grow the pool (``pool_grow``), so that one broadcast
        #: cannot fork a node out of memory: four times its start, or its autoscale maximum
        self.max_concurrency = max(4 * concurrency, autoscale[0] if autoscale else 0)
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
        self._inline_commands: list[Command] = []
        self._inline_lock = threading.Lock()
        self.default_time_limit = app.conf.task_time_limit
        self.node = NodeControl(
            app,
            hostname=hostname,
            pool=pool,
            pid=self.pid,
            queues=queues,
            buckets=self.buckets,
            supervisor=self,
        )
        self.control: ControlServer | None = None
        #: the mailbox descriptor the loop waits on (None: polled with the chores)
        self._control_fd: int | None = None
        self._backend: Backend | None = None
        self._backend_unset = False  # the app has no result backend
        self._next_revoked_sync = 0.0
        visibility = float(app.conf.broker_transport_options.get("visibility_timeout", 3600))
        # renew well inside the lease, however short the user made it
        self.renew_interval = min(RENEW_INTERVAL, max(0.2, visibility / 4))

    # -- entry point -----------------------------------------------------------------------
    def run(self) -> int:
        signals.worker_init.send(sender=self)
        self.node.load_state()
        self._install_signals()
        self.transport = self.app.connection()
        self.admin = self.app.admin()  # revoked ids and the schedule, for remote control
        self._sync_revoked()  # before any consumer starts, so none runs a revoked task
        if self.pool == "prefork":
            # made before the first fork; a replacement child reuses its index's slot
            self.siblings = Siblings(self.max_concurrency)
            prepare_to_fork(self.app)
            for index in range(self.concurrency):
                self._spawn(index)
            thread = None
        else:
            thread = self._start_in_process_consumer()
        self.control = self._open_control()
        self.events = TaskEvents(self.app, self.hostname, enabled=self.node.events_enabled)
        self._beat("worker-online")
        self.on_ready()
        logger.info("%s ready.", self.hostname)
        signals.worker_ready.send(sender=self)
        try:
            if self.beat is not None:
                self.beat.start()
            self._loop(thread)
        finally:
            if self.beat is not None:
                self.beat.stop()  # gives the lease up, so another node's beat takes over
            signals.worker_shutdown.send(sender=self)
            self._beat("worker-offline")
            self.events.close()
            if self.control is not None:
                self.control.close()
            self.transport.close()
            self.admin.close()
            if self._backend is not None:
                self._backend.close()
        return 0

    @property
    def backend(self) -> Backend | None:
        """The result backend, opened on first use; None when the app has none or it
        cannot be opened now (logged; the next use tries again).

        The supervisor writes results only for a task whose process died under it (lost,
        killed for its time limit, revoked with terminate): on most days never. Opened
        at start, after the children were forked, building its client wrote 1.8 MiB of
        pages the parent shared with them; most of those the children write too, so the
        node's PSS is 0.3 MiB less for it (W5 in docs/benchmarks.md).
        """
        if self._backend is None and not self._backend_unset:
            try:
                self._backend = self.app.new_backend()
            except Exception:
                logger.exception("could not open the result backend")
                return None
            self._backend_unset = self._backend is None
        return self._backend

    def _open_control(self) -> ControlServer | None:
        if not self.app.conf.worker_enable_remote_control:
            return None
        try:
            return ControlServer(self.app, node=self.node)
        except Exception as exc:
            logger.error("remote control is unavailable on this node: %s", exc)
            return None

    def _start_in_process_consumer(self) -> threading.Thread:
        slots = 1 if self.pool == "solo" else self.concurrency
        inline = Child(index=0, pid=os.getpid())
        self.children[inline.pid] = inline

        def report(record: Report) -> None:
            self._on_report(inline, record)

        self.consumer = Consumer(
            self.app,
            queues=self.node.queues,
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

    def _take_inline_commands(self) -> list[Command]:
        with self._inline_lock:
            commands, self._inline_commands = self._inline_commands, []
        return commands

    def _loop(self, thread: threading.Thread | None) -> None:
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        next_renew = time.monotonic() + self.renew_interval
        next_beat = time.monotonic() + self.heartbeat_interval
        next_chores = 0.0
        while True:
            if thread is not None and not thread.is_alive():
                return
            if thread is None and self.shutdown_mode and not self.children:
                return
            if not self._wait() and time.monotonic() < next_chores:
                continue
            next_chores = time.monotonic() + CHORES_INTERVAL
            self._reap()
            self._enforce_time_limits()
            self._autoscale()
            if self.control is not None and self.shutdown_mode is None:
                self._poll_control(self.control)
            elif self._control_fd is not None:
                self._watch_control(None)  # stopping: requests wait, and must not spin the loop
            if time.monotonic() >= next_beat:
                self._beat("worker-heartbeat")
                next_beat = time.monotonic() + self.heartbeat_interval
            if time.monotonic() >= next_renew:
                self._renew_leases()
                if time.monotonic() >= self._next_revoked_sync:
                    self._sync_revoked()
                next_renew = time.monotonic() + self.renew_interval

    def _wait(self) -> bool:
        """Read what children report and send them what is queued for them (at most 0.2 s);
        True when a signal or another thread woke the loop."""
        signalled = False
        for key, _ in self.selector.select(timeout=0.2):
            if key.data is None:
                self._drain_wakeups()
                signalled = True
            elif key.data is CONTROL:
                signalled = True  # a remote-control request: the chores answer it now
            else:
                self._read_reports(key.data)
        for child in self.children.values():
            if child.link is not None and child.link.outbox:
                child.link.flush()
        return signalled

    def _sync_revoked(self) -> None:
        """Pick up revocations recorded on the broker (made while this node was away)."""
        self._next_revoked_sync = time.monotonic() + REVOKED_SYNC_INTERVAL
        admin = self.admin
        if not isinstance(admin, Revocations):
            return
        try:
            recorded = admin.revoked_ids()
        except Exception as exc:
            logger.warning("could not read revoked ids from the broker: %s", exc)
            return
        self.node.learn_revoked(recorded)

    def _beat(self, kind: str) -> None:
        if not self.heartbeats:
            return
        self.events.enabled = self.node.events_enabled
        active = sum(1 for child in self.children.values() if child.running is not None)
        try:
            self.events.worker(
                kind, active=active, processed=self.node.processed, freq=self.heartbeat_interval
            )
        except Exception:
            logger.exception("could not send %s", kind)
            return
        if kind == "worker-heartbeat":
            signals.heartbeat_sent.send(sender=self)

    def _poll_control(self, control: ControlServer) -> None:
        try:
            control.poll()
        except Exception:
            logger.exception("remote control request failed; the node carries on")
            self._watch_control(None)  # a broken socket stays readable: poll until it mends
            return
        self._watch_control(control.fileno())

    def _watch_control(self, fd: int | None) -> None:
        """Wait on the mailbox's descriptor beside the children's pipes, so a request
        (``inspect ping``) is answered when it arrives rather than at the next 0.2 s poll;
        follows the descriptor across reconnects."""
        if fd == self._control_fd:
            return
        if self._control_fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(self._control_fd)
        self._control_fd = None
        if fd is not None:
            try:
                self.selector.register(fd, selectors.EVENT_READ, CONTROL)
            except (KeyError, ValueError, OSError):
                return
            self._control_fd = fd

    # -- children --------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        signals.worker_before_create_process.send(sender=self)
        link = Link()
        pid = os.fork()
        if pid == 0:  # the child
            code = 0
            try:
                self._child_main(index, link.child_end())
            except BaseException:
                logger.exception("child %d crashed", index)
                code = 1
            finally:
                os._exit(code)
        end = link.supervisor_end(pid)
        child = Child(index=index, pid=pid, link=end)
        self.children[pid] = child
        self.selector.register(end.reader, selectors.EVENT_READ, child)
        if self.node.revoked_ids:
            end.send(encode(Revoke(tuple(self.node.revoked_ids))))
        if self.node.revoked_stamps:
            end.send(encode(RevokeStamps(self.node.revoked_stamps)))

    def _child_main(self, index: int, link: ChildEnd) -> None:
        stop = threading.Event()
        for child in self.children.values():
            if child.link is not None:
                child.link.close()  # a sibling's: not ours to read or write
        self.selector.close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        stop_with_supervisor(self.pid, stop)
        self.child_init(index)
        signals.worker_process_init.send(sender=None)
        try:
            Consumer(
                self.app,
                queues=self.node.queues,
                slots=1,
                hostname=self.hostname,
                report=link.report,
                stop=stop,
                commands=link.commands,
                flush_reports=link.flush_reports,
                buckets=self.buckets,
                max_tasks=self.max_tasks_per_child,
                max_memory_kib=self.max_memory_per_child,
                siblings=self.siblings.view(index),
            ).run()
        finally:
            signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)

    def relay(self, command: Command) -> None:
        """Send ``command`` to every consumer of this node."""
        line = encode(command)
        for child in self.children.values():
            if child.link is not None:
                child.link.send(line)
        if self.pool != "prefork":
            with self._inline_lock:
                self._inline_commands.append(command)

    def _read_reports(self, child: Child) -> None:
        assert child.link is not None
        reports = child.link.read_reports()
        if reports is None:  # the child closed its end
            self._unregister(child.link.reader)
            return
        for report in reports:
            self._on_report(child, report)

    def _on_report(self, child: Child, report: Report) -> None:
        if isinstance(report, TaskStarted):
            child.announced = report
        elif isinstance(report, TaskFinished):
            child.announced = None
            self.node.count_processed(report.name, report.outcome)
        elif isinstance(report, Counted):
            self.node.count_processed(report.name, report.outcome, report.count)
        elif isinstance(report, Holding):
            child.holding = report
        elif isinstance(report, Rejected):
            self.node.rejected += 1

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
            assert child.link is not None
            self._read_reports(child)
            self._unregister(child.link.reader)
            child.link.close_pipes()
            self._child_exited(child, status)
            child.link.close()  # the page, once _child_exited has read what it announced

    def _unregister(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(fd)

    def _child_exited(self, child: Child, status: int) -> None:
        owner = f"{self.hostname}/{child.pid}"
        running = child.running
        clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and running is None
        if not clean:
            how = describe_exit(status)
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
        self.siblings.clear(child.index)  # a child killed while waiting is no idle sibling
        if self.shutdown_mode is None and not child.retiring:
            self._spawn(child.index)

    def _lost_task(self, running: TaskStarted, child: Child) -> None:
        """Record the fate of the task a dead child was running."""
        if child.killed_for == "revoked":
            revoked = exceptions.TaskRevokedError("terminated")
            self._store(running.task_id, states.REVOKED, revoked)
            self._announce_lost(running.task_id, revoked, signum=int(child.killed_with or 9))
            signals.task_revoked.send(
                sender=self.app._tasks.get(running.name),
                request=running,
                terminated=True,
                signum=child.killed_with,
                expired=False,
            )
            return
        if child.killed_for == "time_limit":
            error: BaseException = exceptions.TimeLimitExceeded(
                f"task {running.name}[{running.task_id}] exceeded its time limit "
                f"({child.limit_hit}s) and its process was killed"
            )
        elif running.acks_late and running.reject_on_worker_lost:
            logger.warning(
                "task %s[%s] will be redelivered (acks_late, task_reject_on_worker_lost)",
                running.name,
                running.task_id,
            )
            if not self.transport.capabilities.delivery_count:
                self._count_lost(running, child)
            return
        else:
            error = exceptions.WorkerLostError(
                f"worker process (pid {child.pid}) exited while running task "
                f"{running.name}[{running.task_id}]"
            )
        self.node.count_processed(running.name, "failure")
        self._store(running.task_id, states.FAILURE, error)
        self._announce_lost(running.task_id, error)

    def _count_lost(self, running: TaskStarted, child: Child) -> None:
        """Count the process the task killed in its STARTED document: the broker counts no
        deliveries, and without a count a message that kills every process that runs it
        would never reach the delivery cap (and the dead-letter store)."""
        backend = self.backend
        if backend is None:
            return
        try:
            raw = backend.load(running.task_id)
            stored = docs.decode_document(raw) if raw is not None else None
            lost = lifecycle.processes_lost(stored) + 1
            result = {"pid": child.pid, "hostname": self.hostname, WORKER_LOST_KEY: lost}
            document = docs.result_document(running.task_id, states.STARTED, result)
            backend.store(
                running.task_id,
                docs.encode_document(document),
                state=states.STARTED,
                expires=self.app.conf.result_expires_seconds(),
            )
        except Exception:
            logger.exception(
                "could not count the lost process of task %s; the delivery cap cannot apply "
                "to it on this broker",
                running.task_id,
            )

    def _announce_lost(
        self, task_id: str, error: BaseException, *, signum: int | None = None
    ) -> None:
        try:
            self.events.lost(task_id, error=error, signum=signum)
            self.events.flush()  # monitors learn the end from this event, not the backend
        except Exception:
            logger.exception("could not send the event for task %s", task_id)

    def _store(self, task_id: str, state: str, error: BaseException) -> None:
        backend = self.backend
        if backend is None:
            return
        document = docs.result_document(
            task_id, state, docs.exception_to_dict(error), zone=self.app.timezone
        )
        if state == states.REVOKED:
            document["children"] = None
        try:
            backend.store(
                task_id,
                docs.encode_document(document),
                state=state,
                expires=self.app.conf.result_expires_seconds(),
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
                child.killed_for, child.limit_hit = "time_limit", limit
                kill(child.pid, signal.SIGKILL)

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
                child.killed_for, child.killed_with = "revoked", signum
                # the child takes SIGTERM as a warm stop and ignores SIGINT; terminate means now
                if signum in (signal.SIGTERM, signal.SIGINT):
                    signum = signal.SIGKILL
                kill(child.pid, signum)
                return True
        return False

    def grow(self, count: int) -> int:
        if self.pool != "prefork":
            return 0
        count = max(0, min(count, self.max_concurrency - self.concurrency))
        if not count:
            logger.warning(
                "pool_grow refused: the pool is at its bound of %d processes",
                self.max_concurrency,
            )
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
            kill(child.pid, signal.SIGTERM)
            self.concurrency -= 1
        return self.concurrency

    def set_autoscale(self, high: int | None, low: int | None) -> tuple[int, int]:
        """Remote control ``autoscale``: new bounds (None keeps one); ValueError when the
        node was not started with ``--autoscale`` or the bounds make no sense."""
        if self.autoscale is None:
            raise ValueError("Autoscale not enabled")
        new_high = self.autoscale[0] if high is None else high
        new_low = self.autoscale[1] if low is None else low
        if new_high < 1 or new_low < 0 or new_low > new_high:
            raise ValueError(f"autoscale needs max >= min >= 0 and max >= 1, got {high}, {low}")
        if new_high > self.max_concurrency:
            raise ValueError(
                f"autoscale max {new_high} is above this node's bound of "
                f"{self.max_concurrency} processes (four times its start, or its --autoscale)"
            )
        self.autoscale = (new_high, new_low)
        return self.autoscale

    def _autoscale(self) -> None:
        """Grow while every child is busy, shrink after a while of idleness (--autoscale)."""
        if self.autoscale is None or self.pool != "prefork" or self.shutdown_mode:
            return
        high, low = self.autoscale
        live = [child for child in self.children.values() if not child.retiring]
        busy = sum(1 for child in live if child.running is not None or child.holding.reserved)
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
        siblings = self.siblings if self.pool == "prefork" else None
        owners = [
            f"{self.hostname}/{pid}"
            for pid, child in self.children.items()
            if siblings is None or not siblings.holds_nothing(child.index)
        ]
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
        # One read, only after the selector saw the pipe readable: under -P eventlet os.read
        # is green and waits for more bytes instead of raising BlockingIOError, so a loop
        # reading until empty hung the node on its first signal. Bytes left over wake the
        # next select.
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)

    def request_shutdown(self) -> None:
        """Warm shutdown: running tasks finish, unstarted messages go back."""
        if self.shutdown_mode is None:
            self.shutdown_mode = "warm"
            signals.worker_shutting_down.send(
                sender=self.hostname, sig="SIGTERM", how="Warm", exitcode=0
            )
            logger.warning(
                "worker: warm shutdown (running tasks finish; send the signal "
                "again or SIGQUIT for a cold shutdown)"
            )
            self._signal_children(signal.SIGTERM)
            self._stop_thread.set()
            if self.beat is not None:
                self.beat.stop(wait=False)  # no more runs from a node on its way out

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        if self.shutdown_mode is None:
            self.request_shutdown()
        else:
            self._on_cold_signal(signum, frame)

    def _on_cold_signal(self, signum: int, frame: Any) -> None:
        self.shutdown_mode = "cold"
        signals.worker_shutting_down.send(
            sender=self.hostname, sig=signal.Signals(signum).name, how="Cold", exitcode=1
        )
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
                kill(pid, signum)


__all__ = ["Supervisor"]

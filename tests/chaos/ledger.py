"""The delivery ledger: numbered tasks sent with acknowledged publishes while a fault schedule
acts on the workers, the broker and the connections between them; then every number is
classified from a store of its own (an append-only file, not the broker).

A run of ``ledger(n, seconds)`` appends ``S n pid`` when it starts and ``D n pid`` when it
is done. A number *ran* once per start; a start with no done line by the same process was
interrupted (its process died or was stopped). Classified at the end:

- **once**: one start, and it finished;
- **more** (``{n: starts}``): started more than once; *explained* when every start but the
  last was interrupted (a worker died while running it), *unexplained* when it finished
  more than once (a redelivery of a task that had already run to the end);
- **never**: the publish was acknowledged and no run ever started (lost);
- **never finished**: started, interrupted, never run again (an early ack's loss);
- **unacknowledged ran**: the publish raised and the task ran anyway.

Poison numbers (their task SIGKILLs its own process) are left out of these counts; whether
they were set aside in the dead-letter store is reported apart.

The same `proj` runs on caraway and on Celery (`celeryproj`), so a mixed fleet and a
Celery-only fleet share the task, the store and the fault schedule.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.brokers import Broker
from tests.harness.processes import Process, Processes

RECORD = '''
import os
import time


def record(kind, number):
    """One line per event, written with a single O_APPEND write (atomic for a short line)."""
    line = f"{kind} {number} {os.getpid()} {time.time():.3f} {SIDE}\\n".encode()
    fd = os.open(os.environ["TEST_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def body(number, seconds, poison=False):
    record("S", number)
    if poison:  # kills its process every time: must end in the dead-letter store
        os.kill(os.getpid(), 9)
    time.sleep(seconds)
    record("D", number)
    return number
'''

SETTINGS = """
    task_default_queue=os.environ['TEST_QUEUE'],
    task_acks_late=os.environ.get('TEST_ACKS_LATE') == '1',
    task_reject_on_worker_lost=True,
    broker_transport_options=json.loads(os.environ.get('TEST_TRANSPORT_OPTIONS') or '{}'),
    task_publish_retry_policy={'max_retries': 10, 'interval_start': 0.1,
                               'interval_step': 0.2, 'interval_max': 0.5},
    broker_connection_max_retries=None,
    worker_prefetch_multiplier=1,
    result_expires=3600,
"""

CARAWAY_APP = f"""
import json
import os
from caraway import Caraway

app = Caraway('proj', broker=os.environ['TEST_BROKER'], backend=os.environ['TEST_BACKEND'],
              include=['proj.tasks'])
app.conf.update({SETTINGS}
    broker_park_horizon=float(os.environ.get('TEST_PARK_HORIZON') or 60),
    worker_delivery_cap=3,
)
"""

CARAWAY_TASKS = f"""
{RECORD.replace("{SIDE}", "caraway")}
from .caraway import app


@app.task(name='proj.tasks.ledger')
def ledger(number, seconds=0.0, poison=False):
    return body(number, seconds, poison)
"""

CELERY_APP = f"""
import json
import os
from celery import Celery
{RECORD.replace("{SIDE}", "celery")}

app = Celery('celeryproj', broker=os.environ['TEST_BROKER'],
             backend=os.environ.get('TEST_CELERY_BACKEND') or os.environ['TEST_BACKEND'])
app.conf.update({SETTINGS}
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name='proj.tasks.ledger')
def ledger(number, seconds=0.0, poison=False):
    return body(number, seconds, poison)
"""


def write_projects(base: Path) -> Path:
    """`proj` (caraway) and `celeryproj` (Celery), importable from ``base``."""
    package = base / "proj"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "caraway.py").write_text(CARAWAY_APP)
    (package / "tasks.py").write_text(CARAWAY_TASKS)
    (base / "celeryproj.py").write_text(CELERY_APP)
    return base


@dataclass
class Send:
    """What the producer did: numbers whose publish returned, and those whose publish raised."""

    acknowledged: list[int] = field(default_factory=list)
    #: numbers sent as poison (their task kills its process), left out of the classification
    poison: dict[int, str] = field(default_factory=dict)
    raised: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


def produce(
    publish: Callable[[int], str | None],
    numbers: range,
    *,
    spacing: float,
    send: Send,
    close: Callable[[], None] = lambda: None,
) -> threading.Thread:
    """Publish every number from a thread, ``spacing`` s apart; then ``close`` the thread's
    connections there (an app's connections are per thread: closing them from the test's
    thread would leave this one's open)."""

    def run() -> None:
        try:
            for number in numbers:
                try:
                    poison_id = publish(number)
                    send.acknowledged.append(number)
                    if poison_id is not None:
                        send.poison[number] = poison_id
                except Exception as exc:  # the publish may or may not have reached the broker
                    send.raised.append(number)
                    send.errors.append(f"{number}: {exc!r}")
                time.sleep(spacing)
        finally:
            with contextlib.suppress(Exception):
                close()
            send.done.set()

    thread = threading.Thread(target=run, name="ledger-producer", daemon=True)
    thread.start()
    return thread


@dataclass
class Fleet:
    """The worker nodes of a run; a node whose parent was killed is replaced by a new one."""

    processes: Processes
    start_node: Callable[[str], Process]
    nodes: list[Process] = field(default_factory=list)
    generation: int = 0

    def start(self, count: int) -> Fleet:
        for _ in range(count):
            self.nodes.append(self._new())
        for node in self.nodes:
            node.wait_ready(60)
        return self

    def _new(self) -> Process:
        self.generation += 1
        return self.start_node(f"n{self.generation}")

    def replace(self, node: Process) -> Process:
        """Start a node in place of ``node`` (dead or about to be)."""
        fresh = self._new()
        self.nodes[self.nodes.index(node)] = fresh
        return fresh

    def stop(self) -> None:
        """Stop every node (warm shutdown, then SIGKILL): before the broker goes away."""
        for node in self.nodes:
            node.stop(timeout=15)

    def alive(self) -> list[Process]:
        return [node for node in self.nodes if node.alive()]

    def heal(self) -> None:
        """Thaw every node and replace the dead ones; wait until all are ready."""
        for node in list(self.nodes):
            node.thaw()
            if not node.alive():
                self.replace(node)
        for node in self.nodes:
            node.wait_ready(60)


@dataclass
class Faults:
    """A seeded fault schedule run from a thread: one action every ``interval`` s."""

    fleet: Fleet
    broker: Broker
    actions: list[str]
    seed: int
    interval: float = 1.0
    #: the longest a frozen node stays frozen (seconds)
    freeze_max: float = 2.5
    log: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    #: pool children the schedule SIGKILLed
    killed: set[int] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Faults:
        if not self.actions:
            return self
        self._thread = threading.Thread(target=self._run, name="ledger-faults", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        rng = random.Random(self.seed)
        plan: list[str] = []
        while not self._stop.wait(self.interval * (0.5 + rng.random())):
            if not plan:  # every action once per round, in a seeded order
                plan = rng.sample(self.actions, len(self.actions))
            action = plan.pop()
            try:
                detail = self._act(action, rng)
            except Exception as exc:  # a fault that could not be applied is logged, not fatal
                detail = f"failed: {exc!r}"
            self.counts[action] += 1
            self.log.append(f"{time.time():.3f} {action} {detail}")

    def _act(self, action: str, rng: random.Random) -> str:
        nodes = self.fleet.alive()
        node = rng.choice(nodes) if nodes else None
        if action == "kill_child" and node is not None:
            pid = node.kill_child(signal.SIGKILL, rng)
            if pid is not None:
                self.killed.add(pid)
            return f"{node.name} child {pid}"
        if action == "kill_parent" and node is not None:
            node.send(signal.SIGKILL)  # the parent alone: its children must not go on alone
            node.popen.wait(timeout=10) if node.popen else None
            fresh = self.fleet.replace(node)
            return f"{node.name} (pid {node.pid}) -> {fresh.name}"
        if action == "freeze" and node is not None:
            seconds = rng.uniform(0.5, self.freeze_max)
            node.freeze()
            self._stop.wait(seconds)
            node.thaw()
            return f"{node.name} for {seconds:.1f}s"
        if action == "cut" and self.broker.proxy is not None:
            seconds = rng.uniform(0.3, 1.5)
            cut = self.broker.proxy.cut()
            self._stop.wait(seconds)
            self.broker.proxy.restore()
            return f"{cut} connections for {seconds:.1f}s"
        if action == "restart_broker" and self.broker.server is not None:
            self.broker.server.restart()
            return f"{self.broker.kind} restarted"
        return "nothing to act on"


@dataclass
class Ledger:
    """The events a run left in the store, and their classification."""

    path: Path

    def events(self) -> list[tuple[str, int, int, str]]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 5:
                rows.append((parts[0], int(parts[1]), int(parts[2]), parts[4]))
        return rows

    def done(self) -> set[int]:
        return {number for kind, number, _, _ in self.events() if kind == "D"}

    def killed_after_finishing(self, numbers: Iterable[int], killed: set[int]) -> list[int]:
        """Those of ``numbers`` a process finished and was then SIGKILLed by the schedule
        (before its result and ack were written: at-least-once runs them again)."""
        finishers: dict[int, set[int]] = defaultdict(set)
        for kind, number, pid, _ in self.events():
            if kind == "D":
                finishers[number].add(pid)
        return sorted(n for n in numbers if finishers[n] & killed)

    def classify(self, send: Send) -> dict[str, Any]:
        starts: Counter[int] = Counter()
        dones: Counter[int] = Counter()
        open_runs: dict[int, list[int]] = defaultdict(list)  # number -> pids started, not done
        sides: Counter[str] = Counter()
        ran_on: dict[int, set[str]] = defaultdict(set)
        for kind, number, pid, side in self.events():
            ran_on[number].add(side)
            if kind == "S":
                starts[number] += 1
                open_runs[number].append(pid)
                sides[side] += 1
            elif kind == "D":
                dones[number] += 1
                with contextlib.suppress(ValueError):
                    open_runs[number].remove(pid)
        acknowledged = set(send.acknowledged) - set(send.poison)
        more = {n: c for n, c in sorted(starts.items()) if c > 1 and n not in send.poison}
        unexplained = {n: dones[n] for n in more if dones[n] > 1}
        return {
            "sent": len(send.acknowledged) + len(send.raised),
            "acknowledged": len(acknowledged),
            "poison": len(send.poison),
            "publish_raised": len(send.raised),
            "once": sum(1 for n in acknowledged if starts[n] == 1 and dones[n] == 1),
            "more": len(more),
            "extra_runs": sum(c - 1 for c in more.values()),
            "more_detail": more,
            "finished_twice": unexplained,
            "never": sorted(acknowledged - set(starts)),
            "never_finished": sorted(n for n in acknowledged if starts[n] and not dones[n]),
            "unacknowledged_ran": sorted(set(send.raised) & set(starts)),
            "runs_by_side": dict(sides),
            "finished_twice_sides": {n: sorted(ran_on[n]) for n in unexplained},
        }

    def settle(self, send: Send, *, quiet: float, timeout: float, fraction: float = 1.0) -> None:
        """Wait until ``fraction`` of the acknowledged numbers finished (all by default), or
        nothing new happened for ``quiet`` s (the rest are lost), or ``timeout`` s passed."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            done = self.done()
            expected = set(send.acknowledged) - set(send.poison)
            if len(expected & done) >= fraction * len(expected):
                return
            if len(done) != last:
                last, since = len(done), time.monotonic()
            elif time.monotonic() - since > quiet:
                return
            time.sleep(0.2)


def report(name: str, figures: dict[str, Any], faults: Faults | None, seconds: float) -> None:
    """Print the figures (shown with ``-s``), and append them to ``CARAWAY_LEDGER_REPORT``."""
    line = {"scenario": name, "seconds": round(seconds, 1), **figures}
    if faults is not None:
        line["faults"] = dict(faults.counts)
    text = json.dumps(line, sort_keys=True)
    print(f"LEDGER {text}")
    if faults is not None:
        print("\n".join(faults.log))
    target = os.environ.get("CARAWAY_LEDGER_REPORT")
    if target:
        with open(target, "a") as handle:
            handle.write(text + "\n")


@contextlib.contextmanager
def running(faults: Faults) -> Iterator[Faults]:
    faults.start()
    try:
        yield faults
    finally:
        faults.stop()

"""Shared test helpers: polling with a deadline, and real worker processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def queue_size(app: Any, queue: str) -> int:
    """Ready messages on ``queue`` of ``app``'s broker, read through a queue admin."""
    admin = app.admin()
    try:
        return int(admin.size(queue))
    finally:
        admin.close()


def purge_queue(app: Any, queue: str) -> int:
    """Delete the ready messages on ``queue`` of ``app``'s broker."""
    admin = app.admin()
    try:
        return int(admin.purge(queue))
    finally:
        admin.close()


PROJ_APP = """
import os
from caraway import Caraway

app = Caraway('proj', broker=os.environ.get('TEST_BROKER') or None,
              backend=os.environ.get('TEST_BACKEND') or None, include=['proj.tasks'])
app.conf.update(result_expires=float(os.environ.get('TEST_RESULT_EXPIRES', 3600)),
                broker_connection_max_retries=2)
"""

PROJ_TASKS = """
import os
import time
from caraway.exceptions import Reject
from .caraway import app


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def xsum(numbers):
    return sum(numbers)


@app.task
def boom(message='kaboom'):
    raise ValueError(message)


@app.task(track_started=True)
def slow(seconds):
    time.sleep(seconds)
    return seconds


@app.task(acks_late=True)
def die_once(marker):
    # First run kills its own process; the redelivered run succeeds.
    if not os.path.exists(marker):
        open(marker, 'w').close()
        os.kill(os.getpid(), 9)
    return 'survived'


@app.task(acks_late=True, reject_on_worker_lost=False)
def die_always(marker):
    open(marker, 'a').write('x')
    os.kill(os.getpid(), 9)


@app.task(acks_late=True)
def always_dies():
    os.kill(os.getpid(), 9)


@app.task
def record(path, value):
    with open(path, 'a') as handle:
        handle.write(f'{value}\\n')
    return value


@app.task(soft_time_limit=0.5)
def soft_limited(seconds):
    from caraway.exceptions import SoftTimeLimitExceeded
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return 'cleaned up'
    return 'finished'


@app.task(time_limit=0.5)
def hard_limited(seconds):
    time.sleep(seconds)
    return 'finished'


@app.task(rate_limit='5/s')
def limited(path):
    with open(path, 'a') as handle:
        handle.write(f'{time.time()}\\n')


@app.task
def exits_hard():
    os._exit(3)


@app.task
async def nap(seconds):
    import asyncio
    await asyncio.sleep(seconds)
    return seconds


@app.task(soft_time_limit=0.3)
async def long_nap(seconds):
    import asyncio
    await asyncio.sleep(seconds)
    return seconds


@app.task(bind=True, max_retries=3, track_started=True)
def flaky(self, marker, failures):
    count = int(open(marker).read()) if os.path.exists(marker) else 0
    if count < failures:
        open(marker, 'w').write(str(count + 1))
        raise self.retry(exc=KeyError('again'), countdown=0.2)
    return count
"""


def write_project(base: Path, app_source: str = PROJ_APP, tasks_source: str = PROJ_TASKS) -> Path:
    package = base / "proj"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "caraway.py").write_text(textwrap.dedent(app_source))
    (package / "tasks.py").write_text(textwrap.dedent(tasks_source))
    return base


class Worker:
    """A real ``caraway -A proj worker`` process, stopped by ``stop()`` whatever happens."""

    def __init__(
        self, cwd: Path, *args: str, env: dict[str, str] | None = None, name: str = "w1"
    ) -> None:
        self.cwd = cwd
        self.name = name
        self.pidfile = cwd / f"{name}.pid"
        self.logfile = cwd / f"{name}.log"
        self.pidfile.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "caraway",
            "-A",
            "proj",
            "worker",
            "-l",
            "info",
            "-n",
            f"{name}@%h",
            f"--pidfile={self.pidfile}",
            *args,
        ]
        full_env = {**os.environ, "PYTHONPATH": str(cwd), **(env or {})}
        self._log = open(self.logfile, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 30.0) -> Worker:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log()}")
            return self.pidfile.exists()

        wait_until(ready, timeout=timeout, message=f"worker {self.name} to be ready")
        return self

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def children(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(pid) for pid in out.split()]

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()
        return self.process.returncode


def start_workers(cwd: Path, specs: Sequence[Sequence[str]]) -> list[Worker]:
    workers = [Worker(cwd, *spec, name=f"w{index}") for index, spec in enumerate(specs, 1)]
    for worker in workers:
        worker.wait_ready()
    return workers

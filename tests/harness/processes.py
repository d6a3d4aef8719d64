"""Processes a test starts and must stop: each in its own session (so its whole group can be
signalled), addressed by pid, with its output in a log file.

`Processes` is the registry a fixture owns: whatever was started through it is stopped at
teardown, even when the test failed, and the tail of each log is printed then (pytest shows
it with the failure). Signals for fault schedules: SIGKILL of a parent or of one child,
SIGSTOP/SIGCONT of a whole group (a frozen worker that comes back).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.harness.waiting import wait_for


class Process:
    """One command started in a new session; ``stop()`` ends it and everything it started."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        name: str,
        cwd: Path,
        env: dict[str, str] | None = None,
        ready_file: Path | None = None,
        ready_text: str | None = None,
    ) -> None:
        self.command = list(command)
        self.name = name
        self.cwd = cwd
        self.env = {**os.environ, **(env or {})}
        self.ready_file = ready_file
        #: a line the log must also show before the process counts as ready
        self.ready_text = ready_text
        self.logfile = cwd / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def start(self) -> Process:
        if self.ready_file is not None:
            self.ready_file.unlink(missing_ok=True)
        with open(self.logfile, "ab") as log:
            self.popen = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_ready(self, timeout: float = 30.0) -> Process:
        """Wait for the ready file (a worker's pidfile); fail at once if the process exits."""
        assert self.ready_file is not None, f"{self.name} has no ready file"
        ready = self.ready_file

        def up() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.name} exited early:\n{self.log_tail()}")
            return ready.exists() and (self.ready_text is None or self.ready_text in self.log())

        wait_for(up, timeout, f"{self.name} to be ready")
        return self

    def children(self) -> list[int]:
        """Pids of the direct children (a prefork worker's pool processes)."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(pid) for pid in out.split()]

    def send(self, sig: int) -> None:
        """Signal the parent only."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def signal_group(self, sig: int) -> None:
        """Signal the parent and every process of its session at once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def kill_child(self, sig: int = signal.SIGKILL, rng: random.Random | None = None) -> int | None:
        """Signal one child chosen at random; its pid, or None when there was none."""
        children = self.children()
        if not children:
            return None
        pid = (rng or random).choice(children)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        return pid

    def kill(self) -> None:
        """SIGKILL the whole group (parent and children die together) and reap the parent."""
        self.signal_group(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=10)

    def freeze(self) -> None:
        self.signal_group(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal_group(signal.SIGCONT)

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM) -> int | None:
        """``sig`` (SIGTERM) to the parent, then SIGKILL to the group after ``timeout``; the
        exit status. Safe to call twice, on a frozen process, or on one that already died."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.signal_group(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
            self.send(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait(timeout=10)
        # pool children that outlived their parent
        self.signal_group(signal.SIGKILL)
        return self.popen.returncode

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


class Processes:
    """Every process a test started; ``stop_all()`` (the fixture's teardown) ends them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Process] = []

    def start(self, process: Process) -> Process:
        self.started.append(process)
        return process.start()

    def command(
        self, command: Sequence[str], *, name: str, env: dict[str, str] | None = None
    ) -> Process:
        return self.start(Process(command, name=name, cwd=self.workdir, env=env))

    def caraway_worker(
        self,
        *args: str,
        app: str = "proj",
        name: str = "w1",
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Process:
        """``caraway -A <app> worker -n <name>@%h`` in ``cwd``, ready once its pidfile exists."""
        where = cwd or self.workdir
        pidfile = where / f"{name}.pid"
        command = [
            sys.executable, "-m", "caraway", "-A", app, "worker", "-l", "info",
            "-n", f"{name}@%h", f"--pidfile={pidfile}", *args,
        ]  # fmt: skip
        full_env = {"PYTHONPATH": str(where), **(env or {})}
        process = Process(command, name=name, cwd=where, env=full_env, ready_file=pidfile)
        return self.start(process)

    def celery_worker(
        self,
        *args: str,
        app: str,
        name: str = "celery1",
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Process:
        """The real ``celery -A <app> worker``, ready once its pidfile exists."""
        where = cwd or self.workdir
        pidfile = where / f"{name}.pid"
        command = [
            sys.executable, "-m", "celery", "-A", app, "worker", "-l", "info",
            "-n", f"{name}@%h", f"--pidfile={pidfile}", "--without-mingle",
            "--without-gossip", *args,
        ]  # fmt: skip
        full_env = {"PYTHONPATH": str(where), **(env or {})}
        # Celery writes its pidfile before it connects; "ready." is logged once it consumes
        process = Process(
            command, name=name, cwd=where, env=full_env, ready_file=pidfile, ready_text="ready."
        )
        return self.start(process)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()
        for process in self.started:
            print(f"--- {process.name} (pid {process.popen and process.popen.pid}) log tail ---")
            print(process.log_tail())

"""Every process the runner starts, and the guarantee that each one is stopped.

Each child gets its own session (so its process group holds it and anything it forks) and
is recorded in ``_LIVE`` until stopped; ``stop_all`` runs from the runner's ``finally`` and
from ``atexit``, so an error, Ctrl-C or SIGTERM never leaves a worker behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

_LIVE: dict[int, subprocess.Popen[bytes]] = {}


class ScriptFailed(RuntimeError):
    """A workload script exited non-zero or timed out; ``output`` is its stderr."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


def spawn(
    argv: Sequence[str], *, env: dict[str, str], cwd: Path, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session; stdout+stderr go to ``log`` or to pipes."""
    if log is not None:
        with log.open("wb") as sink:
            process = subprocess.Popen(
                list(argv),
                env=env,
                cwd=cwd,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
    else:
        process = subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _LIVE[process.pid] = process
    return process


def run(argv: Sequence[str], *, env: dict[str, str], cwd: Path, timeout: float) -> str:
    """Run ``argv`` to completion and return its stdout; ScriptFailed on error or timeout."""
    name = argv[2] if len(argv) > 2 and argv[1] == "-m" else argv[0]
    process = spawn(argv, env=env, cwd=cwd)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(process, grace=0)
        _, err = process.communicate()
        raise ScriptFailed(f"{name} timed out after {timeout:.0f}s", err.decode()) from None
    finally:
        stop(process, grace=0)
    if process.returncode != 0:
        raise ScriptFailed(f"{name} exited with {process.returncode}", err.decode())
    return out.decode()


def stop(process: subprocess.Popen[bytes], *, grace: float = 15.0) -> bool:
    """SIGTERM (a worker's warm shutdown), wait ``grace`` s, then SIGKILL the whole group.

    Returns False when the process had to be killed (it ignored SIGTERM for ``grace`` s).
    """
    if process.pid not in _LIVE:
        return True  # stopped before: its pid may belong to someone else by now
    exited = process.poll() is not None
    if not exited and grace > 0:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
        exited = process.poll() is not None
    # The group may outlive its leader (pool children), so it is killed even after a
    # clean exit; the pgid is the leader's pid because the leader started the session.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    _LIVE.pop(process.pid, None)
    return exited


def stop_all() -> None:
    """Kill whatever is still recorded as running (the last line of defence)."""
    for process in list(_LIVE.values()):
        stop(process, grace=0)


atexit.register(stop_all)


def wait_for_file(
    path: Path,
    process: subprocess.Popen[bytes],
    *,
    timeout: float,
    give_up: Callable[[], bool] = lambda: False,
) -> bool:
    """Poll until ``path`` exists; False if ``process`` exits, ``give_up()`` says so, or the
    deadline passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        if process.poll() is not None or give_up():
            return False
        time.sleep(0.05)
    return path.exists()


@dataclass(frozen=True)
class Memory:
    """PSS and RSS summed over a process and all its descendants, in MiB."""

    pss_mib: float
    rss_mib: float
    processes: int
    #: PSS of anonymous memory only (heap, arenas, stacks): the part the worker's own work
    #: decides. The rest, shared libraries and the interpreter's text, is divided among
    #: every process on the machine that maps them, so it moves with what else runs.
    pss_anon_mib: float = 0.0


def tree_memory(pid: int) -> Memory:
    """Read ``/proc/<pid>/smaps_rollup`` for ``pid`` and every descendant."""
    pids = [pid, *_descendants(pid)]
    pss = rss = anon = 0
    counted = 0
    for each in pids:
        fields = _rollup(each)
        if fields:
            pss += fields.get("Pss", 0)
            rss += fields.get("Rss", 0)
            anon += fields.get("Pss_Anon", 0)
            counted += 1
    return Memory(
        pss_mib=pss / 1024, rss_mib=rss / 1024, processes=counted, pss_anon_mib=anon / 1024
    )


def _rollup(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    fields: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name.strip()] = int(parts[0])  # kB, as the kernel prints them
    return fields


def _descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name may hold spaces and parentheses; fields resume after the last ')'
        ppid = int(stat.rpartition(")")[2].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def tree_cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of ``pids`` and all their descendants, from /proc/<pid>/stat (s).

    A process that exited since is simply not counted: the caller samples the same
    (long-lived) trees at both ends of a window."""
    total = 0
    for pid in {p for root in pids for p in (root, *_descendants(root))}:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def private_redis(*, timeout: float = 20.0) -> Iterator[int]:
    """A redis-server of our own on a free port (no persistence), stopped by pid on exit.

    W6, W8 and W9 fill Redis with up to a million messages or count every command it
    serves: neither belongs on the machine's shared server. Yields the port."""
    workdir = Path(tempfile.mkdtemp(prefix="caraway-bench-redis-"))
    port = _free_port()
    argv = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]
    server = spawn(argv, env=dict(os.environ), cwd=workdir, log=workdir / "redis.log")
    try:
        deadline = time.monotonic() + timeout
        while not _redis_answers(port):
            if server.poll() is not None or time.monotonic() > deadline:
                log = (workdir / "redis.log").read_text(errors="replace")[-500:]
                raise RuntimeError(f"private redis-server on port {port} did not start: {log}")
            time.sleep(0.05)
        yield port
    finally:
        stop(server, grace=5)
        for leftover in workdir.iterdir():
            leftover.unlink()
        workdir.rmdir()

"""``caraway multi``: start, stop, restart and kill detached worker nodes.

The command line becomes a Cluster in ``multi_model`` (pure); this module only runs it.
Like ``celery multi`` it persists nothing: a node is known only by its pidfile, so stop and
restart need the same ``--pidfile`` as start. ``start`` reports OK once the detached
worker has written its pidfile (it does so only when ready) and names a live process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import IO, Literal

import click

from caraway.cli.multi_model import Cluster, MultiUsageError, Node, parse_argv
from caraway.utils.files import SymlinkRefused, read_file

__all__ = [
    "COMMANDS",
    "EX_FAILURE",
    "EX_OK",
    "EX_USAGE",
    "PidState",
    "multi",
    "read_pidfile",
    "run",
]

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 64  # as celery multi (sysexits' EX_USAGE)
_POLL_FIRST = 0.02
_POLL_MAX = 0.25
_KILL_GRACE = 5.0

USAGE = """\
usage: caraway multi COMMAND NODES [OPTIONS] [-- EXTRA WORKER ARGS]

commands:
  start      start the nodes detached and wait until each is ready
  stop       send TERM to each node and return
  stopwait   send TERM and wait until every node has exited
  restart    stopwait, then start with the same arguments
  kill       send KILL to each node (and its children) and remove its pidfile
  show       print the command that starts each node (dryrun: the same)
  names      print the node names
  expand T   print template T expanded for each node (%n %p %h %d)
  get NAME   print the command that starts node NAME

NODES is a count (3 -> celery1..celery3) or names (w1 w2, or w1@host).
Options go to every worker; -opt:SELECTOR VALUE sets one for some nodes only, by index
(-c:1 4), range (-Q:1-3 images), list (-l:4,5 debug) or name (-c:w1 8).
Multi's own: --pidfile=%n.pid --logfile=%n%I.log -n/--hostname=HOST --range-prefix=P
--executable=PY --cmd="-m caraway worker" --start-timeout=30 -q/--quiet --verbose
--nosplash. Long options take values with '=' only (--loglevel=info), as in celery multi.
"""

COMMANDS = (
    "start",
    "stop",
    "stopwait",
    "restart",
    "kill",
    "show",
    "dryrun",
    "names",
    "expand",
    "get",
    "help",
)
# Options of the top-level ``caraway`` group that workers must also receive when the user
# wrote them before ``multi`` (``caraway -A proj multi start w1``).
# Keyed by the group's parameter names (main.py calls --app's parameter ``app_spec``).
_ROOT_GLOBALS = {
    "app_spec": ("--app", "-A"),
    "app": ("--app", "-A"),
    "broker": ("--broker", "-b"),
    "result_backend": ("--result-backend",),
    "workdir": ("--workdir",),
}


@dataclass(frozen=True)
class PidState:
    """What a pidfile says: ``missing``, ``live`` (pid runs), ``stale`` or ``corrupt``."""

    kind: Literal["missing", "live", "stale", "corrupt"]
    pid: int | None = None


def _echo(line: str) -> None:
    click.echo(line)


def _echo_err(line: str) -> None:
    click.echo(line, err=True)


@dataclass
class Reporter:
    """Where multi's lines go: progress (hidden by --quiet), results, and failures."""

    quiet: bool = False
    stdout: Callable[[str], None] = field(default=_echo)
    stderr: Callable[[str], None] = field(default=_echo_err)

    def info(self, line: str) -> None:
        if not self.quiet:
            self.stdout(line)

    def result(self, line: str) -> None:
        self.stdout(line)

    def fail(self, line: str) -> None:
        self.stderr(line)


@dataclass
class _Launch:
    node: Node
    proc: subprocess.Popen[bytes] | None
    output: IO[bytes] | None
    deadline: float


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (ours to signal or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    return True


def read_pidfile(path: str) -> PidState:
    """Read ``path`` (one decimal pid, as the worker writes it) and check the process."""
    try:
        text = read_file(path).decode("ascii", errors="replace").strip()
    except (FileNotFoundError, NotADirectoryError):
        return PidState("missing")
    except SymlinkRefused:  # not a pidfile a node wrote
        return PidState("corrupt")
    if not text.isdigit() or int(text) <= 0:
        return PidState("corrupt")
    pid = int(text)
    return PidState("live", pid) if pid_alive(pid) else PidState("stale", pid)


def _remove_pidfile(path: str, pid: int | None) -> None:
    # Only if it still names ``pid``: a restarted node may have written a new one meanwhile.
    if pid is not None and read_pidfile(path).pid not in (pid, None):
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _clean_stale(node: Node, state: PidState, out: Reporter) -> None:
    if state.kind == "stale":
        why = f"pid {state.pid} is not running"
        out.info(f"\t> {node.name}: removed stale pidfile {node.pidfile} ({why})")
    else:
        out.info(f"\t> {node.name}: removed unreadable pidfile {node.pidfile}")
    _remove_pidfile(node.pidfile, state.pid)


def _wait_until(condition: Callable[[], bool], deadline: float | None) -> bool:
    delay = _POLL_FIRST
    while not condition():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, _POLL_MAX)
    return True


def _spawn(node: Node, timeout: float, out: Reporter) -> _Launch | None:
    state = read_pidfile(node.pidfile)
    if state.kind == "live":
        out.fail(
            f"\t> {node.name}: FAILED: already running (pid {state.pid}, pidfile "
            f"{node.pidfile}); stop it first or give it another --pidfile"
        )
        return None
    if state.kind != "missing":
        _clean_stale(node, state, out)
    try:
        for path in (node.pidfile, node.main_logfile):
            if os.path.dirname(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as exc:
        out.fail(f"\t> {node.name}: FAILED: cannot create {exc.filename}: {exc.strerror}")
        return None
    # Output to a file, not a pipe: a daemon that kept the pipe open would block us forever.
    output = tempfile.TemporaryFile()  # noqa: SIM115 - closed once the node is reported
    try:
        proc = subprocess.Popen(node.argv, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
    except OSError as exc:
        output.close()
        out.fail(f"\t> {node.name}: FAILED: cannot run {node.argv[0]!r}: {exc.strerror}")
        return None
    return _Launch(node, proc, output, time.monotonic() + timeout)


def _last_output_line(launch: _Launch) -> str:
    if launch.output is None:
        return ""
    launch.output.seek(0)
    lines = launch.output.read().decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def _stop_foreground(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(_KILL_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _await_ready(launch: _Launch) -> tuple[int | None, str]:
    """(pid, "") once the node's pidfile names a live process, else (None, why)."""
    proc = launch.proc
    assert proc is not None
    found: list[int] = []

    def ready() -> bool:
        state = read_pidfile(launch.node.pidfile)
        if state.kind == "live" and state.pid is not None:
            found.append(state.pid)
            return True
        return proc.poll() not in (None, 0)

    _wait_until(ready, launch.deadline)
    if found:
        return found[0], ""
    code = proc.poll()
    if code is None:
        # Still in the foreground: the worker did not detach. Stop it rather than leave it
        # running unsupervised under a report that says it failed.
        _stop_foreground(proc)
        return None, "the worker did not detach or write its pidfile in time"
    last = _last_output_line(launch)
    if code != 0:
        return None, f"exited with code {code}" + (f": {last}" if last else "")
    return None, "no live pid in its pidfile before the deadline"


def start_nodes(cluster: Cluster, out: Reporter) -> int:
    """Start every node detached; report each one's pid or failure; 0 if all started."""
    out.info("> Starting nodes...")
    timeout = cluster.options.start_timeout
    failed = 0
    launches = []
    for node in cluster:
        if cluster.options.verbose:
            out.info(f"\t> {node.name}: {node.command_line}")
        launch = _spawn(node, timeout, out)
        if launch is None:
            failed += 1
        else:
            launches.append(launch)
    for launch in launches:
        pid, why = _await_ready(launch)
        if launch.output is not None:
            launch.output.close()
        if pid is not None:
            out.result(f"\t> {launch.node.name}: OK (pid {pid})")
        else:
            failed += 1
            out.fail(f"\t> {launch.node.name}: FAILED: {why}; see {launch.node.main_logfile}")
    return EX_OK if failed == 0 else EX_FAILURE


def _signal_nodes(cluster: Cluster, sig: signal.Signals, out: Reporter) -> dict[Node, int]:
    """Send ``sig`` to every live node; clean stale pidfiles; return the nodes signalled."""
    signalled: dict[Node, int] = {}
    for node in cluster:
        state = read_pidfile(node.pidfile)
        if state.kind == "missing":
            out.info(f"\t> {node.name}: DOWN")
            continue
        if state.kind != "live" or state.pid is None:
            _clean_stale(node, state, out)
            out.info(f"\t> {node.name}: DOWN")
            continue
        stranger = _not_the_node(state.pid, node)
        if stranger is not None:
            out.fail(
                f"\t> {node.name}: pidfile {node.pidfile} names pid {state.pid}, {stranger}; "
                "not signalled (remove the pidfile if the node is down)"
            )
            continue
        try:
            _send(state.pid, sig)
        except ProcessLookupError:
            out.info(f"\t> {node.name}: DOWN (pid {state.pid} exited)")
            continue
        out.info(f"\t> {node.name}: {sig.name.removeprefix('SIG')} -> {state.pid}")
        signalled[node] = state.pid
    return signalled


def _not_the_node(pid: int, node: Node) -> str | None:
    """Why process ``pid`` is not ``node``'s worker, or None when it is (or cannot be told).

    A pidfile outlives its process and pids are reused: the number may now belong to any
    process of this user, which ``stop``/``kill`` must not signal. The worker ``multi``
    started has the node's name on its command line (``-n name``).
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            args = handle.read().decode(errors="replace").split("\0")
    except FileNotFoundError:
        return None if not os.path.isdir("/proc/self") else "which is not running"
    except OSError:
        return None  # no /proc here (macOS): the pid is all there is to go by
    if any(arg == node.name or arg.endswith(f"={node.name}") for arg in args):
        return None
    shown = " ".join(args).strip()[:120]
    return f"which is another program ({shown!r})"


def _send(pid: int, sig: signal.Signals) -> None:
    # KILL cannot be handled, so the worker could not take its children down: kill the
    # whole process group of the daemon's own session, children included.
    group = _daemon_group(pid) if sig == signal.SIGKILL else None
    if group is not None:
        os.killpg(group, sig)
    else:
        os.kill(pid, sig)


def _daemon_group(pid: int) -> int | None:
    """The process group a detached worker's setsid created, if ``pid`` is in one.

    After the double fork the worker is not the group leader itself (its exited first child
    was), so it is recognised by its group being its session: nobody else's processes.
    """
    try:
        group = os.getpgid(pid)
        session = os.getsid(pid)
    except ProcessLookupError:
        return None
    return group if group == session and group != os.getpgrp() else None


def _wait_for_exit(signalled: dict[Node, int], out: Reporter, deadline: float | None) -> set[Node]:
    """Wait until each signalled pid is gone; report each; return those still alive."""
    if signalled:
        count = len(signalled)
        pids = ", ".join(str(pid) for pid in signalled.values())
        out.info(f"> Waiting for {count} {'node' if count == 1 else 'nodes'} -> {pids}...")
    pending = dict(signalled)

    def all_gone() -> bool:
        for node, pid in list(pending.items()):
            if not pid_alive(pid):
                _remove_pidfile(node.pidfile, pid)
                out.info(f"\t> {node.name}: OK")
                del pending[node]
        return not pending

    _wait_until(all_gone, deadline)
    return set(pending)


def stop_nodes(cluster: Cluster, out: Reporter, *, wait: bool) -> int:
    """TERM every node (warm shutdown); with ``wait``, return only once all have exited."""
    out.info("> Stopping nodes...")
    signalled = _signal_nodes(cluster, signal.SIGTERM, out)
    if wait:
        _wait_for_exit(signalled, out, deadline=None)
    return EX_OK


def kill_nodes(cluster: Cluster, out: Reporter) -> int:
    """KILL every node and its children and remove the pidfiles."""
    out.info("> Killing nodes...")
    signalled = _signal_nodes(cluster, signal.SIGKILL, out)
    for node, pid in signalled.items():
        _remove_pidfile(node.pidfile, pid)
    alive = _wait_for_exit(signalled, Reporter(quiet=True), time.monotonic() + _KILL_GRACE)
    for node in alive:
        out.fail(f"\t> {node.name}: FAILED: pid {signalled[node]} still alive after KILL")
    return EX_OK if not alive else EX_FAILURE


def restart_nodes(cluster: Cluster, out: Reporter) -> int:
    """Stop every node, wait for it to exit, then start all again with the same arguments."""
    stop_nodes(cluster, out, wait=True)
    return start_nodes(cluster, out)


def _print_each(lines: Iterable[str], out: Reporter) -> int:
    for line in lines:
        out.result(line)
    return EX_OK


def _dispatch(
    command: str, rest: Sequence[str], build: Callable[[Sequence[str]], Cluster], out: Reporter
) -> int:
    if command in ("expand", "get"):
        if not rest:
            what = "TEMPLATE" if command == "expand" else "NAME"
            raise MultiUsageError(f"'{command}' needs {what} before the nodes")
        cluster = build(rest[1:])
        if command == "expand":
            return _print_each((node.expand(rest[0]) for node in cluster), out)
        return _print_each([cluster.find(rest[0]).command_line], out)
    cluster = build(rest)
    out.quiet = cluster.options.quiet
    if command in ("show", "dryrun"):
        return _print_each((node.command_line for node in cluster), out)
    if command == "names":
        return _print_each(cluster.names, out)
    if not cluster.options.nosplash:
        out.info(f"caraway multi v{_version()}")
    if command == "start":
        return start_nodes(cluster, out)
    if command == "restart":
        return restart_nodes(cluster, out)
    if command == "kill":
        return kill_nodes(cluster, out)
    return stop_nodes(cluster, out, wait=command == "stopwait")


def _version() -> str:
    try:
        return metadata.version("caraway")
    except metadata.PackageNotFoundError:
        return "unknown"


def run(
    argv: Sequence[str],
    *,
    hostname: str | None = None,
    executable: str | None = None,
    cwd: str | None = None,
    out: Reporter | None = None,
) -> int:
    """Run ``caraway multi ARGV`` (e.g. ``["start", "w1", "-A", "proj"]``); return the exit code.

    Bad input prints one line on stderr and returns EX_USAGE before anything is started.
    """
    out = out or Reporter()
    if not argv or argv[0] in ("help", "--help", "-h"):
        (out.result if argv else out.fail)(USAGE.rstrip())
        return EX_OK if argv else EX_USAGE
    command, rest = argv[0], list(argv[1:])
    if command not in COMMANDS:
        out.fail(
            f"caraway multi: error: unknown command {command!r}; commands are {', '.join(COMMANDS)}"
        )
        return EX_USAGE

    def build(node_argv: Sequence[str]) -> Cluster:
        return parse_argv(
            node_argv,
            hostname=hostname or socket.gethostname(),
            executable=executable or sys.executable,
            cwd=cwd or os.getcwd(),
        )

    try:
        return _dispatch(command, rest, build, out)
    except MultiUsageError as exc:
        out.fail(f"caraway multi: error: {exc}")
        return EX_USAGE
    except OSError as exc:  # e.g. an unreadable pidfile: one line, not a traceback
        out.fail(f"caraway multi: error: {exc}")
        return EX_FAILURE


def _with_root_globals(ctx: click.Context, argv: list[str]) -> list[str]:
    """Add the options the user gave the top-level group (``caraway -A proj multi ...``)."""
    params = ctx.find_root().params if ctx.parent is not None else {}
    extra: list[str] = []
    for name, spellings in _ROOT_GLOBALS.items():
        value = params.get(name)
        given = any(arg.split("=")[0] in spellings for arg in [*argv, *extra])
        if isinstance(value, str) and value and not given:
            extra.append(f"{spellings[0]}={value}")
    if not extra:
        return argv
    # Before a '--' so they stay multi's options, not verbatim worker arguments.
    cut = argv.index("--") if "--" in argv else len(argv)
    return [*argv[:cut], *extra, *argv[cut:]]


@click.command(
    "multi",
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "allow_interspersed_args": False,
    },
    # "\b" keeps click from re-wrapping each paragraph of the usage text.
    help="\n\n".join(f"\b\n{part}" for part in USAGE.split("\n\n")),
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def multi(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Start, stop and restart detached worker nodes, as ``celery multi``."""
    code = run(_with_root_globals(ctx, [*args, *ctx.args]))
    if code != EX_OK:
        # sys.exit, not ctx.exit: the caraway group runs click with standalone_mode=False,
        # which turns ctx.exit's code into an ignored return value.
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover - lets `python -m caraway.cli.multi` run alone
    multi()

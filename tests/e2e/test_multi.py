"""`caraway multi` in subprocesses: real detached nodes started, stopped, restarted, killed.

Most tests drive a small stand-in worker (written to tmp_path, selected with --cmd) that
detaches exactly as the real one must: double fork, setsid, pidfile written when ready and
removed at exit, one child process. The last tests run the real ``caraway worker``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HOST = "testhost"

FAKE_WORKER = textwrap.dedent(
    """
    import os, signal, sys, time

    args = sys.argv[1:]
    name = args[args.index("-n") + 1]
    value = lambda key: next(a.split("=", 1)[1] for a in args if a.startswith(key + "="))
    pidfile, logfile = value("--pidfile"), value("--logfile").replace("%I", "")
    mode = value("--mode") if any(a.startswith("--mode=") for a in args) else "ok"
    if mode == "fail":
        print("cannot import app 'nowhere'", file=sys.stderr)
        sys.exit(3)
    if mode == "foreground":
        time.sleep(60)
        sys.exit(0)
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    log = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    print("argv", args, flush=True)
    if mode == "die":
        sys.exit(1)
    child = os.fork()
    if child == 0:
        while True:
            time.sleep(1)
    with open(pidfile + ".child", "w") as handle:
        handle.write(str(child))

    def stop(signum, frame):
        time.sleep(0.3)  # a warm shutdown takes a moment
        os.kill(child, signal.SIGTERM)
        os.waitpid(child, 0)
        os.unlink(pidfile)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    with open(pidfile + ".tmp", "w") as handle:
        handle.write(f"{os.getpid()}\\n")
    os.rename(pidfile + ".tmp", pidfile)
    while True:
        time.sleep(1)
    """
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def read_pid(path: Path) -> int:
    return int(path.read_text().strip())


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _kill_everything_under(directory: Path) -> None:
    for pidfile in [*directory.rglob("*.pid"), *directory.rglob("*.pid.child")]:
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.read_text().strip())
            if pid > 1 and os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "fake_worker.py").write_text(FAKE_WORKER)
    try:
        yield tmp_path
    finally:
        _kill_everything_under(tmp_path)


def run_multi(
    workdir: Path, *args: str, fake: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    extra = [f"--cmd={workdir / 'fake_worker.py'}"] if fake else []
    return subprocess.run(
        [sys.executable, "-m", "caraway", "multi", *args, "-n", HOST, *extra],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


# --- start / stop / stopwait / restart / kill ------------------------------------------------


def test_start_reports_each_node_ok_with_the_pid_in_its_pidfile(workdir: Path) -> None:
    done = run_multi(workdir, "start", "w1", "w2")
    assert done.returncode == 0, done.stderr
    for name in ("w1", "w2"):
        pid = read_pid(workdir / f"{name}.pid")
        assert alive(pid)
        assert f"> {name}@{HOST}: OK (pid {pid})" in done.stdout
    log = (workdir / "w1.log").read_text()
    assert "'-n', 'w1@testhost', '--detach'" in log


def test_stop_sends_term_and_the_nodes_exit_and_remove_their_pidfiles(workdir: Path) -> None:
    assert run_multi(workdir, "start", "2").returncode == 0
    pids = [read_pid(workdir / f"celery{n}.pid") for n in (1, 2)]
    done = run_multi(workdir, "stop", "2")
    assert done.returncode == 0
    for number, pid in zip((1, 2), pids, strict=True):
        assert f"> celery{number}@{HOST}: TERM -> {pid}" in done.stdout
    wait_until(lambda: not any(alive(pid) for pid in pids))
    wait_until(lambda: not list(workdir.glob("*.pid")))


def test_stopwait_returns_only_after_every_node_has_exited(workdir: Path) -> None:
    assert run_multi(workdir, "start", "w1", "w2").returncode == 0
    pids = [read_pid(workdir / f"{name}.pid") for name in ("w1", "w2")]
    done = run_multi(workdir, "stopwait", "w1", "w2")
    assert done.returncode == 0
    assert not any(alive(pid) for pid in pids)
    assert not list(workdir.glob("*.pid"))
    assert f"> w1@{HOST}: OK" in done.stdout
    assert f"> w2@{HOST}: OK" in done.stdout


def test_restart_stops_the_old_processes_and_reports_new_pids(workdir: Path) -> None:
    assert run_multi(workdir, "start", "w1", "-c", "2").returncode == 0
    old = read_pid(workdir / "w1.pid")
    done = run_multi(workdir, "restart", "w1", "-c", "2")
    assert done.returncode == 0, done.stderr
    new = read_pid(workdir / "w1.pid")
    assert new != old
    assert not alive(old)
    assert alive(new)
    assert f"> w1@{HOST}: OK (pid {new})" in done.stdout


def test_kill_kills_the_node_and_its_children_and_removes_the_pidfile(workdir: Path) -> None:
    assert run_multi(workdir, "start", "w1").returncode == 0
    pid = read_pid(workdir / "w1.pid")
    child = read_pid(workdir / "w1.pid.child")
    done = run_multi(workdir, "kill", "w1")
    assert done.returncode == 0
    assert f"> w1@{HOST}: KILL -> {pid}" in done.stdout
    assert not (workdir / "w1.pid").exists()
    wait_until(lambda: not alive(pid) and not alive(child))


def test_starting_a_running_node_is_refused_and_leaves_it_running(workdir: Path) -> None:
    assert run_multi(workdir, "start", "w1").returncode == 0
    pid = read_pid(workdir / "w1.pid")
    done = run_multi(workdir, "start", "w1", "w2")
    assert done.returncode == 1
    assert f"w1@{HOST}: FAILED: already running (pid {pid}" in done.stderr
    assert read_pid(workdir / "w1.pid") == pid
    assert alive(read_pid(workdir / "w2.pid")), "the other node still starts"


def test_stale_pidfile_is_removed_and_reported_by_stop(workdir: Path) -> None:
    pid = dead_pid()
    (workdir / "w1.pid").write_text(f"{pid}\n")
    done = run_multi(workdir, "stop", "w1")
    assert done.returncode == 0
    assert f"removed stale pidfile {workdir / 'w1.pid'} (pid {pid} is not running)" in done.stdout
    assert f"> w1@{HOST}: DOWN" in done.stdout
    assert not (workdir / "w1.pid").exists()


def test_start_cleans_a_stale_pidfile_then_starts_the_node(workdir: Path) -> None:
    (workdir / "w1.pid").write_text(f"{dead_pid()}\n")
    done = run_multi(workdir, "start", "w1")
    assert done.returncode == 0, done.stderr
    assert "removed stale pidfile" in done.stdout
    assert alive(read_pid(workdir / "w1.pid"))


def test_stopping_a_node_that_is_not_running_reports_it_down(workdir: Path) -> None:
    done = run_multi(workdir, "stopwait", "w1")
    assert done.returncode == 0
    assert f"> w1@{HOST}: DOWN" in done.stdout


def test_missing_pid_and_log_directories_are_created(workdir: Path) -> None:
    done = run_multi(workdir, "start", "w1", "--pidfile=run/a/%n.pid", "--logfile=log/b/%n%I.log")
    assert done.returncode == 0, done.stderr
    assert alive(read_pid(workdir / "run/a/w1.pid"))
    assert (workdir / "log/b/w1.log").exists()


def test_a_pid_directory_that_cannot_be_created_fails_that_node(workdir: Path) -> None:
    done = run_multi(workdir, "start", "w1", "--pidfile=fake_worker.py/%n.pid")
    assert done.returncode == 1
    assert f"> w1@{HOST}: FAILED: cannot create {workdir / 'fake_worker.py'}" in done.stderr


# --- failures ---------------------------------------------------------------------------------


def test_worker_that_fails_before_detaching_is_reported_with_its_error(workdir: Path) -> None:
    done = run_multi(workdir, "start", "w1", "--mode=fail")
    assert done.returncode == 1
    assert (
        f"> w1@{HOST}: FAILED: exited with code 3: cannot import app 'nowhere'; "
        f"see {workdir / 'w1.log'}" in done.stderr
    )


def test_worker_that_dies_after_detaching_fails_at_the_start_deadline(workdir: Path) -> None:
    started = time.monotonic()
    done = run_multi(workdir, "start", "w1", "--mode=die", "--start-timeout=1")
    assert done.returncode == 1
    assert "FAILED: no live pid in its pidfile before the deadline" in done.stderr
    assert time.monotonic() - started < 10


def test_worker_that_does_not_detach_is_stopped_and_reported(workdir: Path) -> None:
    done = run_multi(workdir, "start", "w1", "--mode=foreground", "--start-timeout=1")
    assert done.returncode == 1
    assert "FAILED: the worker did not detach or write its pidfile in time" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("launch", "w1"), "caraway multi: error: unknown command 'launch'; commands are start,"),
        (("start", "5", "-Q:5-3", "data"), "malformed range '5-3' in -Q:5-3: 5 is after 3"),
        (("get", "w9", "w1", "w2"), "unknown node 'w9'; nodes are w1@testhost, w2@testhost"),
        (("start", "w1", "w2", "-c:w3", "2"), "unknown node 'w3' in -c:w3"),
    ],
)
def test_bad_input_prints_one_line_and_starts_nothing(
    workdir: Path, args: tuple[str, ...], message: str
) -> None:
    done = run_multi(workdir, *args)
    assert done.returncode == 64
    assert done.stderr.count("\n") == 1
    assert message in done.stderr
    assert done.stdout == ""
    assert not list(workdir.glob("*.pid")) and not list(workdir.glob("*.log"))


# --- commands that only print -----------------------------------------------------------------


def test_show_and_dryrun_print_commands_without_running_them(workdir: Path) -> None:
    for command in ("show", "dryrun"):
        done = run_multi(workdir, command, "2", "-A", "proj", "-c:2", "4", fake=False)
        assert done.returncode == 0
        lines = done.stdout.splitlines()
        assert lines == [
            f"{sys.executable} -m caraway -A proj worker -n celery1@{HOST} --detach "
            f"--pidfile={workdir}/celery1.pid --logfile={workdir}/celery1%I.log",
            f"{sys.executable} -m caraway -A proj worker -n celery2@{HOST} --detach "
            f"--pidfile={workdir}/celery2.pid --logfile={workdir}/celery2%I.log -c 4",
        ]
    assert not list(workdir.glob("*.pid"))


def test_names_expand_and_get_print_per_node_facts(workdir: Path) -> None:
    names = run_multi(workdir, "names", "3", "--range-prefix=w", fake=False)
    assert names.stdout.splitlines() == [f"w{n}@{HOST}" for n in (1, 2, 3)]
    expand = run_multi(workdir, "expand", "/var/run/%n.pid", "a", "b", fake=False)
    assert expand.stdout.splitlines() == ["/var/run/a.pid", "/var/run/b.pid"]
    get = run_multi(workdir, "get", "b", "a", "b", "-c:b", "7", fake=False)
    assert get.returncode == 0
    assert get.stdout.strip().endswith(
        f"-n b@{HOST} --detach --pidfile={workdir}/b.pid --logfile={workdir}/b%I.log -c 7"
    )


def test_multi_receives_options_given_to_the_caraway_command(workdir: Path) -> None:
    global_part = ["-A", "proj", "-b", "sqlite:///x.db"]
    done = subprocess.run(
        [sys.executable, "-m", "caraway", *global_part, "multi", "show", "w1", "-n", HOST],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"-m caraway --app=proj --broker=sqlite:///x.db worker -n w1@{HOST}" in done.stdout
    again = run_multi(workdir, "show", "w1", "-A", "other", fake=False)
    assert "-m caraway -A other worker" in again.stdout


def test_the_standalone_module_runs_multi_too(workdir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "caraway.cli.multi", "names", "2", "-n", HOST],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.split() == [f"celery1@{HOST}", f"celery2@{HOST}"]


# --- the real worker --------------------------------------------------------------------------

PROJ = textwrap.dedent(
    """
    from caraway import Caraway

    app = Caraway("proj")


    @app.task
    def add(x, y):
        return x + y
    """
)


@pytest.fixture
def project(workdir: Path) -> Path:
    (workdir / "proj").mkdir()
    (workdir / "proj" / "__init__.py").write_text(PROJ)
    return workdir


def _project_env(project: Path) -> dict[str, str]:
    paths = [str(project), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _call_add(project: Path, x: int, y: int) -> str:
    script = f"from proj import add; print(add.delay({x}, {y}).get(timeout=30))"
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=project,
        env=_project_env(project),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.slow
def test_real_nodes_start_run_tasks_restart_and_stopwait(project: Path) -> None:
    env = _project_env(project)
    args = ("w1", "w2", "-A", "proj", "-c", "1", "-l", "info")
    started = run_multi(project, "start", *args, fake=False, env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    old = [read_pid(project / f"{name}.pid") for name in ("w1", "w2")]
    assert _call_add(project, 2, 3) == "5"

    restarted = run_multi(project, "restart", *args, fake=False, env=env)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    new = [read_pid(project / f"{name}.pid") for name in ("w1", "w2")]
    assert set(new).isdisjoint(old)
    assert not any(alive(pid) for pid in old)
    assert _call_add(project, 20, 22) == "42"

    stopped = run_multi(project, "stopwait", *args, fake=False, env=env)
    assert stopped.returncode == 0
    assert not any(alive(pid) for pid in new)
    assert not list(project.glob("*.pid"))


@pytest.mark.slow
def test_real_node_stops_on_term_and_removes_its_pidfile(project: Path) -> None:
    env = _project_env(project)
    started = run_multi(project, "start", "w1", "-A", "proj", "-c", "1", fake=False, env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    pid = read_pid(project / "w1.pid")
    assert f"> w1@{HOST}: OK (pid {pid})" in started.stdout
    stopped = run_multi(project, "stop", "w1", fake=False, env=env)
    assert f"TERM -> {pid}" in stopped.stdout
    wait_until(lambda: not alive(pid), timeout=30)
    wait_until(lambda: not (project / "w1.pid").exists())

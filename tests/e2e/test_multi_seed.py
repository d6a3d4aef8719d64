"""The seed's `multi` commands against real nodes on the embedded SQLite default."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from caraway import states
from tests.helpers import wait_until

HOST = socket.gethostname()


def _multi(project: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "caraway", "multi", *args],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _pids(project: Path) -> list[int]:
    return [int(path.read_text()) for path in project.glob("*.pid")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill_everything(project: Path) -> None:
    for pid in _pids(project):
        # a detached node is not its group's leader (it forked after setsid): use its group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), 9)


@pytest.mark.slow
def test_stopwait_lets_a_running_task_finish_before_the_node_exits(project: Path) -> None:
    args = ("w1", "-A", "proj", "-c", "1", "-l", "info")
    try:
        started = _multi(project, "start", *args)
        assert started.returncode == 0, started.stdout + started.stderr
        import proj.tasks

        result = proj.tasks.slow.delay(2)
        wait_until(lambda: result.state == states.STARTED, timeout=20, message="STARTED")
        pid = _pids(project)[0]
        stopped = _multi(project, "stopwait", *args)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not _alive(pid)
        assert result.state == states.SUCCESS
    finally:
        _kill_everything(project)


@pytest.mark.slow
def test_ten_nodes_with_the_seeds_extended_syntax_consume_the_right_queues(
    project: Path,
) -> None:
    args = (
        "10",
        "-A",
        "proj",
        "-l",
        "info",
        "-c",
        "1",
        "-Q:1-3",
        "images,video",
        "-Q:4,5",
        "data",
        "-Q",
        "default",
        "-l:4,5",
        "debug",
    )
    try:
        started = _multi(project, "start", *args, timeout=240)
        assert started.returncode == 0, started.stdout + started.stderr
        assert started.stdout.count(": OK") == 10
        from proj.caraway import app

        def all_answer() -> dict[str, list[str]] | None:
            replies = app.control.inspect(timeout=2.0).active_queues() or {}
            if len(replies) < 10:
                return None
            return {node: sorted(q["name"] for q in queues) for node, queues in replies.items()}

        queues = wait_until(all_answer, timeout=60, interval=0.5, message="10 nodes to answer")
        for index in range(1, 11):
            expected = (
                ["images", "video"] if index <= 3 else ["data"] if index in (4, 5) else ["default"]
            )
            assert queues[f"celery{index}@{HOST}"] == expected, index
        for index in range(1, 11):
            files = [project / f"celery{index}.log", *project.glob(f"celery{index}-*.log")]
            log = "".join(path.read_text() for path in files)
            assert ("DEBUG" in log) == (index in (4, 5)), index
        pids = _pids(project)
        stopped = _multi(project, "stopwait", *args, timeout=240)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not any(_alive(pid) for pid in pids)
        leftover = subprocess.run(
            ["pgrep", "-f", f"caraway.*{project}"], capture_output=True, text=True, check=False
        ).stdout
        assert not leftover.strip()
    finally:
        _kill_everything(project)

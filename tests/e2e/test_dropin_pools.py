"""``-P gevent`` and ``-P eventlet`` for real: greenlets in one OS thread, cooperative sleeps."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import PROJ_APP, Worker, write_project

TASKS = '''
import threading
import time
from .caraway import app


@app.task
def nap(seconds):
    time.sleep(seconds)
    return threading.get_native_id()
'''


@pytest.fixture
def proj(project: Path) -> Path:
    return write_project(project, PROJ_APP, TASKS)


@pytest.mark.parametrize("pool", ["gevent", "eventlet"])
def test_green_pool_runs_tasks_together_on_greenlets(
    proj: Path, workers: list[Worker], pool: str
) -> None:
    # find_spec, not importorskip: importing eventlet here would register its fork warning
    # in the test process, and every later test that forks would fail on it
    if importlib.util.find_spec(pool) is None:
        pytest.skip(f"{pool} is not installed")
    worker = Worker(proj, "-P", pool, "-c", "10").wait_ready()
    workers.append(worker)
    assert f"concurrency: 10 ({pool})" in worker.log()
    import proj.tasks as tasks

    from caraway import group

    started = time.monotonic()
    threads = group(tasks.nap.s(1) for _ in range(10)).delay().get(timeout=20)
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"10 one-second naps took {elapsed:.1f}s: they did not wait together"
    assert len(set(threads)) == 1, "greenlets share one OS thread; these ran on several"
    # a warm shutdown ends the node by itself (under eventlet it once hung until killed)
    assert worker.stop(timeout=10) == 0, worker.log()[-2000:]


def test_green_pool_without_its_library_says_what_to_install(proj: Path, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "gevent"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named gevent')\n")
    done = subprocess.run(
        [sys.executable, "-m", "caraway", "-A", "proj", "worker", "-P", "gevent"],
        check=False,
        cwd=proj,
        env={"PYTHONPATH": f"{shadow.parent}:{proj}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stderr.splitlines()[-1].startswith("Error: -P gevent needs gevent: pip install")
    assert "Traceback" not in done.stderr

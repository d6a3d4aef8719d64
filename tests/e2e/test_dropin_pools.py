"""``-P gevent`` and ``-P eventlet`` for real: greenlets in one OS thread, cooperative sleeps."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import PROJ_APP, Worker, write_project

TASKS = """
import threading
import time
from caraway import signals
from .caraway import app


def _note(name):
    def receiver(sender=None, **kwargs):
        with open('eventlet-signals.log', 'a') as log:
            log.write(f"{name} {type(sender).__name__}\\n")

    return receiver


for _name in ('started', 'preshutdown', 'postshutdown', 'apply'):
    _receiver = _note(_name)
    getattr(signals, 'eventlet_pool_' + _name).connect(_receiver, weak=False)


@app.task
def nap(seconds):
    time.sleep(seconds)
    return threading.get_native_id()


@app.task(time_limit=1)
def overrun(seconds):
    try:
        time.sleep(seconds)
    except Exception:  # a hard limit is not an exception the task can swallow
        return 'swallowed'
    return 'finished'


@app.task(soft_time_limit=1)
def cleanup(seconds):
    from caraway.exceptions import SoftTimeLimitExceeded

    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return 'cleaned up'
    return 'finished'
"""


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


@pytest.mark.parametrize("pool", ["gevent", "eventlet"])
def test_green_pool_enforces_time_limits_at_the_next_cooperative_wait(
    proj: Path, workers: list[Worker], pool: str
) -> None:
    pytest.importorskip(pool)
    workers.append(Worker(proj, "-P", pool, "-c", "4").wait_ready())
    import proj.tasks as tasks

    from caraway.exceptions import TimeLimitExceeded

    started = time.monotonic()
    hard, soft = tasks.overrun.delay(30), tasks.cleanup.delay(30)
    with pytest.raises(TimeLimitExceeded):
        hard.get(timeout=20)
    assert soft.get(timeout=20) == "cleaned up"
    assert time.monotonic() - started < 10
    assert hard.state == "FAILURE"
    assert tasks.nap.delay(0).get(timeout=20), "the worker kept running tasks after the limit"


@pytest.mark.parametrize("pool", ["gevent", "eventlet"])
def test_green_pool_worker_stops_at_once_on_term(proj: Path, pool: str) -> None:
    pytest.importorskip(pool)
    worker = Worker(proj, "-P", pool, "-c", "2").wait_ready()
    try:
        import proj.tasks as tasks

        assert tasks.nap.delay(0).get(timeout=20)
        started = time.monotonic()
        code = worker.stop(timeout=10)
        assert code == 0, f"-P {pool} did not stop on TERM:\n{worker.log()}"
        assert time.monotonic() - started < 10
        sent = (proj / "eventlet-signals.log").read_text().split() if pool == "eventlet" else []
        if pool == "eventlet":  # Celery's eventlet pool sends these; its gevent pool none
            names = sent[::2]
            assert names[0] == "started" and "apply" in names, sent
            assert names[-2:] == ["preshutdown", "postshutdown"], sent
    finally:
        worker.stop()


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

"""The migration corpus: small Celery projects written as Celery's user guide shows them,
each run on Celery and then on caraway with only its import lines renamed; what they print
must be the same.

Each run starts one worker (``-P solo``) for the project, runs its ``main.py`` and stops
the worker. Broker and results: Redis db 10, queues named ``compat-<project>-<run>``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

pytestmark = [pytest.mark.redis, pytest.mark.slow]

HERE = Path(__file__).resolve().parent / "projects"
PROJECTS = sorted(p.name for p in HERE.iterdir() if p.is_dir() and not p.name.startswith("_"))
BROKER = "redis://127.0.0.1:6379/10"
_IMPORT = re.compile(r"^(\s*)(from|import)\s+(celery|kombu)\b(.*)$", re.MULTILINE)


def to_caraway(source: str) -> str:
    """Rename the import lines only: celery/kombu -> caraway, Celery -> Caraway as Celery."""

    def rename(match: re.Match[str]) -> str:
        indent, keyword, _, rest = match.groups()
        rest = re.sub(r"\bCelery\b(?! as)", "Caraway as Celery", rest)
        rest = re.sub(r"^\.(signals|exceptions)\b", r".\1", rest)
        return f"{indent}{keyword} caraway{rest}"

    return _IMPORT.sub(rename, source)


def _copy(project: str, target: Path, flavour: str) -> None:
    shutil.copytree(HERE / project, target)
    shutil.copy(HERE / "common.py", target / "common.py")
    if flavour == "caraway":
        for path in target.glob("*.py"):
            path.write_text(to_caraway(path.read_text()))


def _worker_command(flavour: str, queues: str) -> list[str]:
    common = ["-A", "proj", "worker", "-P", "solo", "-c", "1", "-l", "warning", "-Q", queues]
    if flavour == "celery":
        return [sys.executable, "-m", "celery", *common, "--without-gossip", "--without-mingle"]
    return [sys.executable, "-m", "caraway", *common]


def _queues(project: str, prefix: str) -> str:
    if project == "routing":
        return ",".join(f"{prefix}-{name}" for name in ("default", "images", "video", "feeds"))
    return prefix


def run(project: str, flavour: str, base: Path) -> str:
    """What the project's main.py prints with a worker of ``flavour`` running."""
    workdir = base / flavour
    _copy(project, workdir, flavour)
    prefix = f"compat-{project}-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PYTHONPATH": str(workdir),
        "COMPAT_BROKER": BROKER,
        "COMPAT_QUEUE": prefix,
    }
    log = open(workdir / "worker.log", "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        _worker_command(flavour, _queues(project, prefix)),
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        done = subprocess.run(
            [sys.executable, "main.py"],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
        log.close()
    assert done.returncode == 0, (
        f"{project} on {flavour} failed:\n{done.stdout}\n{done.stderr}\n"
        f"worker log:\n{(workdir / 'worker.log').read_text(errors='replace')}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def db() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(BROKER)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


def test_imports_are_renamed_and_nothing_else() -> None:
    source = (
        "from celery import Celery\nfrom celery.signals import task_prerun\n"
        "from kombu import Exchange, Queue\nx = 'celery'\n"
    )
    assert to_caraway(source) == (
        "from caraway import Caraway as Celery\nfrom caraway.signals import task_prerun\n"
        "from caraway import Exchange, Queue\nx = 'celery'\n"
    )


@pytest.mark.parametrize("project", PROJECTS)
def test_project_prints_the_same_on_celery_and_caraway(
    project: str, tmp_path: Path, db: redis.Redis
) -> None:
    on_celery = run(project, "celery", tmp_path)
    on_caraway = run(project, "caraway", tmp_path)
    assert on_celery.strip(), f"{project} printed nothing on Celery"
    assert on_caraway.splitlines() == on_celery.splitlines()

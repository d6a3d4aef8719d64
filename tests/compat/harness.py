"""Run one migration case twice, with Celery and renamed to caraway, and return both outputs.

A case is a folder of ``cases/``: a Celery project as the user guide writes it (``proj.py``)
and a client script (``run.py``) that prints what a user observes; ``cases/common.py``
(``wait_for_worker``) is copied beside it. ``worker.args``, when present, holds the
worker's command-line options: a worker is started for the run, with ``celery -A proj
worker`` and then ``caraway -A proj worker`` (no ``worker.args``: no worker, as for eager
mode). ``cli.txt`` lists commands (one per line, after ``-A proj``) whose output is printed
after run.py's (all in one interpreter, by ``cli_driver.py``). The caraway copy is the same
text with only its import lines renamed (:func:`to_caraway`): what differs in output is a
compatibility gap.

A case reads its broker and backend from ``TEST_BROKER``/``TEST_BACKEND`` (Redis db 8,
flushed around each run) and may name its queues after ``COMPAT_QUEUE`` (``compat``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import redis

from tests.helpers import wait_until

CASES = Path(__file__).parent / "cases"
#: this suite's Redis db (flushed around each run), shared by the Celery and caraway runs
URL = "redis://127.0.0.1:6379/8"
NODE = "compat@localhost"
#: the prefix a case's queue names start with (``-Q`` in its worker.args)
QUEUE = "compat"
_IMPORT = re.compile(r"^(\s*)(from|import)\s+(celery|kombu)\b(.*)$", re.MULTILINE)


def to_caraway(source: str) -> str:
    """Rename the import lines only: celery/kombu -> caraway, Celery -> Caraway as Celery."""

    def rename(match: re.Match[str]) -> str:
        indent, keyword, _, rest = match.groups()
        rest = re.sub(r"\bCelery\b(?! as)", "Caraway as Celery", rest)
        return f"{indent}{keyword} caraway{rest}"

    return _IMPORT.sub(rename, source)


def rename(text: str) -> str:
    """A Celery project's text as a user switching to caraway would change it."""
    return to_caraway(text)


def run_case(case: str, flavour: str, workdir: Path) -> str:
    """The case's observable output under ``flavour`` ("celery" or "caraway")."""
    source = CASES / case
    target = workdir / flavour
    shutil.copytree(source, target)
    shutil.copy(CASES / "common.py", target / "common.py")
    if flavour == "caraway":
        for path in target.glob("*.py"):
            path.write_text(rename(path.read_text()))
    env = {
        **os.environ,
        "PYTHONPATH": str(target),
        "TEST_BROKER": URL,
        "TEST_BACKEND": URL,
        "COMPAT_QUEUE": QUEUE,
    }
    env.pop("CI", None)  # a case prints what it sees; nothing in it depends on CI
    _flush()
    worker = _start_worker(target, flavour, env) if (target / "worker.args").exists() else None
    try:
        output = _run(target, [sys.executable, "run.py"], env)
        if (target / "cli.txt").exists():
            shutil.copy(Path(__file__).parent / "cli_driver.py", target / "cli_driver.py")
            output += _run(target, [sys.executable, "cli_driver.py", flavour], env)
    finally:
        if worker is not None:
            _stop(worker)
        _flush()
    return output


def _run(cwd: Path, command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=90, check=False
    )
    status = f"[exit {done.returncode}]\n" if done.returncode else ""
    return done.stdout + status


def _start_worker(target: Path, flavour: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    args = (target / "worker.args").read_text().split()
    log = open(target / "worker.log", "wb")  # noqa: SIM115 - closed by the process's exit
    command = [sys.executable, "-m", flavour, "-A", "proj", "worker", "-l", "info", "-n", NODE]
    command += args
    process = subprocess.Popen(
        command, cwd=target, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    log.close()
    try:
        wait_until(
            lambda: _ready(target, process), timeout=40, message=f"the {flavour} worker to start"
        )
    except BaseException:
        _stop(process)
        raise
    return process


def _ready(target: Path, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError((target / "worker.log").read_text(errors="replace"))
    return " ready." in (target / "worker.log").read_text(errors="replace")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _flush() -> None:
    client = redis.Redis.from_url(URL)
    try:
        client.flushdb()
    finally:
        client.close()

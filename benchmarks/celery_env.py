"""The interpreters the benchmark runs: each system in its own virtualenv, made on first use.

``benchmarks/.venv-celery`` holds Celery 5.7.0 and the clients it needs; Celery is never a
dependency of caraway. ``benchmarks/.venv-caraway`` holds caraway (installed editable from
this repository, so it measures the working tree) with its runtime extras only. The repo's
``.venv`` is not used for measuring: it holds the test tools too, and redis-py 8 imports the
OpenTelemetry SDK whenever it is installed (about 2 MiB in every process), which a user's
install would not have and Celery's venv does not. A stamp file records what was installed;
a changed requirement list rebuilds the venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-celery"
REQUIREMENTS = ("celery==5.7.0", "redis", "packaging", "sqlalchemy", "psycopg[binary]")
CARAWAY_VENV = HERE / ".venv-caraway"
#: what a user of the measured brokers installs: the clients, hiredis, SQLAlchemy + psycopg
CARAWAY_REQUIREMENTS = ("-e", f"{HERE.parent}[redis,amqp,postgres]")


def celery_python() -> Path:
    """Path of the Celery virtualenv's interpreter, creating and filling the venv if needed."""
    return _venv_python(VENV, REQUIREMENTS)


def caraway_python() -> Path:
    """Path of caraway's benchmark interpreter, creating and filling the venv if needed."""
    return _venv_python(CARAWAY_VENV, CARAWAY_REQUIREMENTS)


def _venv_python(where: Path, requirements: tuple[str, ...]) -> Path:
    python = where / "bin" / "python"
    stamp = where / ".bench-requirements"
    wanted = "\n".join(requirements)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if where.exists():
        shutil.rmtree(where)
    print(f"creating {where} with {' '.join(requirements)} (first run only)", file=sys.stderr)
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True, env=env)
    stamp.write_text(wanted)
    return python

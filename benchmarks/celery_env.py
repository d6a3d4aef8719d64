"""The Celery side's interpreter: ``benchmarks/.venv-celery`` with Celery 5.7.0, made on first use.

Celery is never a dependency of caraway, so it lives in its own virtualenv beside the runner
(gitignored). A stamp file records what was installed; a changed requirement list rebuilds it.
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
_STAMP = VENV / ".bench-requirements"


def celery_python() -> Path:
    """Path of the Celery virtualenv's interpreter, creating and filling the venv if needed."""
    python = VENV / "bin" / "python"
    wanted = "\n".join(REQUIREMENTS)
    if python.exists() and _STAMP.exists() and _STAMP.read_text() == wanted:
        return python
    if VENV.exists():
        shutil.rmtree(VENV)
    print(f"creating {VENV} with {' '.join(REQUIREMENTS)} (first run only)", file=sys.stderr)
    venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS], check=True, env=env)
    _STAMP.write_text(wanted)
    return python

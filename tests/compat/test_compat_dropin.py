"""The migration corpus of issue 18: results, tasks, canvas, the CLI and pools.

Each case is a Celery project written from the user guide; it must print the same with
Celery 5.7 and with caraway (tests/compat/harness.py says how a case is laid out).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat.harness import CASES, URL, run_case
from tests.integration.redisproj import redis_problem, require

pytestmark = [pytest.mark.slow, pytest.mark.redis]

DROPIN_CASES = sorted(path.name for path in CASES.iterdir() if (path / "run.py").exists())


@pytest.mark.parametrize("case", DROPIN_CASES)
def test_case_prints_the_same_on_celery_and_caraway(case: str, tmp_path: Path) -> None:
    require(redis_problem(URL) is None, f"no Redis at {URL}: {redis_problem(URL)}")
    expected = run_case(case, "celery", tmp_path)
    assert expected.strip(), f"{case}: the Celery run printed nothing"
    got = run_case(case, "caraway", tmp_path)
    assert got == expected

"""The migration corpus (issues 17 and 18): small Celery projects written as Celery's user
guide shows them (calling, canvas, results, retries, routing, settings, signals, tasks, the
command line, pools, eager mode), each run on Celery 5.7 and then on caraway with only its
import lines renamed; what they print must be the same. ``harness.py`` says how a case is
laid out and run (one worker per run, Redis db 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat.harness import CASES, URL, run_case, to_caraway
from tests.integration.redisproj import redis_problem, require

pytestmark = [pytest.mark.slow, pytest.mark.redis]

CORPUS = sorted(path.name for path in CASES.iterdir() if (path / "run.py").exists())


def test_imports_are_renamed_and_nothing_else() -> None:
    source = (
        "from celery import Celery\nfrom celery.signals import task_prerun\n"
        "from kombu import Exchange, Queue\nx = 'celery'\n"
    )
    assert to_caraway(source) == (
        "from caraway import Caraway as Celery\nfrom caraway.signals import task_prerun\n"
        "from caraway import Exchange, Queue\nx = 'celery'\n"
    )


def test_the_corpus_covers_both_issues() -> None:
    assert set(CORPUS) >= {
        "calling", "canvas", "cli", "eager", "pools", "results", "retries", "routing",
        "settings", "signals", "tasks",
    }  # fmt: skip


@pytest.mark.parametrize("case", CORPUS)
def test_case_prints_the_same_on_celery_and_caraway(case: str, tmp_path: Path) -> None:
    require(redis_problem(URL) is None, f"no Redis at {URL}: {redis_problem(URL)}")
    expected = run_case(case, "celery", tmp_path)
    assert expected.strip(), f"{case}: the Celery run printed nothing"
    got = run_case(case, "caraway", tmp_path)
    assert got.splitlines() == expected.splitlines()

"""The seed's canvas examples on real worker processes: SQLite, Redis and PostgreSQL."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caraway.exceptions import ChordError
from tests.helpers import PROJ_APP, PROJ_TASKS, Worker, write_project

CANVAS_APP = PROJ_APP  # every app registers Celery's built-in tasks itself

REDIS_ENV = {
    "TEST_BROKER": "redis://127.0.0.1:6379/11",
    "TEST_BACKEND": "redis://127.0.0.1:6379/11",
}


def _redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        return False
    return True


def _drop_proj() -> None:
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def pg_db() -> Iterator[str]:
    from tests import pg

    with pg.database("caraway_ha_canvas") as name:
        yield name


@pytest.fixture
def pg_env(pg_db: str) -> Iterator[dict[str, str]]:
    """The PostgreSQL broker and SQL results in a schema private to the test."""
    from tests import pg

    with pg.schema(pg_db) as schema:
        yield {
            "TEST_BROKER": pg.url(pg_db, schema=schema),
            "TEST_BACKEND": pg.url(pg_db, scheme="db+postgresql", schema=schema),
        }


@pytest.fixture(params=["sqlite", "redis", "postgresql"])
def canvas_project(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """A `proj` package with the built-ins registered and one worker (-c 2) running."""
    env: dict[str, str] = {}
    if request.param == "postgresql":
        env = request.getfixturevalue("pg_env")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
    if request.param == "redis":
        if not _redis_up():
            pytest.skip("Redis is not running on 127.0.0.1:6379")
        env = REDIS_ENV
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        import redis

        redis.Redis.from_url(env["TEST_BROKER"]).flushdb()
    write_project(tmp_path, CANVAS_APP, PROJ_TASKS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    _drop_proj()
    worker = Worker(tmp_path, "-c", "2", env=env)
    try:
        worker.wait_ready()
        import proj.tasks  # type: ignore[import-not-found]  # written by write_project

        yield proj.tasks
    finally:
        worker.stop()
        _drop_proj()


def test_seed_group_chain_and_chord_examples_return_the_seed_results(canvas_project: Any) -> None:
    from caraway.canvas import chain, chord, group

    add, mul, xsum = canvas_project.add, canvas_project.mul, canvas_project.xsum
    assert group(add.s(i, i) for i in range(5))().get(timeout=20) == [0, 2, 4, 6, 8]
    assert group(add.s(i) for i in range(10))(10).get(timeout=20) == list(range(10, 20))
    assert chain(add.s(4, 4) | mul.s(8))().get(timeout=20) == 64
    assert chain(add.s(4) | mul.s(8))(4).get(timeout=20) == 64
    assert (add.s(4, 4) | mul.s(8))().get(timeout=20) == 64
    assert chord((add.s(i, i) for i in range(10)), xsum.s())().get(timeout=20) == 90
    assert (group(add.s(i, i) for i in range(10)) | xsum.s())().get(timeout=20) == 90
    partial = add.s(2)
    assert partial.delay(8).get(timeout=20) == 10


def test_a_failing_header_task_fails_the_chord_body_with_chord_error(canvas_project: Any) -> None:
    from caraway.canvas import chord

    add, boom, xsum = canvas_project.add, canvas_project.boom, canvas_project.xsum
    result = chord([add.s(1, 1), boom.s(), add.s(2, 2)], xsum.s())()
    # get() raises the cause, the header task's own error, as Celery's parent walk does
    with pytest.raises(ValueError, match="kaboom"):
        result.get(timeout=20)
    stored = result.get(timeout=20, propagate=False)
    assert isinstance(stored, ChordError) and "kaboom" in str(stored)
    assert result.state == "FAILURE"


def test_nested_canvases_and_an_empty_chord_header_complete(canvas_project: Any) -> None:
    from caraway.canvas import chain, chord, group

    add, mul, xsum = canvas_project.add, canvas_project.mul, canvas_project.xsum
    # chain ending in a chord whose result feeds another task
    flow = add.s(1, 1) | chord([add.s(1), mul.s(3)], xsum.s()) | mul.s(10)
    assert flow().get(timeout=20) == (3 + 6) * 10
    # group of chains, and a chord whose header holds a chain and a chord
    assert group(chain(add.s(1, 1), mul.s(2)), add.s(0, 1))().get(timeout=20) == [4, 1]
    header = [chain(add.s(1, 1), mul.s(5)), chord([add.s(1, 2), add.s(3, 4)], xsum.s())]
    assert chord(header, xsum.s())().get(timeout=20) == 10 + 10
    # a chain of groups: the second group gets the first one's results
    assert chain(group(add.s(1, 1), add.s(2, 2)), xsum.s(), add.s(1))().get(timeout=20) == 7
    assert chord([], xsum.s())().get(timeout=20) == 0


def test_map_starmap_and_chunks_run_as_batch_tasks(canvas_project: Any) -> None:
    add = canvas_project.add
    assert canvas_project.xsum.map([[1, 2], [3]]).delay().get(timeout=20) == [3, 3]
    assert add.starmap([(1, 2), (3, 4)]).delay().get(timeout=20) == [3, 7]
    assert add.chunks([(i, i) for i in range(5)], 2)().get(timeout=20) == [[0, 2], [4, 6], [8]]


def test_a_chord_of_a_thousand_adds_completes(canvas_project: Any) -> None:
    from caraway.canvas import chord

    add, xsum = canvas_project.add, canvas_project.xsum
    result = chord((add.s(i, i) for i in range(1000)), xsum.s())()
    assert result.get(timeout=120) == sum(2 * i for i in range(1000))

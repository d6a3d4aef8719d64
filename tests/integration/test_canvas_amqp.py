"""The seed's canvas examples with RabbitMQ as the broker, results on Redis or SQLite.

Each test uses a queue named for the run (the app's default queue and the worker's ``-Q``)
and deletes it afterwards; Redis results go to db 9, flushed before and after. The one
thing to know: with ``rpc://`` results a chord cannot be counted, so it is refused when
applied, before anything is sent, naming the backends that work.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest

import tests.e2e.test_canvas as seed
from caraway.exceptions import ImproperlyConfigured
from tests.helpers import PROJ_TASKS, Worker, write_project
from tests.integration.redisproj import clean_db, forget_proj, require

pytestmark = pytest.mark.amqp

BROKER = "pyamqp://guest@localhost//"
REDIS_RESULTS = "redis://127.0.0.1:6379/9"

AMQP_APP = (
    seed.CANVAS_APP
    + """
app.conf.task_default_queue = os.environ['TEST_QUEUE']
"""
)


def _amqp_problem() -> str | None:
    conn = amqp.Connection("127.0.0.1:5672", connect_timeout=2)
    try:
        conn.connect()
        conn.close()
        return None
    except Exception as exc:  # any failure to connect means: no usable broker
        conn.collect()
        return repr(exc)


@pytest.fixture
def queue() -> Iterator[str]:
    problem = _amqp_problem()
    require(problem is None, f"no RabbitMQ on 127.0.0.1:5672: {problem}")
    name = f"canvas-amqp-{uuid.uuid4().hex[:12]}"
    yield name
    conn = amqp.Connection("127.0.0.1:5672", connect_timeout=2)
    conn.connect()
    try:
        conn.channel().queue_delete(name)
    finally:
        conn.close()


@pytest.fixture
def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, queue: str
) -> Iterator[tuple[Path, dict[str, str]]]:
    """`proj` on RabbitMQ with TEST_QUEUE set; the test picks the result backend."""
    write_project(tmp_path, AMQP_APP, PROJ_TASKS)
    env = {"TEST_BROKER": BROKER, "TEST_QUEUE": queue}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    forget_proj()
    try:
        yield tmp_path, env
    finally:
        forget_proj()


def _proj_tasks() -> Any:
    import proj.tasks  # type: ignore[import-not-found]  # written by write_project

    return proj.tasks


@pytest.fixture(params=["redis", "sqlite"])
def canvas_tasks(
    request: pytest.FixtureRequest,
    project: tuple[Path, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Any]:
    """The project's tasks, with one worker (-c 2) consuming the run's queue."""
    base, env = project
    if request.param == "redis":
        results = REDIS_RESULTS
        flushed = clean_db(results)
        next(flushed)
    else:
        results = f"sqlite:///{base / 'results.sqlite3'}"
        flushed = iter(())
    monkeypatch.setenv("TEST_BACKEND", results)
    worker = Worker(base, "-c", "2", "-Q", env["TEST_QUEUE"], env={**env, "TEST_BACKEND": results})
    try:
        worker.wait_ready()
        yield _proj_tasks()
    finally:
        worker.stop()
        next(flushed, None)


def test_seed_canvas_examples_return_the_seed_results_on_rabbitmq(canvas_tasks: Any) -> None:
    seed.test_seed_group_chain_and_chord_examples_return_the_seed_results(canvas_tasks)
    seed.test_a_failing_header_task_fails_the_chord_body_with_chord_error(canvas_tasks)
    seed.test_nested_canvases_and_an_empty_chord_header_complete(canvas_tasks)
    seed.test_map_starmap_and_chunks_run_as_batch_tasks(canvas_tasks)


def test_chords_are_refused_at_call_time_with_rpc_results_naming_a_backend_that_works(
    project: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch, queue: str
) -> None:
    from caraway.canvas import chord, group

    monkeypatch.setenv("TEST_BACKEND", "rpc://")
    tasks = _proj_tasks()
    add, xsum = tasks.add, tasks.xsum
    refused = [
        chord((add.s(i, i) for i in range(3)), xsum.s()),
        group(add.s(i, i) for i in range(3)) | xsum.s(),
        add.s(1, 1) | group(add.s(1), add.s(2)) | xsum.s(),
        group([add.s(1, 1), chord([add.s(2, 2)], xsum.s())]),
    ]
    for canvas in refused:
        with pytest.raises(ImproperlyConfigured, match=r"'rpc'.*redis://.*sqlite:///"):
            canvas()
    admin = add.app.admin()
    try:
        assert admin.size(queue) == 0, "nothing was sent"
    finally:
        admin.close()

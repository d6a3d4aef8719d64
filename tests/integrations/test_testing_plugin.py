"""The pytest plugin and start_worker: a real consumer on a thread, per-test apps and
settings, eager mode only when asked, and a worker that is always stopped and joined."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from caraway import Caraway, current, shared_task
from caraway.exceptions import ImproperlyConfigured
from caraway.result import EagerResult
from caraway.testing import TestApp, TestWorker, start_worker

pytest_plugins = ["pytester"]


def _test_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("caraway-test-")]


@pytest.fixture(params=["memory", "sqlite"])
def caraway_transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_caraway_worker_runs_a_task_defined_in_the_test(
    caraway_app: Caraway, caraway_worker: TestWorker, caraway_transport: str
) -> None:
    @caraway_app.task
    def mul(x: int, y: int) -> int:
        return x * y

    assert caraway_app.broker_url.startswith(f"{caraway_transport}://")
    assert mul.delay(6, 7).get(timeout=10) == 42
    assert caraway_worker.alive()
    assert caraway_worker.processed >= 2  # the ping and mul


def test_each_test_app_has_its_own_broker(caraway_app: Caraway) -> None:
    other = TestApp()
    assert other.broker_url != caraway_app.broker_url
    assert current.get_current_app() is other  # made current, as Caraway() is


@pytest.mark.caraway(task_default_queue="other", result_expires=5)
def test_the_marker_sets_this_tests_settings(caraway_app: Caraway) -> None:
    assert caraway_app.conf.task_default_queue == "other"
    assert caraway_app.conf.result_expires == 5


@pytest.mark.caraway(task_always_eager=True)
def test_eager_mode_is_a_setting_away(caraway_app: Caraway) -> None:
    @caraway_app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(2, 2)
    assert isinstance(result, EagerResult)
    assert result.get() == 4
    with pytest.raises(ImproperlyConfigured, match="task_always_eager"), start_worker(caraway_app):
        pass


def test_the_app_is_not_eager_by_default(caraway_app: Caraway) -> None:
    assert caraway_app.conf.task_always_eager is False


def test_shared_tasks_run_on_the_test_worker(
    caraway_app: Caraway, caraway_worker: TestWorker
) -> None:
    @shared_task(name="plugin.hello")
    def hello(name: str) -> str:
        return f"hello {name}"

    assert hello.delay("you").get(timeout=10) == "hello you"


def test_start_worker_joins_its_thread_and_gives_back_what_it_did_not_start() -> None:
    app = TestApp(set_as_current=False)
    started = threading.Event()
    release = threading.Event()

    @app.task
    def block() -> str:
        started.set()
        release.wait(10)
        return "done"

    @app.task
    def later() -> str:
        return "later"

    with start_worker(app, concurrency=1) as worker:
        first = block.delay()
        assert started.wait(10)
        second = later.delay()  # fetched behind the running task, not started
        release.set()
        assert first.get(timeout=10) == "done"
    assert not worker.alive()
    assert _test_threads() == []
    with start_worker(app) as again:
        assert second.get(timeout=10) == "later"
    assert not again.alive()


def test_a_worker_whose_task_will_not_return_says_so_when_stopped() -> None:
    app = TestApp(set_as_current=False)
    started, release = threading.Event(), threading.Event()

    @app.task
    def stuck() -> None:
        started.set()
        release.wait(30)

    try:
        with (
            pytest.raises(RuntimeError, match=r"did not stop within 0\.3s"),
            start_worker(app, shutdown_timeout=0.3),
        ):
            stuck.delay()
            assert started.wait(10)
    finally:
        release.set()
    assert _wait_no_test_threads()


def _wait_no_test_threads() -> bool:
    for thread in _test_threads():
        thread.join(10)
    return _test_threads() == []


def test_the_plugin_stops_the_worker_of_a_failing_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_fails(caraway_app, caraway_worker):
            @caraway_app.task
            def add(x, y):
                return x + y
            assert add.delay(1, 1).get(timeout=10) == 2
            assert False, "the test fails after using the worker"

        def test_session_worker(caraway_session_app, caraway_session_worker):
            @caraway_session_app.task
            def sub(x, y):
                return x - y
            assert sub.delay(5, 3).get(timeout=10) == 2
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    assert _test_threads() == []


def test_start_worker_serves_other_test_runners_on_sqlite(tmp_path: Any) -> None:
    app = TestApp(transport="sqlite", directory=tmp_path, set_as_current=False)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with start_worker(app, concurrency=2) as worker:
        results = [add.delay(i, i) for i in range(10)]
        assert [r.get(timeout=10) for r in results] == [2 * i for i in range(10)]
    assert worker.processed == 11
    assert list(tmp_path.glob("*.sqlite3"))


def test_caraway_modules_are_imported_as_compiled_not_rewritten_by_pytest() -> None:
    """pytest rewrites a plugin's whole package; the plugin takes caraway off that list,
    since a test worker's thread may import a module while the main thread parses one,
    and CPython 3.11's ast.parse is not thread-safe."""
    import importlib
    import pkgutil
    import sys

    import caraway

    fresh = next(
        info.name
        for info in pkgutil.walk_packages(caraway.__path__, "caraway.")
        if info.name not in sys.modules and "dashboard" not in info.name
    )
    module = importlib.import_module(fresh)
    assert type(module.__loader__).__name__ != "AssertionRewritingHook", fresh

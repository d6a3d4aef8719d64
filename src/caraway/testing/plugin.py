"""The pytest plugin (entry point ``pytest11: caraway``): fixtures named as Celery's, with
``celery`` -> ``caraway``.

``caraway_app`` is a fresh app per test on its own in-process broker (``caraway_transport``
= ``'sqlite'`` for a fresh SQLite file), ``caraway_worker`` a real worker on a thread for
that app (stopped and joined after the test). Settings come from ``caraway_config`` and the
``@pytest.mark.caraway(...)`` marker; eager mode is one of them (``task_always_eager``),
never the default. Session-scoped twins: ``caraway_session_app``, ``caraway_session_worker``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from caraway import current
from caraway.app import Caraway
from caraway.brokers.memory.backend import reset as reset_memory_results
from caraway.testing.app import TestApp
from caraway.testing.worker import TestWorker, start_worker

MARKER = "caraway"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**settings): caraway settings for this test's caraway_app, over "
        "caraway_config (e.g. task_always_eager=True)",
    )
    _leave_caraway_unrewritten(config)


def _leave_caraway_unrewritten(config: pytest.Config) -> None:
    """Take caraway's package off pytest's assertion-rewrite list.

    pytest rewrites every module of a package that provides a plugin, and caraway imports
    some modules lazily (a broker's plug-in on first connect), sometimes on a test worker's
    thread: rewriting parses them with ``ast.parse``, which CPython 3.11 does not make
    thread-safe ("AST constructor recursion depth mismatch" when the main thread parses a
    module at the same moment). caraway is library code, not tests: it is imported as
    compiled. Where pytest keeps the list elsewhere, this does nothing.
    """
    hook = getattr(config.pluginmanager, "rewrite_hook", None)
    marked = getattr(hook, "_must_rewrite", None)
    if isinstance(marked, set):
        marked.discard("caraway")


# -- what a project overrides (in conftest.py, a module or a class) -------------------------
@pytest.fixture
def caraway_config() -> Mapping[str, Any]:
    """Settings for ``caraway_app``; override to change them for a module or a project."""
    return {}


@pytest.fixture
def caraway_parameters() -> Mapping[str, Any]:
    """Keyword arguments for ``Caraway()`` itself (``main``, ``task_cls``...)."""
    return {}


@pytest.fixture
def caraway_includes() -> Sequence[str]:
    """Modules whose tasks the app imports (``include=[...]``)."""
    return ()


@pytest.fixture
def caraway_transport() -> str:
    """``'memory'`` (default) or ``'sqlite'``; parametrize it to run a test on both."""
    return "memory"


@pytest.fixture
def caraway_worker_parameters() -> Mapping[str, Any]:
    """Keyword arguments for :func:`caraway.testing.start_worker` (``concurrency``,
    ``queues``, ``perform_ping_check``, ``shutdown_timeout``...)."""
    return {}


@pytest.fixture(scope="session")
def caraway_session_config() -> Mapping[str, Any]:
    return {}


@pytest.fixture(scope="session")
def caraway_session_worker_parameters() -> Mapping[str, Any]:
    return {}


# -- the app and the worker -----------------------------------------------------------------
@pytest.fixture
def caraway_app(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    caraway_config: Mapping[str, Any],
    caraway_parameters: Mapping[str, Any],
    caraway_includes: Sequence[str],
    caraway_transport: str,
) -> Iterator[Caraway]:
    """A new app for this test, current while it runs, closed after it."""
    settings = {**caraway_config, **_marker_settings(request)}
    with _test_app(
        settings,
        transport=caraway_transport,
        directory=tmp_path,
        include=caraway_includes,
        parameters=caraway_parameters,
    ) as app:
        yield app


@pytest.fixture
def caraway_worker(
    caraway_app: Caraway, caraway_worker_parameters: Mapping[str, Any]
) -> Iterator[TestWorker]:
    """A worker consuming ``caraway_app``'s default queue while the test runs."""
    with start_worker(caraway_app, **caraway_worker_parameters) as worker:
        yield worker  # start_worker stops and joins it, whatever the test did


@pytest.fixture(scope="session")
def caraway_session_app(
    tmp_path_factory: pytest.TempPathFactory, caraway_session_config: Mapping[str, Any]
) -> Iterator[Caraway]:
    """One app for the whole session (on the in-process broker unless configured)."""
    with _test_app(
        caraway_session_config,
        transport="memory",
        directory=tmp_path_factory.mktemp("caraway"),
        include=(),
        parameters={},
    ) as app:
        yield app


@pytest.fixture(scope="session")
def caraway_session_worker(
    caraway_session_app: Caraway, caraway_session_worker_parameters: Mapping[str, Any]
) -> Iterator[TestWorker]:
    with start_worker(caraway_session_app, **caraway_session_worker_parameters) as worker:
        yield worker


def _marker_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError(
            f"@pytest.mark.{MARKER} takes settings as keywords, e.g. "
            f"@pytest.mark.{MARKER}(task_always_eager=True); got {marker.args!r}"
        )
    return dict(marker.kwargs)


@contextmanager
def _test_app(
    settings: Mapping[str, Any],
    *,
    transport: str,
    directory: Path,
    include: Sequence[str],
    parameters: Mapping[str, Any],
) -> Iterator[Caraway]:
    """A TestApp, current for the block; then closed, its results dropped, and the app that
    was current before made current again (a test leaves no app behind)."""
    previous = current._current
    app = TestApp(settings, transport=transport, directory=directory, include=include, **parameters)
    try:
        yield app
    finally:
        app.close()
        url = app.result_backend_url
        if url is not None and url.startswith("memory://caraway-test-"):
            reset_memory_results(url)
        current.set_current_app(previous)

"""A result document is untrusted input: anyone who can write to the result store can
write one (issue 15, findings 8 and 9)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from caraway import Caraway
from caraway.exceptions import RemoteTaskError
from caraway.protocol.results import exception_from_dict
from caraway.worker.consumer import Consumer


@pytest.mark.parametrize("name", ["SystemExit", "KeyboardInterrupt", "GeneratorExit"])
def test_a_stored_base_exception_is_not_rebuilt_as_itself(name: str) -> None:
    """get() raises what it rebuilds: a stored SystemExit ended the process reading it."""
    rebuilt = exception_from_dict({"exc_type": name, "exc_module": "builtins", "exc_message": []})
    assert isinstance(rebuilt, RemoteTaskError)
    assert isinstance(rebuilt, Exception)
    assert type(rebuilt).__name__ == name


@pytest.fixture
def lazy_module() -> Iterator[list[str]]:
    """A module whose ``__getattr__`` would import (as lazy-loading packages do)."""
    asked: list[str] = []
    module = types.ModuleType("caraway_test_lazy")

    def __getattr__(name: str) -> type[Exception]:
        asked.append(name)
        return ValueError

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    module.Known = type("Known", (Exception,), {})  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield asked
    del sys.modules[module.__name__]


def test_rebuilding_an_exception_runs_no_module_getattr(lazy_module: list[str]) -> None:
    rebuilt = exception_from_dict(
        {"exc_type": "Anything", "exc_module": "caraway_test_lazy", "exc_message": ["x"]}
    )
    assert lazy_module == []
    assert isinstance(rebuilt, RemoteTaskError)
    known = exception_from_dict(
        {"exc_type": "Known", "exc_module": "caraway_test_lazy", "exc_message": ["x"]}
    )
    assert type(known).__name__ == "Known" and not isinstance(known, RemoteTaskError)


def test_rebuilding_walks_no_attribute_that_is_not_a_class_member() -> None:
    """``os.path.os.system`` is reachable by getattr; a stored name must not walk there."""
    rebuilt = exception_from_dict(
        {"exc_type": "path.os.error", "exc_module": "os", "exc_message": ["x"]}
    )
    assert isinstance(rebuilt, RemoteTaskError)


def test_a_worker_reading_an_unreadable_stored_result_runs_the_task_instead_of_looping() -> None:
    """The unreadable document raised BackendError, which the consumer takes for an outage:
    it retried the same redelivered message for ever."""
    app = Caraway(
        "untrusted", broker="memory://untrusted", backend="memory://untrusted", set_as_current=False
    )
    consumer = Consumer(app, queues=["celery"], slots=1, hostname="u@h")
    consumer.backend = app.new_backend()
    consumer.backend.store("t-garbage", b"\xff{not json", state="SUCCESS", expires=60)
    assert consumer._stored_state("t-garbage") is None

"""run_task skips what would do nothing (issue 23), and nothing else.

TaskBase's own hooks do nothing and a signal without receivers calls nobody, so a run
skips them; a hook a task class or instance sets, and a receiver once connected, are
called as before, with ``self.request`` set inside the hooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from caraway import Caraway, signals
from caraway.execution import build_request, run_task
from caraway.protocol.message import TaskMessage
from caraway.taskbase import TaskBase

URL = "memory://execution-hooks"


@pytest.fixture
def app() -> Iterator[Caraway]:
    app = Caraway("xhooks", broker=URL, backend=URL, set_as_current=False)

    @app.task(name="xhooks.add")
    def add(x: int, y: int) -> int:
        return x + y

    yield app


def _run(task: TaskBase) -> Any:
    message = TaskMessage(id="h-1", task=task.name, args=[2, 3])
    return run_task(task, build_request(message, hostname="h@x", delivery_info={}))


def test_hooks_set_on_the_instance_are_called_with_the_request(app: Caraway) -> None:
    task = app.tasks["xhooks.add"]
    seen: list[Any] = []
    task.before_start = lambda task_id, args, kwargs: seen.append(("before", task_id))  # type: ignore[method-assign]
    task.on_success = lambda value, task_id, args, kwargs: seen.append(  # type: ignore[method-assign]
        ("success", value, task.request.id)
    )
    task.after_return = lambda state, value, *rest: seen.append(("after", state, value))  # type: ignore[method-assign]
    outcome = _run(task)
    assert outcome.kind == "success" and outcome.value == 5
    assert seen == [("before", "h-1"), ("success", 5, "h-1"), ("after", "SUCCESS", 5)]


def test_hooks_of_a_task_class_are_called(app: Caraway) -> None:
    seen: list[Any] = []

    class Hooked(app.Task):  # type: ignore[name-defined,misc]
        def on_success(self, value: Any, task_id: str, *rest: Any) -> None:
            seen.append(("success", value, self.request.id))

        def after_return(self, state: str, value: Any, *rest: Any) -> None:
            seen.append(("after", state))

    @app.task(name="xhooks.hooked", base=Hooked)
    def hooked(x: int, y: int) -> int:
        return x * y

    assert _run(hooked).value == 6
    assert seen == [("success", 6, "h-1"), ("after", "SUCCESS")]


def test_a_failing_hook_still_fails_the_task(app: Caraway) -> None:
    task = app.tasks["xhooks.add"]

    def broken(*_: Any) -> None:
        raise RuntimeError("hook")

    task.after_return = broken  # type: ignore[method-assign]
    outcome = _run(task)
    assert outcome.kind == "failure" and isinstance(outcome.exc, RuntimeError)


def test_signals_fire_once_connected(app: Caraway) -> None:
    task = app.tasks["xhooks.add"]
    fired: list[str] = []

    def prerun(**named: Any) -> None:
        fired.append("prerun")

    def success(**named: Any) -> None:
        fired.append(f"success {named['result']}")

    def postrun(**named: Any) -> None:
        fired.append(f"postrun {named['state']}")

    _run(task)
    assert fired == []
    signals.task_prerun.connect(prerun)
    signals.task_success.connect(success)
    signals.task_postrun.connect(postrun)
    try:
        _run(task)
    finally:
        signals.task_prerun.disconnect(prerun)
        signals.task_success.disconnect(success)
        signals.task_postrun.disconnect(postrun)
    assert fired == ["prerun", "success 5", "postrun SUCCESS"]

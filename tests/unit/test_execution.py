"""One execution path for the worker and eager mode, and one publish path for what a run sends.

Eager mode (``task_always_eager``, ``Task.apply``) runs the worker's execution code, so a
task's link callbacks, chain and errbacks run there too, as Celery's eager trace runs them.
A retry is a message the run hands back to be published with its other effects.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from caraway import Caraway, chain, exceptions, lifecycle
from caraway.brokers.memory import backend as memory_backend
from caraway.brokers.memory import transport as memory_transport
from caraway.config import Settings
from caraway.execution import build_request, run_task
from caraway.protocol.message import TaskMessage
from caraway.publish import Outgoing

URL = "memory://execution-unit"


@pytest.fixture
def app() -> Iterator[Caraway]:
    app = Caraway("xunit", broker=URL, backend=URL, set_as_current=False)
    app.conf.task_always_eager = True
    seen: list[Any] = []
    app.seen = seen  # type: ignore[attr-defined]

    @app.task(name="xunit.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="xunit.record")
    def record(value: Any) -> Any:
        seen.append(value)
        return value

    @app.task(name="xunit.boom")
    def boom() -> None:
        raise KeyError("boom")

    @app.task(name="xunit.on_error")
    def on_error(request: Any, exc: BaseException, traceback: str | None) -> None:
        seen.append((request.id, type(exc).__name__))

    @app.task(name="xunit.failed_id")
    def failed_id(task_id: str) -> None:
        seen.append(("failed", task_id))

    @app.task(name="xunit.again", bind=True, max_retries=2)
    def again(self: Any) -> str:
        if self.request.retries < 2:
            raise self.retry(countdown=5)
        return "done"

    yield app
    memory_backend.reset(URL)
    memory_transport.reset(URL)


def test_an_eager_task_runs_its_link_callback_with_its_result(app: Caraway) -> None:
    add, record = app.tasks["xunit.add"], app.tasks["xunit.record"]

    assert add.apply_async((2, 2), link=record.s()).get() == 4

    assert app.seen == [4]  # type: ignore[attr-defined]


def test_an_eager_failure_runs_errbacks_by_celerys_rule(app: Caraway) -> None:
    boom = app.tasks["xunit.boom"]
    on_error, failed_id = app.tasks["xunit.on_error"], app.tasks["xunit.failed_id"]

    result = boom.apply_async(link_error=[on_error.s(), failed_id.s()], task_id="t-boom")

    assert result.state == "FAILURE"
    # three parameters: called with (request, exc, traceback); one: sent the failed id
    assert app.seen == [("t-boom", "KeyError"), ("failed", "t-boom")]  # type: ignore[attr-defined]


def test_an_eager_chain_still_runs_each_step_once(app: Caraway) -> None:
    add, record = app.tasks["xunit.add"], app.tasks["xunit.record"]

    assert chain(add.s(1, 1), add.s(10), record.s()).apply_async().get() == 12

    assert app.seen == [12]  # type: ignore[attr-defined]


def test_a_retry_is_handed_back_with_the_run_not_published_from_inside_it(
    app: Caraway,
) -> None:
    app.conf.task_always_eager = False
    again = app.tasks["xunit.again"]
    message = TaskMessage(id="t-again", task="xunit.again", root_id="t-again")
    request = build_request(message, hostname="w", delivery_info={"routing_key": "celery"})

    outcome = run_task(again, request)

    assert outcome.kind == "retry"
    assert app.admin().size("celery") == 0, "nothing is sent while the task runs"
    (resend,) = outcome.resends
    assert isinstance(resend, Outgoing)
    assert (resend.message.id, resend.message.retries) == ("t-again", 1)
    assert resend.message.eta is not None
    effects = lifecycle.on_outcome(
        message,
        outcome,
        policy=lifecycle.Policy(),
        conf=Settings(),
        hostname="w",
        queue="celery",
    )
    assert effects.publish == [resend], "the worker publishes it with the run's effects"
    assert effects.settle == "ack"


def test_eager_retries_run_again_in_place(app: Caraway) -> None:
    assert app.tasks["xunit.again"].apply().get() == "done"


def test_retry_without_throw_still_hands_its_message_back(app: Caraway) -> None:
    app.conf.task_always_eager = False

    @app.task(name="xunit.soft", bind=True)
    def soft(self: Any) -> str:
        signal = self.retry(countdown=1, throw=False)
        assert isinstance(signal, exceptions.Retry)
        return "carried on"

    message = TaskMessage(id="t-soft", task="xunit.soft", root_id="t-soft")
    outcome = run_task(soft, build_request(message, hostname="w", delivery_info={}))

    assert (outcome.kind, outcome.value) == ("success", "carried on")
    assert [resend.message.retries for resend in outcome.resends] == [1]

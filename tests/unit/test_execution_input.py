"""Bad task options fail where the task is declared or called, naming the value; the
retry backoff stays within its cap; a bad value inside ``retry()`` fails the run.

All on the in-process memory broker: nothing here needs a worker.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from caraway import Caraway, states
from caraway.task import Task
from tests.helpers import queue_size


def _app() -> Caraway:
    name = f"memory://exec-input-{uuid.uuid4().hex[:8]}"
    return Caraway("proj", broker=name, backend=name, set_as_current=False)


def _add(app: Caraway, **options: Any) -> Task:
    def add(x: int, y: int) -> int:
        return x + y

    task: Task = app.task(**options)(add)
    return task


def test_a_malformed_rate_limit_fails_at_declaration_naming_it() -> None:
    with pytest.raises(ValueError, match=r"'10/x'.*unit 'x'"):
        _add(_app(), rate_limit="10/x")
    with pytest.raises(ValueError, match="'ten/s'"):
        _add(_app(), rate_limit="ten/s")


@pytest.mark.parametrize(
    ("countdown", "error", "named"),
    [(-1, ValueError, "-1"), ("soon", TypeError, "'soon'"), (True, TypeError, "True")],
)
def test_a_bad_countdown_fails_at_call_time_and_sends_nothing(
    countdown: Any, error: type[Exception], named: str
) -> None:
    app = _app()
    add = _add(app)
    with pytest.raises(error, match=named):
        add.apply_async((1, 1), countdown=countdown)
    assert queue_size(app, "celery") == 0


def test_a_time_limit_below_the_soft_limit_fails_at_declaration_and_at_call_time() -> None:
    with pytest.raises(ValueError, match=r"soft_time_limit \(2\) is above time_limit \(1\)"):
        _add(_app(), time_limit=1, soft_time_limit=2)
    app = _app()
    add = _add(app)
    with pytest.raises(ValueError, match=r"soft_time_limit \(5\) is above time_limit \(3\)"):
        add.apply_async((1, 1), time_limit=3, soft_time_limit=5)
    assert queue_size(app, "celery") == 0


@pytest.mark.parametrize("limit", [-1, 0, "10", True])
def test_a_time_limit_that_is_not_a_positive_number_fails_at_declaration(limit: Any) -> None:
    with pytest.raises(ValueError, match=f"time_limit must be a positive number.*{limit!r}"):
        _add(_app(), time_limit=limit)


@pytest.mark.parametrize("value", ["3", 2.5, -1])
def test_max_retries_that_is_not_a_non_negative_int_fails_at_declaration(value: Any) -> None:
    with pytest.raises(ValueError, match=f"max_retries .* not {value!r}"):
        _add(_app(), max_retries=value)


def test_max_retries_that_is_not_an_int_in_a_retry_call_fails_the_run() -> None:
    app = _app()

    @app.task(bind=True)
    def retrying(self: Task) -> None:
        raise self.retry(max_retries="2", countdown=0)  # type: ignore[arg-type]

    result = retrying.apply()
    assert result.state == states.FAILURE
    assert isinstance(result.result, TypeError)
    assert "'2'" in str(result.result)


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"countdown": "soon"}, TypeError, "'soon'"),
        ({"countdown": -2}, ValueError, "-2"),
        ({"eta": "tomorrow"}, TypeError, "'tomorrow'"),
    ],
)
def test_a_bad_value_given_to_retry_fails_the_run_naming_it(
    options: dict[str, Any], error: type[Exception], named: str
) -> None:
    app = _app()

    @app.task(bind=True)
    def retrying(self: Task) -> None:
        raise self.retry(**options)

    result = retrying.apply()
    assert result.state == states.FAILURE
    assert isinstance(result.result, error)
    assert named in str(result.result)


def test_a_naive_retry_eta_is_read_as_utc() -> None:
    app = _app()
    runs: list[int] = []

    @app.task(bind=True, max_retries=1)
    def retrying(self: Task) -> str:
        runs.append(self.request.retries)
        if self.request.retries == 0:
            naive = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(seconds=5)
            raise self.retry(eta=naive)
        return "done"

    assert retrying.apply().get() == "done"
    assert runs == [0, 1]


def test_an_eager_task_may_return_a_value_no_serializer_could_store() -> None:
    app = _app()
    marker = object()

    @app.task
    def returns_object() -> object:
        return marker

    assert returns_object.apply().get() is marker


def test_backoff_without_jitter_doubles_up_to_the_cap() -> None:
    app = _app()

    @app.task(retry_backoff=0.5, retry_backoff_max=3, retry_jitter=False)
    def backing_off() -> None:
        """Never run: only its delays are asked for."""

    assert [backing_off.backoff_delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_with_jitter_stays_between_zero_and_the_capped_delay_and_varies() -> None:
    app = _app()

    @app.task(retry_backoff=True, retry_backoff_max=5)
    def backing_off() -> None:
        """Never run: only its delays are asked for."""

    for retries, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 5.0), (10, 5.0)]:
        delays = [backing_off.backoff_delay(retries) for _ in range(200)]
        assert all(0 <= delay <= ceiling for delay in delays), (retries, max(delays))
        assert len(set(delays)) > 100  # jitter spreads the retries out
        assert max(delays) > ceiling / 2

"""Sending from asyncio code (``await add.adelay(2, 2)``, ``await app.asend_task(...)``):
the event loop keeps running while the broker round trips happen on the app's sender
thread; errors reach the caller whose message caused them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from caraway import Caraway, chain, group
from caraway.exceptions import BrokerError, ImproperlyConfigured, SerializationError
from caraway.result import AsyncResult, EagerResult
from caraway.testing import TestWorker
from tests.helpers import Worker, purge_queue, write_project

REDIS_URL = "redis://127.0.0.1:6379/6"


@pytest.fixture
def add(caraway_app: Caraway) -> Any:
    @caraway_app.task(name="async.add")
    def add(x: int, y: int) -> int:
        return x + y

    return add


def test_adelay_sends_without_blocking_and_the_result_can_be_awaited(
    caraway_app: Caraway, caraway_worker: TestWorker, add: Any
) -> None:
    async def main() -> Any:
        result = await add.adelay(2, 2)
        assert isinstance(result, AsyncResult)
        return await result

    assert asyncio.run(main()) == 4


def test_asend_task_sends_by_name_with_apply_async_options(caraway_app: Caraway, add: Any) -> None:
    async def main() -> AsyncResult:
        return await caraway_app.asend_task(
            "async.add", (1, 2), queue="elsewhere", task_id="fixed-id"
        )

    result = asyncio.run(main())
    assert result.id == "fixed-id"
    admin = caraway_app.admin()
    try:
        assert admin.size("elsewhere") == 1
    finally:
        admin.close()


@pytest.mark.caraway(task_always_eager=True)
def test_in_eager_mode_aapply_async_runs_the_task_here(caraway_app: Caraway, add: Any) -> None:
    result = asyncio.run(add.aapply_async((5, 5)))
    assert isinstance(result, EagerResult)
    assert result.get() == 10


def test_a_message_that_cannot_be_encoded_fails_only_its_own_sender(
    caraway_app: Caraway, caraway_worker: TestWorker, add: Any
) -> None:
    async def main() -> list[Any]:
        sends: list[Awaitable[Any]] = [add.adelay(i, i) for i in range(20)]
        sends.insert(7, add.adelay(object(), 1))
        return await asyncio.gather(*sends, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert isinstance(outcomes[7], SerializationError)
    results = [outcome for n, outcome in enumerate(outcomes) if n != 7]
    assert [result.get(timeout=10) for result in results] == [2 * i for i in range(20)]


def test_wrong_arguments_fail_before_anything_is_sent(caraway_app: Caraway, add: Any) -> None:
    with pytest.raises(TypeError):
        asyncio.run(add.adelay(1, 2, 3))


def test_an_unreachable_broker_is_an_error_for_the_caller_not_a_hang() -> None:
    app = Caraway(
        "async-down",
        broker="redis://127.0.0.1:1/6",
        backend="memory://async-down",
        set_as_current=False,
        task_publish_retry=False,
    )

    async def main() -> None:
        await asyncio.wait_for(app.asend_task("anything"), timeout=20)

    with pytest.raises(BrokerError):
        asyncio.run(main())
    app.close()


def test_rpc_results_are_refused_with_the_reason() -> None:
    app = Caraway("async-rpc", broker="memory://async-rpc", backend="rpc://", set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match="rpc://"):
        asyncio.run(app.asend_task("anything"))


def test_closing_the_app_ends_its_sender_thread(caraway_app: Caraway, add: Any) -> None:
    asyncio.run(add.adelay(1, 1))
    assert any(t.name == "caraway-async-sender" for t in threading.enumerate())
    caraway_app.close()
    assert not any(t.name == "caraway-async-sender" for t in threading.enumerate())


# -- the event loop stays responsive ---------------------------------------------------------
@pytest.fixture
def redis_worker(tmp_path: Path) -> Iterator[Caraway]:
    base = write_project(tmp_path)
    env = {"TEST_BROKER": REDIS_URL, "TEST_BACKEND": REDIS_URL}
    client = Caraway("proj", broker=REDIS_URL, backend=REDIS_URL, set_as_current=False)
    purge_queue(client, "celery")
    node = Worker(base, "-c", "2", env=env, name="async1")
    try:
        node.wait_ready()
        yield client
    finally:
        node.stop()
        purge_queue(client, "celery")
        client.close()


async def _max_lag(work: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """Run ``work`` while a ticker asks for a 1 ms sleep; the worst delay it saw (how
    long the loop could not answer anything else: a request, a health check)."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        while not done:
            before = loop.time()
            await asyncio.sleep(0.001)
            worst = max(worst, loop.time() - before - 0.001)

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    try:
        value = await work()
    finally:
        done = True
        await tick
    return worst, value


def test_a_thousand_sends_and_waits_in_flight_leave_the_loop_responsive(
    redis_worker: Caraway,
) -> None:
    """A thousand callers arrive over half a second (a busy web service: 2000 requests/s),
    each sending a task that takes 0.3 s and awaiting its result, so that most of the
    thousand are in flight at once however fast the machine. The loop's worst delay in
    answering anything else stays small."""
    app = redis_worker

    @app.task(name="proj.tasks.nap")
    async def nap(seconds: float) -> float:  # the worker's task, declared here to send it
        return seconds

    in_flight = peak = 0

    async def caller(i: int) -> Any:
        nonlocal in_flight, peak
        await asyncio.sleep(i / 2000)
        in_flight += 1
        peak = max(peak, in_flight)
        result = await nap.adelay(0.3)
        value = await result.aget(timeout=60)
        in_flight -= 1
        return value

    async def measured() -> tuple[float, list[Any]]:
        # steady state, as a service runs: the sender thread, the wait threads and their
        # connections exist before the burst
        await asyncio.gather(*(caller(0) for _ in range(20)))
        return await _max_lag(lambda: asyncio.gather(*(caller(i) for i in range(1000))))

    # the lower worst of two runs: another process taking our core (this machine is
    # shared) shows in one run's worst, a loop this code blocks shows in both
    lag, values = asyncio.run(measured())
    assert values == [0.3] * 1000
    assert peak >= 500  # sends and waits in flight together, by the hundred
    lag = min(lag, asyncio.run(measured())[0])
    print(f"\nmax loop lag, 1000 callers over 0.5 s (peak {peak} in flight): {lag * 1000:.1f} ms")
    assert lag < 0.25  # 11-33 ms measured here, alone; the bound allows a busy machine


def test_the_lag_measure_sees_a_blocked_loop() -> None:
    async def blocks() -> None:
        await asyncio.sleep(0.01)
        time.sleep(0.1)  # what a blocking broker round trip does to the loop

    lag, _ = asyncio.run(_max_lag(blocks))
    assert lag >= 0.09


def test_any_send_runs_through_asend_canvas_included(
    caraway_app: Caraway, caraway_worker: TestWorker, add: Any
) -> None:
    async def main() -> tuple[Any, Any]:
        steps = await caraway_app.asend(chain(add.s(1, 1), add.s(2), add.s(3)).apply_async)
        fan = await caraway_app.asend(group(add.s(i, i) for i in range(5)).apply_async)
        # GroupResult has no aget: its get() goes to a thread
        return await steps.aget(timeout=10), await asyncio.to_thread(fan.get, timeout=10)

    assert asyncio.run(main()) == (7, [0, 2, 4, 6, 8])

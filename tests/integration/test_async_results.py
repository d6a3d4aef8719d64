"""``await result`` woken by the backend itself, with no thread per wait: Redis and SQLite."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import caraway
from caraway import Caraway, states
from caraway.exceptions import TimeoutError
from caraway.protocol import results as docs
from tests.integration.redisproj import redis_problem, require

REDIS_URL = "redis://127.0.0.1:6379/8"


@pytest.fixture(params=["redis", "sqlite"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Caraway]:
    if request.param == "redis":
        require(redis_problem(REDIS_URL) is None, f"no Redis at {REDIS_URL}")
        url = REDIS_URL
    else:
        url = f"sqlite:///{tmp_path / 'results.db'}"
    app = Caraway("asyncres", broker=url, backend=url, set_as_current=False)
    try:
        yield app
    finally:
        app.close()


def _store_later(app: Caraway, task_id: str, state: str, value: object, delay: float) -> None:
    def store() -> None:
        time.sleep(delay)
        backend = app.new_backend()
        try:
            document = docs.result_document(task_id, state, value)
            backend.store(task_id, docs.encode_document(document), state=state, expires=60)
        finally:
            backend.close()

    threading.Thread(target=store, daemon=True).start()


def test_awaiting_results_uses_no_thread_per_wait(app: Caraway) -> None:
    ids = [caraway.uuid() for _ in range(20)]
    for index, task_id in enumerate(ids):
        _store_later(app, task_id, states.SUCCESS, index, delay=0.3)

    async def main() -> tuple[list[object], int]:
        handles = [app.AsyncResult(task_id) for task_id in ids]
        waiting = asyncio.gather(*(handle.aget(timeout=10) for handle in handles))
        await asyncio.sleep(0.1)
        threads = threading.active_count()
        return await waiting, threads

    before = threading.active_count()
    values, during = asyncio.run(main())
    assert values == list(range(20))
    # the 20 storing threads run meanwhile; 20 waits on worker threads would add more
    assert during <= before + 20 + 1


def test_awaited_failure_raises_and_a_timeout_says_so(app: Caraway) -> None:
    failed = caraway.uuid()
    _store_later(app, failed, states.FAILURE, docs.exception_to_dict(KeyError("k")), 0.05)

    async def main() -> None:
        with pytest.raises(KeyError):
            await app.AsyncResult(failed)
        with pytest.raises(TimeoutError, match=r"did not finish within 0\.2s"):
            await app.AsyncResult(caraway.uuid()).aget(timeout=0.2)

    asyncio.run(main())

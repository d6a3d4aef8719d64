"""The result-backend contract: every result store passes these, whatever it is built on."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from caraway.brokers.contracts import Backend, GroupStore
from tests.contract.conftest import BackendFactory, wait_until


def document(task_id: str, state: str, result: object = None) -> bytes:
    return f'{{"status": "{state}", "result": {result or "null"}, "task_id": "{task_id}"}}'.encode()


def has_state(state: str) -> Callable[[bytes], bool]:
    return lambda doc: json.loads(doc).get("status") == state


class _Fields:
    """Equal to a loaded document that holds every field of ``fields`` (stores that keep
    fields in columns build the document back with more fields, in their own order)."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, bytes):
            return NotImplemented
        loaded = json.loads(other)
        return all(loaded.get(key) == value for key, value in self.fields.items())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<document with {self.fields!r}>"


def expect(backend: Backend, raw: bytes) -> Any:
    """What ``backend`` loads back for ``raw``: the same bytes, or the same fields."""
    return raw if backend.keeps_bytes else _Fields(json.loads(raw))


@pytest.fixture
def task_id() -> str:
    return str(uuid.uuid4())


def store_after(
    holder: list[threading.Timer], delay: float, backend: Backend, task_id: str, state: str
) -> None:
    """Store ``state`` for ``task_id`` from another thread after ``delay`` seconds."""
    timer = threading.Timer(
        delay, lambda: backend.store(task_id, document(task_id, state), state=state, expires=60)
    )
    holder.append(timer)
    timer.start()


def test_stored_document_is_loaded_back_byte_for_byte(backend: Backend, task_id: str) -> None:
    doc = document(task_id, "SUCCESS", 4)

    assert backend.store(task_id, doc, state="SUCCESS", expires=60) is True

    assert backend.load(task_id) == expect(backend, doc)


def test_unknown_task_loads_as_none(backend: Backend) -> None:
    assert backend.load(str(uuid.uuid4())) is None


def test_an_unfinished_state_is_replaced_by_a_later_one(backend: Backend, task_id: str) -> None:
    backend.store(task_id, document(task_id, "STARTED"), state="STARTED", expires=60)

    assert backend.store(task_id, document(task_id, "SUCCESS", 1), state="SUCCESS", expires=60)

    assert backend.load(task_id) == expect(backend, document(task_id, "SUCCESS", 1))


@pytest.mark.parametrize("final", ["SUCCESS", "FAILURE", "REVOKED"])
@pytest.mark.parametrize("late", ["STARTED", "RETRY", "SUCCESS", "FAILURE"])
def test_a_final_state_is_never_overwritten(
    backend: Backend, task_id: str, final: str, late: str
) -> None:
    backend.store(task_id, document(task_id, final), state=final, expires=60)

    assert backend.store(task_id, document(task_id, late, 2), state=late, expires=60) is False

    assert backend.load(task_id) == expect(backend, document(task_id, final))


@pytest.mark.parametrize("begin", [False, True], ids=["store_many", "store_many_begin"])
def test_a_batch_of_results_keeps_each_final_state_and_writes_the_rest(
    backend: Backend, begin: bool
) -> None:
    """A batch is guarded per result: one task's final state is kept, its neighbours'
    documents are written (with the batch's expiry)."""
    ids = [str(uuid.uuid4()) for _ in range(5)]
    backend.store(ids[1], document(ids[1], "SUCCESS", 1), state="SUCCESS", expires=60)
    backend.store(ids[3], document(ids[3], "STARTED"), state="STARTED", expires=60)
    items = [(task_id, document(task_id, "FAILURE", 2), "FAILURE", None) for task_id in ids]
    if begin:
        backend.store_many_begin(items, expires=60)()
    else:
        backend.store_many(items, expires=60)
    loaded = backend.load_many(ids)
    assert loaded[1] == expect(backend, document(ids[1], "SUCCESS", 1))
    for index in (0, 2, 3, 4):
        assert loaded[index] == expect(backend, document(ids[index], "FAILURE", 2))
    if not begin:  # the batch's expiry applies to each of its results
        brief = [str(uuid.uuid4()) for _ in range(2)]
        backend.store_many(
            [(task_id, document(task_id, "SUCCESS"), "SUCCESS", None) for task_id in brief],
            expires=1,
        )
        wait_until(lambda: backend.load_many(brief) == [None, None], timeout=5)


def test_an_expired_document_loads_as_none(backend: Backend, task_id: str) -> None:
    backend.store(task_id, document(task_id, "SUCCESS"), state="SUCCESS", expires=1)
    assert backend.load(task_id) is not None

    wait_until(lambda: backend.load(task_id) is None, timeout=5)

    assert backend.cleanup() >= 0
    assert backend.load_many([task_id]) == [None]
    # an expired final result no longer blocks a new one
    assert backend.store(task_id, document(task_id, "STARTED"), state="STARTED", expires=60)


def test_a_document_without_expiry_is_kept(backend: Backend, task_id: str) -> None:
    backend.store(task_id, document(task_id, "SUCCESS"), state="SUCCESS", expires=None)

    assert backend.cleanup() >= 0
    assert backend.load(task_id) == expect(backend, document(task_id, "SUCCESS"))
    backend.forget(task_id)


def test_load_many_answers_in_the_order_asked(backend: Backend) -> None:
    first, missing, second = (str(uuid.uuid4()) for _ in range(3))
    backend.store(first, document(first, "SUCCESS"), state="SUCCESS", expires=60)
    backend.store(second, document(second, "FAILURE"), state="FAILURE", expires=60)

    assert backend.load_many([second, missing, first]) == [
        expect(backend, document(second, "FAILURE")),
        None,
        expect(backend, document(first, "SUCCESS")),
    ]


def test_forgotten_result_is_gone_and_can_be_written_again(backend: Backend, task_id: str) -> None:
    backend.store(task_id, document(task_id, "SUCCESS"), state="SUCCESS", expires=60)

    backend.forget(task_id)

    assert backend.load(task_id) is None
    assert backend.store(task_id, document(task_id, "PENDING"), state="PENDING", expires=60)


def test_wait_returns_at_once_when_the_document_already_satisfies_it(
    backend: Backend, task_id: str
) -> None:
    backend.store(task_id, document(task_id, "SUCCESS"), state="SUCCESS", expires=60)
    started = time.monotonic()

    got = backend.wait(task_id, until=has_state("SUCCESS"), timeout=5)

    assert got == expect(backend, document(task_id, "SUCCESS"))
    assert time.monotonic() - started < 0.5


def test_wait_times_out_with_none(backend: Backend, task_id: str) -> None:
    started = time.monotonic()

    assert backend.wait(task_id, until=lambda doc: True, timeout=0.3) is None

    assert 0.25 <= time.monotonic() - started < 1.5


@pytest.mark.parametrize("writer", ["same handle", "another handle"])
def test_wait_wakes_promptly_when_another_thread_stores(
    backend_factory: BackendFactory, task_id: str, writer: str
) -> None:
    waiter = backend_factory()
    storer = waiter if writer == "same handle" else backend_factory()
    timers: list[threading.Timer] = []
    try:
        store_after(timers, 0.2, storer, task_id, "SUCCESS")
        started = time.monotonic()
        got = waiter.wait(task_id, until=lambda doc: True, timeout=5)
        elapsed = time.monotonic() - started
    finally:
        for timer in timers:
            timer.cancel()
            timer.join()

    assert got == expect(waiter, document(task_id, "SUCCESS"))
    assert elapsed < 1.0


@pytest.mark.needs("groups")
def test_wait_skips_documents_that_do_not_satisfy_it(
    backend_factory: BackendFactory, task_id: str
) -> None:
    backend = backend_factory()
    backend.store(task_id, document(task_id, "STARTED"), state="STARTED", expires=60)
    timers: list[threading.Timer] = []
    try:
        store_after(timers, 0.2, backend_factory(), task_id, "SUCCESS")
        got = backend.wait(task_id, until=has_state("SUCCESS"), timeout=5)
    finally:
        for timer in timers:
            timer.cancel()
            timer.join()

    assert got == expect(backend, document(task_id, "SUCCESS"))


def group_store(backend: Backend) -> GroupStore:
    assert isinstance(backend, GroupStore), "deselected where it does not hold"
    return backend


@pytest.mark.needs("groups")
def test_saved_group_is_loaded_back_and_forgotten(backend: Backend) -> None:
    store = group_store(backend)
    group_id = str(uuid.uuid4())
    doc = f'{{"result": [["a", null], ["b", null]], "task_id": "{group_id}"}}'.encode()

    store.save_group(group_id, doc, expires=60)

    assert store.load_group(group_id) == expect(backend, doc)
    store.forget_group(group_id)
    assert store.load_group(group_id) is None


@pytest.mark.needs("groups")
def test_an_expired_group_loads_as_none(backend: Backend) -> None:
    store = group_store(backend)
    group_id = str(uuid.uuid4())
    store.save_group(group_id, b"{}", expires=1)

    wait_until(lambda: store.load_group(group_id) is None, timeout=5)


def test_two_handles_on_one_url_share_results(
    backend_factory: BackendFactory, task_id: str
) -> None:
    writer, reader = backend_factory(), backend_factory()

    writer.store(task_id, document(task_id, "SUCCESS"), state="SUCCESS", expires=60)

    assert reader.load(task_id) == expect(reader, document(task_id, "SUCCESS"))

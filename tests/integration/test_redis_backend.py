"""The Redis result backend against a real server: Celery's keys, the final-state guard,
pub/sub waiting and the 5.7 chord join."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from caraway.brokers.contracts import ChordPart, ChordStore
from caraway.brokers.redis.backend import RedisBackend

pytestmark = pytest.mark.redis


def chord_join(
    backend: ChordStore, group_id: str, task_id: str, index: int | None, state: str, result: str
) -> list[Any] | None:
    """One header task counted on its own."""
    (members,) = backend.chord_join_many(
        [ChordPart(group_id, task_id, index, state, result)], expires=86400
    )
    return members


def doc(task_id: str, status: str, result: object = None) -> bytes:
    return json.dumps(
        {
            "status": status,
            "result": result,
            "traceback": None,
            "children": [],
            "date_done": None,
            "task_id": task_id,
        }
    ).encode()


def status_of(document: bytes) -> str:
    return str(json.loads(document)["status"])


def is_ready(document: bytes) -> bool:
    return status_of(document) in {"SUCCESS", "FAILURE", "REVOKED"}


def later(delay: float, action: Callable[[], object]) -> threading.Timer:
    timer = threading.Timer(delay, action)
    timer.start()
    return timer


def test_store_sets_the_celery_key_with_its_ttl_and_publishes_on_the_key_name(
    backend: RedisBackend, raw: redis.Redis, prefix: str
) -> None:
    task_id = str(uuid.uuid4())
    key = f"{prefix}celery-task-meta-{task_id}"
    pubsub = raw.pubsub()
    try:
        pubsub.subscribe(key)
        assert pubsub.get_message(timeout=2)["type"] == "subscribe"
        assert backend.store(task_id, doc(task_id, "SUCCESS", 4), state="SUCCESS", expires=600)
        published = pubsub.get_message(timeout=2)
    finally:
        pubsub.close()
    assert published is not None and published["data"] == doc(task_id, "SUCCESS", 4)
    assert raw.get(key) == doc(task_id, "SUCCESS", 4)
    assert 590 <= raw.ttl(key) <= 600


def test_expires_none_keeps_the_result_forever(backend: RedisBackend, raw: redis.Redis) -> None:
    task_id = str(uuid.uuid4())
    backend.store(task_id, doc(task_id, "SUCCESS"), state="SUCCESS", expires=None)
    assert raw.ttl(backend.task_key(task_id)) == -1


@pytest.mark.parametrize("final", ["SUCCESS", "FAILURE", "REVOKED"])
def test_a_final_state_is_never_overwritten(backend: RedisBackend, final: str) -> None:
    task_id = str(uuid.uuid4())
    assert backend.store(task_id, doc(task_id, final, 1), state=final, expires=60)
    assert not backend.store(task_id, doc(task_id, "STARTED"), state="STARTED", expires=60)
    assert not backend.store(task_id, doc(task_id, "SUCCESS", 2), state="SUCCESS", expires=60)
    assert backend.load(task_id) == doc(task_id, final, 1)


def test_unready_states_replace_each_other(backend: RedisBackend) -> None:
    task_id = str(uuid.uuid4())
    assert backend.store(task_id, doc(task_id, "STARTED"), state="STARTED", expires=60)
    assert backend.store(task_id, doc(task_id, "RETRY"), state="RETRY", expires=60)
    assert backend.store(task_id, doc(task_id, "SUCCESS", 3), state="SUCCESS", expires=60)
    assert backend.load(task_id) == doc(task_id, "SUCCESS", 3)


def test_load_many_returns_documents_in_order_with_none_for_pending(
    backend: RedisBackend,
) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    backend.store(a, doc(a, "SUCCESS", 1), state="SUCCESS", expires=60)
    assert backend.load_many([b, a]) == [None, doc(a, "SUCCESS", 1)]
    assert backend.load_many([]) == []


def test_forget_deletes_the_document(backend: RedisBackend) -> None:
    task_id = str(uuid.uuid4())
    backend.store(task_id, doc(task_id, "SUCCESS"), state="SUCCESS", expires=60)
    backend.forget(task_id)
    assert backend.load(task_id) is None


def test_wait_is_woken_by_the_publish_well_before_any_reread(backend: RedisBackend) -> None:
    task_id = str(uuid.uuid4())
    writer = RedisBackend(backend.url, options={"global_keyprefix": backend.prefix})
    timer = later(
        0.2, lambda: writer.store(task_id, doc(task_id, "SUCCESS", 4), state="SUCCESS", expires=60)
    )
    try:
        start = time.monotonic()
        got = backend.wait(task_id, until=is_ready, timeout=5)
        elapsed = time.monotonic() - start
    finally:
        timer.join()
        writer.close()
    assert got == doc(task_id, "SUCCESS", 4)
    assert elapsed < 0.8  # the safety re-read only happens after 1 s


def test_wait_skips_states_that_do_not_satisfy_until(backend: RedisBackend) -> None:
    task_id = str(uuid.uuid4())
    backend.store(task_id, doc(task_id, "STARTED"), state="STARTED", expires=60)
    timer = later(
        0.1, lambda: backend.store(task_id, doc(task_id, "FAILURE"), state="FAILURE", expires=60)
    )
    try:
        got = backend.wait(task_id, until=is_ready, timeout=5)
    finally:
        timer.join()
    assert got is not None and status_of(got) == "FAILURE"


def test_wait_returns_a_stored_result_at_once_and_none_on_timeout(
    backend: RedisBackend,
) -> None:
    done, never = str(uuid.uuid4()), str(uuid.uuid4())
    backend.store(done, doc(done, "SUCCESS"), state="SUCCESS", expires=60)
    assert backend.wait(done, until=is_ready, timeout=0.01) == doc(done, "SUCCESS")
    start = time.monotonic()
    assert backend.wait(never, until=is_ready, timeout=0.3) is None
    assert 0.25 <= time.monotonic() - start < 2


def test_threads_waiting_on_one_backend_are_all_woken(
    backend: RedisBackend, raw: redis.Redis
) -> None:
    task_ids = [str(uuid.uuid4()) for _ in range(3)]
    waiting = [*task_ids, task_ids[0]]  # two threads wait for the same task
    results: dict[int, bytes | None] = {}

    def wait(index: int) -> None:
        results[index] = backend.wait(waiting[index], until=is_ready, timeout=5)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(waiting))]
    for thread in threads:
        thread.start()
    channels = [backend.task_key(task_id) for task_id in task_ids]
    deadline = time.monotonic() + 5
    while any(n == 0 for _, n in raw.pubsub_numsub(*channels)):
        assert time.monotonic() < deadline, "waiters did not subscribe"
        time.sleep(0.01)
    for task_id in task_ids:
        backend.store(task_id, doc(task_id, "SUCCESS", task_id), state="SUCCESS", expires=60)
    for thread in threads:
        thread.join(timeout=10)
    assert {i: json.loads(r or b"{}")["result"] for i, r in results.items()} == {
        i: waiting[i] for i in range(len(waiting))
    }


def test_groups_are_saved_loaded_and_forgotten_under_celery_keys(
    backend: RedisBackend, raw: redis.Redis, prefix: str
) -> None:
    group_id = str(uuid.uuid4())
    document = b'{"result": [["g", null], []]}'
    backend.save_group(group_id, document, expires=120)
    assert raw.get(f"{prefix}celery-taskset-meta-{group_id}") == document
    assert 110 <= raw.ttl(f"{prefix}celery-taskset-meta-{group_id}") <= 120
    assert backend.load_group(group_id) == document
    backend.forget_group(group_id)
    assert backend.load_group(group_id) is None


def test_chord_join_hands_the_ordered_results_to_exactly_one_caller(
    backend: RedisBackend, raw: redis.Redis, prefix: str
) -> None:
    group_id = str(uuid.uuid4())
    backend.chord_set_size(group_id, 3, expires=86400)
    members = [(str(uuid.uuid4()), index) for index in range(3)]
    outcomes: list[list[object] | None] = []
    lock = threading.Lock()

    def join(task_id: str, index: int) -> None:
        got = chord_join(backend, group_id, task_id, index, "SUCCESS", str(index * 10))
        with lock:
            outcomes.append(got)

    threads = [threading.Thread(target=join, args=m) for m in reversed(members)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    winners = [o for o in outcomes if o is not None]
    assert len(winners) == 1 and len(outcomes) == 3
    assert winners[0] == [[1, task_id, "SUCCESS", index * 10] for task_id, index in members]
    assert raw.ttl(f"{prefix}celery-taskset-meta-{group_id}.j") > 0

    assert backend.chord_done(group_id)
    base = f"{prefix}celery-taskset-meta-{group_id}"
    assert raw.get(f"{base}.c") == b"done"
    assert raw.exists(f"{base}.j", f"{base}.s", f"{base}.d") == 0
    # a redelivered header task after completion changes nothing
    assert chord_join(backend, group_id, members[0][0], 0, "SUCCESS", "0") is None


def test_chord_counts_a_redelivered_header_task_once(backend: RedisBackend) -> None:
    group_id = str(uuid.uuid4())
    backend.chord_set_size(group_id, 2, expires=86400)
    first = str(uuid.uuid4())
    assert chord_join(backend, group_id, first, 0, "SUCCESS", "1") is None
    assert chord_join(backend, group_id, first, 0, "SUCCESS", "1") is None
    won = chord_join(backend, group_id, str(uuid.uuid4()), 1, "FAILURE", '{"exc_type": "E"}')
    assert won is not None and [m[2] for m in won] == ["SUCCESS", "FAILURE"]


def test_chord_does_not_complete_before_its_size_is_known(backend: RedisBackend) -> None:
    group_id = str(uuid.uuid4())
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    # header tasks can finish before the client has written .s (seen in the capture)
    assert chord_join(backend, group_id, first, 0, "SUCCESS", "1") is None
    backend.chord_set_size(group_id, 2, expires=86400)
    won = chord_join(backend, group_id, second, 1, "SUCCESS", "2")
    assert won == [[1, first, "SUCCESS", 1], [1, second, "SUCCESS", 2]]


def test_chord_extend_raises_the_expected_count(backend: RedisBackend) -> None:
    group_id = str(uuid.uuid4())
    backend.chord_set_size(group_id, 1, expires=86400)
    backend.chord_extend(group_id, 1)
    assert chord_join(backend, group_id, str(uuid.uuid4()), 0, "SUCCESS", "1") is None
    assert chord_join(backend, group_id, str(uuid.uuid4()), 1, "SUCCESS", "2") is not None


def test_store_many_begin_writes_while_the_caller_goes_on(
    backend: RedisBackend, raw: redis.Redis
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    raw.script_flush()  # the first send meets NOSCRIPT and must load the script itself
    wait = backend.store_many_begin(
        [(task_id, doc(task_id, "SUCCESS", 1), "SUCCESS", None) for task_id in ids], expires=60
    )
    wait()
    assert backend.load_many(ids) == [doc(task_id, "SUCCESS", 1) for task_id in ids]

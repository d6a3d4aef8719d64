"""Chord joins on every backend that counts them: one completer, ordered members, dedup."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

from tests.contract.conftest import BackendFactory


def _gid() -> str:
    return f"chord-{uuid.uuid4()}"


def test_only_the_last_header_task_completes_the_join_with_results_in_index_order(
    backend_factory: BackendFactory,
) -> None:
    backend: Any = backend_factory()
    gid = _gid()
    backend.chord_set_size(gid, 3)
    assert backend.chord_join(gid, "t2", 2, "SUCCESS", "20") is None
    assert backend.chord_join(gid, "t0", 0, "SUCCESS", "0") is None
    members = backend.chord_join(gid, "t1", 1, "SUCCESS", json.dumps({"a": [1]}))
    assert members == [
        [1, "t0", "SUCCESS", 0],
        [1, "t1", "SUCCESS", {"a": [1]}],
        [1, "t2", "SUCCESS", 20],
    ]
    assert backend.chord_done(gid) is True
    assert backend.chord_join(gid, "t1", 1, "SUCCESS", "1") is None


def test_a_redelivered_header_task_counts_once(backend_factory: BackendFactory) -> None:
    backend: Any = backend_factory()
    gid = _gid()
    backend.chord_set_size(gid, 2)
    assert backend.chord_join(gid, "t0", 0, "SUCCESS", "1") is None
    assert backend.chord_join(gid, "t0", 0, "SUCCESS", "1") is None
    members = backend.chord_join(gid, "t1", 1, "FAILURE", '{"exc_type": "ValueError"}')
    assert members is not None and [m[2] for m in members] == ["SUCCESS", "FAILURE"]
    assert backend.chord_done(gid)


def test_header_tasks_finishing_before_the_size_is_set_wait_for_the_last(
    backend_factory: BackendFactory,
) -> None:
    backend: Any = backend_factory()
    gid = _gid()
    assert backend.chord_join(gid, "t0", 0, "SUCCESS", "1") is None
    backend.chord_set_size(gid, 2)
    assert backend.chord_join(gid, "t1", 1, "SUCCESS", "2") == [
        [1, "t0", "SUCCESS", 1],
        [1, "t1", "SUCCESS", 2],
    ]
    assert backend.chord_done(gid)


def test_concurrent_joins_elect_exactly_one_completer(backend_factory: BackendFactory) -> None:
    gid = _gid()
    first: Any = backend_factory()
    first.chord_set_size(gid, 40)
    winners: list[int] = []
    lock = threading.Lock()

    def join(start: int) -> None:
        backend: Any = backend_factory()
        for index in range(start, 40, 4):
            if backend.chord_join(gid, f"t{index}", index, "SUCCESS", str(index)) is not None:
                with lock:
                    winners.append(index)
                backend.chord_done(gid)

    threads = [threading.Thread(target=join, args=(start,)) for start in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(winners) == 1


def test_chord_done_is_false_for_a_caller_that_did_not_complete(
    backend_factory: BackendFactory,
) -> None:
    backend: Any = backend_factory()
    gid = _gid()
    backend.chord_set_size(gid, 1)
    assert backend.chord_done(gid) is False

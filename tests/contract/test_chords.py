"""Chord joins on every backend that counts them: one completer, ordered members, dedup."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest

from caraway.brokers.contracts import ChordPart, ChordStore
from tests.contract.conftest import BackendFactory

EXPIRES = 86400


def _gid() -> str:
    return f"chord-{uuid.uuid4()}"


def chord_store(factory: BackendFactory) -> ChordStore:
    backend = factory()
    assert isinstance(backend, ChordStore), "deselected where it does not hold"
    return backend


def join(
    backend: ChordStore, gid: str, task_id: str, index: int | None, state: str, result: str
) -> list[Any] | None:
    """One part counted on its own."""
    (members,) = backend.chord_join_many(
        [ChordPart(gid, task_id, index, state, result)], expires=EXPIRES
    )
    return members


@pytest.mark.needs("chords")
def test_only_the_last_header_task_completes_the_join_with_results_in_index_order(
    backend_factory: BackendFactory,
) -> None:
    backend = chord_store(backend_factory)
    gid = _gid()
    backend.chord_set_size(gid, 3, expires=EXPIRES)
    assert join(backend, gid, "t2", 2, "SUCCESS", "20") is None
    assert join(backend, gid, "t0", 0, "SUCCESS", "0") is None
    members = join(backend, gid, "t1", 1, "SUCCESS", json.dumps({"a": [1]}))
    assert members == [
        [1, "t0", "SUCCESS", 0],
        [1, "t1", "SUCCESS", {"a": [1]}],
        [1, "t2", "SUCCESS", 20],
    ]
    assert backend.chord_done(gid) is True
    assert join(backend, gid, "t1", 1, "SUCCESS", "1") is None


@pytest.mark.needs("chords")
def test_a_redelivered_header_task_counts_once(backend_factory: BackendFactory) -> None:
    backend = chord_store(backend_factory)
    gid = _gid()
    backend.chord_set_size(gid, 2, expires=EXPIRES)
    assert join(backend, gid, "t0", 0, "SUCCESS", "1") is None
    assert join(backend, gid, "t0", 0, "SUCCESS", "1") is None
    members = join(backend, gid, "t1", 1, "FAILURE", '{"exc_type": "ValueError"}')
    assert members is not None and [m[2] for m in members] == ["SUCCESS", "FAILURE"]
    assert backend.chord_done(gid)


@pytest.mark.needs("chords")
def test_header_tasks_finishing_before_the_size_is_set_wait_for_the_last(
    backend_factory: BackendFactory,
) -> None:
    backend = chord_store(backend_factory)
    gid = _gid()
    assert join(backend, gid, "t0", 0, "SUCCESS", "1") is None
    backend.chord_set_size(gid, 2, expires=EXPIRES)
    assert join(backend, gid, "t1", 1, "SUCCESS", "2") == [
        [1, "t0", "SUCCESS", 1],
        [1, "t1", "SUCCESS", 2],
    ]
    assert backend.chord_done(gid)


@pytest.mark.needs("chords")
def test_concurrent_joins_elect_exactly_one_completer(backend_factory: BackendFactory) -> None:
    gid = _gid()
    first = chord_store(backend_factory)
    first.chord_set_size(gid, 40, expires=EXPIRES)
    winners: list[int] = []
    lock = threading.Lock()

    def join_every_fourth(start: int) -> None:
        backend = chord_store(backend_factory)
        for index in range(start, 40, 4):
            if join(backend, gid, f"t{index}", index, "SUCCESS", str(index)) is not None:
                with lock:
                    winners.append(index)
                backend.chord_done(gid)

    threads = [threading.Thread(target=join_every_fourth, args=(start,)) for start in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(winners) == 1


@pytest.mark.needs("chords")
def test_chord_done_is_false_for_a_caller_that_did_not_complete(
    backend_factory: BackendFactory,
) -> None:
    backend = chord_store(backend_factory)
    gid = _gid()
    backend.chord_set_size(gid, 1, expires=EXPIRES)
    assert backend.chord_done(gid) is False


@pytest.mark.needs("chords")
def test_an_extended_chord_waits_for_the_extra_header_results(
    backend_factory: BackendFactory,
) -> None:
    backend = chord_store(backend_factory)
    gid = _gid()
    backend.chord_set_size(gid, 1, expires=EXPIRES)

    backend.chord_extend(gid, 1)

    assert join(backend, gid, "t0", 0, "SUCCESS", "1") is None
    assert join(backend, gid, "t1", 1, "SUCCESS", "2") == [
        [1, "t0", "SUCCESS", 1],
        [1, "t1", "SUCCESS", 2],
    ]
    assert backend.chord_done(gid)


@pytest.mark.needs("chords")
def test_joins_counted_together_answer_each_part_in_order(
    backend_factory: BackendFactory,
) -> None:
    backend = chord_store(backend_factory)
    done, other = _gid(), _gid()
    backend.chord_set_size(done, 2, expires=EXPIRES)
    backend.chord_set_size(other, 3, expires=EXPIRES)
    parts = [
        ChordPart(done, "a0", 0, "SUCCESS", "10"),
        ChordPart(other, "b0", 0, "SUCCESS", "20"),
        ChordPart(done, "a1", None, "SUCCESS", '"last"'),
    ]

    answers = backend.chord_join_many(parts, expires=EXPIRES)

    # a part without an index sorts after every indexed one
    assert answers == [None, None, [[1, "a0", "SUCCESS", 10], [1, "a1", "SUCCESS", "last"]]]
    assert backend.chord_join_many([], expires=EXPIRES) == []
    assert backend.chord_done(done)
    assert backend.chord_done(other) is False

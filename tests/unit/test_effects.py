"""The order in which a consumer's effects reach the broker and the result store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from caraway import Caraway
from caraway.brokers.contracts import ChordPart, Delivery
from caraway.brokers.memory.backend import MemoryBackend
from caraway.brokers.memory.transport import MemoryTransport
from caraway.effects import EffectApplier
from caraway.exceptions import BrokerConnectionError
from caraway.lifecycle import ChordJoin, Effects
from caraway.protocol.message import Message


class Recorder:
    def __init__(self) -> None:
        self.log: list[str] = []


class RecordingTransport(MemoryTransport):
    recorder: Recorder

    def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        self.recorder.log.append("ack " + ",".join(d.tag for d in deliveries))

    def publish_many(self, items: Any) -> None:
        self.recorder.log.append(f"publish {len(items)}")
        super().publish_many(items)

    def publish(self, message: Message, **kw: Any) -> None:
        self.recorder.log.append("publish 1")
        super().publish(message, **kw)

    def ack_then_fetch(self, acks: Sequence[Delivery], queues: Sequence[str], **kw: Any) -> Any:
        self.recorder.log.append("fetch acking " + ",".join(d.tag for d in acks))
        return []


class RecordingBackend(MemoryBackend):
    recorder: Recorder
    #: what the next counts answer: None, or members (the chord completed)
    answers: list[Any] | None = None
    count_error: Exception | None = None

    def chord_join_many_begin(
        self, parts: Sequence[ChordPart], *, expires: float
    ) -> Callable[[], list[Any]]:
        tags = ",".join(part.task_id for part in parts)
        self.recorder.log.append(f"send counts {tags}")

        def read() -> list[Any]:
            self.recorder.log.append(f"counts read {tags}")
            if self.count_error is not None:
                raise self.count_error
            return self.answers or [None] * len(parts)

        return read

    def chord_done(self, group_id: str) -> bool:
        self.recorder.log.append(f"chord done {group_id}")
        return True

    def store_many_begin(self, items: Any, *, expires: float | None) -> Callable[[], None]:
        tags = ",".join(task_id for task_id, *_ in items)
        self.recorder.log.append(f"send results {tags}")
        return lambda: self.recorder.log.append(f"results written {tags}")


def applier() -> tuple[EffectApplier, Recorder]:
    app = Caraway("effects", broker="memory://effects", backend="memory://effects")
    recorder = Recorder()
    transport = RecordingTransport("memory://effects")
    backend = RecordingBackend("memory://effects")
    transport.recorder = backend.recorder = recorder
    return EffectApplier(app, transport, backend, app.publisher), recorder


def delivery(tag: str) -> Delivery:
    message = Message(body=b"[]", headers={"id": tag, "task": "t"}, properties={})
    return Delivery(message=message, queue="celery", tag=tag, transport=None)  # type: ignore[arg-type]


def success(tag: str) -> Effects:
    return Effects(results=[(tag, "SUCCESS", {"status": "SUCCESS", "task_id": tag})])


def header_done(tag: str) -> Effects:
    """A chord header task's success: its result, and a count for its chord."""
    body = {"task": "body", "args": [], "kwargs": {}, "options": {"task_id": "b1"}}
    join = ChordJoin("g1", 0, "SUCCESS", 2, body, tag, None)
    return Effects(results=[(tag, "SUCCESS", {"status": "SUCCESS"})], chord_join=join)


def fetch_with(effects: EffectApplier) -> list[Delivery]:
    transport = effects.transport
    return effects.flush_then_fetch(
        lambda acks: transport.ack_then_fetch(acks, ["celery"], limit=4, timeout=0, owner="o")
    )


def test_early_ack_tasks_ack_with_the_next_fetch_while_their_results_are_written() -> None:
    effects, recorder = applier()
    for tag in ("a", "b"):
        effects.apply(delivery(tag), success(tag), ordered=False)
    assert recorder.log == []  # nothing written per task
    fetch_with(effects)
    assert recorder.log == ["send results a,b", "fetch acking a,b", "results written a,b"]
    assert effects.pending == 0


def test_a_late_ack_waits_for_the_results_before_travelling_with_the_fetch() -> None:
    effects, recorder = applier()
    effects.apply(delivery("a"), success("a"), ordered=True)
    effects.apply(delivery("b"), success("b"), ordered=False)
    fetch_with(effects)
    assert recorder.log == ["send results a,b", "results written a,b", "fetch acking a,b"]


def test_results_that_fail_after_a_good_fetch_are_kept_for_the_next_batch() -> None:
    effects, recorder = applier()
    backend = effects.backend
    assert isinstance(backend, RecordingBackend)

    def failing(items: Any, *, expires: float | None) -> Callable[[], None]:
        def wait() -> None:
            raise ConnectionError("store went away")

        return wait

    backend.store_many_begin = failing  # type: ignore[method-assign]
    effects.apply(delivery("a"), success("a"), ordered=False)
    assert fetch_with(effects) == []
    assert recorder.log == ["fetch acking a"]
    assert effects.pending == 1  # the result, written with the next flush


def test_a_chord_count_travels_with_its_result_in_one_round_trip_before_the_fetch() -> None:
    effects, recorder = applier()
    effects.apply(delivery("a"), header_done("a"), ordered=False)
    fetch_with(effects)
    assert recorder.log == [
        "send results a",
        "send counts a",
        "counts read a",  # reads the results' replies too: one round trip for both
        "fetch acking a",
        "results written a",
    ]
    assert effects.pending == 0


def test_a_count_that_completes_its_chord_sends_the_body_before_the_fetch_waits() -> None:
    effects, recorder = applier()
    backend = effects.backend
    assert isinstance(backend, RecordingBackend)
    backend.answers = [[[1, "a", "SUCCESS", 2]]]
    effects.apply(delivery("a"), header_done("a"), ordered=False)
    fetch_with(effects)
    assert recorder.log == [
        "send results a",
        "send counts a",
        "counts read a",
        "chord done g1",
        "results written a",
        "publish 1",
        "fetch acking a",
    ]
    assert effects.pending == 0


def test_counts_that_fail_are_sent_again_with_the_next_batch() -> None:
    effects, recorder = applier()
    backend = effects.backend
    assert isinstance(backend, RecordingBackend)
    backend.count_error = ConnectionError("store went away")
    effects.apply(delivery("a"), header_done("a"), ordered=False)
    assert fetch_with(effects) == []
    assert "fetch acking a" in recorder.log  # the fetch went ahead
    assert effects.pending == 1  # the count, sent again
    backend.count_error = None
    recorder.log.clear()
    fetch_with(effects)
    assert "send counts a" in recorder.log and effects.pending == 0


def test_a_fetch_begun_ahead_whose_reply_is_lost_keeps_its_acks_and_results_queued() -> None:
    # the claim ahead carried the acks and the results went beside it: if its reply cannot
    # be read (the broker went away), both are sent again with the next flush, as a fetch
    # that fails at once leaves them queued
    effects, recorder = applier()
    effects.apply(delivery("a"), success("a"), ordered=False)

    def begin(acks: Sequence[Delivery]) -> Callable[[], list[Delivery]]:
        recorder.log.append("claim acking " + ",".join(d.tag for d in acks))

        def read() -> list[Delivery]:
            raise BrokerConnectionError("gone")

        return read

    finish = effects.flush_then_begin(begin)
    effects.apply(delivery("b"), success("b"), ordered=False)  # the task run meanwhile
    with pytest.raises(BrokerConnectionError):
        finish()
    assert effects.pending == 4  # a's ack and result, b's
    effects.flush()
    assert recorder.log[-1] == "ack a,b" and effects.pending == 0
    assert effects.backend is not None
    assert all(effects.backend.load(tag) for tag in ("a", "b"))

"""Fair dispatch in one consumer: what waits behind a long task is given back, never run too."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import datetime

from caraway import Caraway
from caraway.worker.consumer import Consumer
from caraway.worker.handoff import HandOff, Siblings
from tests.helpers import wait_until


def test_a_task_shorter_than_the_threshold_gives_nothing_back() -> None:
    calls: list[bool] = []
    handoff = HandOff(calls.append, after=0.1)
    handoff.start()
    try:
        for _ in range(20):
            handoff.run(time.sleep, 0.005)
        time.sleep(0.15)
    finally:
        handoff.stop()
    assert calls == []


def test_a_long_task_gives_back_once_past_the_threshold_then_when_asked_again() -> None:
    calls: list[tuple[bool, float]] = []
    started = time.monotonic()

    def give_back(first: bool) -> float | None:
        calls.append((first, time.monotonic() - started))
        return time.monotonic() + 0.15 if first else None

    handoff = HandOff(give_back, after=0.1)
    handoff.start()
    try:
        handoff.run(time.sleep, 0.5)
    finally:
        handoff.stop()
    assert [first for first, _ in calls] == [True, False]
    assert 0.1 <= calls[0][1] < 0.3
    assert calls[1][1] - calls[0][1] >= 0.15


def test_the_task_ending_during_a_give_back_waits_for_it_to_finish() -> None:
    """The consumer's transport and buffers have one user at a time: the main thread does
    not take them back while the helper is using them, whatever the task does."""
    spans: list[tuple[float, float]] = []

    def give_back(first: bool) -> float | None:
        begun = time.monotonic()
        time.sleep(0.3)  # the task ends meanwhile
        spans.append((begun, time.monotonic()))
        return None

    handoff = HandOff(give_back, after=0.1)
    handoff.start()
    try:
        handoff.run(time.sleep, 0.2)
        back = time.monotonic()
        assert not handoff.io.acquire(blocking=False), "the main thread holds io again"
    finally:
        handoff.stop()
    assert len(spans) == 1
    assert back >= spans[0][1]


def test_a_busy_consumer_gives_back_what_it_holds_and_never_runs_it() -> None:
    """Behind a long task: the prefetched tasks go back at once (uncounted), a countdown it
    holds goes back when it falls due, and the consumer runs none of them itself."""
    name = f"memory://handoff-{uuid.uuid4().hex[:8]}"
    app = Caraway("handoff", broker=name, backend=name, set_as_current=False)
    release = threading.Event()

    @app.task(name="handoff.block")
    def block() -> str:
        release.wait(10)
        return "released"

    @app.task(name="handoff.add")
    def add(x: int, y: int) -> int:
        return x + y

    countdown = add.apply_async((5, 5), countdown=0.6)
    long = block.delay()
    behind = [add.delay(n, n) for n in range(2)]
    stop = threading.Event()
    consumer = Consumer(app, queues=["celery"], slots=1, hostname="busy@h", stop=stop)
    thread = threading.Thread(target=consumer.run)
    thread.start()
    sibling = app.connection()
    try:
        wait_until(lambda: consumer._inflight == 1, timeout=5, message="the long task to run")
        taken = wait_until(
            lambda: sibling.fetch(["celery"], limit=10, timeout=0.1, owner="idle@h/1"),
            timeout=2,
            message="the prefetched tasks to be given back",
        )
        assert [d.message.headers["id"] for d in taken] == [r.id for r in behind]
        assert [d.delivery_count for d in taken] == [1, 1], "a give-back is no failed delivery"
        assert consumer._held, "the countdown is held until due"
        due = wait_until(
            lambda: sibling.fetch(["celery"], limit=10, timeout=0.1, owner="idle@h/1"),
            timeout=3,
            message="the countdown to be given back once due",
        )
        assert [d.message.headers["id"] for d in due] == [countdown.id]
        assert time.time() >= countdown_eta(due[0].message.headers) - 0.05
        release.set()
        assert long.get(timeout=5) == "released"
        time.sleep(0.3)  # room to run what it should not
        assert [r.state for r in [*behind, countdown]] == ["PENDING"] * 3
    finally:
        release.set()
        stop.set()
        thread.join(timeout=10)
        sibling.close()


def countdown_eta(headers: dict[str, object]) -> float:
    return datetime.fromisoformat(str(headers["eta"])).timestamp()


def test_worker_hand_off_after_none_keeps_the_prefetch_and_threads_need_no_helper() -> None:
    app = Caraway("handoff", broker="memory://handoff-off", set_as_current=False)
    assert Consumer(app, queues=["celery"], slots=1, hostname="a@h").handoff is not None
    assert Consumer(app, queues=["celery"], slots=4, hostname="b@h").handoff is None
    app.conf.worker_hand_off_after = None
    assert Consumer(app, queues=["celery"], slots=1, hostname="c@h").handoff is None


def test_the_siblings_table_says_who_waits_across_a_fork_and_not_oneself() -> None:
    table = Siblings(3)
    first, second = table.view(0), table.view(1)
    assert first is not None and second is not None
    assert table.view(3) is None, "beyond the table: no view, no hand-over at once"
    first.wake_id = lambda: 42
    first.waiting(True)
    assert second.any_waiting() and second.waiting_ids() == [42]
    assert not first.any_waiting() and first.waiting_ids() == [], "itself is no sibling"
    first.waiting(False)
    assert not second.any_waiting()
    pid = os.fork()
    if pid == 0:  # a child flags its slot and exits
        try:
            view = table.view(2)
            if view is not None:
                view.waiting(True)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert first.any_waiting() and first.waiting_ids() == [], "flagged, with no wake id"
    table.clear(2)  # the supervisor, once that child has exited
    assert not first.any_waiting()


def test_a_sibling_waiting_at_the_start_gets_what_is_held_before_the_task_runs() -> None:
    events: list[str] = []
    given = threading.Event()

    def give_back(first: bool) -> float | None:
        events.append(f"give_back {first}")
        given.set()
        return None

    handoff = HandOff(
        give_back,
        after=1.0,
        sibling_idle=lambda: True,
        at_start=lambda: events.append("at_start"),
    )
    handoff.start()
    started = time.monotonic()
    try:
        handoff.run(lambda _: (events.append("task"), given.wait(2)), None)
        took = time.monotonic() - started
    finally:
        handoff.stop()
    assert events == ["at_start", "task", "give_back True"]
    assert took < 0.5, f"the quick threshold, not the second: {took:.3f}s"


def test_a_drain_with_no_sibling_waiting_gives_nothing_back() -> None:
    """Only a sibling blocked on an empty broker counts: while every process is busy (a
    drain), short tasks run where they were fetched."""
    calls: list[object] = []
    handoff = HandOff(
        calls.append, after=0.1, sibling_idle=lambda: False, at_start=lambda: calls.append(0)
    )
    handoff.start()
    try:
        for _ in range(50):
            handoff.run(time.sleep, 0.004)
        time.sleep(0.15)
    finally:
        handoff.stop()
    assert calls == []


def test_a_sibling_that_starts_waiting_during_a_long_task_is_seen_within_a_tick() -> None:
    waiting_from = time.monotonic() + 0.03
    calls: list[float] = []
    given = threading.Event()

    def give_back(first: bool) -> float | None:
        calls.append(time.monotonic())
        given.set()
        return None

    handoff = HandOff(give_back, after=2.0, sibling_idle=lambda: time.monotonic() > waiting_from)
    handoff.start()
    try:
        handoff.run(given.wait, 3)
    finally:
        handoff.stop()
    assert len(calls) == 1
    assert calls[0] - waiting_from < 0.5, "within a tick of it waiting, not at the threshold"


def test_a_child_that_starts_waiting_wakes_the_helper_of_a_sibling_running_a_task_once() -> None:
    table = Siblings(2)
    idle, busy = table.view(0), table.view(1)
    assert idle is not None and busy is not None
    busy.wake_up.clear()
    idle.waiting(True)
    assert not busy.wake_up.wait(0), "a sibling running nothing is left alone"
    idle.waiting(False)
    busy.running(7)
    idle.waiting(True)
    assert busy.wake_up.wait(0.5), "told at once, by its pipe"
    busy.wake_up.clear()
    idle.waiting(False)
    idle.waiting(True)
    assert not busy.wake_up.wait(0), "once per task, not at every wait"
    busy.running(8)
    idle.waiting(True)
    assert busy.wake_up.wait(0.5)
    assert busy.any_waiting()


def test_a_prefork_helper_is_woken_by_a_sibling_that_starts_waiting_mid_task() -> None:
    """The helper waits on its pipe: a sibling that starts waiting during a long task gets
    what waits behind it at once, not at the helper's next tick nor at the threshold."""
    table = Siblings(2)
    idle, busy = table.view(0), table.view(1)
    assert idle is not None and busy is not None
    calls: list[float] = []
    given = threading.Event()

    def give_back(first: bool) -> float | None:
        calls.append(time.monotonic())
        given.set()
        return None

    handoff = HandOff(give_back, after=2.0, siblings=busy, at_start=lambda: calls.append(0.0))
    handoff.start()
    told_at: list[float] = []

    def start_waiting() -> None:
        told_at.append(time.monotonic())
        idle.waiting(True)

    timer = threading.Timer(0.2, start_waiting)  # past a first 50 ms tick
    timer.start()
    try:
        handoff.run(given.wait, 3)
    finally:
        timer.join()
        handoff.stop()
    assert len(calls) == 1, "nobody waited at the start: nothing handed over before the task"
    assert calls[0] - told_at[0] < 0.03, f"{calls[0] - told_at[0]:.3f}s after it was told"
    handoff = HandOff(give_back, after=2.0, siblings=busy, at_start=lambda: calls.append(0.0))
    handoff.start()
    try:
        handoff.run(time.sleep, 0.0)
    finally:
        handoff.stop()
    assert calls[1] == 0.0, "a sibling waiting at the start: handed over before the task"


def test_a_child_waiting_with_nothing_in_hand_says_so_for_its_supervisor() -> None:
    table = Siblings(2)
    first, second = table.view(0), table.view(1)
    assert first is not None and second is not None
    first.empty_handed = True
    first.waiting(True)
    assert table.holds_nothing(0) and second.any_waiting()  # still a waiting sibling
    first.waiting(False)
    assert not table.holds_nothing(0)
    first.empty_handed = False  # a countdown held for later, a result not yet written
    first.waiting(True)
    assert not table.holds_nothing(0) and second.any_waiting()
    assert not table.holds_nothing(5)

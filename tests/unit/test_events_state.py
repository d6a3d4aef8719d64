"""The cluster-state model: worker liveness by heartbeat, task transitions, LRU, throughput."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from caraway import states
from caraway.events.state import State, is_late

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def ev(kind: str, **fields: Any) -> dict[str, Any]:
    now = time.time()
    base = {"hostname": "w1@h", "clock": 1, "timestamp": now, "local_received": now, "type": kind}
    base.update(fields)
    return base


def test_a_worker_is_online_until_two_heartbeat_intervals_pass() -> None:
    state = State()
    state.event(ev("worker-online", freq=2.0, local_received=100.0))
    assert [w.hostname for w in state.alive_workers(now=103.9)] == ["w1@h"]
    assert state.alive_workers(now=104.1) == []
    state.event(ev("worker-heartbeat", freq=2.0, active=1, processed=5, local_received=104.0))
    snapshot = state.workers_snapshot(now=105.0)[0]
    assert snapshot["status"] == "online" and snapshot["processed"] == 5


def test_worker_offline_event_takes_the_worker_offline_at_once() -> None:
    state = State()
    state.event(ev("worker-online", freq=2.0))
    state.event(ev("worker-offline", freq=2.0))
    assert state.workers_snapshot()[0]["status"] == "offline"


def test_task_moves_through_received_started_succeeded() -> None:
    state = State()
    state.event(ev("task-received", uuid="t", name="add", args="(2, 2)", kwargs="{}", retries=0))
    assert state.task_snapshot("t")["state"] == states.RECEIVED  # type: ignore[index]
    state.event(ev("task-started", uuid="t"))
    state.event(ev("task-succeeded", uuid="t", result="4", runtime=0.5))
    task = state.task_snapshot("t")
    assert task is not None
    assert (task["state"], task["name"], task["result"], task["runtime"]) == (
        states.SUCCESS,
        "add",
        "4",
        0.5,
    )
    assert task["worker"] == "w1@h" and task["started"] and task["succeeded"]


def test_a_late_started_event_does_not_undo_success_but_fills_gaps() -> None:
    state = State()
    state.event(ev("task-succeeded", uuid="t", result="1", runtime=0.1))
    state.event(ev("task-received", uuid="t", name="late.name", args="()"))
    task = state.task_snapshot("t")
    assert task is not None
    assert task["state"] == states.SUCCESS and task["name"] == "late.name"


def test_a_retried_task_can_be_received_and_fail_again() -> None:
    state = State()
    state.event(ev("task-received", uuid="t", name="flaky"))
    state.event(ev("task-retried", uuid="t", exception="Retry()", traceback="tb"))
    assert state.task_snapshot("t")["state"] == states.RETRY  # type: ignore[index]
    state.event(ev("task-received", uuid="t", retries=1))
    state.event(ev("task-failed", uuid="t", exception="KeyError('x')", traceback="Traceback"))
    task = state.task_snapshot("t")
    assert task is not None
    assert (task["state"], task["retries"], task["traceback"]) == (
        states.FAILURE,
        1,
        "Traceback",
    )


def test_events_of_a_first_attempt_arriving_after_the_retry_do_not_undo_it() -> None:
    state = State()
    for kind, stamp, extra in [
        ("task-received", 2.0, {"retries": 1}),
        ("task-started", 2.1, {}),
        ("task-succeeded", 2.2, {"result": "1"}),
        ("task-received", 1.0, {"retries": 0, "name": "proj.flaky"}),
        ("task-retried", 1.1, {"exception": "KeyError()"}),
    ]:
        state.event(ev(kind, uuid="t1", timestamp=stamp, **extra))
    task = state.tasks["t1"]
    assert (task.state, task.retries, task.result) == (states.SUCCESS, 1, "1")
    assert task.name == "proj.flaky"


def test_is_late_orders_by_precedence_for_final_states_and_by_time_otherwise() -> None:
    assert is_late(states.SUCCESS, 5.0, states.STARTED, 9.0)
    assert is_late(states.SUCCESS, 5.0, states.FAILURE, 9.0)
    assert not is_late(states.STARTED, 5.0, states.SUCCESS, 1.0)
    assert is_late(states.STARTED, 5.0, states.RECEIVED, 4.0)
    assert not is_late(states.RETRY, 5.0, states.RECEIVED, 6.0)
    assert not is_late(states.RECEIVED, None, states.STARTED, None)


def test_task_sent_records_the_client_not_a_worker() -> None:
    state = State()
    state.event(ev("task-sent", uuid="t", hostname="gen1@h", name="add", queue="celery"))
    task = state.task_snapshot("t")
    assert task is not None
    assert task["state"] == states.PENDING and task["client"] == "gen1@h"
    assert task["worker"] is None and state.workers_snapshot() == []


def test_children_are_linked_to_their_parent() -> None:
    state = State()
    state.event(ev("task-received", uuid="p", name="parent"))
    state.event(ev("task-received", uuid="c1", parent_id="p", root_id="p"))
    state.event(ev("task-received", uuid="c2", parent_id="p", root_id="p"))
    assert state.task_snapshot("p")["children"] == ["c1", "c2"]  # type: ignore[index]


def test_tasks_are_bounded_least_recently_updated_first() -> None:
    state = State(max_tasks=3)
    for name in "abcd":
        state.event(ev("task-received", uuid=name))
    assert list(state.tasks) == ["b", "c", "d"]
    state.event(ev("task-started", uuid="b"))
    state.event(ev("task-received", uuid="e"))
    assert list(state.tasks) == ["d", "b", "e"]
    assert state.task_count == 5


def test_children_index_is_pruned_with_evicted_tasks() -> None:
    state = State(max_tasks=2)
    state.event(ev("task-received", uuid="c1", parent_id="gone"))
    state.event(ev("task-received", uuid="x"))
    state.event(ev("task-received", uuid="y"))
    assert "gone" not in state.children


def test_tasks_snapshot_filters_and_lists_newest_first() -> None:
    state = State()
    state.event(ev("task-received", uuid="a1", name="proj.add", args="(1, 2)"))
    state.event(ev("task-received", uuid="b2", name="proj.mul", args="(3, 4)", hostname="w2@h"))
    state.event(ev("task-failed", uuid="a1", exception="E()"))
    assert [t["uuid"] for t in state.tasks_snapshot()] == ["a1", "b2"]
    assert [t["uuid"] for t in state.tasks_snapshot(state="FAILURE")] == ["a1"]
    assert [t["uuid"] for t in state.tasks_snapshot(name="mul")] == ["b2"]
    assert [t["uuid"] for t in state.tasks_snapshot(worker="w2@h")] == ["b2"]
    assert [t["uuid"] for t in state.tasks_snapshot(search="(3, 4)")] == ["b2"]
    assert state.tasks_snapshot(since=time.time() + 60) == []
    assert state.counts() == {"FAILURE": 1, "RECEIVED": 1}


def test_throughput_counts_successes_and_failures_per_second() -> None:
    state = State()
    for n in range(3):
        state.event(ev("task-succeeded", uuid=f"s{n}", local_received=1000.2))
    state.event(ev("task-failed", uuid="f", local_received=1001.5))
    series = state.throughput(window=3, now=1001.9)
    assert series == [
        {"t": 999, "succeeded": 0, "failed": 0},
        {"t": 1000, "succeeded": 3, "failed": 0},
        {"t": 1001, "succeeded": 0, "failed": 1},
    ]
    worker = state.workers_snapshot()[0]
    assert (worker["succeeded"], worker["failed"]) == (3, 1)


def test_snapshots_are_json_serialisable() -> None:
    state = State()
    state.event(ev("worker-online", freq=2.0, loadavg=[0.1, 0.2, 0.3]))
    state.event(ev("task-started", uuid="t"))
    json.dumps({"w": state.workers_snapshot(), "t": state.tasks_snapshot()})
    assert state.workers_snapshot()[0]["running"] == ["t"]


def test_state_accepts_every_captured_celery_event() -> None:
    state = State()
    for path in sorted(VECTORS.glob("event-*.json")):
        body = json.loads(path.read_text())["redis"]["body_decoded"]
        for event in body if isinstance(body, list) else [body]:
            state.event(event)
    assert state.event_count == 13
    assert {t["state"] for t in state.tasks_snapshot()} >= {"SUCCESS", "FAILURE", "RETRY"}
    assert state.workers_snapshot()[0]["sw_ident"] == "py-celery"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_heartbeats_count_on_arrival_not_on_the_workers_skewed_clock() -> None:
    clock = Clock(1000.0)
    state = State(clock=clock)
    state.event({"type": "worker-heartbeat", "hostname": "w1@h", "freq": 2.0, "timestamp": 5.0})
    assert state.workers_snapshot()[0]["status"] == "online"
    clock.now += 4.1
    assert state.workers_snapshot()[0]["status"] == "offline"


def test_a_remote_control_reply_counts_as_a_heartbeat_at_the_polling_interval() -> None:
    clock = Clock(1000.0)
    state = State(clock=clock)
    state.heartbeat("w1@h", freq=5.0)
    clock.now += 9.9
    assert [w.hostname for w in state.alive_workers()] == ["w1@h"]
    state.event({"type": "worker-heartbeat", "hostname": "w1@h", "freq": 2.0})
    state.heartbeat("w1@h", freq=5.0)
    assert state.workers["w1@h"].freq == 2.0  # the node's own interval wins once it tells


def test_a_worker_event_without_a_hostname_is_counted_and_ignored() -> None:
    state = State()
    state.event({"type": "worker-heartbeat", "freq": 2.0})
    assert (state.event_count, state.workers_snapshot()) == (1, [])


def test_a_field_sent_as_none_does_not_erase_a_known_value() -> None:
    state = State()
    state.event(ev("task-received", uuid="t", name="add", args="(1, 2)"))
    state.event(ev("task-started", uuid="t", name=None, args=None))
    assert (state.tasks["t"].name, state.tasks["t"].args) == ("add", "(1, 2)")


def test_event_returns_the_id_of_the_task_it_changed() -> None:
    state = State()
    assert state.event(ev("task-received", uuid="t")) == "t"
    assert state.event(ev("worker-heartbeat", freq=2.0)) is None


def test_a_custom_task_event_sets_a_custom_state_as_celery_does() -> None:
    state = State()
    state.event(ev("task-started", uuid="t", timestamp=1.0))
    state.event(ev("task-progress", uuid="t", timestamp=2.0))
    assert state.tasks["t"].state == "PROGRESS"


def test_throughput_counts_outcomes_whose_events_name_no_worker() -> None:
    state = State(clock=Clock(500.5))
    state.event({"type": "task-succeeded", "uuid": "t", "timestamp": 1.0})
    assert state.throughput(window=1) == [{"t": 500, "succeeded": 1, "failed": 0}]
    assert state.tasks["t"].first_seen == 1.0  # when it was sent, not when it arrived

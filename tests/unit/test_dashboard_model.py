"""The dashboard's cluster model, fed the captured Celery events and synthetic ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from caraway.dashboard.model import Cluster, TaskQuery

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def vector_events(name: str) -> list[dict[str, Any]]:
    body = json.loads((VECTORS / f"event-{name}.json").read_text())["redis"]["body_decoded"]
    return body if isinstance(body, list) else [body]


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def task_event(kind: str, uuid: str, **fields: Any) -> dict[str, Any]:
    return {"type": f"task-{kind}", "uuid": uuid, "hostname": "w1@h", "timestamp": 5.0, **fields}


def test_celery_failure_events_give_a_failed_task_with_its_traceback() -> None:
    cluster = Cluster()
    cluster.events(vector_events("task-failed"))
    [task] = cluster.tasks()
    assert task["state"] == "FAILURE"
    assert task["name"] == "wtasks.boom"
    assert task["args"] == "('kaboom',)"
    assert task["exception"] == "ValueError('kaboom')"
    assert "raise ValueError(msg)" in task["traceback"]
    assert task["worker"] == "wcap@vm"
    assert set(task["times"]) == {"received", "started", "failed"}


def test_celery_success_events_carry_result_and_runtime() -> None:
    cluster = Cluster()
    cluster.events(vector_events("task-sent") + vector_events("task-succeeded"))
    task = cluster.task("c7ba84eb-70bb-47c5-8061-8e7b58ddcd5a")
    assert task is not None
    assert (task["state"], task["result"], task["queue"]) == ("SUCCESS", "4", "celery")
    assert task["runtime"] > 0


def test_a_retried_task_runs_again_and_ends_successful() -> None:
    cluster = Cluster()
    cluster.events(vector_events("task-retried"))
    uuid = vector_events("task-retried")[0]["uuid"]
    assert cluster.tasks()[0]["state"] == "RETRY"
    cluster.event(task_event("received", uuid, retries=1))
    cluster.event(task_event("succeeded", uuid, result="3", runtime=0.1))
    task = cluster.task(uuid)
    assert task is not None
    assert (task["state"], task["retries"]) == ("SUCCESS", 1)


def test_a_late_started_event_does_not_undo_success() -> None:
    cluster = Cluster()
    cluster.event(task_event("succeeded", "t1", result="1"))
    cluster.event(task_event("started", "t1"))
    assert cluster.tasks()[0]["state"] == "SUCCESS"


def test_a_first_attempt_flushed_after_the_retry_does_not_undo_it() -> None:
    # two prefork children: the retried attempt's events can arrive before the first one's
    cluster = Cluster()
    cluster.event(task_event("received", "t1", retries=1, timestamp=2.0))
    cluster.event(task_event("started", "t1", timestamp=2.1))
    cluster.event(task_event("succeeded", "t1", result="1", timestamp=2.2))
    cluster.event(task_event("received", "t1", retries=0, name="proj.flaky", timestamp=1.0))
    cluster.event(task_event("retried", "t1", exception="KeyError()", timestamp=1.1))
    task = cluster.task("t1")
    assert task is not None
    assert (task["state"], task["retries"], task["result"]) == ("SUCCESS", 1, "1")
    assert task["name"] == "proj.flaky"  # late events still fill in what was unknown


def test_an_older_received_event_does_not_move_a_started_task_back() -> None:
    cluster = Cluster()
    cluster.event(task_event("started", "t1", timestamp=3.0))
    cluster.event(task_event("received", "t1", timestamp=2.0))
    assert cluster.tasks()[0]["state"] == "STARTED"


def test_worker_is_online_by_heartbeat_and_offline_after_two_intervals() -> None:
    clock = Clock()
    cluster = Cluster(clock=clock)
    cluster.events(vector_events("worker-online"))
    [worker] = cluster.workers()
    assert (worker["hostname"], worker["status"]) == ("wcap@vm", "online")
    clock.now += 3.9
    assert cluster.workers()[0]["status"] == "online"
    clock.now += 0.2
    assert cluster.workers()[0]["status"] == "offline"
    cluster.events(vector_events("worker-heartbeat"))
    assert cluster.workers()[0]["status"] == "online"


def test_worker_offline_event_marks_it_offline_at_once() -> None:
    cluster = Cluster()
    cluster.events(vector_events("worker-online") + vector_events("worker-offline"))
    worker = cluster.workers()[0]
    assert (worker["status"], worker["processed_total"]) == ("offline", 20)


def test_remote_control_info_fills_pool_and_queues() -> None:
    cluster = Cluster()
    info = {"pool": "prefork", "concurrency": 4, "queues": ["celery"], "processed": 7}
    cluster.set_worker_info("w1@h", info, freq=2.0)
    [worker] = cluster.workers()
    assert worker["status"] == "online"
    assert (worker["pool"], worker["concurrency"], worker["queues"]) == ("prefork", 4, ["celery"])
    assert worker["processed_total"] == 7


def test_history_is_bounded_and_drops_the_least_recently_updated() -> None:
    cluster = Cluster(max_tasks=3)
    for uuid in ("a", "b", "c"):
        cluster.event(task_event("received", uuid))
    cluster.event(task_event("started", "a"))
    cluster.event(task_event("received", "d"))
    assert [t["uuid"] for t in cluster.tasks()] == ["d", "a", "c"]


def test_filters_select_by_state_name_worker_window_and_search() -> None:
    cluster = Cluster()
    cluster.event(task_event("received", "id-1", name="proj.add", args="(2, 2)", timestamp=10))
    cluster.event(task_event("received", "id-2", name="proj.mul", args="(7, 9)", timestamp=20))
    cluster.event({**task_event("failed", "id-2"), "hostname": "w2@h"})

    def uuids(**query: Any) -> list[str]:
        return [t["uuid"] for t in cluster.tasks(TaskQuery(**query))]

    assert uuids(state="failure") == ["id-2"]
    assert uuids(name="ADD") == ["id-1"]
    assert uuids(worker="w2@h") == ["id-2"]
    assert uuids(since=15) == ["id-2"]
    assert uuids(until=15) == ["id-1"]
    assert uuids(search="7, 9") == ["id-2"]
    assert uuids(search="id-1") == ["id-1"]
    assert uuids(limit=1) == ["id-2"]


def test_chord_tree_nests_children_under_their_parents() -> None:
    cluster = Cluster()
    root = "h1"
    cluster.event(task_event("received", "h1", name="add", root_id=root))
    cluster.event(task_event("received", "h2", name="add", root_id=root, parent_id="h1"))
    cluster.event(task_event("received", "cb", name="xsum", root_id=root, parent_id="h2"))
    task = cluster.task("cb")
    assert task is not None
    tree = task["tree"]
    assert tree["uuid"] == "h1"
    assert tree["children"][0]["uuid"] == "h2"
    assert tree["children"][0]["children"][0]["name"] == "xsum"
    assert cluster.task("h1")["children"] == ["h2"]  # type: ignore[index]


def test_changes_since_returns_each_changed_task_once_and_resets_when_behind() -> None:
    cluster = Cluster()
    start, _, _ = cluster.changes_since(0)
    cluster.event(task_event("received", "a"))
    cluster.event(task_event("started", "a"))
    cluster.event(task_event("received", "b"))
    latest, changed, reset = cluster.changes_since(start)
    assert ([t["uuid"] for t in changed], reset) == (["a", "b"], False)
    assert cluster.changes_since(latest) == (latest, [], False)
    for number in range(5000):
        cluster.event(task_event("received", f"x{number}"))
    assert cluster.changes_since(latest)[2] is True


def test_throughput_counts_successes_and_failures_per_second() -> None:
    clock = Clock(100.0)
    cluster = Cluster(clock=clock)
    cluster.event(task_event("succeeded", "a"))
    cluster.event(task_event("succeeded", "b"))
    clock.now = 101.5
    cluster.event(task_event("failed", "c"))
    points = cluster.throughput(3)
    assert points == [
        {"t": 99, "succeeded": 0, "failed": 0},
        {"t": 100, "succeeded": 2, "failed": 0},
        {"t": 101, "succeeded": 0, "failed": 1},
    ]


def test_a_node_known_only_from_task_events_counts_its_started_tasks_as_active() -> None:
    cluster = Cluster()
    cluster.event(task_event("started", "t1"))
    cluster.set_worker_info("w1@h", {"processed": 9}, freq=2.0)
    [worker] = cluster.workers()
    assert (worker["active"], worker["processed_total"], worker["status"]) == (1, 9, "online")


def test_a_nodes_own_figures_win_over_remote_control_once_it_sends_events() -> None:
    cluster = Cluster()
    cluster.events(vector_events("worker-online"))
    cluster.set_worker_info("wcap@vm", {"processed": 7, "pool": "prefork"}, freq=2.0)
    [worker] = cluster.workers()
    assert (worker["processed_total"], worker["pool"]) == (0, "prefork")  # worker-online's


def test_event_counts_are_kept_by_type_for_every_event() -> None:
    cluster = Cluster()
    cluster.event(task_event("received", "a"))
    cluster.event({"type": "worker-heartbeat"})
    cluster.event({"type": "nonsense"})
    assert cluster.event_counts == {"task-received": 1, "worker-heartbeat": 1, "nonsense": 1}

"""The dashboard's charts' series, canvas trees and the snapshot that survives a restart."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from caraway import Caraway
from caraway.dashboard import canvas
from caraway.dashboard.history import History, exception_type, pack, percentile, unpack
from caraway.dashboard.model import Cluster, restore, snapshot
from caraway.dashboard.store import HistoryStore


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, p) for p in (50, 90, 99)] == [50.0, 90.0, 99.0]
    assert percentile([], 50) is None


def test_exception_type_is_the_name_before_the_arguments() -> None:
    assert exception_type("ValueError('x (y)')") == "ValueError"
    assert exception_type("proj.errors.Boom()") == "proj.errors.Boom"
    assert exception_type("<not an exception repr>") == "unknown"


def test_history_keeps_its_window_and_a_bounded_sample_per_bucket() -> None:
    history = History(step=10, window=3, seed=1)
    for second in range(0, 100, 5):
        for _ in range(100):
            history.task_finished(second, "t", ok=True, runtime=1.0, wait=0.5)
    assert list(history.buckets) == [70, 80, 90]
    *closed, newest = history.buckets.values()
    assert len(newest.tasks["t"].runtime) == 64, "the open bucket keeps a bounded sample"
    assert all(len(b.tasks["t"].runtime) == 3 for b in closed), "closed: percentiles only"
    history.task_finished(5, "t", ok=False, runtime=None, wait=None, exception="E()")
    assert 0 not in history.buckets, "older than the window: dropped"
    [*_, last] = history.series()["points"]
    assert (last["succeeded"], last["runtime"]["p99"], last["wait"]["p50"]) == (20.0, 1.0, 0.5)


def test_a_snapshot_over_its_cap_is_refused_and_a_foreign_one_ignored() -> None:
    with pytest.raises(ValueError, match="over the cap"):
        pack({"blob": "x" * 10_000, "n": list(range(5000))}, cap=100)
    assert unpack(b"not zlib") is None
    assert unpack(pack({"a": 1}, cap=1000)) == {"format": 2, "a": 1}


def member(uuid: str, **fields: Any) -> canvas.Member:
    return canvas.Member(uuid=uuid, name=fields.pop("name", "t"), state="SUCCESS", **fields)


def test_a_chord_called_from_a_client_is_one_tree_with_its_progress() -> None:
    headers = {
        f"h{i}": member(f"h{i}", root_id=f"h{i}", group="g", group_index=i) for i in range(4)
    }
    headers["h3"].state = "STARTED"
    body = member("body", name="xsum", root_id="h2", parent_id="h2", group="g")
    tree = canvas.tree({**headers, "body": body}, "body")
    assert tree is not None and tree["kind"] == "canvas"
    group, callback = tree["children"]
    assert (group["kind"], group["done"], group["total"], group["chord"]) == ("group", 3, 4, True)
    assert [child["uuid"] for child in group["children"]] == ["h0", "h1", "h2", "h3"]
    assert all(child["children"] == [] for child in group["children"])
    assert callback["uuid"] == "body"


def test_a_chain_stays_a_path_and_a_fleet_without_groups_still_draws_parents() -> None:
    tasks = {
        "a": member("a", root_id="a"),
        "b": member("b", root_id="a", parent_id="a"),
        "c": member("c", root_id="a", parent_id="b"),
    }
    tree = canvas.tree(tasks, "c")
    assert tree is not None and tree["uuid"] == "a"
    assert tree["children"][0]["uuid"] == "b" and tree["children"][0]["children"][0]["uuid"] == "c"
    assert canvas.tree(tasks, "zz") is None


def event(kind: str, uuid: str, **fields: Any) -> dict[str, Any]:
    return {"type": f"task-{kind}", "uuid": uuid, "hostname": "w1@h", "timestamp": 5.0, **fields}


def test_a_restored_snapshot_brings_back_tasks_counts_and_charts() -> None:
    before = Cluster()
    before.event({"type": "worker-online", "hostname": "w1@h", "timestamp": 1.0})
    for index in range(3):
        before.event(event("received", f"t{index}", name="proj.add", group="g", group_index=index))
        before.event(event("started", f"t{index}", timestamp=6.0))
        before.event(event("succeeded", f"t{index}", runtime=0.5, timestamp=7.0))
    before.event(event("failed", "t9", name="proj.boom", exception="KeyError('k')"))
    after = Cluster()
    after.event(event("received", "live", name="proj.mul"))
    restore(after, unpack(pack(snapshot(before), cap=1 << 20)) or {})
    assert [t["uuid"] for t in after.tasks()] == ["live", "t9", "t2", "t1", "t0"]
    [worker] = after.workers()
    assert (worker["succeeded"], worker["failed"], worker["processed"]) == (3, 1, 4)
    assert after.task("t0")["tree"]["kind"] == "group"  # type: ignore[index]
    assert after.history.series()["failures"] == {"KeyError": 1}
    assert after.since <= before.since


@pytest.fixture
def app(tmp_path: Any) -> Iterator[Caraway]:
    """An app whose SQLite result backend keeps the history."""
    made = Caraway(
        "hist", broker=f"sqlite:///{tmp_path}/b.db", backend=f"sqlite:///{tmp_path}/r.db"
    )
    try:
        yield made
    finally:
        made.close()


def test_the_history_store_round_trips_through_the_result_backend(app: Caraway) -> None:
    cluster = Cluster()
    cluster.event(event("received", "t1", name="proj.add"))
    cluster.event(event("succeeded", "t1", runtime=0.25))
    store = HistoryStore(app, cap=1 << 20)
    try:
        assert store.available and store.save(cluster) > 0
        again = Cluster()
        assert HistoryStore(app).load(again)
        assert again.task("t1")["state"] == "SUCCESS"  # type: ignore[index]
    finally:
        store.close()


def test_a_store_too_small_keeps_fewer_tasks_rather_than_nothing(app: Caraway) -> None:
    cluster = Cluster()
    for index in range(2000):
        cluster.event(event("received", f"task-{index:05d}", name="proj.add", args=f"({index},)"))
    store = HistoryStore(app, cap=8_000)
    try:
        size = store.save(cluster)
        assert 0 < size <= 8_000
        again = Cluster()
        assert store.load(again)
        assert 0 < again.page()[0] < 2000
    finally:
        store.close()


def test_a_store_drops_old_chart_buckets_when_tasks_alone_do_not_fit(app: Caraway) -> None:
    cluster = Cluster()
    for minute in range(600):
        for name in range(20):
            cluster.history.task_finished(
                minute * 30.0, f"proj.t{name}", ok=name % 5 > 0, runtime=name / 7, wait=0.1,
                exception=f"E{minute}()",
            )  # fmt: skip
    store = HistoryStore(app, cap=5_000)
    try:
        assert 0 < store.save(cluster) <= 5_000
        again = Cluster()
        assert store.load(again)
        kept = list(again.history.buckets)
        assert 0 < len(kept) < 600 and kept[-1] == 599 * 30, "the newest buckets are kept"
    finally:
        store.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_task_whose_final_event_was_lost_takes_the_backends_final_state(
    app: Caraway,
) -> None:
    from caraway.dashboard.feed import Monitor
    from caraway.protocol import results as docs

    clock = Clock()
    cluster = Cluster(clock=clock)
    for uuid in ("done", "died", "revoked", "running"):
        cluster.event(event("received", uuid, name="proj.add", timestamp=clock.now))
        cluster.event(event("started", uuid, timestamp=clock.now))
    backend = app.new_backend()
    assert backend is not None
    failure = docs.exception_to_dict(KeyError("gone"))
    for uuid, state, value in [
        ("done", "SUCCESS", 4),
        ("died", "FAILURE", failure),
        ("revoked", "REVOKED", docs.exception_to_dict(RuntimeError("terminated"))),
    ]:
        document = docs.encode_document(docs.result_document(uuid, state, value))
        backend.store(uuid, document, state=state, expires=None)
    backend.close()
    monitor = Monitor(app, cluster, source=None)
    try:
        assert monitor.settle_from_backend() == 0, "too recent to doubt"
        clock.now += 60
        assert monitor.settle_from_backend() == 3
    finally:
        monitor.stop()
    done, died, revoked, running = (cluster.task(u) for u in ("done", "died", "revoked", "running"))
    assert done is not None and (done["state"], done["result"]) == ("SUCCESS", "4")
    assert died is not None and died["state"] == "FAILURE"
    assert died["exception"] == "KeyError('gone')"
    assert revoked is not None and revoked["state"] == "REVOKED"
    assert running is not None and running["state"] == "STARTED"
    assert cluster.event_counts["task-succeeded"] == 0, "not counted as an event"


def test_a_nodes_reply_loses_its_secrets_before_a_page_shows_it() -> None:
    from caraway.dashboard.feed import masked

    conf = {
        "broker_url": "redis://user:SENTINEL-PW@host:6379/0",
        "result_backend": "db+postgresql://u:SENTINEL-PW@db/results",
        "redis_password": "SENTINEL-PW",
        "security_key": "SENTINEL-PW",
        "broker_transport_options": {"sentinel_kwargs": {"password": "SENTINEL-PW"}},
        "task_default_queue": "celery",
        "worker_concurrency": 4,
        "include": ["proj.tasks"],
    }
    shown = masked({"conf": conf, "stats": {"broker": {"hostname": "amqp://g:SENTINEL-PW@h//"}}})
    assert "SENTINEL-PW" not in repr(shown)
    assert shown["conf"]["task_default_queue"] == "celery"
    assert shown["conf"]["worker_concurrency"] == 4 and shown["conf"]["include"] == ["proj.tasks"]
    assert shown["conf"]["broker_url"].startswith("redis://user:")

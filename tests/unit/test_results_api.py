"""Celery's result API over a stored document: ResultSet, children, iterdeps, allow_join_result."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import caraway
from caraway import AsyncResult, Caraway, GroupResult, ResultSet, states
from caraway.exceptions import IncompleteStream
from caraway.protocol import results as docs
from caraway.request import Request, pop_current, push_current
from caraway.result import allow_join_result, result_from_tuple


@pytest.fixture
def app() -> Iterator[Caraway]:
    url = f"memory://results-{caraway.uuid()}"  # a store of its own: ids repeat across tests
    yield Caraway("results", broker=url, backend=url)


def _store(app: Caraway, task_id: str, state: str, value: Any, **extra: Any) -> None:
    document = docs.result_document(task_id, state, value, **extra)
    app.require_backend().store(task_id, docs.encode_document(document), state=state, expires=None)


def test_async_result_without_app_uses_the_current_app(app: Caraway) -> None:
    _store(app, "a", states.SUCCESS, 4)
    assert AsyncResult("a").get(timeout=1) == 4
    assert AsyncResult("a").date_done is not None


def test_result_set_joins_in_order_and_counts(app: Caraway) -> None:
    _store(app, "a", states.SUCCESS, 1)
    _store(app, "b", states.SUCCESS, 2)
    results = ResultSet([AsyncResult("a", app=app)])
    results.add(AsyncResult("b", app=app))
    results.add(AsyncResult("b", app=app))
    assert len(results) == 2 and "a" in [r.id for r in results]
    assert results.join(timeout=1) == [1, 2]
    assert results.join_native(timeout=1) == [1, 2]
    seen: list[tuple[str, Any]] = []
    assert results.join(timeout=1, callback=lambda i, v: seen.append((i, v))) == []
    assert seen == [("a", 1), ("b", 2)]
    assert results.completed_count() == 2 and results.ready() and results.successful()
    results.discard("a")
    results.discard("nope")
    with pytest.raises(KeyError):
        results.remove("nope")
    assert [r.id for r in results] == ["b"]


def test_maybe_throw_raises_a_failure_without_waiting(app: Caraway) -> None:
    error = docs.exception_to_dict(ValueError("bad"))
    _store(app, "f", states.FAILURE, error)
    with pytest.raises(ValueError, match="bad"):
        AsyncResult("f", app=app).maybe_throw()
    AsyncResult("f", app=app).maybe_throw(propagate=False)
    AsyncResult("pending", app=app).maybe_throw()  # pending: nothing to raise


def test_children_iterdeps_and_collect_walk_the_graph(app: Caraway) -> None:
    group_tuple = [["g", None], [[["c2", None], None], [["c3", None], None]]]
    _store(app, "root", states.SUCCESS, "r", children=[[["c1", None], None], group_tuple])
    _store(app, "c1", states.SUCCESS, 1)
    _store(app, "c2", states.SUCCESS, 2)
    _store(app, "c3", states.SUCCESS, 3)
    root = AsyncResult("root", app=app)
    children = root.children
    assert children[0] == AsyncResult("c1", app=app)
    assert isinstance(children[1], GroupResult) and children[1].id == "g"
    collected = [(getattr(node, "id", None), value) for node, value in root.collect()]
    assert collected[0] == ("root", "r")
    assert ("c1", 1) in collected and ("g", [2, 3]) in collected
    _store(app, "slow", states.SUCCESS, 0, children=[[["waiting", None], None]])
    _store(app, "waiting", states.STARTED, None, children=[[["later", None], None]])
    with pytest.raises(IncompleteStream):
        list(AsyncResult("slow", app=app).iterdeps())
    assert len(list(AsyncResult("slow", app=app).iterdeps(intermediate=True))) == 2


def test_get_inside_a_task_is_refused_unless_allow_join_result(app: Caraway) -> None:
    _store(app, "a", states.SUCCESS, 1)
    push_current(Request(id="running", task="t"))
    try:
        with pytest.raises(RuntimeError, match="allow_join_result"):
            AsyncResult("a", app=app).get(timeout=1)
        with allow_join_result():
            assert AsyncResult("a", app=app).get(timeout=1) == 1
            assert ResultSet([AsyncResult("a", app=app)]).get(timeout=1) == [1]
    finally:
        pop_current()


def test_group_result_round_trips_its_tuple_and_saves(app: Caraway) -> None:
    group = GroupResult("g1", [AsyncResult("x", app=app), AsyncResult("y", app=app)], app=app)
    rebuilt = result_from_tuple(group.as_tuple(), app=app)
    assert rebuilt == group
    group.save()
    restored = GroupResult.restore("g1", app=app)
    assert restored is not None and [r.id for r in restored] == ["x", "y"]
    restored.delete()
    assert GroupResult.restore("g1", app=app) is None


def test_uuid_and_top_level_names_match_celery() -> None:
    assert len(caraway.uuid()) == 36 and caraway.uuid() != caraway.uuid()
    for name in ("ResultSet", "current_task", "maybe_signature", "subtask", "uuid"):
        assert name in caraway.__all__
    assert not caraway.current_task


def test_iter_native_yields_celery_meta_and_throw_raises(app: Caraway) -> None:
    _store(app, "a", states.SUCCESS, 1)
    _store(app, "b", states.FAILURE, docs.exception_to_dict(KeyError("k")))
    found = dict(ResultSet([AsyncResult("a", app=app), AsyncResult("b", app=app)]).iter_native())
    assert found["a"]["status"] == "SUCCESS" and found["a"]["result"] == 1
    assert isinstance(found["b"]["result"], KeyError)
    with pytest.raises(ValueError, match="x"):
        AsyncResult("a", app=app).throw(ValueError("x"))
    assert AsyncResult("a", app=app).graph == {AsyncResult("a", app=app): []}

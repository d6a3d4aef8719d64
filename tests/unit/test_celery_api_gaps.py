"""Celery API details: ``revoke``'s ``wait``/``timeout`` (on results, result sets and by
stamps) ask for the workers' replies; ``AsyncResult.exists()``; ``app.steps`` refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from caraway import Caraway
from caraway.result import AsyncResult, ResultSet


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []

    def revoke(self, task_id: Any, **kwargs: Any) -> None:
        self.calls.append(("revoke", task_id, kwargs))

    def revoke_by_stamped_headers(self, headers: Any, **kwargs: Any) -> None:
        self.calls.append(("stamps", headers, kwargs))


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Caraway, Recorder]]:
    application = Caraway("rv", broker="memory://")
    recorder = Recorder()
    monkeypatch.setattr(Caraway, "control", property(lambda self: recorder))
    try:
        yield application, recorder
    finally:
        application.close()


def test_revoke_wait_asks_for_replies(app: tuple[Caraway, Recorder]) -> None:
    application, recorder = app
    AsyncResult("t1", app=application).revoke(wait=True, timeout=3, terminate=True)
    ResultSet([AsyncResult("t2", app=application)]).revoke(wait=True, timeout=4)
    AsyncResult("t3", app=application).revoke_by_stamped_headers({"a": "1"}, wait=True)
    (_, first, one), (_, many, two), (_, headers, three) = recorder.calls
    assert (first, one["reply"], one["timeout"], one["terminate"]) == ("t1", True, 3, True)
    assert (many, two["reply"], two["timeout"]) == (["t2"], True, 4)
    assert (headers, three["reply"]) == ({"a": "1"}, True)


def test_revoke_without_wait_asks_for_nothing(app: tuple[Caraway, Recorder]) -> None:
    application, recorder = app
    AsyncResult("t1", app=application).revoke()
    assert recorder.calls[0][2]["reply"] is False


def test_exists_tells_a_stored_result_from_an_unknown_id() -> None:
    from caraway.protocol import results as docs

    application = Caraway("ex", broker="memory://ex", backend="memory://ex")
    try:
        document = docs.result_document("stored", "SUCCESS", 3)
        application.require_backend().store(
            "stored", docs.encode_document(document), state="SUCCESS", expires=60
        )
        assert AsyncResult("stored", app=application).exists()
        assert not AsyncResult("never-sent", app=application).exists()
    finally:
        application.close()


def test_bootsteps_are_refused_saying_what_to_use() -> None:
    from caraway.exceptions import ImproperlyConfigured

    application = Caraway("steps", broker="memory://")
    try:
        with pytest.raises(ImproperlyConfigured, match="worker_init"):
            application.steps["worker"].add(object)
    finally:
        application.close()

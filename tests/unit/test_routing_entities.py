"""Queue/Exchange/Broadcast with kombu's shapes, kombu's own objects read, and routing by
the declared exchanges (direct, topic, fanout), task_create_missing_queues, -Q/-X."""

from __future__ import annotations

import re

import kombu
import kombu.common
import pytest

from caraway import Broadcast, Exchange, Queue
from caraway.config import Settings
from caraway.entities import as_queue
from caraway.exceptions import ImproperlyConfigured
from caraway.routing import Route, route, select_queues


def test_queue_and_exchange_take_kombus_constructor_shapes() -> None:
    queue = Queue("images", Exchange("media", type="topic"), routing_key="image.#")
    assert queue.exchange == Exchange("media", "topic") and queue.routing_key == "image.#"
    assert Queue("q", exchange="ex").exchange == Exchange("ex", "direct")
    with pytest.raises(ValueError, match="unknown type 'fan'"):
        Exchange("x", type="fan")


def test_kombus_queue_exchange_and_broadcast_are_read_as_ours() -> None:
    read = as_queue(kombu.Queue("video", kombu.Exchange("media", "topic"), routing_key="video.#"))
    assert read == Queue("video", Exchange("media", "topic"), "video.#")
    bcast = as_queue(kombu.common.Broadcast("bcast_tasks"))
    assert bcast.name == "bcast_tasks" and bcast.is_broadcast


def test_a_broadcast_queue_is_consumed_through_a_queue_per_node() -> None:
    bcast = Broadcast("reload")
    assert bcast.exchange == Exchange("reload", "fanout") and bcast.auto_delete
    mine = bcast.for_node("w1@host")
    assert mine.name == "reload.bcast.w1@host" and mine.exchange == bcast.exchange
    assert Queue("plain").for_node("w1@host") == Queue("plain")


def test_routes_follow_task_queues_exchanges_and_types() -> None:
    conf = Settings(
        task_queues=[
            kombu.Queue("default", kombu.Exchange("default"), routing_key="default"),
            Queue("images", Exchange("media", "topic"), routing_key="image.#"),
            Broadcast("reload"),
        ],
        task_default_queue="default",
        task_routes={
            "proj.resize": {"queue": "images", "routing_key": "image.resize"},
            re.compile(r"proj\.re(load|fresh)"): {"queue": "reload"},
        },
    )
    assert route("proj.resize", {}, conf) == Route(
        "images", "media", "image.resize", None, "topic", "image.#"
    )
    # a topic queue routed by name alone: its exchange, its binding key as the key (Celery)
    assert route("proj.other", {"queue": "images"}, conf) == Route(
        "images", "media", "image.#", None, "topic", "image.#"
    )
    assert route("proj.reload", {}, conf) == Route("reload", "reload", "", None, "fanout")
    assert route("proj.reload", {}, conf).declare == []
    assert route("proj.add", {}, conf) == Route("default", "", "default")
    assert [q.name for q in route("proj.add", {}, conf).declare] == ["default"]


def test_router_functions_and_glob_patterns_route() -> None:
    def router(name: str, args: object, kwargs: object, options: object, task: object = None):
        return {"queue": "fn"} if name.endswith(".special") else None

    conf = Settings(task_routes=[router, {"proj.feeds.*": "feeds"}])
    assert route("proj.special", {}, conf).queue == "fn"
    assert route("proj.feeds.fetch", {}, conf).queue == "feeds"
    assert route("proj.other", {}, conf).queue == "celery"


def test_missing_queues_take_the_configured_exchange_type_or_are_refused() -> None:
    conf = Settings(task_create_missing_queue_exchange_type="topic", task_queues=[Queue("a")])
    assert route("t", {"queue": "new", "routing_key": "k"}, conf).exchange_type == "topic"
    strict = Settings(task_create_missing_queues=False, task_queues=[Queue("a")])
    with pytest.raises(ImproperlyConfigured, match="task_create_missing_queues"):
        route("t", {"queue": "new"}, strict)


def test_a_worker_consumes_every_declared_queue_less_the_excluded() -> None:
    conf = Settings(task_queues=[Queue("a"), Queue("b"), Broadcast("c")])
    assert [q.name for q in select_queues(conf)] == ["a", "b", "c"]
    assert [q.name for q in select_queues(conf, excluded=["b"])] == ["a", "c"]
    assert [q.name for q in select_queues(conf, ["x"])] == ["x"]
    with pytest.raises(ImproperlyConfigured, match="no queue left"):
        select_queues(conf, ["a"], ["a"])

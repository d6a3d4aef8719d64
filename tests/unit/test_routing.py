"""caraway.routing: precedence, task_routes in all of Celery's shapes, defaults, -Q parsing."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from caraway.config import Settings
from caraway.entities import Exchange
from caraway.exceptions import ImproperlyConfigured
from caraway.routing import Route, queue_names, route


def test_a_task_without_routes_goes_to_the_default_queue_on_the_default_exchange() -> None:
    assert route("tasks.add", {}, Settings()) == Route("celery", "", "celery", None)


def test_the_default_route_follows_task_default_queue() -> None:
    conf = Settings(task_default_queue="default")
    assert route("tasks.add", {}, conf) == Route("default", "", "default", None)


def test_an_explicit_queue_is_published_through_the_default_exchange() -> None:
    # vectors/amqp-queue-lopri.json: apply_async(queue='lopri') -> exchange '', key 'lopri'
    assert route("tasks.add", {"queue": "lopri"}, Settings()) == Route("lopri", "", "lopri")


def test_an_explicit_priority_is_carried_and_the_default_fills_in_otherwise() -> None:
    assert route("tasks.add", {"priority": 5}, Settings()).priority == 5
    assert route("tasks.add", {}, Settings(task_default_priority=3)).priority == 3


def test_an_exchange_given_as_an_object_keeps_its_type() -> None:
    # kombu declares the Exchange object it is given, so RabbitMQ routes by its type
    given = {"exchange": Exchange("events", type="topic"), "routing_key": "a.b"}
    assert route("tasks.add", given, Settings()).exchange_type == "topic"
    assert route("tasks.add", {**given, "exchange": "events"}, Settings()).exchange_type == (
        "direct"
    )


# -- precedence ----------------------------------------------------------------------------


ROUTES = {"tasks.add": {"queue": "routed", "priority": 1}}


def test_explicit_options_beat_the_tasks_own_options_and_routes() -> None:
    options = {"queue": "explicit", "task_queue": "own", "priority": 9, "task_priority": 4}
    result = route("tasks.add", options, Settings(task_routes=ROUTES))
    assert (result.queue, result.priority) == ("explicit", 9)


def test_the_tasks_own_options_beat_task_routes_as_in_celery() -> None:
    options = {"task_queue": "own", "task_priority": 4}
    result = route("tasks.add", options, Settings(task_routes=ROUTES))
    assert (result.queue, result.priority) == ("own", 4)


def test_task_routes_beat_the_defaults() -> None:
    result = route("tasks.add", {}, Settings(task_routes=ROUTES, task_default_priority=7))
    assert (result.queue, result.priority) == ("routed", 1)


def test_none_in_options_means_not_given() -> None:
    options = {"queue": None, "priority": None, "task_queue": None}
    assert route("tasks.add", options, Settings(task_routes=ROUTES)).queue == "routed"


def test_fields_merge_one_by_one_across_levels() -> None:
    conf = Settings(task_routes={"tasks.add": {"queue": "routed"}})
    result = route("tasks.add", {"priority": 2}, conf)
    assert (result.queue, result.priority) == ("routed", 2)


def test_an_explicit_routing_key_overrides_the_routed_one_for_topic_exchanges() -> None:
    routes = {"media.*": {"queue": "media", "exchange": "media", "routing_key": "media.any"}}
    result = route("media.video", {"routing_key": "media.video"}, Settings(task_routes=routes))
    # the queue made on demand is bound to its exchange by its name, as Celery makes it
    assert result == Route("media", "media", "media.video", binding_key="media")


def test_a_higher_queue_does_not_inherit_a_lower_levels_exchange_and_key() -> None:
    routes = {"tasks.add": {"queue": "other", "exchange": "other_ex", "routing_key": "other"}}
    result = route("tasks.add", {"queue": "mine"}, Settings(task_routes=routes))
    assert result == Route("mine", "", "mine")


# -- task_routes shapes --------------------------------------------------------------------


def test_a_route_given_as_a_string_names_the_queue() -> None:
    conf = Settings(task_routes={"tasks.add": "adds"})
    assert route("tasks.add", {}, conf).queue == "adds"


def test_glob_patterns_match_task_names() -> None:
    conf = Settings(task_routes={"feed.tasks.*": {"queue": "feeds"}})
    assert route("feed.tasks.import_feed", {}, conf).queue == "feeds"
    assert route("web.tasks.render", {}, conf).queue == "celery"


def test_a_glob_star_needs_at_least_one_character_as_in_celery() -> None:
    conf = Settings(task_routes={"feed.*": "feeds"})
    assert route("feed.", {}, conf).queue == "celery"


def test_compiled_regexes_match_task_names() -> None:
    conf = Settings(task_routes={re.compile(r"(video|image)\.tasks\..*"): {"queue": "media"}})
    assert route("image.tasks.resize", {}, conf).queue == "media"
    assert route("audio.tasks.mix", {}, conf).queue == "celery"


def test_an_exact_name_wins_over_an_earlier_pattern() -> None:
    conf = Settings(task_routes={"tasks.*": "pattern", "tasks.add": "exact"})
    assert route("tasks.add", {}, conf).queue == "exact"


def test_the_items_form_keeps_pattern_order() -> None:
    ordered = [("feed.tasks.*", {"queue": "feeds"}), ("feed.*", {"queue": "all_feeds"})]
    conf = Settings(task_routes=(ordered,))
    assert route("feed.tasks.x", {}, conf).queue == "feeds"
    assert route("feed.other", {}, conf).queue == "all_feeds"


def test_a_list_of_routers_is_asked_in_order_until_one_answers() -> None:
    calls: list[str] = []

    def first(
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        options: Any,
        task: object = None,
        **kw: Any,
    ) -> None:
        calls.append(name)

    conf = Settings(task_routes=[first, {"tasks.add": "second"}, {"tasks.add": "third"}])
    assert route("tasks.add", {}, conf).queue == "second"
    assert calls == ["tasks.add"]


def test_router_callables_get_name_args_kwargs_options_and_task() -> None:
    seen: dict[str, Any] = {}
    marker = object()

    def router(
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        options: Mapping[str, Any],
        task: object = None,
        **kw: Any,
    ) -> dict[str, Any]:
        seen.update(name=name, args=args, kwargs=kwargs, options=dict(options), task=task)
        return {"queue": "big" if args[0] > 10 else "small"}

    conf = Settings(task_routes=router)
    result = route(
        "tasks.add", {"task_priority": 3}, conf, args=(11,), kwargs={"y": 1}, task=marker
    )
    assert result.queue == "big"
    assert seen["args"] == (11,)
    assert seen["kwargs"] == {"y": 1}
    assert seen["options"]["priority"] == 3
    assert seen["task"] is marker


def test_a_router_returning_a_string_names_the_queue() -> None:
    conf = Settings(task_routes=[lambda name, *args, **kwargs: "q" + name[-1]])
    assert route("tasks.x", {}, conf).queue == "qx"


def test_an_old_style_router_object_with_route_for_task_is_asked() -> None:
    class Router:
        def route_for_task(self, task: str, args: Any = None, kwargs: Any = None) -> Any:
            return {"queue": "legacy"} if task == "tasks.add" else None

    conf = Settings(task_routes=(Router(),))
    assert route("tasks.add", {}, conf).queue == "legacy"
    assert route("tasks.mul", {}, conf).queue == "celery"


@pytest.fixture
def router_module() -> Iterator[types.ModuleType]:
    module = types.ModuleType("caraway_test_routers")
    module.route_task = lambda name, *args, **kwargs: "imported"  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        yield module
    finally:
        del sys.modules[module.__name__]


def test_a_router_can_be_given_by_import_path(router_module: types.ModuleType) -> None:
    conf = Settings(task_routes=[f"{router_module.__name__}.route_task"])
    assert route("tasks.add", {}, conf).queue == "imported"


def test_a_router_returning_nonsense_is_improperly_configured() -> None:
    conf = Settings(task_routes=[lambda *args, **kwargs: 42])
    with pytest.raises(ImproperlyConfigured, match="returned 42"):
        route("tasks.add", {}, conf)


def test_a_route_with_a_non_int_priority_is_improperly_configured() -> None:
    conf = Settings(task_routes={"tasks.add": {"priority": "high"}})
    with pytest.raises(ImproperlyConfigured, match="'priority' must be an int"):
        route("tasks.add", {}, conf)


def test_a_malformed_items_list_is_improperly_configured() -> None:
    conf = Settings(task_routes=[["tasks.add"]])
    with pytest.raises(ImproperlyConfigured, match="pairs"):
        route("tasks.add", {}, conf)


# -- exchanges, routing keys and declared queues -------------------------------------------


def test_a_direct_queue_given_a_routing_key_alone_is_reached_by_name() -> None:
    # Celery's rule (checked against Celery 5.7's before_task_publish): a direct queue
    # without both an exchange and a routing key goes through the default exchange
    result = route("tasks.add", {"queue": "feeds", "routing_key": "feeds.x"}, Settings())
    assert result == Route("feeds", "", "feeds")


def test_the_default_queue_given_an_exchange_alone_is_reached_by_name() -> None:
    conf = Settings(task_default_exchange="tasks", task_default_routing_key="task.default")
    assert route("tasks.add", {"exchange": "tasks"}, conf) == Route("celery", "", "celery")
    keyed = route("tasks.add", {"exchange": "tasks", "routing_key": "task.x"}, conf)
    assert keyed == Route("celery", "tasks", "task.x", binding_key="task.default")


def test_declared_queues_give_their_exchange_and_routing_key() -> None:
    conf = Settings(task_queues={"media": {"exchange": "media_ex", "routing_key": "media.#"}})
    result = route("tasks.add", {"queue": "media", "routing_key": "media.video"}, conf)
    assert result == Route("media", "", "media")  # a direct queue: by name, as Celery
    both = {"queue": "media", "exchange": "media_ex", "routing_key": "media.video"}
    assert route("tasks.add", both, conf) == Route(
        "media", "media_ex", "media.video", binding_key="media.#"
    )


def test_queue_objects_with_names_are_accepted() -> None:
    class Queue:
        def __init__(self, name: str) -> None:
            self.name = name
            self.exchange = types.SimpleNamespace(name=name + "_ex")
            self.routing_key = name

    conf = Settings(task_queues=[Queue("q1")])
    options = {"queue": Queue("q1"), "exchange": "q1_ex", "routing_key": "k"}
    assert route("tasks.add", options, conf) == Route("q1", "q1_ex", "k", binding_key="q1")


def test_an_undeclared_queue_is_refused_when_missing_queues_are_not_created() -> None:
    conf = Settings(task_queues=["known"], task_create_missing_queues=False)
    assert route("tasks.add", {"queue": "known"}, conf).queue == "known"
    assert route("tasks.add", {}, conf).queue == "celery"
    with pytest.raises(ImproperlyConfigured, match="'unknown' is not in task_queues"):
        route("tasks.add", {"queue": "unknown"}, conf)


# -- queue_names ---------------------------------------------------------------------------


def test_queue_names_splits_commas_and_drops_blanks_and_repeats() -> None:
    assert queue_names("a, b,,a") == ["a", "b"]


def test_queue_names_accepts_repeated_options() -> None:
    assert queue_names(["a,b", "c", "b"]) == ["a", "b", "c"]
    assert queue_names([]) == []

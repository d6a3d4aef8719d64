"""A plain ``delay()`` on Redis is sent from its task's plan (``publish.plain``): the bytes in
the list are the general path's for the same call, byte for byte, whatever the task's
attributes and the settings; a setting assigned after the first publish takes effect, and a
publish signal receiver sends the call the general way, where it sees the message."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from caraway import Caraway, publish, signals
from caraway.exceptions import ImproperlyConfigured
from caraway.request import Request, current_request, pop_current, push_current

Raw = Callable[[], bytes]


@pytest.fixture
def app(redis_url: str, prefix: str) -> Iterator[Caraway]:
    app = Caraway("plain", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    app.conf.result_backend_transport_options = {"global_keyprefix": prefix}
    yield app
    app.close()


@pytest.fixture
def pop(raw: redis.Redis, prefix: str) -> Raw:
    """The one message in this test's lists, taken out."""

    def take() -> bytes:
        keys = [key for key in raw.scan_iter(match=f"{prefix}*") if raw.type(key) == b"list"]
        found = [item for key in keys for item in raw.lrange(key, 0, -1)]
        assert len(found) == 1, found
        raw.delete(*keys)
        return bytes(found[0])

    return take


def _tagless(envelope: bytes) -> bytes:
    """The envelope with its delivery tag (a fresh UUID on each publish) taken out."""
    tag = json.loads(envelope)["properties"]["delivery_tag"]
    return envelope.replace(tag.encode(), b"TAG")


def _plain_and_general(
    app: Caraway, pop: Raw, task: Any, *args: Any, options: Any = None, **kwargs: Any
) -> tuple[bytes, bytes]:
    """The same call sent the plain way, then the general way (a task_id option)."""
    options = options or {}
    task.delay(0)  # the thread's connection and reply id exist from now on
    pop()
    sends = []
    original = publish.Plain.send
    inherits = app.conf.task_inherit_parent_priority and current_request() is not None

    def counted(plan: publish.Plain, *arguments: Any) -> str:
        sends.append(plan)
        return original(plan, *arguments)

    publish.Plain.send = counted  # type: ignore[method-assign]
    try:
        result = task.apply_async(args, kwargs, **options)
        plain = pop()
        assert bool(sends) != inherits, "the call did not take the expected path"
        task.apply_async(args, kwargs, task_id=result.id, **options)
        assert len(sends) == (0 if inherits else 1)
        general = pop()
    finally:
        publish.Plain.send = original  # type: ignore[method-assign]
    return _tagless(plain), _tagless(general)


CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({}, {}),
    ({"time_limit": 30, "soft_time_limit": 20.5}, {}),
    ({"ignore_result": True}, {}),
    ({"queue": "other"}, {}),
    ({"priority": 3}, {}),
    ({}, {"task_default_priority": 7}),
    ({"serializer": "pickle"}, {"accept_content": ["json", "pickle"]}),
    ({"serializer": "msgpack"}, {}),
    ({}, {"task_default_delivery_mode": "transient"}),
    ({}, {"task_default_queue": "elsewhere", "task_ignore_result": True}),
    ({}, {"broker_transport_options": {"priority_steps": [0, 5, 9]}, "task_default_priority": 6}),
]


@pytest.mark.parametrize(("attributes", "settings"), CASES)
def test_plain_calls_send_the_general_paths_bytes(
    app: Caraway, pop: Raw, prefix: str, attributes: dict[str, Any], settings: dict[str, Any]
) -> None:
    if "broker_transport_options" in settings:
        settings["broker_transport_options"]["global_keyprefix"] = prefix
    app.conf.update(settings)

    @app.task(name="plain.add\u00e9", **attributes)
    def add(*args: Any, **kwargs: Any) -> Any:
        return args

    args = ('caf\u00e9 "quoted" \\ \n', "2f1f6c1e-3a6b-4d0f-9c1d-0e7b3c6a9f10", [1.5, None])
    plain, general = _plain_and_general(app, pop, add, *args, key={"nested": ["\u2603"]})
    assert plain == general


OPTIONS: list[dict[str, Any]] = [
    {"queue": "other"},
    {"queue": "other", "routing_key": "key", "priority": 4},
    {"priority": 8},
    {"ignore_result": True, "serializer": "msgpack"},
    {"time_limit": 9, "soft_time_limit": 3, "shadow": 'shown "as"'},
    {"delivery_mode": 1},
]


@pytest.mark.parametrize("options", OPTIONS, ids=",".join)
def test_static_options_send_the_general_paths_bytes(
    app: Caraway, pop: Raw, options: dict[str, Any]
) -> None:
    @app.task(name="plain.add")
    def add(*args: Any, **kwargs: Any) -> Any:
        return args

    plain, general = _plain_and_general(app, pop, add, "\u00e9", 2, options=options, k=[None])
    assert plain == general


def test_equal_option_values_of_other_types_get_their_own_plans(app: Caraway, pop: Raw) -> None:
    @app.task(name="plain.add")
    def add(x: int) -> int:
        return x

    add.apply_async((1,), time_limit=1)
    assert json.loads(pop())["headers"]["timelimit"] == [1, None]
    plain, general = _plain_and_general(app, pop, add, 1, options={"time_limit": 1.0})
    assert plain == general and b'"timelimit":[1.0,null]' in plain
    add.apply_async((1,), priority=1)
    pop()
    with pytest.raises(ImproperlyConfigured, match="priority"):
        add.apply_async((1,), priority=True)
    add.time_limit = 2  # and the task's own attributes
    add.delay(1)
    assert json.loads(pop())["headers"]["timelimit"] == [2, None]
    add.time_limit = 2.0
    plain, general = _plain_and_general(app, pop, add, 1)
    assert plain == general and b'"timelimit":[2.0,null]' in plain


def test_options_that_vary_call_by_call_take_the_general_path(app: Caraway, pop: Raw) -> None:
    @app.task(name="plain.add")
    def add(x: int) -> int:
        return x

    add.delay(1)
    pop()
    transport = app.producer
    assert publish.plain(add, app.conf, transport, {"queue": ["a list"]}) is None
    assert publish.plain(add, app.conf, transport, {"queue": "q"}) is not None
    for n in range(publish._MAX_PLANS + 5):  # a plan each, up to the cap
        publish.plain(add, app.conf, transport, {"priority": n})
    plans = app.conf.derived("publish.plain", dict)
    assert len(plans) == publish._MAX_PLANS
    add.apply_async((1,), priority=publish._MAX_PLANS + 10)  # still sent, the general way
    assert json.loads(pop())["properties"]["priority"] == 9

    @app.task(name="plain.other")
    def other(x: int) -> int:
        return x

    assert publish.plain(other, app.conf, transport) is not None  # no options: always one


class _Odd(str):
    """A string whose repr JSON cannot hold as UTF-8 (a lone surrogate)."""

    def __repr__(self) -> str:
        return "\udc80"


def test_a_repr_with_a_lone_surrogate_goes_the_general_way(app: Caraway, pop: Raw) -> None:
    """pack() escapes the whole envelope then (the stdlib encoder), which no template is."""

    @app.task(name="plain.add\u00e9")
    def add(x: str) -> str:
        return x

    add.delay("warm")
    pop()
    result = add.delay(_Odd("x"))
    envelope = pop()
    assert b"\\u00e9" in envelope and b"\\udc80" in envelope
    assert json.loads(envelope)["headers"]["id"] == result.id


def test_a_task_whose_envelope_the_stdlib_writes_goes_the_general_way(
    app: Caraway, pop: Raw
) -> None:
    """A time limit past 64 bits: pack() writes the envelope with the stdlib encoder, in
    ASCII escapes; the plan's check against pack() finds the template differs."""

    @app.task(name="plain.add", time_limit=10**30)
    def add(x: str) -> str:
        return x

    add.delay("warm")
    pop()
    assert publish.plain(add, app.conf, app.producer) is None
    add.delay("caf\u00e9")
    envelope = pop()
    assert b"\\u00e9" in envelope and b"1000000000000000000000000000000" in envelope


def test_a_setting_assigned_after_the_first_publish_takes_effect(app: Caraway, pop: Raw) -> None:
    @app.task(name="plain.add")
    def add(x: int) -> int:
        return x

    add.delay(1)
    assert json.loads(pop())["properties"]["priority"] == 0
    add.delay(1)
    pop()
    app.conf.update(task_default_priority=4, task_default_queue="later")
    add.delay(1)
    envelope = json.loads(pop())
    assert envelope["properties"]["priority"] == 4
    assert envelope["properties"]["delivery_info"]["routing_key"] == "later"
    add.queue = "own"  # a task attribute changed at run time too
    add.delay(1)
    assert json.loads(pop())["properties"]["delivery_info"]["routing_key"] == "own"


def test_a_publish_receiver_gets_the_call_the_general_way(app: Caraway, pop: Raw) -> None:
    @app.task(name="plain.add")
    def add(x: int) -> int:
        return x

    add.delay(1)
    pop()

    def inject(headers: dict[str, Any], **_: Any) -> None:
        headers["traceparent"] = "00-abc"

    seen: list[str] = []

    def after(headers: dict[str, Any], **_: Any) -> None:
        seen.append(headers["id"])

    signals.before_task_publish.connect(inject)
    signals.after_task_publish.connect(after)
    try:
        result = add.delay(2)
    finally:
        signals.before_task_publish.disconnect(inject)
        signals.after_task_publish.disconnect(after)
    assert json.loads(pop())["headers"]["traceparent"] == "00-abc"
    assert seen == [result.id]


def test_calls_the_plan_cannot_carry_go_the_general_way(app: Caraway, pop: Raw) -> None:
    @app.task(name="plain.add", expires=60)
    def add(x: int) -> int:
        return x

    add.delay(1)
    assert json.loads(pop())["headers"]["expires"] is not None
    transport = app.producer
    assert publish.plain(add, app.conf, transport) is None
    app.conf.task_routes = {"plain.*": {"queue": "routed"}}
    add.expires = None
    add.delay(1)
    assert json.loads(pop())["properties"]["delivery_info"]["routing_key"] == "routed"
    assert publish.plain(add, app.conf, transport) is None


@pytest.mark.parametrize("root_id", [None, "root-\u00e9"])
@pytest.mark.parametrize("inherit", [False, True])
def test_a_call_inside_a_task_sends_the_general_paths_bytes_and_is_recorded(
    app: Caraway, pop: Raw, root_id: str | None, inherit: bool
) -> None:
    app.conf.task_inherit_parent_priority = inherit

    @app.task(name="plain.add")
    def add(x: int) -> int:
        return x

    parent = Request(id='parent-"1"', root_id=root_id, delivery_info={"priority": 6})
    push_current(parent)
    try:
        plain, general = _plain_and_general(app, pop, add, 5)
        assert publish.plain(add, app.conf, app.producer) is not None
    finally:
        pop_current()
    assert plain == general
    headers = json.loads(plain)["headers"]
    assert headers["parent_id"] == 'parent-"1"'
    assert headers["root_id"] == (root_id or 'parent-"1"')
    assert json.loads(plain)["properties"]["priority"] == (6 if inherit else 0)
    assert len(parent.headers["_children"]) == 3  # _plain_and_general sends three
    assert parent.headers["_children"][1] == headers["id"]
    add.delay(1)  # the plan was made inside the task: a call outside is still its own root
    top = json.loads(pop())["headers"]
    assert top["root_id"] == top["id"] and top["parent_id"] is None

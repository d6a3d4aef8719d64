"""Pure routing: the queue, exchange, routing key and priority a task message goes to.

Owns the precedence between apply_async options, the task's own options and ``task_routes``,
and parsing ``-Q a,b`` queue lists; it does no I/O and declares nothing. The one thing to know:
with nothing explicit Celery publishes on the default exchange ``""`` with routing key = queue
name (docs/design/protocol.md §3.2), so that is the default ``Route``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from caraway.entities import Exchange, Queue, as_queue
from caraway.exceptions import ImproperlyConfigured, QueueNotFound

if TYPE_CHECKING:
    from caraway.config import Settings

__all__ = ["Route", "declared_queues", "queue_for", "queue_names", "route", "select_queues"]

_FIELDS = ("queue", "exchange", "routing_key", "priority")


@dataclass(frozen=True)
class Route:
    """Where one message is published, and with which priority (None: the broker's default)."""

    queue: str
    exchange: str
    routing_key: str
    priority: int | None = None
    #: the exchange's type: 'fanout' sends a copy to every queue bound to it (Broadcast),
    #: 'topic' and 'direct' to every queue whose binding matches the routing key
    exchange_type: str = "direct"
    #: ``queue``'s binding key on ``exchange``, declared before publishing as Celery's
    #: producer declares its route's queue; None when the queue is not bound to it
    binding_key: str | None = None

    @property
    def declare(self) -> list[Queue]:
        """What Celery passes as ``declare`` to before_task_publish: the target queue, or
        nothing for a broadcast (each worker declares its own)."""
        if self.exchange_type == "fanout":
            return []
        exchange = Exchange(self.exchange, self.exchange_type) if self.exchange else None
        key = self.routing_key if self.binding_key is None else self.binding_key
        return [Queue(self.queue, exchange=exchange, routing_key=key)]


@dataclass(frozen=True)
class _Layer:
    """The routing fields one source gave; None means that source left the field open."""

    queue: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    priority: int | None = None
    #: the type of an exchange given as an object (``Exchange('x', type='topic')``)
    exchange_type: str | None = None


def route(
    task_name: str,
    options: Mapping[str, Any],
    conf: Settings,
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    task: object = None,
) -> Route:
    """Decide where a call to ``task_name`` is published.

    ``options`` is the apply_async options dict as given: ``queue``, ``exchange``,
    ``routing_key`` and ``priority`` are explicit choices (None or absent: not given), and
    ``task_queue``, ``task_exchange``, ``task_routing_key`` and ``task_priority`` carry the
    task's own attributes (``@app.task(queue=...)``); other keys are ignored here and handed
    to router callables. Precedence, as Celery 5 documents and does: explicit options, then
    the task's own, then ``task_routes``, then the defaults. A queue chosen at one level also
    takes exchange and routing key from that level or above, never from a lower one (they
    described another destination). ``args``, ``kwargs`` and ``task`` are passed to routers.

    Raises ImproperlyConfigured for a malformed route or router, or for a queue that is not
    declared while ``task_create_missing_queues`` is off.
    """
    if options:
        explicit = _layer(options, "", "apply_async option")
        own = _layer(options, "task_", "task option")
    else:  # a plain delay() of a task without routing attributes
        explicit = own = _EMPTY
    routes = conf.task_routes
    if routes is None or (isinstance(routes, (dict, list, tuple)) and not routes):
        # the common case, no routers: nothing to ask, so build nothing to ask with
        if explicit is _EMPTY and own is _EMPTY:  # and nothing chosen: the default route
            return conf.derived("routing.default_route", _default_route)
        return _resolve([explicit, own], conf)
    router_options = {key: value for key, value in options.items() if value is not None}
    for field in _FIELDS:  # routers see the options in effect, as in Celery
        value = getattr(explicit, field)
        value = getattr(own, field) if value is None else value
        if value is not None:
            router_options[field] = value
    call = _Call(task_name, args, kwargs or {}, router_options, task)
    found = _lookup(call, routes)
    routed = _layer(found or {}, "", f"task_routes entry for {task_name!r}")
    return _resolve([explicit, own, routed], conf)


def queue_names(spec: str | Iterable[str]) -> list[str]:
    """Queue names from ``-Q a,b`` (or repeated ``-Q`` values), de-duplicated, in order."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for part in parts:
        for raw in part.split(","):
            name = raw.strip()
            if name and name not in names:
                names.append(name)
    return names


def _name(value: Any) -> str | None:
    """A queue or exchange given by name, or as an object with a ``name`` (kombu's shapes)."""
    if value is None or isinstance(value, str):
        return value
    name = getattr(value, "name", None)
    if isinstance(name, str):
        return name
    raise TypeError


_EMPTY = _Layer()
_KEYS = {prefix: tuple(prefix + field for field in _FIELDS) for prefix in ("", "task_")}


def _layer(source: Mapping[str, Any], prefix: str, what: str) -> _Layer:
    """One source's fields; raises ImproperlyConfigured naming the source and the value."""
    if not source:
        return _EMPTY  # a plain delay(): no options at all
    keys = _KEYS.get(prefix) or tuple(prefix + field for field in _FIELDS)
    for key in keys:  # a loop, not all(genexpr): this runs twice for every call
        if source.get(key) is not None:
            break
    else:
        return _EMPTY  # every call without routing options: skip the checks below
    key = ""
    try:
        names = {}
        for field in ("queue", "exchange", "routing_key"):
            key = prefix + field
            names[field] = _name(source.get(key))
        key = prefix + "priority"
        priority = source.get(key)
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            raise TypeError
    except TypeError:
        expected = "an int" if key.endswith("priority") else "a name"
        raise ImproperlyConfigured(
            f"{what} {key!r} must be {expected}, got {source.get(key)!r}"
        ) from None
    kind = getattr(source.get(prefix + "exchange"), "type", None)
    return _Layer(priority=priority, exchange_type=kind if isinstance(kind, str) else None, **names)


def _default_route(conf: Settings) -> Route:
    """Where a call that chooses nothing goes (kept per settings: every plain delay())."""
    return _resolve([_EMPTY], conf)


def _resolve(layers: Sequence[_Layer], conf: Settings) -> Route:
    """Merge layers, highest first, into the Route; the defaults fill what none gave."""
    queue = exchange = routing_key = given_type = None
    for layer in layers:
        if exchange is None:
            exchange, given_type = layer.exchange, layer.exchange_type
        routing_key = layer.routing_key if routing_key is None else routing_key
        if layer.queue is not None:
            queue = layer.queue
            break  # lower layers' exchange and routing key named another destination
    priority = next((layer.priority for layer in layers if layer.priority is not None), None)
    if priority is None:
        priority = conf.task_default_priority
    queue = queue or conf.task_default_queue
    if exchange is None and routing_key is None and not conf.task_queues:
        # Celery publishes straight to the queue through the default exchange.
        return Route(queue, "", queue, priority)
    declared = queue_for(queue, conf)
    bound = declared.exchange_entity
    kind = bound.type if bound is not None else "direct"
    if kind == "fanout" and bound is not None and exchange in (None, bound.name):
        return Route(queue, bound.name, routing_key or "", priority, "fanout")
    if (not exchange or not routing_key) and kind in ("direct", "headers"):
        # Celery's rule: a direct queue without both an exchange and a routing key is
        # reached by name through the default exchange (a headers queue too: caraway does
        # not route by headers, so it is reached by name as before)
        return Route(queue, "", queue, priority)
    if not exchange:
        exchange = bound.name if bound is not None and bound.name else queue
    routing_key = routing_key or declared.routing_key or queue
    if bound is not None and bound.name == exchange:
        return Route(queue, exchange, routing_key, priority, kind, declared.routing_key)
    # another exchange: its type as given (an Exchange object), else as task_queues declare
    # it, else the queue's (Celery's)
    kind = given_type or _exchange_types(conf).get(exchange, kind)
    return Route(queue, exchange, routing_key, priority, kind)


def declared_queues(conf: Settings) -> Mapping[str, Queue]:
    """``task_queues`` as :class:`Queue` values by name (kombu's objects and dicts read),
    with Celery's defaults filled in: an unbound queue gets ``task_default_exchange`` (of
    ``task_default_exchange_type``) or an exchange named like it, and a binding key named
    like it. With no ``task_queues``, the default queue alone.

    Built once per settings (``Settings.derived``) and rebuilt after a setting changes:
    every publish asks for it."""
    return conf.derived("routing.declared_queues", _declared_queues)


def _declared_queues(conf: Settings) -> Mapping[str, Queue]:
    configured = conf.task_queues
    if isinstance(configured, Mapping):
        entries = [as_queue(value, str(name)) for name, value in configured.items()]
    else:
        entries = [as_queue(value) for value in configured or ()]
    if not entries:
        entries = [Queue(conf.task_default_queue)]
    return MappingProxyType({queue.name: _with_defaults(queue, conf) for queue in entries})


def _exchange_types(conf: Settings) -> Mapping[str, str]:
    """The type of each exchange ``task_queues`` declare, by name."""
    return conf.derived("routing.exchange_types", _build_exchange_types)


def _build_exchange_types(conf: Settings) -> Mapping[str, str]:
    types: dict[str, str] = {}
    for queue in declared_queues(conf).values():
        exchange = queue.exchange_entity
        if exchange is not None and exchange.name:
            types.setdefault(exchange.name, exchange.type)
    return MappingProxyType(types)


def queue_for(name: str, conf: Settings) -> Queue:
    """The declaration of queue ``name``: from ``task_queues``, else made on demand.

    Raises ImproperlyConfigured for an unknown queue when task_create_missing_queues is off.
    """
    found = declared_queues(conf).get(name)
    if found is not None:
        return found
    if name == conf.task_default_queue:
        return _with_defaults(Queue(name), conf)
    if not conf.task_create_missing_queues:
        raise QueueNotFound(
            f"queue {name!r} is not in task_queues and task_create_missing_queues is "
            f"off; declare it in task_queues or turn task_create_missing_queues on"
        )
    # A queue made on demand gets an exchange and a binding both named like it (Celery's
    # task_create_missing_queue_exchange_type, else the default exchange type).
    kind = conf.task_create_missing_queue_exchange_type or conf.task_default_exchange_type
    return Queue(name, exchange=Exchange(name, kind), routing_key=name)


def _with_defaults(queue: Queue, conf: Settings) -> Queue:
    exchange = queue.exchange_entity
    if exchange is None:
        default = conf.task_default_exchange or queue.name
        exchange = Exchange(default, conf.task_default_exchange_type)
    routing_key = queue.routing_key
    if not routing_key and exchange.type != "fanout":
        routing_key = conf.task_default_routing_key or queue.name
    if exchange is queue.exchange and routing_key == queue.routing_key:
        return queue
    return dataclasses.replace(queue, exchange=exchange, routing_key=routing_key)


def select_queues(
    conf: Settings, wanted: Iterable[str] = (), excluded: Iterable[str] = ()
) -> list[Queue]:
    """The queues a worker consumes: ``-Q`` (made on demand) or every declared one, less
    ``-X``. Raises ImproperlyConfigured when nothing is left."""
    names = list(wanted) or list(declared_queues(conf))
    skip = set(excluded)
    chosen = [queue_for(name, conf) for name in names if name not in skip]
    if not chosen:
        raise ImproperlyConfigured(
            f"no queue left to consume: -Q {','.join(names)} less -X {','.join(sorted(skip))}"
        )
    return chosen


@dataclass(frozen=True)
class _Call:
    """What a router is asked about."""

    name: str
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    options: Mapping[str, Any]
    task: object


def _lookup(call: _Call, routes: Any) -> dict[str, Any] | None:
    """The first route any router gives for ``name``, as an options dict, or None."""
    if routes is None:
        return None
    routers = routes if isinstance(routes, (list, tuple)) else [routes]
    for router in routers:
        found = _ask(router, call)
        if isinstance(found, str):
            found = {"queue": found}  # a bare string names the queue, as in Celery
        if found is not None and not isinstance(found, Mapping):
            raise ImproperlyConfigured(
                f"router {router!r} returned {found!r} for {call.name!r}; "
                f"a router returns a dict of options, a queue name or None"
            )
        if found:
            return dict(found)
    return None


def _ask(router: Any, call: _Call) -> object:
    if isinstance(router, Mapping):
        return _match(call.name, list(router.items()))
    if isinstance(router, (list, tuple)):
        # Celery's "items" form keeps pattern order: [(pattern, route), ...].
        if not all(isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in router):
            raise ImproperlyConfigured(
                f"task_routes entry {router!r} is not a list of (pattern, route) pairs"
            )
        return _match(call.name, [(pair[0], pair[1]) for pair in router])
    if isinstance(router, str):
        router = _import_router(router)
    route_for_task = getattr(router, "route_for_task", None)
    if route_for_task is not None:  # the pre-4.0 router class interface
        return route_for_task(call.name, call.args, call.kwargs)
    if callable(router):
        return router(call.name, call.args, call.kwargs, call.options, task=call.task)
    raise ImproperlyConfigured(
        f"task_routes entry {router!r} is not a router; use a dict, a list of "
        f"(pattern, route) pairs, a callable or its import path"
    )


def _match(name: str, pairs: Sequence[tuple[Any, Any]]) -> object:
    """Exact names win, then glob and regex patterns in the order given (Celery's order)."""
    for key, value in pairs:
        if key == name:
            return value
    for key, value in pairs:
        if isinstance(key, re.Pattern) and key.match(name):
            return value
        if isinstance(key, str) and "*" in key and _glob(key).match(name):
            return value
    return None


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    # As in Celery: '*' matches one or more characters and the match is anchored at the
    # start only, so the same task_routes send a task to the same queue under both.
    return re.compile(".+?".join(re.escape(part) for part in pattern.split("*")))


@functools.lru_cache(maxsize=64)
def _import_router(path: str) -> object:
    """A router given by import path ('pkg.mod:name' or 'pkg.mod.name'); classes are made."""
    module_name, _, attribute = path.partition(":")
    if not attribute:
        module_name, _, attribute = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ImproperlyConfigured(f"cannot import router {path!r}: {exc}") from exc
    return found() if isinstance(found, type) else found

"""The one publish path: every task message caraway sends is built and sent here.

``build`` turns a call (name, args, kwargs, options) into an :class:`Outgoing`; it is pure
apart from the clock and the running task's context (``countdown`` becomes ``eta``, a call
made inside a task inherits its ``root_id`` and gets it as ``parent_id``, as in Celery).
``follow_up`` and ``retry`` build the messages a finished run causes. :meth:`Publisher.send`
hands task messages to a transport: ``delay``, ``send_task``, canvas, retries and the
worker's follow-ups all end there, except the commonest call, a ``delay()`` without options
on Redis with no publish signal receivers: :func:`plain` gives its task's plan, made once
by the steps above, whose envelope bytes :meth:`Plain.send` only fills in and pushes.
``holding`` collects what is sent inside it, so its caller can send it in one round trip
(a group's members) or through its own connection (a worker completing a chord).
``before_task_publish`` and ``after_task_publish`` are sent here, around each message, and
compression applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, runtime_checkable

from caraway import signals
from caraway.brokers.contracts import Binding, Fanout, Routing, Scheduling, Transport
from caraway.config import Settings
from caraway.exceptions import ImproperlyConfigured
from caraway.protocol import message as protocol
from caraway.protocol.envelope import Template, json_text, pack
from caraway.protocol.message import Message, TaskMessage, default_origin, safe_repr
from caraway.protocol.serializers import compress, compression_type, dumps
from caraway.request import Request, current_request
from caraway.routing import Route, route
from caraway.schedules.base import zone_of
from caraway.taskbase import TaskBase, check_limits
from caraway.utils.ids import new_id

#: options apply_async understands; anything else is a caller's mistake
KNOWN_OPTIONS = frozenset(
    {
        "countdown",
        "eta",
        "expires",
        "queue",
        "exchange",
        "routing_key",
        "priority",
        "task_id",
        "headers",
        "serializer",
        "ignore_result",
        "time_limit",
        "soft_time_limit",
        "link",
        "link_error",
        "shadow",
        "parent_id",
        "root_id",
        "group_id",
        "group_index",
        "chord",
        "chain",
        "retries",
        "reply_to",
        "compression",
        "retry",
        "retry_policy",
        "delivery_mode",
        "mandatory",
        "immediate",
        "declare",
        "add_to_parent",
        "producer",
        "connection",
        "publisher",
        "stamped_headers",
        "stamps",
        "subtask_type",
        "immutable",
        "chord_size",
        # what logs, events and monitors show instead of the arguments (Celery's calling
        # guide: hiding sensitive arguments)
        "argsrepr",
        "kwargsrepr",
    }
)
_ROUTE_OPTIONS = ("queue", "exchange", "routing_key", "priority")


@dataclass(slots=True)
class Outgoing:
    """A task message ready to be sent: what, where, and how its body is encoded."""

    message: TaskMessage
    route: Route
    serializer: str
    #: kombu's compression method ('gzip', 'zstd', ...), or None
    compression: str | None = None
    #: the publish retry policy given to apply_async (before_task_publish receivers see it)
    retry_policy: Mapping[str, Any] | None = None
    #: AMQP delivery mode: 2 persistent (the default), 1 transient
    delivery_mode: int = 2


# -- building ----------------------------------------------------------------------------
def build(
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
    *,
    conf: Settings,
    task: TaskBase | None = None,
    by_name: bool = False,
    reply_to: str | None = None,
    now: datetime | None = None,
    toplevel: bool = False,
) -> Outgoing:
    """The message for one call of ``name``; TypeError/ValueError for bad options.

    ``task`` (the registered task, if this process has it) supplies defaults for expiry,
    limits, routing and serializer. ``by_name`` marks ``send_task``: a task this caller
    does not declare leaves ``ignore_result`` to the worker unless the options set it.
    ``toplevel`` builds it as a call made outside any task, even inside one.
    """
    if not KNOWN_OPTIONS.issuperset(options):
        unknown = set(options) - KNOWN_OPTIONS
        raise TypeError(
            f"apply_async() got unknown option(s) {sorted(unknown)}; "
            "see the calling guide for the supported ones"
        )
    # countdown and expires become dates in the app's zone, as Celery writes them (UTC
    # unless timezone is set or enable_utc is off); the instant is the same either way
    expires = options.get("expires", task.expires if task else None)
    if now is None and (expires is not None or options.get("countdown") is not None):
        now = datetime.now(conf.derived("publish.zone", zone_of))
    task_id = options.get("task_id") or new_id()
    parent = None if toplevel else current_request()
    hard = options.get("time_limit", task.time_limit if task else None)
    soft = options.get("soft_time_limit", task.soft_time_limit if task else None)
    check_limits(name, hard, soft)
    message = TaskMessage(
        id=task_id,
        task=name,
        args=list(args),
        kwargs=dict(kwargs),
        callbacks=None if (link := options.get("link")) is None else signature_list(link),
        errbacks=None if (error := options.get("link_error")) is None else signature_list(error),
        chain=options.get("chain"),
        chord=options.get("chord"),
        eta=_eta(options, now),
        expires=_expires(expires, now),
        retries=int(options.get("retries") or 0),
        group=options.get("group_id"),
        group_index=options.get("group_index"),
        root_id=options.get("root_id") or (parent.root_id or parent.id if parent else None),
        parent_id=options.get("parent_id") or (parent.id if parent else None),
        shadow=options.get("shadow"),
        time_limit=hard,
        soft_time_limit=soft,
        ignore_result=_ignore_result(options, task, conf, by_name),
        reply_to=options.get("reply_to") or reply_to,
        priority=_priority(options, parent, conf),
        extra_headers=dict(options.get("headers") or {}),
        argsrepr=options.get("argsrepr"),
        kwargsrepr=options.get("kwargsrepr"),
    )
    message.root_id = message.root_id or task_id
    # routers get the call's arguments and the task, as Celery's (route_task(name, args,
    # kwargs, options, task=...)): a router may choose a queue by what the task is given
    own = _task_route_options(task)
    target = route(
        name, {**own, **options} if own else options, conf, args=args, kwargs=kwargs, task=task
    )
    if message.priority is None and target.priority is not None:
        message.priority = target.priority
    serializer = (
        options.get("serializer") or (task.serializer if task else None) or conf.task_serializer
    )
    compression = (
        options.get("compression") or (task.compression if task else None) or conf.task_compression
    )
    if compression is not None:
        compression_type(compression)  # an unknown method fails the call, not the publish
    mode = options.get("delivery_mode")
    return Outgoing(
        message,
        target,
        str(serializer),
        compression,
        options.get("retry_policy"),
        conf.task_default_delivery_mode if mode is None else _DELIVERY_MODES[mode],
    )


_DELIVERY_MODES = {1: 1, 2: 2, "transient": 1, "persistent": 2}


def _priority(options: Mapping[str, Any], parent: Request | None, conf: Settings) -> Any:
    """The priority asked for; else, with task_inherit_parent_priority, the caller's."""
    priority = options.get("priority")
    if priority is None and parent is not None and conf.task_inherit_parent_priority:
        priority = parent.delivery_info.get("priority")
    return priority


def _ignore_result(
    options: Mapping[str, Any], task: TaskBase | None, conf: Settings, by_name: bool
) -> bool | None:
    ignore = options.get("ignore_result")
    if ignore is None and task is not None and not by_name:
        ignore = bool(task.ignore_result or conf.task_ignore_result)
    return None if ignore is None else bool(ignore)


_TASK_ROUTE_OPTIONS = tuple((key, f"task_{key}") for key in _ROUTE_OPTIONS)


def _task_route_options(task: TaskBase | None) -> dict[str, Any]:
    """The task's own routing attributes that are set, as ``task_<name>`` options."""
    found: dict[str, Any] = {}
    if task is not None:
        for key, option in _TASK_ROUTE_OPTIONS:
            value = getattr(task, key)
            if value is not None:
                found[option] = value
    return found


def _eta(options: Mapping[str, Any], now: datetime | None) -> datetime | None:
    countdown = options.get("countdown")
    eta = options.get("eta")
    if countdown is not None:
        assert now is not None  # build() reads the clock when a countdown is given
        if isinstance(countdown, bool) or not isinstance(countdown, (int, float)):
            raise TypeError(f"countdown must be a number of seconds, not {countdown!r}")
        if countdown < 0:
            raise ValueError(f"countdown must not be negative, got {countdown!r}")
        return now + timedelta(seconds=countdown)
    if eta is None:
        return None
    if not isinstance(eta, datetime):
        raise TypeError(f"eta must be a datetime, not {eta!r}; use countdown= for seconds")
    return eta if eta.tzinfo else eta.replace(tzinfo=timezone.utc)


def _expires(value: Any, now: datetime | None) -> datetime | None:
    if value is None:
        return None
    assert now is not None  # build() reads the clock when an expiry is given
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, timedelta):
        return now + value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expires must be seconds or a datetime, not {value!r}")
    return now + timedelta(seconds=value)


def signature_list(value: Any) -> list[dict[str, Any]] | None:
    """``link``/``link_error`` as given (one signature or several) -> a list of dicts."""
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    return [dict(item) for item in items]


def follow_up(
    signature: Mapping[str, Any], value: Any, parent: TaskMessage, conf: Settings
) -> Outgoing:
    """A signature dict from the wire (a callback, errback or chain step) applied to
    ``value``, the parent's result (or its id, for an errback)."""
    options = dict(signature.get("options") or {})
    args = list(signature.get("args") or ())
    if not signature.get("immutable"):
        args = [value, *args]
    name = str(signature["task"])
    message = TaskMessage(
        id=options.get("task_id") or new_id(),
        task=name,
        args=args,
        kwargs=dict(signature.get("kwargs") or {}),
        callbacks=options.get("link") and list(options["link"]),
        errbacks=options.get("link_error") and list(options["link_error"]),
        chord=options.get("chord"),
        group=options.get("group_id"),
        group_index=options.get("group_index"),
        root_id=parent.root_id or parent.id,
        parent_id=parent.id,
        reply_to=options.get("reply_to") or parent.reply_to,
        priority=options.get("priority"),
        extra_headers=dict(options.get("headers") or {}),
    )
    # a stamped canvas keeps its stamps on every step (Celery's stamped_headers/stamps),
    # whether they ride as options (a signature's own) or were moved into its headers
    stamped = options.get("stamped_headers") or message.extra_headers.pop("stamped_headers", None)
    if stamped:
        carried = message.extra_headers.pop("stamps", None) or {}
        message.stamped_headers = list(stamped)
        message.stamps = {key: options.get(key, carried.get(key)) for key in stamped}
    route_options = {key: value for key, value in options.items() if key in _ROUTE_OPTIONS}
    return Outgoing(
        message,
        route(name, route_options, conf),
        str(options.get("serializer") or conf.task_serializer),
        options.get("compression") or conf.task_compression,
    )


def retry(
    task: TaskBase,
    request: Request,
    *,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    when: datetime,
    queue: str | None,
) -> Outgoing:
    """The message that runs ``request`` again at ``when``: same id (the caller's
    AsyncResult follows it), one more retry, the canvas parts carried on (protocol §1.4)."""
    original = request.message
    if not isinstance(original, TaskMessage):
        raise RuntimeError(f"{task.name}.retry() called outside of a running task")
    message = replace(
        original,
        args=list(args) if args is not None else list(request.args),
        kwargs=dict(kwargs) if kwargs is not None else dict(request.kwargs),
        retries=request.retries + 1,
        eta=when,
        parent_id=request.id,
        extra_headers=dict(original.extra_headers),
    )
    conf = task.app.conf
    target = route(task.name, _retry_destination(request.delivery_info, queue), conf)
    return Outgoing(
        message,
        target,
        str(task.serializer or conf.task_serializer),
        task.compression or conf.task_compression,
    )


def _retry_destination(delivery: Mapping[str, Any], queue: str | None) -> dict[str, Any]:
    """Celery's rule for where a retry goes: ``queue=`` if given; a delivery through the
    default exchange back to the queue its routing key names; any other back through its
    exchange and routing key (a topic route reaches the queues its key matches again)."""
    options: dict[str, Any] = {}
    if delivery.get("priority") is not None:
        options["priority"] = delivery["priority"]
    exchange, routing_key = delivery.get("exchange"), delivery.get("routing_key")
    if queue:
        options["queue"] = queue
    elif not exchange and routing_key:
        options["queue"] = routing_key
    elif exchange:
        options.update(exchange=exchange, routing_key=routing_key)
    return options


# -- sending -----------------------------------------------------------------------------
class Held(list[Outgoing]):
    """The messages a batch holds back to send at its end, and the connection its members
    asked for (``apply_async(producer=...)``; None: the sender's own)."""

    connection: Transport | None = None


#: what ``holding()`` collects in this thread or asyncio task (None: send at once)
_HELD: ContextVar[Held | None] = ContextVar("caraway_held", default=None)


def held() -> Held | None:
    """The batch an enclosing :func:`holding` collects into, or None."""
    return _HELD.get()


@contextmanager
def holding() -> Iterator[Held | None]:
    """Collect what is sent inside instead of sending it.

    Yields the batch to send at the end, or None when an enclosing ``holding()`` already
    collects (its owner sends everything, once).
    """
    if _HELD.get() is not None:
        yield None
        return
    collected = Held()
    token = _HELD.set(collected)
    try:
        yield collected
    finally:
        _HELD.reset(token)


class Publisher:
    """Hands task messages to a transport; the one place that does.

    Producers send through their thread's connection, a worker consumer through its own;
    both call :meth:`send`. ``on_sent`` runs for each message once the broker has it (the
    app's ``task-sent`` events).
    """

    def __init__(
        self, conf: Settings, *, on_sent: Callable[[Outgoing], None] | None = None
    ) -> None:
        self.conf = conf
        self.on_sent = on_sent

    def send(self, transport: Transport, items: Sequence[Outgoing]) -> None:
        """Publish ``items`` in order, in as few round trips as their routes allow.

        Every message is encoded before any is sent, so one that cannot be encoded stops
        the whole batch. Far countdowns go straight to the broker's schedule when
        ``producer_parks_eta`` is on; plain routes (default exchange, key = queue) go in one
        ``publish_many``; a route through an exchange is published on its own.
        """
        if len(items) == 1:
            wires = [self._send_one(transport, items[0])]
        else:
            wires = self._send_many(transport, items)
        if signals.after_task_publish.receivers or signals.task_sent.receivers:
            self._after_publish(items, wires)
        if self.on_sent is not None:
            for item in items:
                self.on_sent(item)

    def _send_one(self, transport: Transport, item: Outgoing) -> Message:
        wire = self._encode(item)
        target = item.route
        if target.exchange_type == "fanout":
            _fanout(transport, wire, target)
            return wire
        eta = self._park_until(item)
        if eta is not None and isinstance(transport, Scheduling):
            transport.publish_parked(wire, queue=target.queue, eta=eta)
        else:
            _publish(transport, wire, target)
        return wire

    def _send_many(self, transport: Transport, items: Sequence[Outgoing]) -> list[Message]:
        encoded = [self._encode(item) for item in items]
        plain = []
        for item, wire in zip(items, encoded, strict=True):
            target = item.route
            eta = self._park_until(item)
            if target.exchange_type == "fanout":
                _fanout(transport, wire, target)
            elif eta is not None and isinstance(transport, Scheduling):
                transport.publish_parked(wire, queue=target.queue, eta=eta)
            elif target.exchange or target.routing_key not in (None, target.queue):
                _publish(transport, wire, target)
            else:
                plain.append((wire, target.queue))
        if plain:
            transport.publish_many(plain)
        return encoded

    def _encode(self, item: Outgoing) -> Message:
        """The wire message; ``before_task_publish`` receivers may change it first."""
        wire = protocol.encode(item.message, serializer=item.serializer)
        if signals.before_task_publish.receivers:
            self._before_publish(item, wire)
        return _finish(item, wire)

    def _before_publish(self, item: Outgoing, wire: Message) -> None:
        """Send before_task_publish as Celery does: headers and properties are the ones
        sent, and the body (args, kwargs, embed) is encoded again after the receivers ran,
        so what they change in place is what travels (tracing context, for one)."""
        task = item.message
        body = (task.args, task.kwargs, _embed(task))
        target = item.route
        signals.before_task_publish.send(
            sender=task.task,
            body=body,
            exchange=target.exchange,
            routing_key=target.routing_key,
            headers=wire.headers,
            properties=wire.properties,
            declare=target.declare,
            retry_policy=self._retry_policy(item),
        )
        wire.body, wire.content_type, wire.content_encoding = dumps(list(body), item.serializer)

    def _retry_policy(self, item: Outgoing) -> dict[str, Any]:
        policy = dict(self.conf.task_publish_retry_policy or {})
        policy.update(item.retry_policy or {})
        return policy

    def _after_publish(self, items: Sequence[Outgoing], wires: Sequence[Message]) -> None:
        """after_task_publish, and Celery's deprecated task_sent, once the broker has them."""
        for item, wire in zip(items, wires, strict=True):
            task, target = item.message, item.route
            body = (task.args, task.kwargs, _embed(task))
            signals.after_task_publish.send(
                sender=task.task,
                body=body,
                headers=wire.headers,
                exchange=target.exchange,
                routing_key=target.routing_key,
            )
            signals.task_sent.send(
                sender=task.task,
                task_id=task.id,
                task=task.task,
                args=task.args,
                kwargs=task.kwargs,
                eta=task.eta and task.eta.isoformat(),
                taskset=task.group,
            )

    def _park_until(self, item: Outgoing) -> float | None:
        """When ``item`` is due, if it should wait in the broker's schedule rather than on
        its queue (``producer_parks_eta`` and a countdown past the park horizon); else None.
        Only a transport that can park (``Scheduling``) gets it there."""
        eta = item.message.eta
        if eta is None or not self.conf.producer_parks_eta:
            return None
        due = eta.timestamp()
        if due - datetime.now(timezone.utc).timestamp() <= float(self.conf.broker_park_horizon):
            return None
        return due


def _finish(item: Outgoing, wire: Message) -> Message:
    """Compression and delivery mode, applied once the receivers had the message."""
    if item.compression:
        wire.body, wire.headers["compression"] = compress(wire.body, item.compression)
    if item.delivery_mode != 2:
        wire.properties["delivery_mode"] = item.delivery_mode
    return wire


_ROUTED = ("direct", "topic")


def _publish(transport: Transport, wire: Message, target: Route) -> None:
    """One message: through its exchange's bindings where the transport routes (every
    queue whose binding matches gets a copy), else to the queue the router chose."""
    if target.exchange and target.exchange_type in _ROUTED and isinstance(transport, Routing):
        key = target.binding_key
        transport.publish_routed(
            wire,
            exchange=target.exchange,
            exchange_type=target.exchange_type,
            routing_key=target.routing_key,
            declare=() if key is None else (Binding(target.queue, key),),
        )
        return
    transport.publish(
        wire, queue=target.queue, exchange=target.exchange, routing_key=target.routing_key
    )


def _fanout(transport: Transport, wire: Message, target: Route) -> None:
    """A copy for every worker consuming the broadcast queue (kombu's Broadcast)."""
    if not isinstance(transport, Fanout):
        raise ImproperlyConfigured(
            f"queue {target.queue!r} is a Broadcast queue, and this broker's transport "
            f"({type(transport).__name__}) cannot copy a message to every worker"
        )
    transport.publish_fanout(wire, exchange=target.exchange)


def _embed(task: TaskMessage) -> dict[str, Any]:
    return {
        "callbacks": task.callbacks,
        "errbacks": task.errbacks,
        "chain": task.chain,
        "chord": task.chord,
    }


# -- plain calls -------------------------------------------------------------------------
@runtime_checkable
class Packing(Protocol):
    """A transport that publishes kombu JSON envelopes packed by its caller (Redis)."""

    def envelope_route(
        self, message: Message, *, queue: str, exchange: str = "", routing_key: str | None = None
    ) -> tuple[str, str, int]: ...

    def publish_packed(
        self, raw: bytes, *, queue: str, exchange: str, routing_key: str, priority: int
    ) -> None: ...


#: what a plain call's message differs in, each a hole in the task's envelope template;
#: the markers are letters, digits, dashes and colons, which JSON writes as they are
_MARKS = {
    name: f"{new_id()}:{name}:"
    for name in ("id", "argsrepr", "kwargsrepr", "reply_to", "origin", "tag")
}
#: and what a call made inside a running task differs in too: the ids it inherits
_CHILD_MARKS = {**_MARKS, "root_id": f"{new_id()}:root_id:", "parent_id": f"{new_id()}:parent_id:"}
#: the values a new template is checked with (non-ASCII, quotes: what escaping changes)
_PROBE = {
    "id": "00000000-0000-4000-8000-000000000000",
    "argsrepr": '("probe \u00e9", "q\\"")',
    "kwargsrepr": "{'k': '\u2603'}",
    "reply_to": "reply-\u00fc",
    "origin": "gen1@h\u00f6st",
    "tag": "11111111-1111-4111-8111-111111111111",
    "root_id": "root-\u00e9",
    "parent_id": "parent-\u00e9",
}
#: a plain call's embed: no callbacks, errbacks, chain or chord
_NO_EMBED: dict[str, Any] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass(slots=True)
class Plain:
    """How every plain call of one task is sent: ``delay()``/``apply_async()`` without
    options, outside a batch, with no publish signal receivers.

    Made once per settings by the general path (:func:`build`, encode, the transport's
    envelope) for a call whose varying strings are markers; each call then fills the
    envelope's holes (:class:`~caraway.protocol.envelope.Template`) and pushes the bytes,
    which are what the general path would send for it.
    """

    #: task_routes as read (None or an empty container): routers added in place stop it
    routes: Any
    serializer: str
    ignore_result: bool | None
    queue: str
    exchange: str
    routing_key: str
    priority: int
    template: Template
    #: the template of a call made inside a running task (None: such calls inherit the
    #: task's priority, task_inherit_parent_priority, and take the general path)
    child: Template | None
    #: (reply_to, origin) of the last call, and their envelope bytes
    local: tuple[str, str, bytes, bytes] = ("", "", b"", b"")
    #: the app's own verdict on sending this way (result backend, events), once asked
    approved: bool | None = None

    def send(
        self,
        transport: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        reply_to: str,
        parent: Request | None = None,
    ) -> str | None:
        """Publish one call of the task (made inside ``parent``, if given: its ids are
        inherited); returns the call's id once the broker has it, or None, having sent
        nothing, when a string of the call cannot fill a hole (``json_text``).

        ``transport`` is a :class:`Packing` one (:func:`plain` checked its type: an
        isinstance() against a protocol here would cost more than the rest of the call).
        A call inside a task needs :attr:`child`."""
        origin = default_origin()
        task_id = new_id()
        try:
            local = self.local
            if local[0] is not reply_to or local[1] is not origin:
                local = self.local = (reply_to, origin, json_text(reply_to), json_text(origin))
            values = {
                "id": task_id.encode(),
                "argsrepr": json_text(safe_repr(args)),
                "kwargsrepr": json_text(safe_repr(kwargs)),
                "reply_to": local[2],
                "origin": local[3],
                "tag": new_id().encode(),
            }
            template = self.template
            if parent is not None:
                assert self.child is not None  # the caller checks
                template = self.child
                assert parent.id  # the caller checks: a parent without one goes the long way
                values["root_id"] = json_text(parent.root_id or parent.id)
                values["parent_id"] = json_text(parent.id)
        except ValueError:
            return None
        body = dumps([list(args), kwargs, _NO_EMBED], self.serializer)[0]
        transport.publish_packed(
            template.fill(body, values),
            queue=self.queue,
            exchange=self.exchange,
            routing_key=self.routing_key,
            priority=self.priority,
        )
        return task_id


#: apply_async options a plan can carry: the same value gives the same bytes on every call
STATIC_OPTIONS = frozenset(
    {
        "queue",
        "routing_key",
        "priority",
        "ignore_result",
        "serializer",
        "time_limit",
        "soft_time_limit",
        "shadow",
        "delivery_mode",
    }
)
_STATIC_VALUES = frozenset({str, int, float, bool, type(None)})
#: plans kept per settings past which calls with options get no new one (a call without
#: options always gets its task's)
_MAX_PLANS = 512


def plain(
    task: TaskBase, conf: Settings, transport: Transport, options: Mapping[str, Any] | None = None
) -> Plain | None:
    """The plan for a plain call of ``task`` through ``transport`` (with ``options``, a
    subset of :data:`STATIC_OPTIONS` of plain values), or None when such a call must take
    the general path (a transport that packs no envelopes, routers, an expiry,
    compression, an exchange to route through). Kept per settings and remade when the
    task's attributes or the transport's type change."""
    kind = type(transport)
    packs = _PACKS.get(kind)
    if packs is None:  # once per transport type: other brokers skip the rest at once
        packs = _PACKS[kind] = isinstance(transport, Packing)
    if not packs:
        return None
    plans: dict[Any, _Made] = conf.derived("publish.plain", _no_plans)
    key: Any = task.name
    if options:
        # only values that compare by what they hold, and their types in the key: 1 and
        # True and 1.0 are equal, but a priority of True is refused and 1.0 is written so
        kinds = tuple(map(type, options.values()))
        if not _STATIC_VALUES.issuperset(kinds):
            return None
        key = (task.name, kinds, *options.items())
    made = plans.get(key)
    attributes = _attributes(task)
    if (
        made is None
        or made[0] is not task
        or made[1] != attributes
        or made[2] is not type(transport)
    ):
        if made is None and options and len(plans) >= _MAX_PLANS:
            return None  # options that vary call by call: not worth a plan each
        made = (task, attributes, type(transport), _plan(task, conf, transport, options or {}))
        plans[key] = made
    plan = made[3]
    return None if plan is None or plan.routes else plan


#: transport types, and whether each packs its own envelopes (:class:`Packing`)
_PACKS: dict[type, bool] = {}
#: a plan (None: none possible) and what it was made from: task, attributes, transport type
_Made = tuple[TaskBase, tuple[Any, ...], type, "Plain | None"]


def _no_plans(conf: Settings) -> dict[Any, _Made]:
    return {}


def _attributes(task: TaskBase) -> tuple[Any, ...]:
    """What :func:`build` reads of a task for a call without options; with the types of
    the numbers, as a time limit of 1.0 is written unlike 1, and a priority True refused."""
    time_limit, soft_time_limit, priority = task.time_limit, task.soft_time_limit, task.priority
    return (
        task.expires,
        time_limit,
        type(time_limit),
        soft_time_limit,
        type(soft_time_limit),
        task.ignore_result,
        task.queue,
        task.exchange,
        task.routing_key,
        priority,
        type(priority),
        task.serializer,
        task.compression,
    )


def _plan(
    task: TaskBase, conf: Settings, transport: Transport, options: Mapping[str, Any]
) -> Plain | None:
    routes = conf.task_routes
    if not isinstance(transport, Packing) or routes:
        return None
    marks = _MARKS
    try:
        item = build(
            task.name,
            (),
            {},
            {**options, "task_id": marks["id"]},
            conf=conf,
            task=task,
            reply_to=marks["reply_to"],
            toplevel=True,
        )
    except Exception:  # a bad setting or task option: the general path raises it per call
        return None
    message, target = item.message, item.route
    if message.expires or item.compression or target.exchange or target.exchange_type == "fanout":
        return None
    message.origin = marks["origin"]
    message.argsrepr, message.kwargsrepr = marks["argsrepr"], marks["kwargsrepr"]
    exchange, routing_key, priority = transport.envelope_route(
        _finish(item, protocol.encode(message, serializer=item.serializer)),
        queue=target.queue,
        exchange=target.exchange,
        routing_key=target.routing_key,
    )

    def template(holes: dict[str, str]) -> Template:
        """The envelope template of ``message``, checked against pack() for a probe call:
        ValueError when they differ (an envelope the stdlib encoder writes: integers past
        64 bits, ASCII escapes) or a marker is missing."""
        wire = _finish(item, protocol.encode(message, serializer=item.serializer))
        made = Template(wire, delivery_tag=marks["tag"], holes=holes, **place)
        child = "root_id" in holes
        probe = replace(
            message,
            id=_PROBE["id"],
            root_id=_PROBE["root_id"] if child else _PROBE["id"],
            parent_id=_PROBE["parent_id"] if child else None,
            argsrepr=_PROBE["argsrepr"],
            kwargsrepr=_PROBE["kwargsrepr"],
            origin=_PROBE["origin"],
            reply_to=_PROBE["reply_to"],
        )
        wire = _finish(item, protocol.encode(probe, serializer=item.serializer))
        values = {name: json_text(_PROBE[name]) for name in holes}
        if made.fill(wire.body, values) != pack(wire, delivery_tag=_PROBE["tag"], **place):
            raise ValueError("the template differs from pack()")
        return made

    place: dict[str, Any] = {"exchange": exchange, "routing_key": routing_key}
    place["priority"] = priority
    try:
        top = template(marks)
        child = None
        if not conf.task_inherit_parent_priority:
            message.root_id = _CHILD_MARKS["root_id"]
            message.parent_id = _CHILD_MARKS["parent_id"]
            child = template(_CHILD_MARKS)
    except ValueError:  # the general way, then: its bytes are the ones to send
        return None
    return Plain(
        routes,
        item.serializer,
        message.ignore_result,
        target.queue,
        exchange,
        routing_key,
        priority,
        top,
        child,
    )

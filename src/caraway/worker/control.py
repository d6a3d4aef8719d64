"""Remote control, the node's side: the commands a node answers and its ControlServer.

Requests and replies are Celery's pidbox documents (:mod:`caraway.protocol.pidbox`) carried
by a :class:`~caraway.brokers.contracts.Mailbox`, so Celery's tools and ours see each other;
the client half (``app.control``) is :mod:`caraway.control`. The one thing to know:
:meth:`ControlServer.poll` never blocks, because the supervisor calls it from its
single-threaded loop; a failing command becomes an ``{"error": ...}`` reply, never an
exception in that loop.
"""

from __future__ import annotations

import logging
import resource
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from caraway.brokers.contracts import REPLY_EXCHANGE, Mailbox
from caraway.brokers.registry import open_mailbox
from caraway.exceptions import CarawayError, ProtocolError
from caraway.protocol.events import LamportClock
from caraway.protocol.message import Message
from caraway.protocol.pidbox import Request, decode_request, encode_reply, queue_info

logger = logging.getLogger("caraway.worker.control")


class NodeView(Protocol):
    """What a ControlServer needs from its node (the Supervisor implements it).

    The ``list[dict]`` results are Celery's request-info dicts (id, name, args, kwargs,
    type, hostname, time_start, acknowledged, delivery_info, worker_pid); ``scheduled``
    items are ``{"eta", "priority", "request"}``. Mutating methods raise (``KeyError``
    for an unknown task, ``ValueError`` for a bad rate) to have the error replied.
    """

    @property
    def hostname(self) -> str: ...
    @property
    def pool(self) -> str: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def queues(self) -> list[str]: ...
    @property
    def pid(self) -> int: ...
    @property
    def app(self) -> Any: ...

    def active(self) -> list[dict[str, Any]]: ...
    def reserved(self) -> list[dict[str, Any]]: ...
    def scheduled(self) -> list[dict[str, Any]]: ...
    def stats(self) -> dict[str, Any]: ...
    def registered(self) -> list[str]: ...
    def revoked(self) -> list[str]: ...
    def query_task(self, ids: list[str], /) -> dict[str, Any]: ...
    def conf(self) -> dict[str, Any]: ...
    def revoke(self, task_ids: list[str], terminate: bool, signal: str, /) -> None: ...
    def revoke_by_stamps(
        self, headers: Mapping[str, list[Any]], terminate: bool, signal: str, /
    ) -> dict[str, set[Any]]: ...
    def set_rate_limit(self, task: str, rate: str | None, /) -> None: ...
    def set_time_limit(self, task: str, soft: float | None, hard: float | None, /) -> None: ...
    def add_consumer(self, queue: str, /) -> None: ...
    def cancel_consumer(self, queue: str, /) -> None: ...
    def pool_grow(self, n: int, /) -> int: ...
    def pool_shrink(self, n: int, /) -> int: ...
    def shutdown(self) -> None: ...
    def set_events(self, enabled: bool, /) -> None: ...
    def autoscale(self, high: int | None, low: int | None, /) -> tuple[int, int]: ...
    def report(self) -> str: ...


# -- the commands a node answers --------------------------------------------------------

Handler = Callable[[NodeView, dict[str, Any]], Any]


def _ids(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def _revoke(node: NodeView, args: dict[str, Any], *, terminate: bool | None = None) -> Any:
    ids = _ids(args.get("task_id"))
    kill = bool(args.get("terminate")) if terminate is None else terminate
    node.revoke(ids, kill, str(args.get("signal") or "SIGTERM"))
    # Celery's text names the ids as a Python set
    shown = "{" + ", ".join(repr(task_id) for task_id in ids) + "}"
    if kill:
        return {"ok": f"terminate: tasks {shown} flagged as revoked"}
    return {"ok": f"tasks {shown} flagged as revoked"}


def _revoke_by_stamped_headers(node: NodeView, args: dict[str, Any]) -> Any:
    given = args.get("headers") or {}
    if isinstance(given, list):  # Celery's ['name=value', ...] form
        given = dict(item.split("=", 1) for item in given)
    if not isinstance(given, Mapping):
        raise ValueError(f"headers must be a dict of stamp values, got {given!r}")
    headers = {
        str(name): list(value) if isinstance(value, (list, tuple)) else [value]
        for name, value in given.items()
    }
    terminate = bool(args.get("terminate"))
    terminated = node.revoke_by_stamps(headers, terminate, str(args.get("signal") or "SIGTERM"))
    # Celery's replies, the headers shown as given
    if not terminate:
        return {"ok": f"headers {given} flagged as revoked, but not terminated"}
    if not terminated:
        return {"ok": f"headers {given} were not terminated"}
    # Celery's text shows its defaultdict(set) as such
    return {"ok": f"headers {defaultdict(set, terminated)!r} revoked"}


def _rate_limit(node: NodeView, args: dict[str, Any]) -> Any:
    rate = args.get("rate_limit")
    node.set_rate_limit(str(args["task_name"]), str(rate) if rate else None)
    if not rate:
        return {"ok": "rate limit disabled successfully"}
    return {"ok": "new rate limit set successfully"}


def _time_limit(node: NodeView, args: dict[str, Any]) -> Any:
    soft, hard = args.get("soft"), args.get("hard")
    node.set_time_limit(
        str(args["task_name"]),
        float(soft) if soft is not None else None,
        float(hard) if hard is not None else None,
    )
    return {"ok": "time limits set successfully"}


def _add_consumer(node: NodeView, args: dict[str, Any]) -> Any:
    queue = str(args["queue"])
    if queue in node.queues:
        return {"ok": f"already consuming from {queue!r}"}
    node.add_consumer(queue)
    return {"ok": f"add consumer {queue}"}


def _cancel_consumer(node: NodeView, args: dict[str, Any]) -> Any:
    queue = str(args["queue"])
    node.cancel_consumer(queue)
    return {"ok": f"no longer consuming from {queue}"}


def _events(enabled: bool) -> Handler:
    def handle(node: NodeView, args: dict[str, Any]) -> Any:
        node.set_events(enabled)
        return {"ok": f"task events {'enabled' if enabled else 'disabled'}"}

    return handle


def _autoscale(node: NodeView, args: dict[str, Any]) -> Any:
    high, low = args.get("max"), args.get("min")
    found = node.autoscale(
        int(high) if high is not None else None, int(low) if low is not None else None
    )
    return {"ok": f"autoscale now max={found[0]} min={found[1]}"}


def _memsample(node: NodeView, args: dict[str, Any]) -> Any:
    """Celery's ``memsample``: this node's resident memory now, as ``'12.34MB'``."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return f"{usage.ru_maxrss / 1024.0:.2f}MB"


def _unsupported(name: str, why: str) -> Handler:
    def handle(node: NodeView, args: dict[str, Any]) -> Any:
        return {"error": f"{name} is not supported by caraway workers: {why}"}

    return handle


def _hello(node: NodeView, args: dict[str, Any]) -> Any:
    # The mingle handshake Celery workers broadcast at start-up: answer others, not us.
    if args.get("from_node") == node.hostname:
        return None
    return {"revoked": node.revoked()}


#: command -> (kind, handler); kind is "inspect" (reads) or "control" (changes)
COMMANDS: dict[str, tuple[str, Handler]] = {
    "ping": ("inspect", lambda node, args: {"ok": "pong"}),
    "active": ("inspect", lambda node, args: node.active()),
    "reserved": ("inspect", lambda node, args: node.reserved()),
    "scheduled": ("inspect", lambda node, args: node.scheduled()),
    "registered": ("inspect", lambda node, args: node.registered()),
    "stats": ("inspect", lambda node, args: node.stats()),
    "active_queues": ("inspect", lambda node, args: [queue_info(q) for q in node.queues]),
    "revoked": ("inspect", lambda node, args: node.revoked()),
    "query_task": ("inspect", lambda node, args: node.query_task(_ids(args.get("ids")))),
    "conf": ("inspect", lambda node, args: node.conf()),
    "report": ("inspect", lambda node, args: {"ok": node.report()}),
    "clock": ("inspect", lambda node, args: {"clock": 0}),
    "memsample": ("inspect", _memsample),
    "memdump": ("inspect", lambda node, args: f"peak resident memory: {_memsample(node, args)}"),
    "objgraph": (
        "inspect",
        _unsupported("objgraph", "use a profiler attached to the worker process instead"),
    ),
    "hello": ("inspect", _hello),
    "heartbeat": ("control", lambda node, args: None),
    "revoke": ("control", _revoke),
    "revoke_by_stamped_headers": ("control", _revoke_by_stamped_headers),
    "terminate": ("control", lambda node, args: _revoke(node, args, terminate=True)),
    "rate_limit": ("control", _rate_limit),
    "time_limit": ("control", _time_limit),
    "add_consumer": ("control", _add_consumer),
    "cancel_consumer": ("control", _cancel_consumer),
    "pool_grow": ("control", lambda n, a: {"ok": f"pool will grow to {n.pool_grow(_n(a))}"}),
    "pool_shrink": ("control", lambda n, a: {"ok": f"pool will shrink to {n.pool_shrink(_n(a))}"}),
    "autoscale": ("control", _autoscale),
    "election": ("control", lambda node, args: None),
    "pool_restart": (
        "control",
        _unsupported("pool_restart", "restart the worker (or let max-tasks-per-child recycle)"),
    ),
    "enable_events": ("control", _events(True)),
    "disable_events": ("control", _events(False)),
    "shutdown": ("control", lambda node, args: {"ok": "shutting down"}),
}

#: names older Celery clients still send
ALIASES = {
    "dump_active": "active",
    "dump_reserved": "reserved",
    "dump_schedule": "scheduled",
    "dump_tasks": "registered",
    "dump_revoked": "revoked",
    "dump_conf": "conf",
}


def _n(args: dict[str, Any]) -> int:
    """``pool_grow``/``pool_shrink``'s count: a whole number from 1 (anything else is
    replied as an error; the supervisor bounds how far the pool grows)."""
    n = args.get("n") or 1
    if isinstance(n, str) and n.isdigit():
        n = int(n)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a whole number >= 1, got {n!r:.50}")
    return n


# -- the node side ----------------------------------------------------------------------


class ControlServer:
    """Answers broadcasts for one node; the supervisor calls :meth:`poll` from its loop."""

    def __init__(self, app: Any, node: NodeView, *, mailbox: Mailbox | None = None) -> None:
        self.app = app
        self.node = node
        self.hostname = node.hostname
        self.clock = LamportClock()
        if mailbox is None:
            mailbox = open_mailbox(app.broker_url, dict(app.conf.broker_transport_options))
        self.mailbox = mailbox
        self.mailbox.listen(self.hostname)

    def fileno(self) -> int | None:
        """What to wait on for requests (the mailbox's), or None: poll."""
        return self.mailbox.fileno()

    def poll(self) -> int:
        """Handle every pending request without blocking; returns how many were for us."""
        try:
            messages = self.mailbox.receive()
        except CarawayError as exc:
            logger.warning("%s: cannot read remote-control requests: %s", self.hostname, exc)
            return 0
        handled = 0
        for message in messages:
            handled += self.handle(message)
        return handled

    def handle(self, message: Message) -> int:
        """Handle one request message; returns 1 if it was for this node, else 0."""
        try:
            request = decode_request(message)
        except (ProtocolError, ValueError, TypeError) as exc:
            logger.warning(
                "%s: dropped an unreadable remote-control request: %s", self.hostname, exc
            )
            return 0
        self.clock.adjust(request.clock)
        if request.expires is not None and request.expires < time.time():
            logger.debug("%s: dropped expired %r request", self.hostname, request.method)
            return 0
        if not request.is_for(self.hostname):
            return 0
        reply = self.dispatch(request.method, request.arguments)
        if request.ticket and request.reply_to and reply is not None:
            self._reply(request, reply)
        if request.method == "shutdown":
            logger.warning("%s: shutdown requested by remote control", self.hostname)
            self.node.shutdown()
        return 1

    def dispatch(self, method: str, arguments: dict[str, Any]) -> Any:
        """Run one command and return its reply (``{"error": ...}`` when it fails)."""
        entry = COMMANDS.get(ALIASES.get(method, method))
        if entry is None:
            logger.warning("%s: unknown remote-control command %r", self.hostname, method)
            return {"error": f"unknown command {method!r}"}
        try:
            result = entry[1](self.node, arguments)
        except KeyError as exc:
            return {"error": str(exc.args[0]) if exc.args else "missing argument"}
        except Exception as exc:
            logger.warning("%s: remote-control %r failed: %r", self.hostname, method, exc)
            return {"error": repr(exc)}  # Celery's form: ValueError('...')
        if method == "stats" and isinstance(result, dict) and not result.get("clock"):
            result = {**result, "clock": str(self.clock.value)}
        if method == "clock":
            result = {"clock": self.clock.value}
        return result

    def _reply(self, request: Request, reply: Any) -> None:
        assert request.reply_to is not None and request.ticket is not None
        message = encode_reply(
            self.hostname, reply, ticket=request.ticket, clock=self.clock.forward()
        )
        try:
            self.mailbox.reply(
                message,
                exchange=str(request.reply_to.get("exchange") or REPLY_EXCHANGE),
                routing_key=str(request.reply_to.get("routing_key") or ""),
            )
        except CarawayError as exc:
            logger.warning("%s: cannot reply to %r: %s", self.hostname, request.method, exc)

    def close(self) -> None:
        self.mailbox.close()


__all__ = ["ALIASES", "COMMANDS", "ControlServer", "NodeView"]

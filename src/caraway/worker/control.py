"""Remote control: the node's ControlServer and the client's Control/Inspect (``app.control``).

Requests and replies are Celery's pidbox documents (:mod:`caraway.protocol.pidbox`) carried
by a :class:`~caraway.brokers.contracts.Mailbox`, so Celery's tools and ours see each other.
The one thing to know: :meth:`ControlServer.poll` never blocks, because the supervisor
calls it from its single-threaded loop; a failing command becomes an ``{"error": ...}``
reply, never an exception in that loop.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from caraway.brokers import open_mailbox
from caraway.brokers.contracts import REPLY_EXCHANGE, Mailbox, Revocations
from caraway.exceptions import CarawayError, ProtocolError
from caraway.protocol.events import LamportClock
from caraway.protocol.message import Message
from caraway.protocol.pidbox import (
    Request,
    decode_request,
    encode_reply,
    encode_request,
    queue_info,
)
from caraway.protocol.serializers import loads_json

#: how long a revoked id is kept on the broker (Celery keeps revokes for 3 hours)
REVOKE_EXPIRES = 10800.0

logger = logging.getLogger("caraway.worker.control")

#: Celery's default broadcast expiry: a node drops a request older than this
DEFAULT_EXPIRES = 10.0


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
    def set_rate_limit(self, task: str, rate: str | None, /) -> None: ...
    def set_time_limit(self, task: str, soft: float | None, hard: float | None, /) -> None: ...
    def add_consumer(self, queue: str, /) -> None: ...
    def cancel_consumer(self, queue: str, /) -> None: ...
    def pool_grow(self, n: int, /) -> int: ...
    def pool_shrink(self, n: int, /) -> int: ...
    def shutdown(self) -> None: ...
    def set_events(self, enabled: bool, /) -> None: ...


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
    if kill:
        return {"ok": f"terminate: tasks {', '.join(ids)} flagged as revoked"}
    return {"ok": f"tasks {', '.join(ids)} flagged as revoked"}


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
    "hello": ("inspect", _hello),
    "heartbeat": ("control", lambda node, args: None),
    "revoke": ("control", _revoke),
    "terminate": ("control", lambda node, args: _revoke(node, args, terminate=True)),
    "rate_limit": ("control", _rate_limit),
    "time_limit": ("control", _time_limit),
    "add_consumer": ("control", _add_consumer),
    "cancel_consumer": ("control", _cancel_consumer),
    "pool_grow": ("control", lambda n, a: {"ok": f"pool will grow to {n.pool_grow(_n(a))}"}),
    "pool_shrink": ("control", lambda n, a: {"ok": f"pool will shrink to {n.pool_shrink(_n(a))}"}),
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
    return int(args.get("n") or 1)


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
            return {"error": f"{type(exc).__name__}: {exc}"}
        if method == "stats" and isinstance(result, dict) and not result.get("clock"):
            result = {**result, "clock": str(self.clock.value)}
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


# -- the client side --------------------------------------------------------------------


class Control:
    """``app.control``: broadcast commands to worker nodes and collect their replies.

    Methods mirror Celery's ``app.control``; with ``reply=True`` they return a list of
    ``{hostname: reply}`` dicts (empty when nobody answered within ``timeout``).
    """

    def __init__(self, app: Any, *, mailbox: Mailbox | None = None) -> None:
        self.app = app
        self._mailbox = mailbox
        self._lock = threading.Lock()
        self.clock = LamportClock()
        self.oid = str(uuid.uuid4())

    @property
    def mailbox(self) -> Mailbox:
        if self._mailbox is None:
            options = dict(self.app.conf.broker_transport_options)
            self._mailbox = open_mailbox(self.app.broker_url, options)
        return self._mailbox

    def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: Sequence[str] | None = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> list[dict[str, Any]] | None:
        """Send ``command`` to the nodes in ``destination`` (default: all).

        Waits up to ``timeout`` s for replies when ``reply``, stopping early after
        ``limit`` replies (or one per destination). Raises BrokerError if the broker fails.
        """
        if destination is not None and isinstance(destination, str):
            destination = [destination]
        if reply and limit is None and destination:
            limit = len(destination)
        request = Request(
            method=command,
            arguments=dict(arguments or {}),
            destination=list(destination) if destination else None,
            pattern=pattern,
            matcher=matcher,
            ticket=str(uuid.uuid4()) if reply else None,
            reply_to={"exchange": REPLY_EXCHANGE, "routing_key": self.oid} if reply else None,
            expires=time.time() + max(timeout, DEFAULT_EXPIRES),
            clock=self.clock.forward(),
        )
        with self._lock:
            mailbox = self.mailbox
            if not reply:
                mailbox.publish(encode_request(request))
                return None
            mailbox.open_replies(self.oid)
            try:
                mailbox.publish(encode_request(request))
                return self._collect(mailbox, str(request.ticket), timeout, limit)
            finally:
                mailbox.close_replies(self.oid)

    def _collect(
        self, mailbox: Mailbox, ticket: str, timeout: float, limit: int | None
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        replies: list[dict[str, Any]] = []
        while limit is None or len(replies) < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            message = mailbox.next_reply(self.oid, left)
            if message is None:
                break
            if message.headers.get("ticket") != ticket:
                continue  # a late answer to an earlier request
            self.clock.adjust(int(message.headers.get("clock") or 0))
            body = loads_json(message.body)
            if isinstance(body, dict):
                replies.append(body)
        return replies

    def inspect(
        self,
        destination: Sequence[str] | None = None,
        timeout: float = 1.0,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> Inspect:
        return Inspect(self, destination, timeout, limit, pattern, matcher)

    def ping(
        self, destination: Sequence[str] | None = None, timeout: float = 1.0
    ) -> list[dict[str, Any]]:
        return self.broadcast("ping", destination=destination, reply=True, timeout=timeout) or []

    def revoke(
        self,
        task_id: str | Sequence[str],
        destination: Sequence[str] | None = None,
        terminate: bool = False,
        signal: str = "SIGTERM",
        **kwargs: Any,
    ) -> list[dict[str, Any]] | None:
        """Tell nodes not to run ``task_id`` (and kill it if running when ``terminate``)."""
        ids = task_id if isinstance(task_id, str) else list(task_id)
        self._record_revoked([ids] if isinstance(ids, str) else ids)
        arguments = {"task_id": ids, "terminate": terminate, "signal": signal}
        return self.broadcast("revoke", arguments, destination, **kwargs)

    def _record_revoked(self, ids: list[str]) -> None:
        """Also keep the ids on the broker, for nodes that start (or promote a parked
        countdown) later; the broadcast only reaches nodes connected now."""
        admin = self.app.admin()
        try:
            if isinstance(admin, Revocations):
                admin.record_revoked(ids, expires=REVOKE_EXPIRES)
        except Exception as exc:
            logger.warning("could not record revoked ids on the broker: %s", exc)
        finally:
            admin.close()

    def terminate(
        self,
        task_id: str | Sequence[str],
        destination: Sequence[str] | None = None,
        signal: str = "SIGTERM",
        **kwargs: Any,
    ) -> list[dict[str, Any]] | None:
        return self.revoke(task_id, destination, terminate=True, signal=signal, **kwargs)

    def rate_limit(
        self,
        task_name: str,
        rate_limit: str | int | float | None,
        destination: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]] | None:
        arguments = {"task_name": task_name, "rate_limit": rate_limit}
        return self.broadcast("rate_limit", arguments, destination, **kwargs)

    def time_limit(
        self,
        task_name: str,
        soft: float | None = None,
        hard: float | None = None,
        destination: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]] | None:
        arguments = {"task_name": task_name, "soft": soft, "hard": hard}
        return self.broadcast("time_limit", arguments, destination, **kwargs)

    def add_consumer(
        self,
        queue: str,
        exchange: str | None = None,
        exchange_type: str = "direct",
        routing_key: str | None = None,
        options: dict[str, Any] | None = None,
        destination: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]] | None:
        arguments = {
            "queue": queue,
            "exchange": exchange,
            "exchange_type": exchange_type,
            "routing_key": routing_key,
            **(options or {}),
        }
        return self.broadcast("add_consumer", arguments, destination, **kwargs)

    def cancel_consumer(
        self, queue: str, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> list[dict[str, Any]] | None:
        return self.broadcast("cancel_consumer", {"queue": queue}, destination, **kwargs)

    def pool_grow(
        self, n: int = 1, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> list[dict[str, Any]] | None:
        return self.broadcast("pool_grow", {"n": n}, destination, **kwargs)

    def pool_shrink(
        self, n: int = 1, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> list[dict[str, Any]] | None:
        return self.broadcast("pool_shrink", {"n": n}, destination, **kwargs)

    def shutdown(
        self, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> list[dict[str, Any]] | None:
        return self.broadcast("shutdown", None, destination, **kwargs)

    def enable_events(
        self, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> list[dict[str, Any]] | None:
        return self.broadcast("enable_events", None, destination, **kwargs)

    def disable_events(
        self, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> list[dict[str, Any]] | None:
        return self.broadcast("disable_events", None, destination, **kwargs)

    def purge(self, queues: Sequence[str] | None = None) -> int:
        """Delete every waiting message on ``queues`` (default: the app's default queue)."""
        names = list(queues or [self.app.conf.task_default_queue])
        admin = self.app.admin()
        try:
            return sum(admin.purge(name) for name in names)
        finally:
            admin.close()

    def close(self) -> None:
        with self._lock:
            if self._mailbox is not None:
                self._mailbox.close()
                self._mailbox = None


class Inspect:
    """``app.control.inspect()``: ask nodes about themselves.

    Each method returns ``{hostname: reply}`` merged over the nodes that answered, or
    None when none did (as Celery does).
    """

    def __init__(
        self,
        control: Control,
        destination: Sequence[str] | None = None,
        timeout: float = 1.0,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout
        self.limit = limit
        self.pattern = pattern
        self.matcher = matcher

    def _request(self, command: str, **arguments: Any) -> dict[str, Any] | None:
        replies = self.control.broadcast(
            command,
            arguments,
            self.destination,
            reply=True,
            timeout=self.timeout,
            limit=self.limit,
            pattern=self.pattern,
            matcher=self.matcher,
        )
        merged: dict[str, Any] = {}
        for reply in replies or ():
            merged.update(reply)
        return merged or None

    def ping(self) -> dict[str, Any] | None:
        return self._request("ping")

    def active(self, safe: bool | None = None) -> dict[str, Any] | None:
        return self._request("active", safe=safe)

    def reserved(self, safe: bool | None = None) -> dict[str, Any] | None:
        return self._request("reserved", safe=safe)

    def scheduled(self, safe: bool | None = None) -> dict[str, Any] | None:
        return self._request("scheduled", safe=safe)

    def registered(self, *taskinfoitems: str) -> dict[str, Any] | None:
        return self._request("registered", taskinfoitems=list(taskinfoitems))

    def stats(self) -> dict[str, Any] | None:
        return self._request("stats")

    def active_queues(self) -> dict[str, Any] | None:
        return self._request("active_queues")

    def revoked(self) -> dict[str, Any] | None:
        return self._request("revoked")

    def query_task(self, *ids: str | Sequence[str]) -> dict[str, Any] | None:
        flat: list[str] = []
        for item in ids:
            flat.extend([item] if isinstance(item, str) else item)
        return self._request("query_task", ids=flat)

    def conf(self, with_defaults: bool = False) -> dict[str, Any] | None:
        return self._request("conf", with_defaults=with_defaults)


__all__ = [
    "ALIASES",
    "COMMANDS",
    "Control",
    "ControlServer",
    "Inspect",
    "NodeView",
    "Request",
    "decode_request",
    "encode_request",
]

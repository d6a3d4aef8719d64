"""Remote control, the client's side: ``app.control`` and ``app.control.inspect()``.

Broadcasts Celery's pidbox requests (:mod:`caraway.protocol.pidbox`) through the broker's
:class:`~caraway.brokers.contracts.Mailbox` and collects the nodes' replies, so our tools
and Celery's workers see each other. The nodes' side is ``caraway.worker.control``; this
module never imports the worker. Replies arrive on this client's own reply queue, named by
``Control.oid``; a reply whose ticket is not the request's is a late one and is skipped.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from caraway.brokers.contracts import REPLY_EXCHANGE, Mailbox, Revocations
from caraway.brokers.registry import open_mailbox
from caraway.protocol.events import LamportClock
from caraway.protocol.pidbox import Request, encode_request
from caraway.protocol.serializers import loads_json
from caraway.taskbase import AppLike

logger = logging.getLogger("caraway.control")

#: how long a revoked id is kept on the broker (Celery keeps revokes for 3 hours)
REVOKE_EXPIRES = 10800.0

#: Celery's default broadcast expiry: a node drops a request older than this
DEFAULT_EXPIRES = 10.0


class Control:
    """``app.control``: broadcast commands to worker nodes and collect their replies.

    Methods mirror Celery's ``app.control``; with ``reply=True`` they return a list of
    ``{hostname: reply}`` dicts (empty when nobody answered within ``timeout``).
    """

    def __init__(self, app: AppLike, *, mailbox: Mailbox | None = None) -> None:
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

    def revoke_by_stamped_headers(
        self,
        headers: Mapping[str, Any] | Sequence[str],
        destination: Sequence[str] | None = None,
        terminate: bool = False,
        signal: str = "SIGTERM",
        **kwargs: Any,
    ) -> list[dict[str, Any]] | None:
        """Tell nodes not to run tasks whose stamps match ``headers`` (``{name: value or
        [values]}``, or Celery's ``['name=value']``), and with ``terminate`` to stop the
        running ones. Nodes keep these in memory only: one started later does not know
        them (as Celery's)."""
        arguments = {"headers": headers, "terminate": terminate, "signal": signal}
        return self.broadcast("revoke_by_stamped_headers", arguments, destination, **kwargs)

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


__all__ = ["Control", "Inspect"]

"""The remote-control seam: a broadcast mailbox every worker node reads, and reply queues.

A Mailbox moves pidbox :class:`Message` objects (docs/protocol.md §6); it never reads the
command. Broadcasts reach only nodes listening at that moment (Celery's rule on every
broker); a reply goes to the queue bound to ``(exchange, routing_key)`` from the request's
``reply_to``. :meth:`Mailbox.receive` must never block: a worker polls it from its main loop.
"""

from __future__ import annotations

import abc
from typing import Any

from caraway.exceptions import ImproperlyConfigured
from caraway.protocol.message import Message
from caraway.transports import resolve

#: the fanout exchange requests are broadcast on, and the direct exchange replies go to
PIDBOX_EXCHANGE = "celery.pidbox"
REPLY_EXCHANGE = "reply.celery.pidbox"

#: scheme -> "module:Class"
MAILBOX_ALIASES: dict[str, str] = {
    "memory": "caraway.transports.mailbox_memory:MemoryMailbox",
    "sqlite": "caraway.transports.mailbox_sqlite:SQLiteMailbox",
    "redis": "caraway.transports.mailbox_redis:RedisMailbox",
    "rediss": "caraway.transports.mailbox_redis:RedisMailbox",
    "redis+socket": "caraway.transports.mailbox_redis:RedisMailbox",
    "sentinel": "caraway.transports.mailbox_redis:RedisMailbox",
    "amqp": "caraway.transports.mailbox_amqp:AMQPMailbox",
    "pyamqp": "caraway.transports.mailbox_amqp:AMQPMailbox",
    "amqps": "caraway.transports.mailbox_amqp:AMQPMailbox",
}


def node_queue(hostname: str) -> str:
    """The name of a node's own mailbox queue (``w1@host.celery.pidbox``)."""
    return f"{hostname}.{PIDBOX_EXCHANGE}"


def reply_queue(oid: str) -> str:
    """The name of a client's reply queue (``<oid>.reply.celery.pidbox``)."""
    return f"{oid}.{REPLY_EXCHANGE}"


class Mailbox(abc.ABC):
    """One connection's view of the pidbox: a node side and a client side.

    A node calls :meth:`listen` once, then :meth:`receive` and :meth:`reply`; a client
    calls :meth:`open_replies`, :meth:`publish`, :meth:`next_reply` until its deadline,
    then :meth:`close_replies`. One object is used by one thread at a time.
    """

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.options = dict(options or {})

    # -- node side ---------------------------------------------------------------------
    @abc.abstractmethod
    def listen(self, hostname: str) -> None:
        """Start receiving broadcasts as node ``hostname``."""

    @abc.abstractmethod
    def receive(self) -> list[Message]:
        """The broadcasts that arrived since the last call; returns at once."""

    @abc.abstractmethod
    def reply(self, message: Message, *, exchange: str, routing_key: str) -> None:
        """Send ``message`` to the reply queue bound to ``exchange`` with ``routing_key``.

        A reply whose queue is gone (the client stopped waiting) is dropped.
        """

    # -- client side -------------------------------------------------------------------
    @abc.abstractmethod
    def publish(self, message: Message) -> None:
        """Broadcast ``message`` to every node listening now."""

    @abc.abstractmethod
    def open_replies(self, oid: str) -> None:
        """Make the reply queue for ``oid`` exist before a request names it."""

    @abc.abstractmethod
    def next_reply(self, oid: str, timeout: float) -> Message | None:
        """The next reply for ``oid``, waiting up to ``timeout`` s; None on timeout."""

    def close_replies(self, oid: str) -> None:  # noqa: B027 - optional clean-up
        """Forget ``oid``'s reply queue; replies arriving later are dropped."""

    def close(self) -> None:  # noqa: B027 - nothing to close for some mailboxes
        """Stop listening and release the connection."""


def open_mailbox(url: str, options: dict[str, Any] | None = None) -> Mailbox:
    """Open the mailbox for broker ``url`` (same schemes as the broker).

    Raises ImproperlyConfigured for an unknown scheme or a missing client library.
    """
    cls = resolve(url, MAILBOX_ALIASES, group="caraway.mailboxes", kind="mailbox")
    if not (isinstance(cls, type) and issubclass(cls, Mailbox)):
        raise ImproperlyConfigured(f"{cls!r} for {url!r} is not a Mailbox subclass")
    return cls(url, options=options)

"""``rpc://`` results over any broker: each result document travels as a message to the
calling client's reply queue, through that broker's own transport.

Celery's rpc backend works over any kombu transport: the worker publishes the state
document to the default exchange with routing key = the client's oid (the task's
``reply_to``) and ``correlation_id`` = the task id; on Redis that is a list named by the oid,
in kombu's envelope, which is what this backend writes and reads. RabbitMQ keeps its
dedicated backend (``amqp/backend.py``: a consumer on the reply queue). Only the caller can
read a result, and a result read is gone from the broker (this object keeps the last one).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from caraway.brokers.contracts import Backend, Transport
from caraway.brokers.registry import open_transport
from caraway.exceptions import BackendError
from caraway.protocol.message import Message
from caraway.protocol.results import decode_document
from caraway.states import READY_STATES

#: longest single blocking fetch, so a deadline is noticed promptly
_POLL = 1.0


class ReplyBackend(Backend):
    """Results sent back to the caller's reply queue on the broker in use; no groups,
    no chords (as Celery's rpc backend).

    ``options``: ``broker_url`` (required), ``reply_to`` (this client's oid), ``persistent``
    (``result_persistent``), and the broker's transport options.
    """

    shared = False

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        broker = self.options.pop("broker_url", None)
        if not broker:
            raise BackendError("the rpc:// result backend needs options['broker_url']")
        self.reply_to: str | None = self.options.pop("reply_to", None)
        self.persistent = bool(self.options.pop("persistent", False))
        self.options.pop("expires", None)
        self._broker = str(broker)
        self._transport: Transport | None = None
        self._lock = threading.RLock()
        self._results: dict[str, bytes] = {}
        self._owner = f"rpc/{os.getpid()}/{id(self):x}"

    def _open(self) -> Transport:
        if self._transport is None:
            self._transport = open_transport(self._broker, options=dict(self.options))
        return self._transport

    # -- writing (the worker side) ----------------------------------------------------
    def store(
        self,
        task_id: str,
        document: bytes,
        *,
        state: str,
        expires: float | None,
        reply_to: str | None = None,
    ) -> bool:
        """Send ``document`` to the caller's reply queue; False (nothing sent) without
        ``reply_to``, since nobody could read it."""
        if not reply_to:
            return False
        message = Message(
            body=document,
            headers={},
            properties={
                "correlation_id": task_id,
                "delivery_mode": 2 if self.persistent else 1,
            },
        )
        with self._lock:
            self._open().publish(message, queue=reply_to)
        return True

    # -- reading (the caller side) ----------------------------------------------------
    def _queue(self) -> str:
        if self.reply_to is None:
            raise BackendError(
                "this rpc:// backend has no reply queue (options['reply_to'] = the client's "
                "oid); only the process that sent a task can read its result"
            )
        return self.reply_to

    def _drain(self, timeout: float) -> None:
        transport = self._open()
        deliveries = transport.fetch([self._queue()], limit=100, timeout=timeout, owner=self._owner)
        for delivery in deliveries:
            self._keep(delivery.message)
        if deliveries:
            transport.ack_many(deliveries)

    def _keep(self, message: Message) -> None:
        task_id = message.properties.get("correlation_id")
        if not isinstance(task_id, str):
            return
        previous = self._results.get(task_id)
        if previous is not None and _final(previous) and not _final(message.body):
            return  # a late STARTED must not hide the outcome
        self._results[task_id] = message.body

    def load(self, task_id: str) -> bytes | None:
        with self._lock:
            self._drain(0.0)
            return self._results.get(task_id)

    def wait(
        self,
        task_id: str,
        *,
        until: Callable[[bytes], bool],
        timeout: float | None,
    ) -> bytes | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                document = self._results.get(task_id)
                if document is not None and until(document):
                    return document
                left = _POLL if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    return None
                self._drain(min(left, _POLL))

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._results.pop(task_id, None)

    def close(self) -> None:
        with self._lock:
            transport, self._transport = self._transport, None
            if transport is not None:
                transport.close()


def _final(document: bytes) -> bool:
    try:
        return decode_document(document).get("status") in READY_STATES
    except Exception:  # an unreadable document has no state; the reader reports it
        return False

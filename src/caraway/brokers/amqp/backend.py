"""``rpc://`` result backend: results travel as AMQP messages to the caller's reply queue.

As Celery's rpc backend (protocol.md s4.7): the reply queue is named by the client's oid
(``app.thread_oid``, the ``reply_to`` of every task it sends), durable, auto-delete,
``x-expires`` = result_expires; the worker publishes each state document to ``""`` with
routing key = reply_to and correlation_id = task id. Only that caller can read a result,
and a result read is gone from the broker (this object keeps the last one per task).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import amqp

from caraway.brokers.contracts import Backend
from caraway.clients.amqp import CHANNEL_ERRORS, CONNECTION_ERRORS, collect, connect, parse_amqp_url
from caraway.exceptions import BackendError, BrokerConnectionError, ImproperlyConfigured
from caraway.protocol.results import decode_document
from caraway.states import READY_STATES

logger = logging.getLogger("caraway.brokers.amqp.backend")

_DEFAULT_BROKER = "amqp://guest:guest@localhost:5672//"


class RPCBackend(Backend):
    """Results sent back to the caller (``rpc://``); no groups, no chords.

    ``options``: ``broker_url`` (the AMQP broker; default localhost), ``reply_to`` (this
    client's oid: the queue it reads), ``expires`` (seconds, Celery's result_expires, 1 day;
    must match what other declarations of the queue used), ``persistent``
    (``result_persistent``: delivery mode 2), plus the AMQP options of the transport.
    """

    shared = False

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        broker = str(self.options.get("broker_url") or _DEFAULT_BROKER).split(";")[0]
        if not broker.startswith(("amqp://", "pyamqp://", "amqps://")):
            raise ImproperlyConfigured(
                f"the rpc:// result backend needs an AMQP broker, not {broker.split('://')[0]}"
                "://; use redis:// or sqlite:// as result backend with this broker"
            )
        self.params = parse_amqp_url(broker, self.options)
        self.reply_to: str | None = self.options.get("reply_to")
        self.expires = float(self.options.get("expires") or 86400)
        self.persistent = bool(self.options.get("persistent", False))
        self._lock = threading.RLock()
        self._conn: Any = None
        self._channel: Any = None
        self._declared = False
        self._consumer: str | None = None
        self._results: dict[str, bytes] = {}

    # -- connection -------------------------------------------------------------------
    def _open(self) -> Any:
        if self._channel is not None:
            return self._channel
        # nothing services heartbeats here (heartbeat 0); a dead socket is reopened
        conn = connect(self.params)
        try:
            channel = conn.channel()
            channel.auto_decode = False
            channel.confirm_select()
        except BaseException:
            collect(conn)  # a half-opened connection still holds a socket
            raise
        self._conn, self._channel = conn, channel
        self._declared, self._consumer = False, None
        return channel

    def _reset(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            collect(conn)  # the socket is already gone; nothing else is left to free

    def _call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        with self._lock:
            for attempt in range(3):
                try:
                    return fn(self._open())
                except CONNECTION_ERRORS as exc:
                    self._reset()
                    if attempt == 2:
                        raise BrokerConnectionError(
                            f"rpc:// backend: RabbitMQ at {self.params.redacted()} "
                            f"unreachable during {what}: {exc!r}"
                        ) from exc
                    time.sleep(0.2 * 2**attempt)
                except CHANNEL_ERRORS as exc:
                    self._reset()
                    raise BackendError(f"rpc:// {what} failed: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _declare(self, channel: Any) -> str:
        if self.reply_to is None:
            raise BackendError(
                "this rpc:// backend has no reply queue (options['reply_to'] = the client's "
                "oid); only the process that sent a task can read its result"
            )
        if not self._declared:
            channel.queue_declare(
                self.reply_to,
                durable=True,
                exclusive=False,
                auto_delete=True,
                arguments={"x-expires": int(self.expires * 1000)},
            )
            self._declared = True
        return self.reply_to

    # -- writing (the worker side) ----------------------------------------------------
    def on_task_call(self, task_id: str) -> None:
        """Declare the reply queue before a task is sent, so no result can miss it."""
        self._call("declare", self._declare)

    def store(
        self,
        task_id: str,
        document: bytes,
        *,
        state: str,
        expires: float | None,
        reply_to: str | None = None,
    ) -> bool:
        """Send ``document`` to the caller's reply queue ``reply_to`` (the task's property).

        Returns False without sending when there is no ``reply_to``: nobody could read it.
        The reply queue is the caller's; a final state sent twice reaches it twice, and
        the reader keeps the first final one.
        """
        if not reply_to:
            logger.warning("rpc:// result of task %s not sent: the task has no reply_to", task_id)
            return False
        message = amqp.Message(
            body=document,
            content_type="application/json",
            content_encoding="utf-8",
            application_headers={},
            delivery_mode=2 if self.persistent else 1,
            priority=0,
            correlation_id=task_id,
        )

        def send(channel: Any) -> None:
            channel.basic_publish_confirm(message, exchange="", routing_key=reply_to)

        self._call("store", send)
        return True

    # -- reading (the caller side) ----------------------------------------------------
    def _keep(self, raw: Any) -> None:
        task_id = raw.properties.get("correlation_id")
        if not isinstance(task_id, str):
            return
        body = raw.body if isinstance(raw.body, bytes) else str(raw.body).encode()
        previous = self._results.get(task_id)
        if (
            previous is not None
            and _state(previous) in READY_STATES
            and _state(body) not in READY_STATES
        ):
            return  # a late STARTED must not hide the outcome
        self._results[task_id] = body

    def _drain_now(self, channel: Any) -> None:
        queue = self._declare(channel)
        while True:
            raw = channel.basic_get(queue, no_ack=True)
            if raw is None:
                return
            self._keep(raw)

    def load(self, task_id: str) -> bytes | None:
        with self._lock:
            if self._consumer is None:
                self._call("load", self._drain_now)
            else:
                self._call("load", lambda channel: _drain(self._conn, 0))
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
                document = self.load(task_id)
                if document is not None and until(document):
                    return document
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._call("wait", partial(self._wait_once, timeout=min(remaining, 1.0)))

    def _wait_once(self, channel: Any, timeout: float) -> None:
        if self._consumer is None:
            queue = self._declare(channel)
            self._consumer = channel.basic_consume(queue, callback=self._keep, no_ack=True)
        _drain(self._conn, timeout)

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._results.pop(task_id, None)

    def close(self) -> None:
        with self._lock:
            conn, self._conn, self._channel = self._conn, None, None
            if conn is not None:
                try:
                    conn.close()
                except Exception as exc:  # the broker may be gone already
                    logger.debug("closing rpc:// connection: %r", exc)


def _drain(conn: Any, timeout: float) -> None:
    try:
        conn.drain_events(timeout=timeout)
    except TimeoutError:
        return
    while True:  # take whatever else is already here without waiting
        try:
            conn.drain_events(timeout=0)
        except TimeoutError:
            return


def _state(document: bytes) -> str:
    try:
        return str(decode_document(document).get("status"))
    except Exception:  # an unreadable document has no state; the reader reports it
        return ""

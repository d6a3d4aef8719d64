"""PostgreSQL notifications for waiters: one LISTEN connection per process and database,
read by a daemon thread that wakes the threads waiting for a channel (and payload).

Owns the LISTEN connection, its reconnects and the fan-out to :class:`Subscription`\\ s; it
sends nothing (NOTIFY travels with the writes, in the plug-ins' statements). The one thing
to know: a subscription exists on the server before :meth:`Listener.subscribe` returns, so
a waiter that subscribes, then reads, then waits can never sleep through a write; after a
reconnect every subscription is woken once, since notifications may have been missed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Iterable
from typing import Any

from sqlalchemy.engine import Engine

from caraway.exceptions import BrokerConnectionError, ImproperlyConfigured

logger = logging.getLogger("caraway.clients.sql_listen")

#: how long a subscriber waits for the listener's LISTEN to reach the server
_LISTEN_TIMEOUT = 10.0
#: pause before reconnecting a lost LISTEN connection (doubled up to 2 s)
_RECONNECT_PAUSE = 0.1


class Subscription:
    """A waiter's interest in some notifications; :meth:`wait` returns once one arrived.

    Clear it (:meth:`clear`) before reading what it guards, then wait: a notification
    arriving in between is kept.
    """

    def __init__(self, listener: Listener, channel: str, payloads: tuple[str, ...] | None) -> None:
        self.listener = listener
        self.channel = channel
        self.payloads = payloads
        self._event = threading.Event()

    def clear(self) -> None:
        self._event.clear()

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """True when a notification arrived (since the last :meth:`clear`) within ``timeout``."""
        return self._event.wait(max(timeout, 0.0))

    def close(self) -> None:
        self.listener.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Listener:
    """LISTEN on one PostgreSQL database for this process (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        kwargs.pop("context", None)  # SQLAlchemy's adapters; a plain connection needs none
        self._connect_args = (list(args), dict(kwargs))
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        #: channel -> payload (None = every payload) -> subscriptions
        self._subs: dict[str, dict[str | None, set[Subscription]]] = {}
        self._listening: set[str] = set()
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._stopped = False

    # -- waiters' side -------------------------------------------------------------------

    def subscribe(self, channel: str, payloads: Iterable[str] | None = None) -> Subscription:
        """Wake on NOTIFY ``channel`` (with one of ``payloads``, or any payload for None).

        Blocks until the server listens on ``channel``; raises BrokerConnectionError when
        the listener cannot reach the database within 10 s.
        """
        sub = Subscription(self, channel, None if payloads is None else tuple(payloads))
        keys: Iterable[str | None] = [None] if sub.payloads is None else sub.payloads
        with self._lock:
            by_payload = self._subs.setdefault(channel, {})
            for key in keys:
                by_payload.setdefault(key, set()).add(sub)
            if channel not in self._listening:
                self._start()
                self._wake()
                if not self._changed.wait_for(
                    lambda: channel in self._listening, timeout=_LISTEN_TIMEOUT
                ):
                    self._remove(sub)
                    raise BrokerConnectionError(
                        f"could not LISTEN on {channel!r} within 10 s: the database is "
                        "unreachable (the listener keeps trying)"
                    )
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._remove(sub)

    def _remove(self, sub: Subscription) -> None:
        by_payload = self._subs.get(sub.channel, {})
        keys: Iterable[str | None] = [None] if sub.payloads is None else sub.payloads
        for key in keys:
            subs = by_payload.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del by_payload[key]

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="caraway-sql-listener", daemon=True
            )
            self._thread.start()

    def _wake(self) -> None:
        # a full pipe already wakes the thread
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    # -- the listener thread ---------------------------------------------------------------

    def _run(self) -> None:
        pause = _RECONNECT_PAUSE
        while not self._stopped:
            try:
                self._serve()
            except Exception as exc:  # a lost connection: reconnect, wake everyone
                logger.warning("LISTEN connection lost (%s); reconnecting", exc)
                with self._lock:
                    self._listening.clear()
                    everyone = [
                        sub
                        for subs in self._subs.values()
                        for each in subs.values()
                        for sub in each
                    ]
                for sub in everyone:
                    sub.set()
                threading.Event().wait(pause)
                pause = min(pause * 2, 2.0)
            else:
                return

    def _serve(self) -> None:
        import psycopg  # noqa: PLC0415 - optional: the [postgres] extra

        args, kwargs = self._connect_args
        conn = psycopg.connect(*args, **kwargs, autocommit=True)
        conn.add_notify_handler(lambda n: self._dispatch(n.channel, n.payload))
        try:
            while not self._stopped:
                self._listen_new(conn)
                ready, _, _ = select.select([conn.fileno(), self._wake_r], [], [], 30.0)
                if self._wake_r in ready:
                    self._drain_wake()
                if conn.fileno() in ready or not ready:
                    # idle 30 s: a round trip proves the connection is still there
                    self._read(conn, probe=not ready)
        finally:
            conn.close()

    def _listen_new(self, conn: Any) -> None:
        with self._lock:
            wanted = [ch for ch in self._subs if ch not in self._listening]
        for channel in wanted:
            conn.execute(f'LISTEN "{channel}"')
        if wanted:
            with self._lock:
                self._listening.update(wanted)
                self._changed.notify_all()

    def _read(self, conn: Any, *, probe: bool) -> None:
        if probe:
            conn.execute("SELECT 1")
            return
        pgconn = conn.pgconn
        pgconn.consume_input()
        if pgconn.status != 0:  # CONNECTION_OK
            raise ConnectionError("the LISTEN connection is closed")
        while (notify := pgconn.notifies()) is not None:
            self._dispatch(notify.relname.decode(), notify.extra.decode())

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def _dispatch(self, channel: str, payload: str) -> None:
        with self._lock:
            by_payload = self._subs.get(channel)
            if not by_payload:
                return
            found = list(by_payload.get(payload, ())) + list(by_payload.get(None, ()))
        for sub in found:
            sub.set()

    def stop(self) -> None:
        """End the thread and close its connection (waiting up to 5 s); for shutdown."""
        self._stopped = True
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Listeners:
    """This process's listeners, one per database URL."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # a thread does not survive fork(): the child starts its own listener on first use
        self.lock = threading.Lock()
        self.by_url: dict[str, Listener] = {}


_LISTENERS = _Listeners()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_LISTENERS.reset)


def listener_for(engine: Engine) -> Listener:
    """This process's listener on ``engine``'s database (PostgreSQL with psycopg 3 only)."""
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        raise ImproperlyConfigured(
            f"notifications need PostgreSQL through psycopg 3, not "
            f"{engine.dialect.name}+{engine.dialect.driver}; write 'postgresql+psycopg://...'"
        )
    key = engine.url.render_as_string(hide_password=False)
    with _LISTENERS.lock:
        listener = _LISTENERS.by_url.get(key)
        if listener is None:
            listener = _LISTENERS.by_url[key] = Listener(engine)
        return listener


def stop_listeners() -> None:
    """Stop this process's listener threads and close their connections (tests, shutdown);
    the next subscription starts a new one."""
    with _LISTENERS.lock:
        listeners, _LISTENERS.by_url = list(_LISTENERS.by_url.values()), {}
    for listener in listeners:
        listener.stop()

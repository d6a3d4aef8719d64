"""``app.events``: Celery's monitoring entry points (``Receiver``, ``State``, ``Dispatcher``).

A custom monitor written for Celery runs unchanged: ``with app.connection() as conn:
app.events.Receiver(conn, handlers={...}).capture()``. The connection only names the broker;
the receiver and dispatcher open the event bus of the app's broker themselves.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from caraway.events.dispatcher import EventDispatcher
from caraway.events.receiver import EventReceiver, Handler
from caraway.events.state import State
from caraway.taskbase import AppLike


class Events:
    """What ``app.events`` is: factories bound to the app, with Celery's signatures."""

    def __init__(self, app: AppLike) -> None:
        self.app = app

    def Receiver(
        self,
        connection: Any = None,
        handlers: Mapping[str, Handler] | None = None,
        routing_key: str = "#",
        node_id: str | None = None,
        app: AppLike | None = None,
        **options: Any,
    ) -> EventReceiver:
        """An event receiver; ``handlers`` maps an event type (or '*') to a callable.

        ``options`` (Celery's queue_prefix, queue_ttl, accept...) follow the app's event
        settings instead.
        """
        return EventReceiver(app or self.app, handlers, binding=routing_key)

    def State(self, *args: Any, **kwargs: Any) -> State:
        """A fresh cluster state to feed with ``state.event(event)``."""
        return State(*args, **kwargs)

    def Dispatcher(
        self,
        connection: Any = None,
        hostname: str | None = None,
        enabled: bool = True,
        **options: Any,
    ) -> EventDispatcher:
        """An event sender (the caller closes it)."""
        return EventDispatcher(self.app, hostname, enabled)

    @contextmanager
    def default_dispatcher(
        self, hostname: str | None = None, enabled: bool = True, **options: Any
    ) -> Iterator[EventDispatcher]:
        dispatcher = self.Dispatcher(hostname=hostname, enabled=enabled)
        try:
            yield dispatcher
        finally:
            dispatcher.close()


__all__ = ["Events"]

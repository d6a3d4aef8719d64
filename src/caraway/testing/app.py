"""The app a test gets: its own broker and result store, so no test sees another's messages.

``TestApp`` picks a fresh ``memory://`` name (or a fresh SQLite file) per app unless the
settings name a broker; results are on by default, since a test usually reads them.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from caraway.app import Caraway
from caraway.exceptions import ImproperlyConfigured

#: what every test app starts from (Celery's TestApp: an in-memory broker, no heartbeats)
DEFAULT_TEST_CONFIG: dict[str, Any] = {
    "broker_heartbeat": 0,
    "worker_prefetch_multiplier": 1,
}

TRANSPORTS = ("memory", "sqlite")


def TestApp(
    config: Mapping[str, Any] | None = None,
    *,
    transport: str = "memory",
    directory: str | os.PathLike[str] | None = None,
    name: str | None = None,
    include: Sequence[str] = (),
    set_as_current: bool = True,
    **parameters: Any,
) -> Caraway:
    """A :class:`Caraway` app for one test.

    ``transport`` is ``'memory'`` (queues and results in this process: fastest) or
    ``'sqlite'`` (one new file in ``directory``, or a temporary directory: the embedded
    default, shared with worker processes). ``config`` settings win over both, so
    ``{'broker_url': 'redis://...'}`` tests on a real broker. ``parameters`` go to
    ``Caraway()``. ``name`` (the app's main name) is unique unless given: apps of one name
    share their tasks (``python -m proj.caraway`` makes two), and tests' apps must not.
    Raises ImproperlyConfigured for an unknown transport.
    """
    name = name or f"caraway-test-{uuid.uuid4().hex[:12]}"
    settings = {**DEFAULT_TEST_CONFIG, **_broker_settings(transport, directory), **(config or {})}
    app = Caraway(name, include=list(include), set_as_current=set_as_current, **parameters)
    app.conf.update(settings)
    return app


def _broker_settings(transport: str, directory: str | os.PathLike[str] | None) -> dict[str, str]:
    if transport == "memory":
        url = f"memory://caraway-test-{uuid.uuid4().hex}"
    elif transport == "sqlite":
        folder = os.fspath(directory) if directory is not None else tempfile.mkdtemp()
        url = "sqlite:///" + os.path.join(os.path.abspath(folder), f"{uuid.uuid4().hex}.sqlite3")
    else:
        raise ImproperlyConfigured(
            f"unknown test transport {transport!r}; use one of {', '.join(TRANSPORTS)} "
            "(or name any broker with the broker_url setting)"
        )
    return {"broker_url": url, "result_backend": url}

"""Assemble and serve the dashboard: Cluster + Monitor + ASGI app under uvicorn.

``create_dashboard`` wires the parts for an app; ``DashboardServer`` runs uvicorn in a
thread (tests and embedding), ``serve`` runs it in the foreground (the CLI). uvicorn
is imported only here, so the rest of the dashboard is importable without it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from caraway.dashboard.auth import Auth
from caraway.dashboard.feed import EventSource, Monitor, receiver_factory
from caraway.dashboard.guard import HostAllowlist
from caraway.dashboard.model import Cluster
from caraway.dashboard.store import HistoryStore
from caraway.dashboard.web import Dashboard
from caraway.exceptions import ImproperlyConfigured

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 5555


def create_dashboard(
    app: Any,
    *,
    auth: Auth | None = None,
    max_tasks: int = 10000,
    source: Callable[[], EventSource] | bool | None = True,
    poll_interval: float = 2.0,
    queues: Sequence[str] = (),
    hosts: HostAllowlist | None = None,
    history: HistoryStore | bool = True,
    save_interval: float = 10.0,
) -> Dashboard:
    """The ASGI app for ``app``. ``source=True`` means caraway.events' receiver; ``hosts``
    defaults to loopback names."""
    cluster = Cluster(max_tasks=max_tasks)
    factory = receiver_factory(app) if source is True else source or None
    store = HistoryStore(app) if history is True else history or None
    monitor = Monitor(
        app,
        cluster,
        source=factory,
        poll_interval=poll_interval,
        queues=queues,
        store=store,
        save_interval=save_interval,
    )
    return Dashboard(app, cluster, auth=auth, monitor=monitor, hosts=hosts)


def _uvicorn() -> Any:
    try:
        import uvicorn  # noqa: PLC0415 - optional: the 'dashboard' extra
    except ImportError as exc:
        raise ImproperlyConfigured(
            "the dashboard needs uvicorn: pip install 'caraway[dashboard]'"
        ) from exc
    return uvicorn


def _config(dashboard: Dashboard, address: str, port: int) -> Any:
    uvicorn = _uvicorn()
    return uvicorn.Config(
        dashboard,
        host=address,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        # live streams never end by themselves; do not hold a shutdown for them
        timeout_graceful_shutdown=1,
    )


def serve(
    dashboard: Dashboard, *, address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT
) -> None:
    """Serve in the foreground until interrupted."""
    server = _uvicorn().Server(_config(dashboard, address, port))
    server.run()


class DashboardServer:
    """uvicorn serving ``dashboard`` in a background thread; ``stop()`` always cleans up."""

    def __init__(self, dashboard: Dashboard, *, address: str = DEFAULT_ADDRESS, port: int = 0):
        self.dashboard = dashboard
        self._server = _uvicorn().Server(_config(dashboard, address, port))
        self._thread = threading.Thread(target=self._server.run, name="dashboard-server")
        self._thread.daemon = True

    def start(self, timeout: float = 10.0) -> DashboardServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.02)
        return self

    @property
    def url(self) -> str:
        sockets = self._server.servers[0].sockets
        host, port = sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

"""The start-up banner: what a node runs, against which broker, for which queues."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from caraway._version import __version__
from caraway.clients.urls import mask_url
from caraway.entities import Exchange, Queue

if TYPE_CHECKING:
    from caraway.app import Caraway


def banner(
    app: Caraway,
    *,
    hostname: str,
    concurrency: int,
    pool: str,
    events: bool,
    queues: Sequence[str | Queue],
) -> str:
    backend = app.result_backend_url
    lines = [
        f" -------------- {hostname} v{__version__}",
        f"--- ***** ----- {platform.platform()} {datetime.now():%Y-%m-%d %H:%M:%S}",
        "-- ******* ---- ",
        "- *** --- * --- [config]",
        f"- ** ---------- .> app:         {app.main or '__main__'}:{id(app):#x}",
        f"- ** ---------- .> transport:   {mask_url(app.broker_url)}",
        f"- ** ---------- .> results:     {mask_url(backend) if backend else 'disabled://'}",
        f"- *** --- * --- .> concurrency: {concurrency} ({pool})",
        "-- ******* ---- .> task events: "
        + ("ON" if events else "OFF (enable -E to monitor tasks in this worker)"),
        "--- ***** ----- ",
        " -------------- [queues]",
    ]
    for entry in queues:
        queue = Queue(entry, Exchange(entry), entry) if isinstance(entry, str) else entry
        exchange = queue.exchange_entity or Exchange(queue.name)
        lines.append(
            f"                .> {queue.name:<16} exchange={exchange.name}({exchange.type}) "
            f"key={queue.routing_key}"
        )
    lines.append("")
    lines.append("[tasks]")
    for name in sorted(app.tasks):
        if not name.startswith("celery."):
            lines.append(f"  . {name}")
    lines.append("")
    return "\n".join(lines)

"""Where the dashboard's picture survives a restart: one document in the result backend.

The snapshot (counts, the newest tasks, the charts' buckets; model.snapshot) is saved as
compressed JSON under one group id through the backend's GroupStore (SQLite, Redis,
memory), capped at ``cap`` bytes: when it does not fit, fewer tasks are kept, then fewer
(the oldest dropped) chart buckets, until it does. Without such a backend (none, rpc://)
the history lives in memory only, and ``/api/status`` says so. The document expires
after ``expires`` seconds without a save.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from caraway.brokers.contracts import Backend, GroupStore
from caraway.dashboard.history import pack, unpack
from caraway.dashboard.model import SNAPSHOT_TASKS, Cluster, restore, snapshot

logger = logging.getLogger("caraway.dashboard")

KEY = "caraway.dashboard.history"
DEFAULT_CAP = 4 * 1024 * 1024
DEFAULT_EXPIRES = 7 * 24 * 3600.0


class HistoryStore:
    """Saves and restores a Cluster's snapshot in ``app``'s result backend."""

    def __init__(
        self,
        app: Any,
        *,
        key: str = KEY,
        cap: int = DEFAULT_CAP,
        expires: float = DEFAULT_EXPIRES,
    ) -> None:
        self.app = app
        self.key = key
        self.cap = cap
        self.expires = expires
        self._backend: Backend | None = None
        self.last_size = 0

    def _store(self) -> GroupStore | None:
        if self._backend is None:
            self._backend = self.app.new_backend()
        backend = self._backend
        if backend is None or not backend.shared or not isinstance(backend, GroupStore):
            return None
        return backend

    @property
    def available(self) -> bool:
        """True when the backend can keep the history."""
        try:
            return self._store() is not None
        except Exception:
            return False

    def save(self, cluster: Cluster) -> int:
        """Save the snapshot; returns its size in bytes (0 when there is nowhere to save)."""
        store = self._store()
        if store is None:
            return 0
        data = self._fit(cluster)
        if data is None:
            logger.warning("dashboard history is over its cap of %d bytes; not saved", self.cap)
            return 0
        store.save_group(self.key, data, expires=self.expires)
        self.last_size = len(data)
        return len(data)

    def _fit(self, cluster: Cluster) -> bytes | None:
        """The snapshot under the cap: fewer tasks first, then fewer (older) chart buckets."""
        tasks, buckets = SNAPSHOT_TASKS, len(cluster.history.buckets)
        while True:
            try:
                return pack(snapshot(cluster, tasks=tasks, buckets=buckets), cap=self.cap)
            except ValueError:
                if tasks > 0:
                    tasks //= 2
                elif buckets > 0:
                    buckets //= 2
                else:
                    return None

    def load(self, cluster: Cluster) -> bool:
        """Restore the saved snapshot into ``cluster``; False when there is none."""
        store = self._store()
        if store is None:
            return False
        data = store.load_group(self.key)
        saved = unpack(data) if data else None
        if saved is None:
            return False
        restore(cluster, saved)
        return True

    def close(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            with contextlib.suppress(Exception):
                backend.close()

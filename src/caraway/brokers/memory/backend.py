"""In-process result store for eager mode and tests, shared by every backend on one URL.

Documents live in this process's memory keyed by ``memory://name`` (a fork gets a frozen
copy). ``wait`` sleeps on a ``threading.Condition`` that every store notifies, so a waiter
wakes as soon as the result is written, with no polling.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from caraway.brokers.contracts import Backend, ChordPart, ChordStore, GroupStore
from caraway.protocol.results import chord_member
from caraway.states import READY_STATES


class _Store:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        #: task id -> (state, document, expires_at or None)
        self.results: dict[str, tuple[str, bytes, float | None]] = {}
        self.groups: dict[str, tuple[bytes, float | None]] = {}


_STORES: dict[str, _Store] = {}


@dataclass
class _ChordCount:
    size: int | None = None
    extra: int = 0
    state: str = "open"
    #: "<task id>:<index>" -> (group_index score, [1, task id, state, result])
    members: dict[str, tuple[float, list[Any]]] = field(default_factory=dict)


#: url -> group id -> chord count (guarded by that url's store condition)
_CHORDS: dict[str, dict[str, _ChordCount]] = {}
_STORES_LOCK = threading.Lock()


def _store_for(url: str) -> _Store:
    with _STORES_LOCK:
        store = _STORES.get(url)
        if store is None:
            store = _STORES[url] = _Store()
        return store


def reset(url: str | None = None) -> None:
    """Drop the results of ``url`` (or of every memory URL) in this process; for tests."""
    with _STORES_LOCK:
        if url is None:
            _STORES.clear()
        else:
            _STORES.pop(url, None)


def _live(expires_at: float | None, now: float) -> bool:
    return expires_at is None or expires_at > now


def _deadline(expires: float | None) -> float | None:
    return None if expires is None else time.time() + expires


class MemoryBackend(Backend, GroupStore, ChordStore):
    """Results in this process's memory; see the module docstring."""

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self._store = _store_for(url)

    def store(
        self,
        task_id: str,
        document: bytes,
        *,
        state: str,
        expires: float | None,
        reply_to: str | None = None,
    ) -> bool:
        store = self._store
        with store.cond:
            current = store.results.get(task_id)
            if (
                current is not None
                and current[0] in READY_STATES
                and _live(current[2], time.time())
            ):
                return False
            store.results[task_id] = (state, document, _deadline(expires))
            store.cond.notify_all()
            return True

    def load(self, task_id: str) -> bytes | None:
        with self._store.cond:
            return self._load(task_id)

    def _load(self, task_id: str) -> bytes | None:
        current = self._store.results.get(task_id)
        if current is None or not _live(current[2], time.time()):
            return None
        return current[1]

    def load_many(self, task_ids: Sequence[str]) -> list[bytes | None]:
        with self._store.cond:
            return [self._load(task_id) for task_id in task_ids]

    def wait(
        self,
        task_id: str,
        *,
        until: Callable[[bytes], bool],
        timeout: float | None,
    ) -> bytes | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._store.cond:
            while True:
                document = self._load(task_id)
                if document is not None and until(document):
                    return document
                if deadline is None:
                    self._store.cond.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._store.cond.wait(left)

    def forget(self, task_id: str) -> None:
        with self._store.cond:
            self._store.results.pop(task_id, None)

    def save_group(self, group_id: str, document: bytes, *, expires: float | None) -> None:
        with self._store.cond:
            self._store.groups[group_id] = (document, _deadline(expires))

    def load_group(self, group_id: str) -> bytes | None:
        with self._store.cond:
            current = self._store.groups.get(group_id)
        if current is None or not _live(current[1], time.time()):
            return None
        return current[0]

    def forget_group(self, group_id: str) -> None:
        with self._store.cond:
            self._store.groups.pop(group_id, None)

    # -- chords: counted under the store's lock ------------------------------------------

    def _chord(self, group_id: str) -> _ChordCount:
        return _CHORDS.setdefault(self.url, {}).setdefault(group_id, _ChordCount())

    def chord_set_size(self, group_id: str, size: int, *, expires: float) -> None:
        with self._store.cond:
            self._chord(group_id).size = int(size)

    def chord_extend(self, group_id: str, count: int) -> None:
        with self._store.cond:
            self._chord(group_id).extra += int(count)

    def chord_join_many(
        self, parts: Sequence[ChordPart], *, expires: float
    ) -> list[list[Any] | None]:
        return [self._join(part) for part in parts]

    def _join(self, part: ChordPart) -> list[Any] | None:
        member = json.loads(chord_member(part.task_id, part.state, part.result_json))
        score = float("inf") if part.index is None else float(part.index)
        with self._store.cond:
            chord = self._chord(part.group_id)
            if chord.state != "open":
                return None
            chord.members.setdefault(f"{part.task_id}:{part.index}", (score, member))
            if chord.size is None or len(chord.members) < chord.size + chord.extra:
                return None
            chord.state = "claimed"
            ordered = sorted(chord.members.values(), key=lambda item: item[0])
            return [item[1] for item in ordered]

    def chord_done(self, group_id: str) -> bool:
        with self._store.cond:
            chord = self._chord(group_id)
            claimed = chord.state == "claimed"
            chord.state, chord.members = "done", {}
            return claimed

    def cleanup(self) -> int:
        now = time.time()
        with self._store.cond:
            results = self._store.results
            groups = self._store.groups
            expired = [key for key, value in results.items() if not _live(value[2], now)]
            expired_groups = [key for key, value in groups.items() if not _live(value[1], now)]
            for key in expired:
                del results[key]
            for key in expired_groups:
                del groups[key]
            return len(expired) + len(expired_groups)

"""Periodic-task state for ``memory://`` brokers: a lease, entries and runtime entries in
this process's memory, shared by every store opened on the same URL and namespace.

Several beat instances in one process (tests, eager setups) elect one leader here exactly
as they would on a real broker; nothing crosses a process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from caraway.brokers.contracts import (
    BeatAdvance,
    BeatEntryState,
    BeatLeader,
    BeatState,
    BeatStore,
)


@dataclass
class _Schedule:
    """One namespace's state; guarded by ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    leader: BeatLeader | None = None
    lease_until: float = 0.0
    entries: dict[str, BeatEntryState] = field(default_factory=dict)
    runs: set[tuple[str, int]] = field(default_factory=set)
    runtime: dict[str, bytes] = field(default_factory=dict)


_SCHEDULES: dict[tuple[str, str], _Schedule] = {}
#: run keys are kept this long (ms): past it, an entry's last_ms alone fences the run
RUN_KEY_MS = 3_600_000
_SCHEDULES_LOCK = threading.Lock()


def reset(url: str | None = None) -> None:
    """Forget the beat state of ``url`` (or of every memory URL) in this process; for tests."""
    with _SCHEDULES_LOCK:
        for key in [key for key in _SCHEDULES if url is None or key[0] == url]:
            del _SCHEDULES[key]


class MemoryBeatStore(BeatStore):
    """The beat store of ``memory://`` brokers."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        with _SCHEDULES_LOCK:
            self._schedule = _SCHEDULES.setdefault((url, self.namespace), _Schedule())

    def _leads(self, schedule: _Schedule, now: float) -> bool:
        leader = schedule.leader
        return leader is not None and leader.holder == self.holder and schedule.lease_until > now

    def lead(self) -> bool:
        schedule, now = self._schedule, time.time()
        with schedule.lock:
            leader = schedule.leader
            if leader is not None and leader.holder != self.holder and schedule.lease_until > now:
                return False
            if leader is None or leader.holder != self.holder:
                leader = BeatLeader(self.holder, self.node, since=now, renewed=now)
            schedule.leader = replace(leader, renewed=now)
            schedule.lease_until = now + self.lease_seconds
            return True

    def resign(self) -> None:
        schedule = self._schedule
        with schedule.lock:
            if schedule.leader is not None and schedule.leader.holder == self.holder:
                schedule.leader, schedule.lease_until = None, 0.0

    def state(self) -> BeatState:
        schedule = self._schedule
        with schedule.lock:
            live = schedule.lease_until > time.time()
            return BeatState(
                leader=schedule.leader if live else None,
                entries=dict(schedule.entries),
                runtime=dict(schedule.runtime),
            )

    def advance(self, changes: Sequence[BeatAdvance]) -> list[bool]:
        schedule = self._schedule
        with schedule.lock:
            if not self._leads(schedule, time.time()):
                return [False] * len(changes)
            return [self._apply(schedule, change) for change in changes]

    @staticmethod
    def _apply(schedule: _Schedule, change: BeatAdvance) -> bool:
        current = schedule.entries.get(change.name)
        if (current.last_ms if current else None) != change.expected_ms:
            return False
        keys = {(change.name, run.scheduled_ms) for run in change.runs}
        if keys & schedule.runs:
            return False
        schedule.runs |= keys
        if len(schedule.runs) > 10_000:
            oldest = change.to_ms - RUN_KEY_MS
            schedule.runs = {key for key in schedule.runs if key[1] >= oldest}
        count = (current.count if current else 0) + len(change.runs)
        last_run = change.runs[-1] if change.runs else (current.last_run if current else None)
        schedule.entries[change.name] = BeatEntryState(change.to_ms, count, last_run)
        return True

    def forget(self, names: Sequence[str]) -> None:
        schedule = self._schedule
        with schedule.lock:
            if self._leads(schedule, time.time()):
                for name in names:
                    schedule.entries.pop(name, None)

    def put_entry(self, name: str, spec: bytes) -> None:
        with self._schedule.lock:
            self._schedule.runtime[name] = bytes(spec)

    def remove_entry(self, name: str) -> bool:
        with self._schedule.lock:
            return self._schedule.runtime.pop(name, None) is not None

"""What a prefork child is running, in memory the child and its supervisor share.

The supervisor must know which task a child runs before it runs (a child that dies takes
it along: WorkerLostError, time limits, ``terminate``), yet telling it over the pipe cost a
write and a wake-up of the parent per task. The child copies the announcement into an
anonymous shared mapping made before the fork instead; the supervisor reads it only when it
needs to know. A sequence number, odd while a write is under way, keeps a reader from
taking half of one announcement for another (a seqlock). The supervisor, for its part,
counts the commands it sends down the child's pipe in the same page, so the child reads
the pipe only when there is something in it: no syscall per task either way.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_HEADER = struct.Struct("=QI")  # sequence number, payload length (written by the child)
_COMMANDS = struct.Struct("=Q")  # commands sent so far (written by the supervisor)
_COMMANDS_AT = 16
_PAYLOAD_AT = 24
#: room for one announcement; longer ones are the caller's to shorten
CAPACITY = 65536 - _PAYLOAD_AT


class RunningSlot:
    """One child's current announcement: written by the child, read by the supervisor."""

    def __init__(self) -> None:
        # MAP_SHARED | MAP_ANONYMOUS: the same pages in both processes after fork()
        self._map = mmap.mmap(-1, _PAYLOAD_AT + CAPACITY)
        self._cache: tuple[int, Any] = (0, None)

    def write(self, payload: bytes) -> None:
        """Announce ``payload`` (child side); it must fit in :data:`CAPACITY` bytes."""
        if len(payload) > CAPACITY:
            raise ValueError(f"announcement of {len(payload)} bytes exceeds {CAPACITY}")
        view = self._map
        seq = _HEADER.unpack_from(view, 0)[0]
        _HEADER.pack_into(view, 0, seq + 1, 0)  # odd: being written
        view[_PAYLOAD_AT : _PAYLOAD_AT + len(payload)] = payload
        _HEADER.pack_into(view, 0, seq + 2, len(payload))

    def clear(self) -> None:
        """Nothing runs now (child side)."""
        seq = _HEADER.unpack_from(self._map, 0)[0]
        _HEADER.pack_into(self._map, 0, seq + 2, 0)

    def read(self, decode: Callable[[bytes], T]) -> T | None:
        """The current announcement decoded, or None when nothing runs (supervisor side).

        Decoded once per announcement. A write cut short by the child's death leaves the
        sequence odd: whatever it was announcing had not started, so nothing runs.
        """
        for _ in range(1000):
            seq, size = _HEADER.unpack_from(self._map, 0)
            if seq == self._cache[0]:
                return self._cache[1]  # type: ignore[no-any-return]
            if seq % 2:
                continue  # being written right now: look again
            payload = bytes(self._map[_PAYLOAD_AT : _PAYLOAD_AT + size])
            if _HEADER.unpack_from(self._map, 0)[0] != seq:
                continue  # overwritten while copied
            value = decode(payload) if size else None
            self._cache = (seq, value)
            return value
        return None

    def note_command(self) -> None:
        """One more command is in the child's pipe (supervisor side, after writing it)."""
        count = _COMMANDS.unpack_from(self._map, _COMMANDS_AT)[0]
        _COMMANDS.pack_into(self._map, _COMMANDS_AT, count + 1)

    def commands_sent(self) -> int:
        """How many commands the supervisor has sent (child side)."""
        return int(_COMMANDS.unpack_from(self._map, _COMMANDS_AT)[0])

    def close(self) -> None:
        self._map.close()

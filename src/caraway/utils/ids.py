"""Random UUID4 strings for task ids and delivery tags, cheaper than ``str(uuid.uuid4())``.

Every ``delay()`` makes two (the task id, the Redis envelope's delivery tag);
``uuid.uuid4()`` reads the kernel's random source once per id and builds a ``UUID`` object
only to format it. Here random bytes are read 4 KiB at a time and formatted directly. The
buffer is dropped in a forked child (``os.register_at_fork``): parent and child must never
hand out the same bytes.
"""

from __future__ import annotations

import os
import threading

_CHUNK = 4096
_lock = threading.Lock()
_buffer = b""
_offset = 0


def _forget() -> None:
    global _buffer, _offset
    _buffer, _offset = b"", 0


os.register_at_fork(after_in_child=_forget)

#: the RFC 4122 variant's first hex digit, from the two low bits of the random one
_VARIANT = "89ab89ab89ab89ab"


def new_id() -> str:
    """A random (version 4, RFC 4122 variant) UUID as its 36-character string."""
    global _buffer, _offset  # noqa: PLW0603 - see _forget
    with _lock:
        start = _offset
        if start + 16 > len(_buffer):
            _buffer, start = os.urandom(_CHUNK), 0
        _offset = start + 16
        raw = _buffer[start : start + 16]
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"

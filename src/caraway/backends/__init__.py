"""Result backend URL -> backend class: built-in aliases plus ``caraway.backends`` entry points.

Same rules as ``caraway.transports``: classes load lazily, a missing client library names the
extra to install. Celery's spellings ``cache+memory://`` and ``db+sqlite://`` are accepted,
and ``sqlite://`` with no path is the default file shared with the SQLite transport.
"""

from __future__ import annotations

from typing import Any

from caraway.backends.base import Backend
from caraway.exceptions import ImproperlyConfigured
from caraway.transports import resolve, url_scheme

#: scheme -> "module:Class"
BACKEND_ALIASES: dict[str, str] = {
    "memory": "caraway.backends.memory:MemoryBackend",
    "cache+memory": "caraway.backends.memory:MemoryBackend",
    "sqlite": "caraway.backends.sqlite:SQLiteBackend",
    "db+sqlite": "caraway.backends.sqlite:SQLiteBackend",
    "redis": "caraway.backends.redis:RedisBackend",
    "rediss": "caraway.backends.redis:RedisBackend",
    "redis+socket": "caraway.backends.redis:RedisBackend",
    "sentinel": "caraway.backends.redis:RedisBackend",
    "rpc": "caraway.backends.rpc:RPCBackend",
}


def get_backend(url: str, *, options: dict[str, Any] | None = None) -> Backend:
    """Open the result backend for ``url``.

    Raises ImproperlyConfigured for an unknown scheme (listing the known ones) or when the
    backend's client library is not installed (naming the extra to install).
    """
    cls = resolve(url, BACKEND_ALIASES, group="caraway.backends", kind="result backend")
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ImproperlyConfigured(f"{cls!r} for {url_scheme(url)}:// is not a Backend subclass")
    return cls(url, options=options)


__all__ = ["BACKEND_ALIASES", "get_backend"]

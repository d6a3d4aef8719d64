"""Broker URL -> transport class: built-in aliases plus the ``caraway.transports`` entry points.

Classes are imported only when their scheme is asked for, so ``import caraway`` never needs
redis or amqp installed; a missing client library is reported as the extra to install.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

from caraway.clients.urls import mask_url, url_scheme
from caraway.exceptions import ImproperlyConfigured
from caraway.transports.base import Transport

#: scheme -> "module:Class"; several schemes may name one class (Celery's spellings)
TRANSPORT_ALIASES: dict[str, str] = {
    "memory": "caraway.transports.memory:MemoryTransport",
    "sqlite": "caraway.transports.sqlite:SQLiteTransport",
    "redis": "caraway.transports.redis:RedisTransport",
    "rediss": "caraway.transports.redis:RedisTransport",
    "redis+socket": "caraway.transports.redis:RedisTransport",
    "sentinel": "caraway.transports.redis:RedisTransport",
    "amqp": "caraway.transports.amqp:AMQPTransport",
    "pyamqp": "caraway.transports.amqp:AMQPTransport",
    "amqps": "caraway.transports.amqp:AMQPTransport",
}

#: top-level client package -> the extra that installs it
_EXTRAS = {"redis": "redis", "amqp": "amqp"}


def get_transport(url: str, *, options: dict[str, Any] | None = None) -> Transport:
    """Open the transport for ``url``.

    Raises ImproperlyConfigured for an unknown scheme (listing the known ones) or when the
    transport's client library is not installed (naming the extra to install).
    """
    cls = resolve(url, TRANSPORT_ALIASES, group="caraway.transports", kind="transport")
    if not (isinstance(cls, type) and issubclass(cls, Transport)):
        raise ImproperlyConfigured(f"{cls!r} for {url_scheme(url)}:// is not a Transport subclass")
    return cls(url, options=options)


def resolve(url: str, aliases: dict[str, str], *, group: str, kind: str) -> Any:
    """Import the class registered for ``url``'s scheme in ``aliases`` or entry-point ``group``.

    Shared with ``caraway.backends``; ``kind`` only words the error messages.
    """
    scheme = url_scheme(url)
    target = aliases.get(scheme)
    if target is None:
        plugins = _entry_points(group)
        if scheme in plugins:
            return plugins[scheme].load()
        known = ", ".join(f"{name}://" for name in sorted({*aliases, *plugins}))
        raise ImproperlyConfigured(
            f"unknown {kind} scheme {scheme!r} in {mask_url(url)!r}; known schemes: {known} "
            f"(third-party {kind}s register under the {group!r} entry-point group)"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise _missing_module(exc, module_name, scheme, kind) from exc
    return getattr(module, attr)


def _missing_module(
    exc: ModuleNotFoundError, module_name: str, scheme: str, kind: str
) -> ImproperlyConfigured:
    missing = (exc.name or "").partition(".")[0]
    extra = _EXTRAS.get(missing)
    if extra is not None:
        return ImproperlyConfigured(
            f"the {scheme}:// {kind} needs the {missing!r} package, which is not installed; "
            f"run: pip install 'caraway[{extra}]'"
        )
    if exc.name == module_name:
        return ImproperlyConfigured(
            f"the {scheme}:// {kind} ({module_name}) is not available in this version of caraway"
        )
    return ImproperlyConfigured(f"cannot load the {scheme}:// {kind}: {exc}")


def _entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    return {entry.name.lower(): entry for entry in metadata.entry_points(group=group)}


__all__ = [
    "TRANSPORT_ALIASES",
    "get_transport",
    "resolve",
    "url_scheme",
]

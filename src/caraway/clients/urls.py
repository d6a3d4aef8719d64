"""Broker and backend URLs before any plug-in reads them: the scheme, the default SQLite file,
and the one way to show a URL without its password.

Owns nothing a URL means to a broker (each client parses its own). The one thing to know:
:func:`mask_url` never returns a password, even from a URL it cannot parse.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from caraway.exceptions import ImproperlyConfigured

_DEFAULT_SQLITE_NAME = "caraway.sqlite3"
#: a ";" that starts the next URL of a list: one inside a password does not split it
_NEXT_URL = re.compile(r";(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def url_scheme(url: str) -> str:
    """The lower-cased scheme of ``url`` (``"redis"`` for ``redis://h:6379/0``).

    Raises ImproperlyConfigured when ``url`` has no ``scheme://``.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ImproperlyConfigured(
            f"broker/backend URL {mask_url(url)!r} has no scheme; "
            "write it like 'redis://localhost:6379/0' or 'sqlite://'"
        )
    return scheme.lower()


def default_sqlite_path() -> str:
    """Absolute path of ``caraway.sqlite3`` in the current directory (the embedded default)."""
    return os.path.abspath(_DEFAULT_SQLITE_NAME)


def mask_url(url: str, *, mask: str = "**") -> str:
    """``url`` with its password replaced by ``mask`` (for banners, logs and reports).

    Celery's ``;``-separated lists (several sentinels or brokers) are masked one by one.
    Celery masks banners with ``**`` and ``conf.humanize()`` with eight stars; ``mask``
    lets each keep its own. A URL whose userinfo urllib cannot read reliably (it refuses
    the URL, or a ``/``, ``?`` or ``#`` in the password cut the host short) has all of it
    masked, up to its last ``@``: ``redis://**@host...``.
    """
    masked = ";".join(_mask_one(part, mask) for part in _NEXT_URL.split(url))
    # redis-py and others also read a password from the query (``?password=...``)
    return _SECRET_QUERY.sub(lambda found: found.group(1) + mask, masked)


#: query parameters that carry a secret, whatever the scheme
_SECRET_QUERY = re.compile(
    r"([?&;](?:[A-Za-z_]*(?:pass|secret|token|key|credential)[A-Za-z_]*)=)[^&;#]*",
    re.IGNORECASE,
)


def _mask_one(url: str, mask: str) -> str:
    head, sep, rest = url.partition("://")
    if not sep:
        # no scheme to parse by: ``user:password@host`` is masked up to its last "@"
        credentials, found, host = url.rpartition("@")
        return f"{mask}@{host}" if found and credentials else url
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in the password
        return _mask_userinfo(head, rest, mask)
    netloc = parts.netloc
    if not rest.startswith(netloc):  # urllib dropped a tab or newline: do not trust it
        return _mask_userinfo(head, rest, mask)
    if "@" not in netloc:
        # urllib cuts the host at the first "/", "?" or "#", so "user:pa/ss@host" reads as
        # host "user" and no password; "something:something@" after it is userinfo.
        at = rest.rfind("@")
        if at > len(netloc) and ":" in rest[:at]:
            return _mask_userinfo(head, rest, mask)
        return url
    if not parts.password:
        return url
    userinfo, _, hostinfo = netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    # rebuilt by hand, not by urlunsplit, so the rest of the URL stays byte for byte
    return f"{head}://{user}:{mask}@{hostinfo}{rest[len(netloc) :]}"


def _mask_userinfo(head: str, rest: str, mask: str) -> str:
    """Everything up to the last "@" is taken for userinfo: masking too much is safe."""
    _userinfo, at, hostinfo = rest.rpartition("@")
    if not at:
        return f"{head}://{rest}"
    return f"{head}://{mask}@{hostinfo}"

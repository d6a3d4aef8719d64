"""Requests from other sites: the Host allowlist and the CSRF token that actions carry.

A browser on the user's machine can be made to reach a loopback dashboard by DNS
rebinding (a hostile name that resolves to 127.0.0.1): the Host header then names the
hostile site, so only names on the allowlist are served. Actions (every POST) carry the
per-process token from ``GET /api/session`` in ``X-CSRF-Token``; a page on another site
can neither read that token nor send the header without a CORS preflight we never grant.
Pure: no I/O.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

#: names a loopback dashboard answers to by default
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
CSRF_HEADER = "x-csrf-token"


def is_loopback(address: str) -> bool:
    """True for an address or name that only this machine can reach."""
    host = address.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str | None) -> str | None:
    """The name in a Host header without its port (``[::1]:5555`` -> ``::1``)."""
    if not header:
        return None
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else None
    name, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    if port and not port.isdigit():
        return None
    return name.rstrip(".") or None


@dataclass(frozen=True)
class HostAllowlist:
    """The Host names served: loopback names and the bound address unless told others.

    ``*`` in ``names`` allows any Host (behind a proxy that checks it).
    """

    names: frozenset[str] = LOOPBACK_NAMES

    @classmethod
    def build(cls, address: str, extra: Iterable[str] = ()) -> HostAllowlist:
        """Loopback names, the bind address when it is a specific one, and ``extra``."""
        names = set(LOOPBACK_NAMES)
        if address not in ("0.0.0.0", "::", ""):
            names.add(address.strip("[]").lower())
        names.update(name.strip().lower() for name in extra if name.strip())
        return cls(frozenset(names))

    def allows(self, host_header: str | None) -> bool:
        if "*" in self.names:
            return True
        name = host_name(host_header)
        return name is not None and name in self.names


@dataclass(frozen=True)
class Csrf:
    """The token every action must echo; one per dashboard process."""

    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def allows(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self.token.encode())


def cross_site(headers: dict[str, str]) -> bool:
    """True when the browser says the request comes from another site (Fetch metadata)."""
    return headers.get("sec-fetch-site", "") in ("cross-site", "same-site")

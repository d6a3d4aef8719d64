"""Who may use the dashboard: HTTP basic auth or a bearer token, checked on every request.

With auth configured nothing is served without credentials, not even the page. A token
can come as ``Authorization: Bearer T``, as the ``caraway_token`` cookie (set when the
page is opened with ``?token=T``, so EventSource, which cannot set headers, still works),
or in that query string on the page itself. Secrets are compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from http.cookies import SimpleCookie

TOKEN_COOKIE = "caraway_token"


@dataclass(frozen=True)
class Auth:
    """The configured credentials; both None means the dashboard is open."""

    basic: tuple[str, str] | None = None
    token: str | None = None

    @classmethod
    def parse(cls, basic_auth: str | None, auth_token: str | None) -> Auth:
        """Build from the command line's ``user:pass`` and token; raises ValueError."""
        if basic_auth and auth_token:
            raise ValueError("give --basic-auth or --auth-token, not both")
        if basic_auth:
            user, colon, password = basic_auth.partition(":")
            if not colon or not user or not password:
                raise ValueError(f"--basic-auth wants user:password, got {basic_auth!r}")
            return cls(basic=(user, password))
        if auth_token is not None and not auth_token:
            raise ValueError("--auth-token must not be empty")
        return cls(token=auth_token or None)

    @property
    def enabled(self) -> bool:
        return self.basic is not None or self.token is not None

    def challenge(self) -> str | None:
        """The WWW-Authenticate header to send with a 401."""
        if self.basic is not None:
            return 'Basic realm="caraway dashboard", charset="UTF-8"'
        if self.token is not None:
            return 'Bearer realm="caraway dashboard"'
        return None

    def allows(
        self, *, authorization: str | None, cookie: str | None, query_token: str | None
    ) -> bool:
        """True when the request carries the configured credentials (or none are set)."""
        if not self.enabled:
            return True
        if self.basic is not None:
            return _basic_matches(authorization, self.basic)
        assert self.token is not None
        offered = [_bearer(authorization), _cookie_token(cookie), query_token]
        return any(value is not None and _same(value, self.token) for value in offered)


def _same(offered: str, expected: str) -> bool:
    return hmac.compare_digest(offered.encode(), expected.encode())


def _basic_matches(authorization: str | None, expected: tuple[str, str]) -> bool:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    user, _, password = decoded.partition(":")
    # evaluate both comparisons so timing does not tell which half was wrong
    user_ok = _same(user, expected[0])
    password_ok = _same(password, expected[1])
    return user_ok and password_ok


def _bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _cookie_token(header: str | None) -> str | None:
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # a malformed cookie header is just no token
        return None
    morsel = jar.get(TOKEN_COOKIE)
    return morsel.value if morsel is not None else None

"""Message signing set-up: Celery's ``setup_security()``, reading the key, the certificate and
the certificate store that the ``security_*`` settings name, and registering the ``auth``
serializer (:mod:`caraway.protocol.auth`) for this process.

Owns the file reading and the checks Celery makes before it signs anything; the signing
itself and the signed body's layout are the protocol's. The one thing to know: as in
Celery, it is process-wide (every app in the process signs and verifies with it) and must
run where the app is created, so a worker importing the app module has it before any
message arrives. Needs ``pip install caraway[auth]`` (cryptography).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from typing import Any

from caraway import current
from caraway.config import Settings
from caraway.exceptions import ImproperlyConfigured
from caraway.protocol import auth
from caraway.protocol.serializers import normalize_accept

__all__ = ["setup_security"]

_NEEDS_AUTH = (
    "message signing needs task_serializer='auth' (what is sent is signed) and "
    "accept_content=['auth'] (nothing unsigned is run); got task_serializer={!r}, "
    "accept_content={!r}"
)
_NEEDS_FILES = (
    "message signing needs security_key, security_certificate and security_cert_store "
    "(the PEM key and certificate this process signs with, and the certificates of every "
    "sender it trusts); missing: {}"
)


def setup_security(
    allowed_serializers: Iterable[str] | None = None,
    key: str | None = None,
    key_password: str | bytes | None = None,
    cert: str | None = None,
    store: str | None = None,
    digest: str | None = None,
    serializer: str = "json",
    app: Any = None,
) -> None:
    """Register the ``auth`` serializer for this process, as Celery's ``setup_security``.

    ``key``, ``cert``, ``store``, ``digest`` and ``key_password`` default to the app's
    ``security_*`` settings; ``serializer`` is what a body is serialized with before it
    is signed; ``allowed_serializers`` names further serializers a signed body may carry
    (Celery decodes whatever the signer chose; caraway keeps pickle out unless named).
    Raises ImproperlyConfigured when the settings, files or cryptography are missing or
    unusable.
    """
    conf: Settings = (app if app is not None else current.get_current_app()).conf
    _check_serializers(conf)
    key = key or conf.security_key
    cert = cert or conf.security_certificate
    store = store or conf.security_cert_store
    missing = [
        name
        for name, value in (
            ("security_key", key),
            ("security_certificate", cert),
            ("security_cert_store", store),
        )
        if not value
    ]
    if missing:
        raise ImproperlyConfigured(_NEEDS_FILES.format(", ".join(missing)))
    assert key and cert and store  # narrowed by the check above
    signer = auth.load_signer(
        key=_read(key, "security_key"),
        key_password=key_password or conf.security_key_password,
        certificate=_read(cert, "security_certificate"),
        store=_read_store(store),
        digest=digest or conf.security_digest,
        serializer=serializer,
        accept=allowed_serializers or (),
    )
    auth.register(signer)


def _check_serializers(conf: Settings) -> None:
    accept = conf.accept_content
    if conf.task_serializer != "auth" or normalize_accept(accept) != {auth.AUTH}:
        raise ImproperlyConfigured(_NEEDS_AUTH.format(conf.task_serializer, accept))


def _read(path: str, setting: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ImproperlyConfigured(f"{setting}: cannot read {path!r}: {exc.strerror}") from None


def _read_store(pattern: str) -> Sequence[tuple[str, bytes]]:
    """The PEM files of ``security_cert_store``: a directory (every file in it) or a glob."""
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, "*")
    paths = sorted(path for path in glob.glob(pattern) if os.path.isfile(path))
    if not paths:
        raise ImproperlyConfigured(
            f"security_cert_store {pattern!r} names no file; give a directory of PEM "
            f"certificates or a glob such as '/etc/ssl/certs/*.pem'"
        )
    return [(path, _read(path, "security_cert_store")) for path in paths]

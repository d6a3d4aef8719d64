"""Celery's ``auth`` serializer: message bodies signed with an RSA key, checked against a store
of X.509 certificates (content type ``application/data``).

Owns the signed body's layout and the signing and checking; reading key and certificate
files is :mod:`caraway.security`'s, and the serializer registry hook is
:func:`caraway.protocol.serializers.use_signing`. The one thing to know (Celery 5.7's
``celery.security.serialization``): the body is base64 of five fields joined by ``\\x00\\x01``,
``b64(signer) b64(signature) content_type content_encoding inner_body``, the signature is
RSA-PSS (MGF1 with the digest, maximal salt) over the inner body's bytes, and the signer is
``"<issuer attribute values joined by spaces> <serial number>"`` of the sender's certificate.
Needs the optional ``cryptography`` package (``pip install caraway[auth]``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from caraway.exceptions import ImproperlyConfigured, SecurityError
from caraway.protocol import serializers

__all__ = ["AUTH", "Signer", "Verifier", "load_signer", "register", "unregister"]

#: the content type (and encoding) a signed body travels with, as kombu registers 'auth'
AUTH = serializers.AUTH
_SEPARATOR = b"\x00\x01"


def _pss(digest: hashes.HashAlgorithm) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.MAX_LENGTH)


def certificate_id(cert: x509.Certificate) -> str:
    """The id a signed body names its signer by (Celery's ``Certificate.get_id``)."""
    issuer = " ".join(str(attribute.value) for attribute in cert.issuer)
    return f"{issuer} {cert.serial_number}"


def _expired(cert: x509.Certificate) -> bool:
    return datetime.now(timezone.utc) >= cert.not_valid_after_utc


@dataclass(frozen=True)
class Verifier:
    """Checks signed bodies against the trusted certificates (by signer id).

    ``accept`` holds the content types a signed body may carry inside: the serializer the
    app signs with, plus ``allowed_serializers``. Celery decodes whatever the signer chose;
    caraway keeps pickle out unless it is named, as everywhere else.
    """

    certificates: dict[str, x509.Certificate]
    digest: hashes.HashAlgorithm
    accept: frozenset[str]

    def verify(self, body: bytes) -> tuple[bytes, str, str]:
        """The inner ``(body, content_type, content_encoding)`` of a signed body.

        Raises SecurityError for a body that is not signed the way Celery signs, an unknown
        or expired signer, or a signature that does not match.
        """
        signer, signature, content_type, content_encoding, inner = _unpack(body)
        cert = self.certificates.get(signer)
        if cert is None:
            raise SecurityError(f"signed by an unknown certificate {signer!r:.200}")
        if _expired(cert):
            raise SecurityError(f"signed by an expired certificate {signer!r:.200}")
        public = cert.public_key()
        assert isinstance(public, rsa.RSAPublicKey)  # load_certificate admits RSA only
        try:
            public.verify(signature, inner, _pss(self.digest), self.digest)
        except InvalidSignature:
            raise SecurityError(
                f"bad signature: the body does not match what {signer!r:.200} signed"
            ) from None
        return inner, content_type, content_encoding

    def loads(self, body: bytes) -> Any:
        """Verify ``body`` then decode what it carries (only types in ``accept``)."""
        inner, content_type, content_encoding = self.verify(body)
        if content_type == AUTH:
            raise SecurityError("a signed body carries another signed body")
        return serializers.loads(inner, content_type, content_encoding, accept=self.accept)


@dataclass(frozen=True)
class Signer(Verifier):
    """Signs bodies as this process's certificate, and verifies others' (``setup_security``)."""

    key: rsa.RSAPrivateKey | None = None
    signer_id: str = ""
    serializer: str = "json"

    def dumps(self, value: Any) -> tuple[bytes, str, str]:
        """``value`` serialized with :attr:`serializer`, signed; ``(body, AUTH, 'utf-8')``."""
        if self.key is None:
            raise ImproperlyConfigured(
                "this process verifies signed messages but has no key to sign with; "
                "set security_key and security_certificate and call app.setup_security()"
            )
        inner, content_type, content_encoding = serializers.dumps(value, self.serializer)
        signature = self.key.sign(inner, _pss(self.digest), self.digest)
        return (
            _pack(self.signer_id, signature, content_type, content_encoding, inner),
            AUTH,
            "utf-8",
        )


def _pack(signer: str, signature: bytes, content_type: str, encoding: str, body: bytes) -> bytes:
    fields = _SEPARATOR.join(
        [
            base64.b64encode(signer.encode("utf-8")),
            base64.b64encode(signature),
            content_type.encode("utf-8"),
            encoding.encode("utf-8"),
            body,
        ]
    )
    return base64.b64encode(fields)


def _unpack(body: bytes | str) -> tuple[str, bytes, str, str, bytes]:
    try:
        raw = base64.b64decode(body, validate=True)
        parts = raw.split(_SEPARATOR, 4)
        if len(parts) != 5:
            raise ValueError(f"{len(parts)} fields where a signed body has 5")
        signer = base64.b64decode(parts[0], validate=True).decode("utf-8")
        signature = base64.b64decode(parts[1], validate=True)
        return signer, signature, parts[2].decode("ascii"), parts[3].decode("ascii"), parts[4]
    except (binascii.Error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise SecurityError(f"not a signed (auth) body: {exc}") from None


# -- building from PEM ---------------------------------------------------------------------
def digest_algorithm(name: str) -> hashes.HashAlgorithm:
    """``'sha256'`` -> the hash object, as Celery resolves ``security_digest``."""
    found = getattr(hashes, str(name).upper().replace("-", "_"), None)
    try:
        algorithm = found() if isinstance(found, type) else None
    except TypeError:  # BLAKE2 and SHAKE need a size
        algorithm = None
    if not isinstance(algorithm, hashes.HashAlgorithm):
        raise ImproperlyConfigured(
            f"security_digest {name!r} is not a digest cryptography knows; use 'sha256' "
            f"(Celery's default), 'sha384', 'sha512' or 'sha3_256'"
        )
    return algorithm


def load_certificate(pem: bytes, where: str) -> x509.Certificate:
    """An RSA X.509 certificate from PEM; ImproperlyConfigured naming ``where`` if not."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{where} is not a PEM X.509 certificate: {exc}") from None
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise ImproperlyConfigured(f"{where}: only RSA certificates are supported (as Celery)")
    return cert


def load_key(pem: bytes, password: bytes | str | None, where: str) -> rsa.RSAPrivateKey:
    """An RSA private key from PEM (decrypted with ``password``); ImproperlyConfigured if not."""
    secret = password.encode("utf-8") if isinstance(password, str) else password
    try:
        key = serialization.load_pem_private_key(pem, password=secret)
    except (ValueError, TypeError) as exc:
        # the reason names what is wrong (encrypted without a password, a bad password...),
        # never the key's bytes
        raise ImproperlyConfigured(f"{where} is not a usable PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ImproperlyConfigured(f"{where}: only RSA keys are supported (as Celery)")
    return key


def trust_store(certificates: Iterable[tuple[str, bytes]]) -> dict[str, x509.Certificate]:
    """``(where, pem)`` pairs -> certificates by signer id; expired or duplicated ones are
    refused as Celery's store refuses them (ImproperlyConfigured naming the file)."""
    store: dict[str, x509.Certificate] = {}
    for where, pem in certificates:
        cert = load_certificate(pem, where)
        cert_id = certificate_id(cert)
        if _expired(cert):
            raise ImproperlyConfigured(f"{where}: certificate {cert_id!r} has expired")
        if cert_id in store:
            raise ImproperlyConfigured(
                f"{where}: certificate {cert_id!r} is in the store twice (same issuer and "
                f"serial number)"
            )
        store[cert_id] = cert
    return store


def load_signer(
    *,
    key: bytes | None,
    key_password: bytes | str | None,
    certificate: bytes | None,
    store: Sequence[tuple[str, bytes]],
    digest: str = "sha256",
    serializer: str = "json",
    accept: Iterable[str] = (),
) -> Signer:
    """A :class:`Signer` from PEM bytes. ``accept`` adds serializer names or content types
    a signed body may carry besides ``serializer``. Raises ImproperlyConfigured."""
    if serializer == "auth":
        raise ImproperlyConfigured(
            "setup_security(serializer=...) names what is signed: not 'auth'"
        )
    algorithm = digest_algorithm(digest)
    inner = serializers.normalize_accept([serializer, *accept]) - {AUTH}
    certificates = trust_store(store)
    if not certificates:
        raise ImproperlyConfigured(
            "security_cert_store holds no certificate: nothing could be verified; point it at "
            "the PEM files of every sender (a directory or a glob such as '/etc/ssl/certs/*.pem')"
        )
    private = None if key is None else load_key(key, key_password, "security_key")
    own = (
        ""
        if certificate is None
        else certificate_id(load_certificate(certificate, "security_certificate"))
    )
    return Signer(certificates, algorithm, inner, private, own, serializer)


def register(signer: Signer) -> None:
    """Make ``signer`` this process's ``auth`` serializer (Celery's registration is
    process-wide too: every app in the process signs and verifies with it)."""
    serializers.use_signing(signer)


def unregister() -> None:
    """Forget the ``auth`` serializer (tests; a process that stops signing)."""
    serializers.use_signing(None)

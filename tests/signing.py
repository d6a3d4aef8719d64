"""Keys and certificates for the message-signing tests, made with cryptography on the spot.

``make_identity`` writes ``<name>.key`` (PEM, optionally encrypted) and ``<name>.pem`` (a
self-signed RSA certificate, issuer = subject = ``name``); the store is a directory of
``.pem`` files, as Celery's docs lay it out.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Identity:
    key: Path
    cert: Path


def make_identity(
    directory: Path,
    name: str,
    *,
    password: bytes | None = None,
    valid_for: datetime.timedelta = datetime.timedelta(days=1),
    not_after: datetime.datetime | None = None,
    kind: str = "rsa",
) -> Identity:
    """A private key and its self-signed certificate, written to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "rsa":
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = rsa.generate_private_key(
            public_exponent=65537, key_size=2048
        )
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    end = not_after or now + valid_for
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .not_valid_before(min(now, end) - datetime.timedelta(days=2))
        .not_valid_after(end)
        .serial_number(x509.random_serial_number())
        .public_key(key.public_key())
        .sign(key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Identity(key_path, cert_path)

"""Message signing (Celery's ``auth`` serializer): set-up checks, signing and verifying, and
bodies read by Celery 5.7's own SecureSerializer both ways (no broker: the wire is the body)."""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caraway import Caraway
from caraway.exceptions import ContentDisallowed, ImproperlyConfigured, SecurityError
from caraway.protocol import auth
from caraway.protocol.message import TaskMessage, decode, encode
from caraway.protocol.serializers import dumps, loads, normalize_accept
from tests.signing import Identity, make_identity

pytest.importorskip("cryptography")

ACCEPT = normalize_accept(["auth"])


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Identity]:
    """alice (this process) and bob (a Celery peer) trusted in ``store/``; carol is not."""
    made = {name: make_identity(tmp_path / "keys", name) for name in ("alice", "bob", "carol")}
    store = tmp_path / "store"
    store.mkdir()
    for name in ("alice", "bob"):
        (store / f"{name}.pem").write_bytes(made[name].cert.read_bytes())
    return made


@pytest.fixture
def signing_app(keys: dict[str, Identity], tmp_path: Path) -> Iterator[Caraway]:
    app = Caraway("signed", broker="memory://")
    app.conf.update(
        task_serializer="auth",
        accept_content=["auth"],
        security_key=str(keys["alice"].key),
        security_certificate=str(keys["alice"].cert),
        security_cert_store=str(tmp_path / "store"),
    )
    try:
        app.setup_security()
        yield app
    finally:
        auth.unregister()
        app.close()


def _celery_serializer(identity: Identity, store: Path, digest: str = "sha256") -> Any:
    from celery.security.certificate import Certificate, FSCertStore
    from celery.security.key import PrivateKey
    from celery.security.serialization import SecureSerializer

    return SecureSerializer(
        PrivateKey(identity.key.read_text()),
        Certificate(identity.cert.read_text()),
        FSCertStore(str(store)),
        digest,
        serializer="json",
    )


def _message() -> TaskMessage:
    return TaskMessage(id="id-1", task="proj.add", args=[2, 3], kwargs={"when": "now"})


def test_a_signed_task_message_round_trips(signing_app: Caraway) -> None:
    wire = encode(_message(), serializer="auth")
    assert (wire.content_type, wire.content_encoding) == ("application/data", "utf-8")
    read = decode(wire, accept=ACCEPT)
    assert (read.args, read.kwargs) == ([2, 3], {"when": "now"})


def test_celery_verifies_what_caraway_signed(signing_app: Caraway, tmp_path: Path) -> None:
    body, _, _ = dumps([[2, 3], {}, {}], "auth")
    celery_side = _celery_serializer(make_identity(tmp_path / "k2", "peer"), tmp_path / "store")
    assert celery_side.deserialize(body.decode()) == [[2, 3], {}, {}]


def test_caraway_verifies_what_celery_signed(
    signing_app: Caraway, keys: dict[str, Identity], tmp_path: Path
) -> None:
    bob = _celery_serializer(keys["bob"], tmp_path / "store")
    body = bob.serialize([[1, 2], {"x": "é"}, None]).encode()
    assert loads(body, "application/data", "utf-8", accept=ACCEPT) == [[1, 2], {"x": "é"}, None]


def test_the_signer_id_is_celerys(signing_app: Caraway, keys: dict[str, Identity]) -> None:
    from celery.security.certificate import Certificate

    body, _, _ = dumps({"a": 1}, "auth")
    signer = auth._unpack(body)[0]
    assert signer == Certificate(keys["alice"].cert.read_text()).get_id()


@pytest.mark.parametrize("digest", ["sha512", "sha3_256"])
def test_other_digests_interoperate(keys: dict[str, Identity], tmp_path: Path, digest: str) -> None:
    app = Caraway("signed", broker="memory://", task_serializer="auth", accept_content=["auth"])
    try:
        app.setup_security(
            key=str(keys["alice"].key),
            cert=str(keys["alice"].cert),
            store=str(tmp_path / "store"),
            digest=digest,
        )
        bob = _celery_serializer(keys["bob"], tmp_path / "store", digest)
        assert bob.deserialize(dumps([1], "auth")[0].decode()) == [1]
        assert loads(bob.serialize([2]).encode(), "application/data", "utf-8", accept=ACCEPT) == [2]
    finally:
        auth.unregister()
        app.close()


def _repack(body: bytes, **changes: Any) -> bytes:
    signer, signature, content_type, encoding, inner = auth._unpack(body)
    fields = {"signer": signer, "signature": signature, "inner": inner, **changes}
    return auth._pack(
        fields["signer"], fields["signature"], content_type, encoding, fields["inner"]
    )


def test_a_changed_body_does_not_verify(signing_app: Caraway) -> None:
    body, _, _ = dumps([[2, 3], {}, {}], "auth")
    forged = _repack(body, inner=b"[[2,4],{},{}]")
    with pytest.raises(SecurityError, match="bad signature"):
        loads(forged, "application/data", "utf-8", accept=ACCEPT)


def test_a_signer_outside_the_store_is_refused(
    signing_app: Caraway, keys: dict[str, Identity], tmp_path: Path
) -> None:
    carol = _celery_serializer(keys["carol"], tmp_path / "store")
    with pytest.raises(SecurityError, match="unknown certificate"):
        loads(carol.serialize([1]).encode(), "application/data", "utf-8", accept=ACCEPT)


def test_a_signature_claimed_for_a_trusted_signer_must_be_theirs(
    signing_app: Caraway, keys: dict[str, Identity], tmp_path: Path
) -> None:
    carol = _celery_serializer(keys["carol"], tmp_path / "store")
    body = carol.serialize([1]).encode()
    claimed = _repack(body, signer=auth._unpack(dumps([0], "auth")[0])[0])  # alice's id
    with pytest.raises(SecurityError, match="bad signature"):
        loads(claimed, "application/data", "utf-8", accept=ACCEPT)


@pytest.mark.parametrize("body", [b"not base64!", base64.b64encode(b"one\x00\x01two")])
def test_garbage_is_a_security_error(signing_app: Caraway, body: bytes) -> None:
    with pytest.raises(SecurityError, match="not a signed"):
        loads(body, "application/data", "utf-8", accept=ACCEPT)


def test_a_signed_pickle_is_refused_unless_allowed(
    signing_app: Caraway, keys: dict[str, Identity], tmp_path: Path
) -> None:
    import pickle

    inner = pickle.dumps([1])
    signer = auth._unpack(dumps([0], "auth")[0])[0]
    from cryptography.hazmat.primitives import hashes, serialization

    key = serialization.load_pem_private_key(keys["alice"].key.read_bytes(), password=None)
    signature = key.sign(inner, auth._pss(hashes.SHA256()), hashes.SHA256())  # type: ignore[union-attr, call-arg, arg-type]
    body = auth._pack(signer, signature, "application/x-python-serialize", "binary", inner)
    with pytest.raises(ContentDisallowed):
        loads(body, "application/data", "utf-8", accept=ACCEPT)
    signing_app.setup_security(allowed_serializers=["pickle"])
    assert loads(body, "application/data", "utf-8", accept=ACCEPT) == [1]


def test_a_signed_message_without_setup_is_a_security_error(tmp_path: Path) -> None:
    auth.unregister()
    with pytest.raises(SecurityError, match="setup_security"):
        loads(base64.b64encode(b"x"), "application/data", "utf-8", accept=ACCEPT)


def test_sending_with_auth_without_setup_says_what_to_call() -> None:
    auth.unregister()
    with pytest.raises(ImproperlyConfigured, match=r"setup_security\(\)"):
        dumps([1], "auth")


# -- set-up checks --------------------------------------------------------------------------
def _app(**settings: Any) -> Caraway:
    return Caraway("signed", broker="memory://", **settings)


def test_setup_needs_the_auth_serializer_and_accept_content(keys: dict[str, Identity]) -> None:
    app = _app(security_key=str(keys["alice"].key))
    with pytest.raises(ImproperlyConfigured, match="task_serializer='auth'"):
        app.setup_security()


def test_setup_names_the_missing_files() -> None:
    app = _app(task_serializer="auth", accept_content=["auth"])
    with pytest.raises(ImproperlyConfigured, match="missing: security_key, security_certificate"):
        app.setup_security()


def test_setup_refuses_an_expired_certificate_in_the_store(
    keys: dict[str, Identity], tmp_path: Path
) -> None:
    old = make_identity(
        tmp_path / "old",
        "old",
        not_after=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1),
    )
    app = _app(task_serializer="auth", accept_content=["auth"])
    with pytest.raises(ImproperlyConfigured, match="has expired"):
        app.setup_security(
            key=str(keys["alice"].key), cert=str(keys["alice"].cert), store=str(old.cert)
        )


def test_setup_refuses_a_non_rsa_key(tmp_path: Path, keys: dict[str, Identity]) -> None:
    ecdsa = make_identity(tmp_path / "ec", "ec", kind="ec")
    app = _app(task_serializer="auth", accept_content=["auth"])
    with pytest.raises(ImproperlyConfigured, match="only RSA"):
        app.setup_security(
            key=str(ecdsa.key), cert=str(keys["alice"].cert), store=str(keys["alice"].cert)
        )


def test_an_encrypted_key_needs_its_password_and_the_error_never_shows_it(
    tmp_path: Path,
) -> None:
    locked = make_identity(tmp_path / "locked", "locked", password=b"s3cret-pass")
    app = _app(
        task_serializer="auth",
        accept_content=["auth"],
        security_key=str(locked.key),
        security_certificate=str(locked.cert),
        security_cert_store=str(locked.cert),
    )
    try:
        app.conf.security_key_password = "wrong-pass"
        with pytest.raises(ImproperlyConfigured) as caught:
            app.setup_security()
        assert "wrong-pass" not in str(caught.value)
        app.conf.security_key_password = b"s3cret-pass"
        app.setup_security()
        assert loads(dumps([7], "auth")[0], "application/data", "utf-8", accept=ACCEPT) == [7]
    finally:
        auth.unregister()


def test_a_password_of_the_wrong_type_is_refused_without_echoing_it() -> None:
    app = _app()
    with pytest.raises(ImproperlyConfigured) as caught:
        app.conf.security_key_password = 123456789
    assert "123456789" not in str(caught.value)


def test_an_unknown_digest_is_refused(keys: dict[str, Identity]) -> None:
    app = _app(task_serializer="auth", accept_content=["auth"], security_digest="md17")
    with pytest.raises(ImproperlyConfigured, match="'md17'"):
        app.setup_security(
            key=str(keys["alice"].key), cert=str(keys["alice"].cert), store=str(keys["alice"].cert)
        )


def test_an_empty_store_is_refused(keys: dict[str, Identity], tmp_path: Path) -> None:
    app = _app(task_serializer="auth", accept_content=["auth"])
    with pytest.raises(ImproperlyConfigured, match="names no file"):
        app.setup_security(
            key=str(keys["alice"].key),
            cert=str(keys["alice"].cert),
            store=str(tmp_path / "none-*.pem"),
        )

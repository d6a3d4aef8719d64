"""Signed events (``event_serializer='auth'``), as Celery 5.7 sends them: the dispatcher signs
each event message with the ``auth`` serializer, a receiver accepts ``{event_serializer,
'json'}``; bodies read by Celery's own SecureSerializer both ways (no broker: the wire is the
body), and a dispatcher and receiver on the in-process bus."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caraway import Caraway
from caraway.brokers.registry import open_bus
from caraway.events.dispatcher import EventDispatcher
from caraway.events.receiver import EventReceiver
from caraway.exceptions import CarawayError, ImproperlyConfigured
from caraway.protocol import auth
from caraway.protocol import events as proto
from caraway.protocol.serializers import AUTH, normalize_accept
from tests.helpers import wait_until
from tests.signing import Identity, make_identity

pytest.importorskip("cryptography")


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Identity]:
    """alice (this process) and bob (a Celery peer), both trusted in ``store/``."""
    made = {name: make_identity(tmp_path / "keys", name) for name in ("alice", "bob")}
    store = tmp_path / "store"
    store.mkdir()
    for identity in made.values():
        (store / identity.cert.name).write_bytes(identity.cert.read_bytes())
    return made


@pytest.fixture
def app(keys: dict[str, Identity], tmp_path: Path) -> Iterator[Caraway]:
    application = Caraway("signed", broker=f"memory://signed-events-{uuid.uuid4().hex}")
    application.conf.update(
        task_serializer="auth",
        accept_content=["auth"],
        event_serializer="auth",
        security_key=str(keys["alice"].key),
        security_certificate=str(keys["alice"].cert),
        security_cert_store=str(tmp_path / "store"),
    )
    try:
        application.setup_security()
        yield application
    finally:
        auth.unregister()
        application.close()


def _celery_serializer(identity: Identity, store: Path) -> Any:
    from celery.security.certificate import Certificate, FSCertStore
    from celery.security.key import PrivateKey
    from celery.security.serialization import SecureSerializer

    return SecureSerializer(
        PrivateKey(identity.key.read_text()),
        Certificate(identity.cert.read_text()),
        FSCertStore(str(store)),
        "sha256",
        serializer="json",
    )


def _event() -> dict[str, Any]:
    return proto.build_event("worker-heartbeat", hostname="w1@h", pid=7, clock=3, timestamp=1.5)


def test_event_serializer_auth_is_taken_and_others_are_refused() -> None:
    assert Caraway("a", broker="memory://", event_serializer="auth").conf.event_serializer == "auth"
    with pytest.raises(ImproperlyConfigured, match="event_serializer"):
        Caraway("b", broker="memory://", event_serializer="msgpack")


def test_celery_verifies_a_signed_event(app: Caraway, tmp_path: Path) -> None:
    message = proto.encode(_event(), hostname="w1@h", serializer="auth")
    assert (message.content_type, message.content_encoding) == (AUTH, "utf-8")
    celery_side = _celery_serializer(make_identity(tmp_path / "k2", "peer"), tmp_path / "store")
    assert celery_side.deserialize(message.body.decode()) == _event()


def test_a_celery_signed_event_is_read(
    app: Caraway, keys: dict[str, Identity], tmp_path: Path
) -> None:
    bob = _celery_serializer(keys["bob"], tmp_path / "store")
    body = bob.serialize([_event(), _event()]).encode()
    accept = normalize_accept(["auth", "json"])
    assert proto.decode(body, content_type=AUTH, accept=accept) == [_event(), _event()]


def test_a_signed_event_is_refused_where_events_are_json(app: Caraway) -> None:
    message = proto.encode(_event(), hostname="w1@h", serializer="auth")
    with pytest.raises(CarawayError, match="application/data"):
        proto.decode(message.body, content_type=message.content_type)


def test_a_signing_dispatcher_reaches_a_signing_receiver(app: Caraway) -> None:
    raw = open_bus(app.broker_url)
    raw.subscribe("#")
    seen: list[dict[str, Any]] = []
    receiver = EventReceiver(app, handlers={"*": seen.append})
    dispatcher = EventDispatcher(app, hostname="w1@h")
    try:
        receiver._receive(0.01, wakeup=False)  # subscribed before the send
        dispatcher.send("worker-online", freq=2.0)
        assert dispatcher.flush(5)
        wire = wait_until(lambda: raw.receive(0.05), timeout=5)
        assert wire[0].content_type == AUTH  # signed on the bus
        events = wait_until(lambda: receiver._receive(0.05, wakeup=False), timeout=5)
    finally:
        dispatcher.close()
        receiver.stop()
        raw.close()
    assert events[0]["type"] == "worker-online" and events[0]["hostname"] == "w1@h"


def test_signing_events_without_setup_security_fails_at_once() -> None:
    unsigned = Caraway("u", broker="memory://", event_serializer="auth")
    try:
        with pytest.raises(ImproperlyConfigured, match="setup_security"):
            EventDispatcher(unsigned, hostname="w1@h")
    finally:
        unsigned.close()

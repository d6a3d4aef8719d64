"""Signed messages (Celery's ``auth`` serializer) between caraway and a real Celery 5.7 on
Redis (db 11): each side signs with its own key and trusts the other's certificate; a
message signed by a key outside the store is dead-lettered by a caraway worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import Worker, wait_until
from tests.interop.celeryproc import CeleryWorker, celery_module
from tests.interop.pairs import paired_project

pytest.importorskip("cryptography")

from caraway.protocol import auth
from tests.signing import make_identity

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Call to deprecated:DeprecationWarning"),
]

URL = "redis://127.0.0.1:6379/11"

#: what both apps add to their configuration: sign with TEST_KEY, trust TEST_STORE
SIGNING = """
app.conf.update(
    task_serializer='auth',
    accept_content=['auth'],
    result_accept_content=['json'],
    security_key=os.environ['TEST_KEY'],
    security_certificate=os.environ['TEST_CERT'],
    security_cert_store=os.environ['TEST_STORE'],
)
app.setup_security()
"""


@pytest.fixture
def signed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Both apps written into ``tmp_path`` (signing as the caraway side unless a test says
    otherwise), signing keys made, Redis db 11 flushed."""
    keys = tmp_path / "keys"
    store = tmp_path / "store"
    store.mkdir()
    for name in ("caraway-side", "celery-side"):
        identity = make_identity(keys, name)
        (store / f"{name}.pem").write_bytes(identity.cert.read_bytes())
    env = {
        "TEST_KEY": str(keys / "caraway-side.key"),
        "TEST_CERT": str(keys / "caraway-side.pem"),
        "TEST_STORE": str(store),
    }
    try:
        yield from paired_project(
            tmp_path, monkeypatch, URL, caraway_config=SIGNING, celery_config=SIGNING, env=env
        )
    finally:
        auth.unregister()


CELERY_ENV = {"TEST_KEY": "keys/celery-side.key", "TEST_CERT": "keys/celery-side.pem"}


@pytest.fixture
def celery_signing_client(signed: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The Celery app in this process, signing as the Celery side; kombu's process-wide
    serializer registry is put back afterwards (setup_security changes it)."""
    from kombu.serialization import registry

    disabled = set(registry._disabled_content_types)
    for name, value in CELERY_ENV.items():
        monkeypatch.setenv(name, str(signed / value))
    try:
        with celery_module() as module:
            yield module
    finally:
        registry._disabled_content_types = disabled
        if "auth" in registry._encoders:
            registry.unregister("auth")


def _proj() -> Any:
    import proj.tasks

    return proj.tasks


def test_a_celery_worker_runs_what_caraway_signed(
    signed: Path, processes: list[Worker | CeleryWorker]
) -> None:
    env = {name: str(signed / value) for name, value in CELERY_ENV.items()}
    processes.append(CeleryWorker(signed, queues=("celery",), env=env).wait_ready())
    proj = _proj()
    result = proj.add.delay(2, 3)
    assert result.get(timeout=20) == 5


def test_a_caraway_worker_runs_what_celery_signed(
    signed: Path, celery_signing_client: Any, processes: list[Worker | CeleryWorker]
) -> None:
    processes.append(Worker(signed, "-c", "1", "-P", "solo").wait_ready())
    result = celery_signing_client.add.delay(4, 4)
    assert result.get(timeout=20) == 8
    raw = redis.Redis.from_url(URL)
    try:
        assert raw.llen("celery") == 0  # taken and run, not left or refused
    finally:
        raw.close()


def test_a_message_signed_outside_the_store_is_dead_lettered(
    signed: Path, processes: list[Worker | CeleryWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    stranger = make_identity(signed / "keys", "stranger")
    monkeypatch.setenv("TEST_KEY", str(stranger.key))
    monkeypatch.setenv("TEST_CERT", str(stranger.cert))
    monkeypatch.setenv("TEST_STORE", str(stranger.cert))  # the sender trusts itself only
    proj = _proj()
    forged = proj.add.delay(1, 1)
    worker_env = {
        "TEST_KEY": str(signed / "keys/caraway-side.key"),
        "TEST_CERT": str(signed / "keys/caraway-side.pem"),
        "TEST_STORE": str(signed / "store"),
    }
    worker = Worker(signed, "-c", "1", "-P", "solo", env=worker_env).wait_ready()
    processes.append(worker)
    admin = proj.app.admin()

    def dead() -> list[Any]:
        return admin.dead_letters()

    wait_until(lambda: len(dead()) == 1, timeout=20, message="the forged message dead-lettered")
    letter = dead()[0]
    assert "SecurityError" in letter.reason and "unknown certificate" in letter.reason
    assert letter.message.headers["id"] == forged.id
    assert "unknown certificate" in worker.log()

"""Signed events (``event_serializer='auth'``) between caraway and a real Celery 5.7 on Redis
(db 8): a Celery worker's signed events read by caraway's EventReceiver, and a caraway
worker's signed events read by Celery's own ``app.events.Receiver``. Each side signs with
its own key and trusts the other's certificate."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Worker, wait_until
from tests.interop.celeryproc import CeleryWorker
from tests.interop.pairs import paired_project

pytest.importorskip("cryptography")

from caraway.events.receiver import EventReceiver
from caraway.protocol import auth
from tests.signing import make_identity

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Call to deprecated:DeprecationWarning"),
]

URL = "redis://127.0.0.1:6379/8"

SIGNING = """
app.conf.update(
    task_serializer='auth',
    accept_content=['auth'],
    event_serializer='auth',
    result_accept_content=['json'],
    security_key=os.environ['TEST_KEY'],
    security_certificate=os.environ['TEST_CERT'],
    security_cert_store=os.environ['TEST_STORE'],
)
app.setup_security()
"""

#: Celery's receiver, verifying signed events; prints each event's type and hostname
CELERY_RECEIVER = """
import sys
from celeryproj import app

def show(event):
    print(event['type'], event.get('hostname'), flush=True)
    if event['type'].startswith('worker-') and event['hostname'].startswith('signer@'):
        raise SystemExit(0)

with app.connection_for_read() as conn:
    # signed events only: an unsigned one would be refused
    app.events.Receiver(conn, handlers={'*': show}, accept={'auth'}).capture(
        limit=None, timeout=30)
"""


@pytest.fixture
def signed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    keys, store = tmp_path / "keys", tmp_path / "store"
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


def _celery_env(base: Path) -> dict[str, str]:
    return {
        "TEST_KEY": str(base / "keys/celery-side.key"),
        "TEST_CERT": str(base / "keys/celery-side.pem"),
    }


def test_caraway_reads_a_celery_workers_signed_events(
    signed: Path, processes: list[Worker | CeleryWorker]
) -> None:
    import proj.tasks

    seen: list[dict[str, Any]] = []
    # signed events only: an unsigned one would be refused
    receiver = EventReceiver(proj.tasks.app, handlers={"*": seen.append}, accept=["auth"])
    try:
        receiver._receive(0.01, wakeup=False)  # subscribed before the worker starts
        processes.append(CeleryWorker(signed, events=True, env=_celery_env(signed)).wait_ready())

        def online() -> bool:
            receiver.capture(limit=1, timeout=1, wakeup=False)
            return any(event["type"] == "worker-online" for event in seen)

        wait_until(online, timeout=20, message="the Celery worker's signed worker-online")
    finally:
        receiver.stop()
    assert all(event["hostname"].startswith("celery1@") for event in seen)


def test_celery_reads_a_caraway_workers_signed_events(
    signed: Path, processes: list[Worker | CeleryWorker]
) -> None:
    (signed / "celery_receiver.py").write_text(CELERY_RECEIVER)
    receiver = subprocess.Popen(
        [sys.executable, "celery_receiver.py"],
        cwd=signed,
        env={**os.environ, "PYTHONPATH": str(signed), **_celery_env(signed)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        processes.append(Worker(signed, "-E", "-n", "signer@%h", "-P", "solo").wait_ready())
        out, _ = receiver.communicate(timeout=30)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.communicate()
    assert receiver.returncode == 0, out
    # online or a heartbeat (every 2 s), whichever the receiver was subscribed for
    assert " signer@" in out

"""Bad input never kills a worker and never loses a message silently (SQLite default)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from caraway import states
from caraway.protocol.message import Message, TaskMessage, encode
from tests.helpers import Worker, purge_queue, queue_size, wait_until


def _app():
    from proj.caraway import app

    return app


def _publish_raw(message: Message) -> None:
    transport = _app().connection()
    try:
        transport.publish(message, queue="celery")
    finally:
        transport.close()


def _dead_letters() -> list[str]:
    admin = _app().admin()
    try:
        return [letter.reason for letter in admin.dead_letters()]
    finally:
        admin.close()


def test_corrupt_and_unaccepted_messages_are_dead_lettered_and_the_worker_keeps_going(
    project: Path, workers: list[Worker]
) -> None:
    workers.append(Worker(project, "-c", "1").wait_ready())
    good = encode(TaskMessage(id="corrupt-1", task="proj.tasks.add", args=[1, 1]))
    _publish_raw(Message(body=b"\xff{not json", headers=good.headers))
    pickled = encode(TaskMessage(id="pickled-1", task="proj.tasks.add", args=[1, 1]))
    _publish_raw(
        Message(
            body=pickled.body,
            headers={**pickled.headers, "id": "pickled-1"},
            content_type="application/x-python-serialize",
            content_encoding="binary",
        )
    )
    from proj.tasks import add

    assert add.delay(2, 2).get(timeout=10) == 4
    reasons = wait_until(
        lambda: _dead_letters() if len(_dead_letters()) == 2 else None,
        timeout=10,
        message="two dead letters",
    )
    assert any("ProtocolError" in reason for reason in reasons)
    assert any("ContentDisallowed" in reason for reason in reasons)
    assert workers[0].process.poll() is None


def test_unknown_task_is_stored_as_not_registered_and_logged_with_the_registered_names(
    project: Path, workers: list[Worker]
) -> None:
    worker = Worker(project, "-c", "1").wait_ready()
    workers.append(worker)
    result = _app().send_task("proj.tasks.ad", (2, 2))
    from caraway.exceptions import NotRegistered

    with pytest.raises(NotRegistered, match=r"proj\.tasks\.add"):
        result.get(timeout=10)
    assert result.state == states.FAILURE
    assert "proj.tasks.ad" in worker.log() and "proj.tasks.mul" in worker.log()


def test_unserialisable_arguments_raise_at_call_time(project: Path) -> None:
    from proj.tasks import add

    from caraway.exceptions import SerializationError

    with pytest.raises(SerializationError, match="JSON"):
        add.delay(object(), 1)
    assert queue_size(_app(), "celery") == 0


def test_worker_that_cannot_reach_its_broker_retries_then_gives_up_clearly(
    project: Path,
) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "caraway",
            "-A",
            "proj",
            "-b",
            "redis://127.0.0.1:1/0",
            "worker",
            "-l",
            "info",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode != 0
    assert "trying again in" in completed.stderr
    assert "cannot reach the broker at redis://127.0.0.1:1/0 after 3 attempt(s)" in (
        completed.stderr
    )


def test_dead_letters_cli_lists_requeues_and_purges(project: Path) -> None:
    _publish_raw(Message(body=b"garbage", headers={"id": "dl-1", "task": "proj.tasks.add"}))
    transport = _app().connection()
    try:
        delivery = transport.fetch(["celery"], limit=1, timeout=1, owner="test")[0]
        delivery.dead_letter("ProtocolError: garbage")
    finally:
        transport.close()

    def cli(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "caraway", "-A", "proj", "dead-letters", *args],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout

    assert "dl-1" in cli("list") and "ProtocolError: garbage" in cli("list")
    assert "requeued 1" in cli("requeue")
    assert queue_size(_app(), "celery") == 1
    assert "no dead letters" in cli("list")
    purge_queue(_app(), "celery")
    assert "deleted 0" in cli("purge", "-f")

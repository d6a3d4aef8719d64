"""Bad messages published raw (py-amqp) to a real caraway worker's RabbitMQ queue.

A corrupt body and an unaccepted content type go to the dead-letter queue ``caraway.dead``
with the reason; an unknown task is stored as FAILURE NotRegistered and kept as a dead
letter. Each time the worker keeps running and still serves good tasks. Results live in
Redis db 7 (ours alone); the seed project, queue helpers and RabbitMQ retries come from
test_amqp_worker.
"""

from __future__ import annotations

import json
import os
import pickle
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest
import redis

from caraway import states
from tests.helpers import Worker, wait_until
from tests.integration.test_amqp_worker import (
    forget_proj,
    queues,
    rabbit_channel_call,
    seed,
    workers,
    write_seed_project,
)

pytestmark = [pytest.mark.amqp, pytest.mark.redis, pytest.mark.slow]
__all__ = ["queues", "workers"]  # fixtures used by name below

BACKEND = "redis://localhost/7"
DEAD = "caraway.dead"


@pytest.fixture
def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, queues: Callable[[str], str]
) -> Iterator[Path]:
    client = redis.Redis.from_url(BACKEND)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Redis for results at {BACKEND}: {exc}")
    write_seed_project(tmp_path, backend=BACKEND)
    monkeypatch.setenv("TEST_QUEUE", queues("bad"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    forget_proj()
    try:
        yield tmp_path
    finally:
        forget_proj()
        client.flushdb()
        client.close()


@pytest.fixture
def worker(project: Path, workers: list[Worker]) -> Worker:
    started = Worker(project, "-c", "1")
    workers.append(started)
    return started.wait_ready()


def publish_raw(queue: str, body: bytes, content_type: str, headers: dict[str, Any]) -> None:
    """Publish as a foreign producer would: default exchange, routing key = queue."""

    def run(channel: Any) -> None:
        # the same declaration caraway makes, so this never clashes with the worker's
        channel.queue_declare(queue, durable=True, auto_delete=False)
        channel.confirm_select()
        message = amqp.Message(
            body=body,
            content_type=content_type,
            content_encoding="utf-8" if "json" in content_type else "binary",
            application_headers=headers,
            correlation_id=headers.get("id", ""),
            delivery_mode=2,
        )
        channel.basic_publish(message, exchange="", routing_key=queue)

    rabbit_channel_call(run)


def task_headers(task: str) -> dict[str, Any]:
    task_id = str(uuid.uuid4())
    return {
        "lang": "py",
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "argsrepr": "(2, 2)",
        "kwargsrepr": "{}",
        "origin": "raw@test",
    }


def good_body() -> bytes:
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return json.dumps([[2, 2], {}, embed]).encode()


def take_dead_letters(queue: str) -> list[Any]:
    """Take (ack) the dead letters from ``queue``; put every other one back."""

    def run(channel: Any) -> list[Any]:
        ours: list[Any] = []
        others: list[int] = []
        channel.auto_decode = False  # compare the body byte for byte
        channel.queue_declare(DEAD, durable=True, auto_delete=False)
        while (raw := channel.basic_get(DEAD, no_ack=False)) is not None:
            headers = raw.properties.get("application_headers") or {}
            if headers.get("x-caraway-queue") == queue:
                ours.append(raw)
                channel.basic_ack(raw.delivery_info["delivery_tag"])
            else:
                others.append(raw.delivery_info["delivery_tag"])
        for tag in others:
            channel.basic_reject(tag, True)
        return ours

    result: list[Any] = rabbit_channel_call(run)
    return result


def assert_still_serving(worker: Worker) -> None:
    assert worker.process.poll() is None, worker.log()
    assert seed().add.delay(3, 4).get(timeout=15) == 7


BAD_MESSAGES = {
    "corrupt-json": (b'[[2, 2], {}, {"callbacks": nul', "application/json", "not valid JSON"),
    "wrong-shape": (b'{"args": [2, 2]}', "application/json", "ProtocolError"),
    "unaccepted-pickle": (
        pickle.dumps(((2, 2), {}, {})),
        "application/x-python-serialize",
        "ContentDisallowed",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_MESSAGES))
def test_undecodable_message_is_dead_lettered_and_the_worker_carries_on(
    kind: str, worker: Worker
) -> None:
    queue = os.environ["TEST_QUEUE"]
    body, content_type, why = BAD_MESSAGES[kind]
    headers = task_headers("proj.tasks.add")
    publish_raw(queue, body, content_type, headers)
    letters = wait_until(
        lambda: take_dead_letters(queue), timeout=15, interval=0.2, message="a dead letter"
    )
    (letter,) = letters
    dead_headers = letter.properties["application_headers"]
    assert dead_headers["id"] == headers["id"]
    assert why.lower() in str(dead_headers["x-caraway-reason"]).lower()
    assert bytes(letter.body) == body
    assert letter.properties["content_type"] == content_type
    assert_still_serving(worker)
    assert headers["id"] in worker.log()


def test_unknown_task_is_stored_as_failure_not_registered(worker: Worker) -> None:
    queue = os.environ["TEST_QUEUE"]
    headers = task_headers("proj.tasks.no_such_task")
    publish_raw(queue, good_body(), "application/json", headers)
    from proj.caraway import app  # type: ignore[import-not-found]

    result = app.AsyncResult(headers["id"])
    wait_until(lambda: result.state == states.FAILURE, timeout=15, message="FAILURE")
    exc = result.get(propagate=False)
    assert type(exc).__name__ == "NotRegistered"
    assert "proj.tasks.no_such_task" in str(exc)
    assert "unregistered task 'proj.tasks.no_such_task'" in worker.log()
    assert_still_serving(worker)
    # and kept (issue 15): a worker that knows the task can take it from the store
    letters = take_dead_letters(queue)
    assert len(letters) == 1
    assert "NotRegistered" in str(letters[0].properties["application_headers"]["x-caraway-reason"])


def test_each_of_twenty_corrupt_messages_becomes_exactly_one_dead_letter(worker: Worker) -> None:
    queue = os.environ["TEST_QUEUE"]
    sent = []
    for n in range(20):
        headers = task_headers("proj.tasks.add")
        sent.append(headers["id"])
        publish_raw(queue, b"\xff\xfe not json %d" % n, "application/json", headers)
    taken: list[Any] = []

    def all_dead() -> bool:
        taken.extend(take_dead_letters(queue))
        return len(taken) >= len(sent)

    wait_until(all_dead, timeout=20, interval=0.2, message="20 dead letters")
    assert sorted(t.properties["application_headers"]["id"] for t in taken) == sorted(sent)
    assert_still_serving(worker)

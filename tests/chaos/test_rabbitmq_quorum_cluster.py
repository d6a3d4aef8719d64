"""A quorum queue on a private three-node RabbitMQ cluster keeps every message when the
node leading it is killed: a caraway consumer on another node drains all of them.

Slow (three RabbitMQ nodes start and join on one machine): marked ``slow``; the nodes,
ports, cookie and data are the test's own (tests/harness/rabbit.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from caraway.brokers.amqp.transport import AMQPTransport
from caraway.protocol.message import Message
from tests.harness.rabbit import RabbitCluster
from tests.harness.redis import wait

pytestmark = [pytest.mark.amqp, pytest.mark.slow]

COUNT = 100


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RabbitCluster]:
    deployment = RabbitCluster(tmp_path / "rabbit")
    try:
        yield deployment.start()
    finally:
        deployment.stop()


def _transport(url: str) -> AMQPTransport:
    options = {"queue_type": "quorum", "max_retries": 5, "prefetch_count": 20, "heartbeat": 5}
    return AMQPTransport(url, options=options)


def _message(number: int) -> Message:
    task_id = f"{number}-{uuid.uuid4()}"
    return Message(
        body=b"[[], {}, {}]",
        headers={"lang": "py", "task": "proj.noop", "id": task_id, "retries": 0},
        properties={"correlation_id": task_id, "delivery_mode": 2},
    )


def test_a_quorum_queue_keeps_every_message_when_its_leader_node_dies(
    cluster: RabbitCluster,
) -> None:
    first, leader_node, last = cluster.nodes
    queue = f"caraway-ha-{uuid.uuid4().hex[:8]}"
    declarer, producer, consumer = (
        _transport(leader_node.url), _transport(first.url), _transport(last.url)
    )  # fmt: skip
    try:
        declarer.declare(queue)  # declared on that node: it leads the queue
        leaders = first.ctl("list_queues", "name", "leader", "--quiet")
        assert leader_node.name in next(line for line in leaders.splitlines() if queue in line)
        sent = [_message(n) for n in range(COUNT)]
        producer.publish_many([(message, queue) for message in sent])  # confirmed by the quorum

        received: set[str] = set()
        for delivery in consumer.fetch([queue], limit=30, timeout=10, owner="o"):
            received.add(delivery.message.headers["id"])
            delivery.ack()
        declarer.close()
        leader_node.kill()

        def drained() -> bool:
            for delivery in consumer.fetch([queue], limit=20, timeout=1, owner="o"):
                received.add(delivery.message.headers["id"])
                delivery.ack()
            return len(received) == COUNT

        wait(drained, 60, "every message from the surviving nodes")
    finally:
        for handle in (declarer, producer, consumer):
            handle.close()
    assert received == {message.headers["id"] for message in sent}

"""Pub/sub fan-out across a Redis Cluster: an event the caraway bus publishes (through
whichever node its client picks) reaches subscribers connected to every node. Remote
control's broadcasts ride the same plain pub/sub (tests/integration/test_control_brokers.py
runs them on the cluster)."""

from __future__ import annotations

import time
import uuid

import redis

from caraway.brokers.registry import open_bus
from caraway.clients.rediscluster import parse_cluster_url
from caraway.protocol import envelope
from caraway.protocol.message import Message


def test_an_event_reaches_subscribers_on_every_node(cluster_broker_url: str) -> None:
    prefix = cluster_broker_url.partition("global_keyprefix=")[2]
    nodes = parse_cluster_url(cluster_broker_url).nodes
    listeners = []
    for host, port in nodes:
        client = redis.Redis(host=host, port=port)
        pubsub = client.pubsub()
        pubsub.psubscribe(f"{prefix}caraway.celeryev/*")
        assert pubsub.get_message(timeout=2)["type"] == "psubscribe"
        listeners.append((client, pubsub))
    bus = open_bus(cluster_broker_url)
    tag = uuid.uuid4().hex
    try:
        bus.publish(Message(body=tag.encode(), headers={}), routing_key="task.succeeded")
        for _, pubsub in listeners:
            deadline, seen = time.monotonic() + 5, None
            while seen is None and time.monotonic() < deadline:
                event = pubsub.get_message(timeout=0.5)
                if event is not None and event["type"] == "pmessage":
                    seen = envelope.unpack(event["data"]).message.body
            assert seen == tag.encode()
    finally:
        bus.close()
        for client, pubsub in listeners:
            pubsub.close()
            client.close()

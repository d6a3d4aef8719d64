"""RabbitMQ's beat lease lives on a connection: a forked child (a prefork worker's new
child, forked after its beat connected) must not keep that connection alive when the
leader dies, or the lease would wait for heartbeats to time out.

RabbitMQ names ``beat-*`` are this module's own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from caraway.brokers.registry import open_beat_store
from tests.contract.conftest import _rabbit_or_skip, delete_amqp_queues

pytestmark = pytest.mark.amqp

URL = "amqp://guest:guest@127.0.0.1:5672//"

LEADER = """
import os, sys, time
from caraway.brokers.registry import open_beat_store

store = open_beat_store(sys.argv[1], namespace=sys.argv[2], holder='old', node='old@h',
                        lease_seconds=30.0)
while not store.lead():
    time.sleep(0.05)
child = os.fork()
if child == 0:
    time.sleep(60)  # a pool child, idle: it must not hold the leader's connection open
    os._exit(0)
print(child, flush=True)
time.sleep(0.5)
os.kill(os.getpid(), 9)  # the leader dies; its child lives on
"""


@pytest.fixture
def namespace() -> Iterator[str]:
    _rabbit_or_skip()
    name = f"beat-{uuid.uuid4().hex[:10]}"
    yield name
    delete_amqp_queues([f"{name}.beat", f"{name}.beat.status"])


def test_a_dead_leaders_forked_child_does_not_keep_the_lease(namespace: str) -> None:
    standby = open_beat_store(
        URL, namespace=namespace, holder="new", node="new@h", lease_seconds=30.0
    )
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER, URL, namespace], stdout=subprocess.PIPE, text=True
    )
    child = 0
    try:
        assert leader.stdout is not None
        child = int(leader.stdout.readline())
        assert not standby.lead()
        leader.wait(timeout=10)
        died = time.monotonic()
        while not standby.lead():
            # the heartbeat here is 60 s (lease 30 s): only a closed socket moves it sooner
            assert time.monotonic() - died < 5, "the lease stayed with the dead leader"
            time.sleep(0.05)
    finally:
        standby.close()
        if leader.poll() is None:
            leader.kill()
            leader.wait()
        if leader.stdout is not None:
            leader.stdout.close()
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)

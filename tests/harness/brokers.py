"""One broker per kind for tests that run the same scenario on each: SQLite, Redis,
RabbitMQ and PostgreSQL, each private to the test (a file, a private ``redis-server``, a
queue of its own on the machine's RabbitMQ or a private node, a database of its own).

`open_broker(kind, workdir)` yields a `Broker`: the URLs a `proj` app and its workers use
(`env()` gives them as ``TEST_BROKER``/``TEST_BACKEND``/``TEST_QUEUE``), the private
server when there is one (to restart it), and optionally a `TcpProxy` in front of it (to
cut connections). Everything is stopped or dropped when the context ends.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import amqp

from tests.harness.proxy import TcpProxy
from tests.harness.rabbit import Node, private_node
from tests.harness.redis import Server
from tests.harness.waiting import require

#: the kinds a scenario can be parametrized over (``pytest.mark.parametrize("kind", KINDS)``)
KINDS = ("sqlite", "redis", "amqp", "postgres")
#: the machine's RabbitMQ: its default vhost is shared, so a test uses a queue of its own
MACHINE_AMQP = "amqp://guest:guest@127.0.0.1:5672//"


@dataclass
class Broker:
    kind: str
    url: str
    backend: str
    queue: str
    #: a private server the test may restart (`Server` for Redis, `Node` for RabbitMQ)
    server: Server | Node | None = None
    proxy: TcpProxy | None = None

    def env(self) -> dict[str, str]:
        return {"TEST_BROKER": self.url, "TEST_BACKEND": self.backend, "TEST_QUEUE": self.queue}


@contextlib.contextmanager
def open_broker(
    kind: str, workdir: Path, *, proxied: bool = False, private_rabbit: bool = False
) -> Iterator[Broker]:
    """A ``kind`` broker private to this test; ``proxied`` puts a `TcpProxy` before a
    network broker (Redis, RabbitMQ, PostgreSQL); ``private_rabbit`` starts a RabbitMQ node
    of its own instead of using a queue on the machine's."""
    workdir.mkdir(parents=True, exist_ok=True)
    queue = f"q-{uuid.uuid4().hex[:10]}"
    with contextlib.ExitStack() as stack:
        if kind == "sqlite":
            url = f"sqlite:///{workdir / 'broker.db'}"
            yield Broker(kind, url, url, queue)
            return
        if kind == "redis":
            server = Server(workdir, "redis", appendonly=True).start()
            stack.callback(server.stop, 9)
            proxy = _proxy(stack, server.port) if proxied else None
            port = proxy.port if proxy else server.port
            url = f"redis://127.0.0.1:{port}/0"
            yield Broker(kind, url, server.url(0), queue, server, proxy)
            return
        if kind == "amqp":
            backend = f"sqlite:///{workdir / 'results.db'}"
            if private_rabbit:
                node = private_node(workdir, tag="ledger")
                stack.callback(node.stop)
                node.start()
                node.wait_ready()
                target, amqp_server = node.port, node
            else:
                require(_rabbit_answers(5672), "no RabbitMQ at 127.0.0.1:5672")
                stack.callback(delete_queues, 5672, queue)
                target, amqp_server = 5672, None
            proxy = _proxy(stack, target) if proxied else None
            port = proxy.port if proxy else target
            url = f"amqp://guest:guest@127.0.0.1:{port}//"
            yield Broker(kind, url, backend, queue, amqp_server, proxy)
            return
        if kind == "postgres":
            from tests import pg

            name = stack.enter_context(pg.database("caraway_ledger"))
            url = pg.url(name)
            if proxied:
                host_port = int(pg.PG_HOST.rsplit(":", 1)[1])
                proxy = _proxy(stack, host_port)
                url = url.replace(f":{host_port}/", f":{proxy.port}/")
                yield Broker(kind, url, pg.url(name), queue, None, proxy)
            else:
                yield Broker(kind, url, url, queue)
            return
        raise ValueError(f"unknown broker kind {kind!r}; one of {KINDS}")


def _proxy(stack: contextlib.ExitStack, port: int) -> TcpProxy:
    proxy = TcpProxy(port).start()
    stack.callback(proxy.close)
    return proxy


def _rabbit_answers(port: int) -> bool:
    conn = amqp.Connection(f"127.0.0.1:{port}", connect_timeout=2)
    try:
        conn.connect()
        conn.close()
        return True
    except Exception:
        conn.collect()
        return False


def delete_queues(port: int, *names: str) -> None:
    """Delete queues (and their ``.dlq``-style companions are the caller's) on a RabbitMQ."""
    conn = amqp.Connection(f"127.0.0.1:{port}", connect_timeout=2)
    try:
        conn.connect()
        channel = conn.channel()
        for name in names:
            channel.queue_delete(name)
        conn.close()
    except Exception:
        conn.collect()

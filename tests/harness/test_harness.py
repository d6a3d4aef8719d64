"""The harness itself: a proxy that really cuts and restores, processes that really stop
(frozen, or with children), a private Redis that keeps acknowledged writes across SIGKILL."""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.harness.fixtures import processes, redis_server, tcp_proxy
from tests.harness.ports import free_port
from tests.harness.processes import Processes
from tests.harness.proxy import TcpProxy
from tests.harness.redis import Server
from tests.harness.waiting import wait_for

__all__ = ["processes", "redis_server", "tcp_proxy"]  # fixtures, used by name

pytestmark = [pytest.mark.redis]


def test_proxy_forwards_cuts_and_restores(
    redis_server: Server, tcp_proxy: Callable[[int], TcpProxy]
) -> None:
    proxy = tcp_proxy(redis_server.port)
    client = redis.Redis(port=proxy.port, socket_timeout=2, socket_connect_timeout=1)
    try:
        assert client.set("k", "v")
        assert proxy.cut() == 1
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
        proxy.restore()
        assert client.get("k") == b"v"  # redis-py reconnects once the port is back
        assert proxy.connections == 2
        proxy.blackhole()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5) as raw:
            raw.sendall(b"PING\r\n")
            with pytest.raises(TimeoutError):
                raw.recv(16)  # held: nothing reaches Redis, nothing comes back
        proxy.restore()
        assert client.get("k") == b"v"
    finally:
        client.close()


def test_appendonly_server_keeps_acknowledged_writes_across_sigkill(redis_server: Server) -> None:
    client = redis_server.client()
    try:
        client.rpush("acked", *range(100))
    finally:
        client.close()
    redis_server.restart(signal.SIGKILL)
    client = redis_server.client()
    try:
        assert client.llen("acked") == 100
    finally:
        client.close()


CHILDREN = """
import os, sys, time
for _ in range(2):
    if os.fork() == 0:
        time.sleep(600)
        os._exit(0)
open(sys.argv[1], 'w').close()
while True:
    time.sleep(0.05)
"""


def test_processes_stop_frozen_parents_and_their_children(
    processes: Processes, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    proc = processes.command([sys.executable, "-c", CHILDREN, str(ready)], name="forker")
    wait_for(ready.exists, 10, "the forker to start its children")
    wait_for(lambda: len(proc.children()) == 2, 5, "2 children")
    children = proc.children()
    killed = proc.kill_child()
    assert killed is not None and killed in children
    wait_for(lambda: not _alive(killed), 5, "the child to die")  # a zombie counts as dead
    proc.freeze()
    assert proc.stop(timeout=2) is not None
    for pid in children:
        # SIGKILL to the group is delivered at once, but a process takes a moment to exit
        wait_for(lambda pid=pid: not _alive(pid), 5, f"child {pid} to die")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # the state follows the parenthesised name, which may hold spaces
            return stat.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_free_port_is_bindable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))

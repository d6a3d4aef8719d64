"""Private RabbitMQ nodes: one (`RabbitNode`) or a three-node cluster (`RabbitCluster`), node
names ``caraway-<tag>-<port>@localhost``, AMQP and distribution ports of their own, data,
logs and an Erlang cookie in the test's directory. Nodes are stopped by pid (their process
group); the machine's RabbitMQ (5672) is never touched. A node starts in a few seconds; a
cluster takes a while (three nodes, then two joins).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

from tests.harness.ports import free_port
from tests.harness.waiting import require, wait_for

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # the /usr/sbin wrapper runs su
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


class Node:
    """One ``rabbitmq-server`` in its own session; ``home`` holds the Erlang cookie."""

    def __init__(self, base: Path, home: Path, *, tag: str = "ha") -> None:
        require(os.path.exists(SERVER), "rabbitmq-server is not installed")
        self.port = free_port()
        self.dist_port = free_port()
        self.name = f"caraway-{tag}-{self.port}@localhost"
        self.dir = base / self.name.split("@")[0]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.home = home
        (self.dir / "rabbitmq.conf").write_text("loopback_users = none\n")
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        return {
            **env,
            "HOME": str(self.home),  # the shared Erlang cookie
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
        }

    def start(self) -> None:
        log = open(self.dir / "server.out", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [SERVER], env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                return len(sock.recv(8)) > 0
        except OSError:
            return False

    def wait_ready(self, timeout: float = 120) -> Node:
        wait_for(self.ready, timeout, f"RabbitMQ node {self.name}", interval=0.2)
        return self

    def restart(self, *, kill: bool = True) -> None:
        """SIGKILL (or stop) the node and start it again on the same ports and data."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()
        self.wait_ready()

    def ctl(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [CTL, "-n", self.name, *args],
            env=self.env(), capture_output=True, text=True, timeout=timeout, check=True,
        )  # fmt: skip
        return done.stdout

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def cookie_home(base: Path) -> Path:
    """A HOME holding an Erlang cookie the nodes and rabbitmqctl of this test share."""
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    cookie = home / ".erlang.cookie"
    if not cookie.exists():
        cookie.write_text("CARAWAYHATESTCOOKIE")
        cookie.chmod(0o400)
    return home


def private_node(base: Path, *, tag: str = "node") -> Node:
    """One private node (not started) whose cookie lives under ``base``."""
    require(os.path.exists(SERVER), "rabbitmq-server is not installed")
    return Node(base, cookie_home(base), tag=tag)


class RabbitCluster:
    """Three nodes joined into one cluster."""

    def __init__(self, base: Path) -> None:
        require(os.path.exists(SERVER), "rabbitmq-server is not installed")
        home = cookie_home(base)
        self.nodes = [Node(base, home) for _ in range(3)]

    def start(self) -> RabbitCluster:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            wait_for(node.ready, 120, f"RabbitMQ node {node.name}")
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
            wait_for(node.ready, 120, f"{node.name} to rejoin")
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

"""Private Redis for tests that break it: one server (appendonly when a restart must keep
what was acknowledged), a Sentinel group (a master, a replica, three sentinels) and a Redis
Cluster (three masters, three replicas), all processes of their own on free loopback ports
in the test's directory, stopped by pid.

The machine's Redis (6379) is never touched. A missing binary skips locally, fails in CI.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import redis

from tests.harness.ports import free_port, free_port_pair
from tests.harness.waiting import require, wait_for

MASTER_NAME = "carawayha"


class Server:
    """One ``redis-server`` (or sentinel) process in its own session."""

    def __init__(
        self,
        workdir: Path,
        name: str = "redis",
        args: list[str] | None = None,
        *,
        cluster: bool = False,
        appendonly: bool = False,
    ) -> None:
        binary = shutil.which("redis-server")
        require(binary is not None, "redis-server is not installed")
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        # a cluster node also listens on port + 10000 (its bus): both must be free
        self.port = free_port_pair() if cluster else free_port()
        self.args = list(args or [])
        #: every acknowledged write is fsynced before the reply: a SIGKILL loses none of them
        self.appendonly = appendonly
        self.binary = str(binary)
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, *, sentinel: bool = False) -> Server:
        config = self.workdir / "redis.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.workdir}",
            'save ""',
            "appendonly yes" if self.appendonly else "appendonly no",
            "appendfsync always",
            f"logfile {self.workdir / 'redis.log'}",
            *self.args,
        ]
        config.write_text("\n".join(lines) + "\n")
        command = [self.binary, str(config), *(["--sentinel"] if sentinel else [])]
        self.process = subprocess.Popen(command, start_new_session=True)
        wait(self.ping, 10, f"{self.name} on port {self.port}")
        return self

    def restart(self, sig: int = signal.SIGKILL) -> None:
        """Stop with ``sig`` and start again on the same port (with its data if appendonly)."""
        self.stop(sig)
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=1)

    def ping(self) -> bool:
        client = self.client()
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def log(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


def wait(predicate: object, timeout: float, what: str) -> None:
    """Poll ``predicate`` until truthy; fail after ``timeout`` s (kept for older callers)."""
    wait_for(predicate, timeout, what)  # type: ignore[arg-type]


class SentinelGroup:
    """A master, a replica and three sentinels (quorum 2, down after 1 s)."""

    def __init__(self, workdir: Path) -> None:
        self.master = Server(workdir, "master", [])
        self.replica = Server(workdir, "replica", [])
        self.sentinels = [Server(workdir, f"sentinel{i}", []) for i in range(3)]

    def start(self) -> SentinelGroup:
        self.master.start()
        self.replica.args = [f"replicaof 127.0.0.1 {self.master.port}"]
        self.replica.start()
        wait(self._replicating, 10, "the replica to sync")
        for sentinel in self.sentinels:
            sentinel.args = [
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2",
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000",
                f"sentinel failover-timeout {MASTER_NAME} 4000",
                f"sentinel parallel-syncs {MASTER_NAME} 1",
            ]
            sentinel.start(sentinel=True)
        wait(lambda: self.master_port() == self.master.port, 10, "the sentinels to agree")
        return self

    def _replicating(self) -> bool:
        client = self.replica.client()
        try:
            info = client.info("replication")
        finally:
            client.close()
        return info.get("master_link_status") == "up"

    def url(self, db: int = 0) -> str:
        return ";".join(f"sentinel://127.0.0.1:{s.port}/{db}" for s in self.sentinels)

    def master_port(self) -> int | None:
        """The master's port as a majority of the live sentinels reports it."""
        seen: list[int] = []
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                found = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
            except redis.RedisError:
                continue
            finally:
                client.close()
            if found:
                seen.append(int(found[1]))
        return max(set(seen), key=seen.count) if seen else None

    def fail_over(self) -> None:
        """Kill the master; return once the sentinels promoted the replica."""
        self.master.kill()
        wait(lambda: self.master_port() == self.replica.port, 30, "the sentinels to fail over")
        wait(lambda: self._role(self.replica) == "master", 10, "the replica to take over")

    @staticmethod
    def _role(server: Server) -> str:
        client = server.client()
        try:
            return str(client.info("replication").get("role"))
        except redis.RedisError:
            return ""
        finally:
            client.close()

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.master]:
            server.stop()


class Cluster:
    """Three masters and three replicas (``redis-cli --cluster create``), node timeout 2 s."""

    def __init__(self, workdir: Path, *, masters: int = 3, replicas: int = 1) -> None:
        args = [
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            "cluster-node-timeout 2000",
            # a replica takes over however stale it is: availability first; what it had
            # not received is lost (docs/reliability.md)
            "cluster-replica-validity-factor 0",
        ]
        count = masters * (1 + replicas)
        self.nodes = [Server(workdir, f"node{i}", list(args), cluster=True) for i in range(count)]
        self.replicas = replicas

    def start(self) -> Cluster:
        cli = shutil.which("redis-cli")
        require(cli is not None, "redis-cli is not installed")
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [str(cli), "--cluster", "create", *addresses, "--cluster-replicas",
             str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        wait(self.healthy, 30, "the cluster to cover every slot")
        wait(self._replicas_synced, 30, "every replica to sync with its master")
        return self

    def _replicas_synced(self) -> bool:
        synced = 0
        for node in self.nodes:
            client = node.client()
            try:
                info = client.info("replication")
            finally:
                client.close()
            if info.get("role") == "slave" and info.get("master_link_status") == "up":
                synced += 1
        return synced == len(self.nodes) // (1 + self.replicas) * self.replicas

    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:3])

    def healthy(self) -> bool:
        for node in self.nodes:
            if node.process is None:
                continue
            client = node.client()
            try:
                info = client.execute_command("CLUSTER", "INFO")
                if b"cluster_state:ok" not in (
                    info if isinstance(info, bytes) else str(info).encode()
                ):
                    return False
            except redis.RedisError:
                return False
            finally:
                client.close()
        return True

    def master_of(self, key: str) -> Server:
        """The live node that serves ``key``'s slot as a master."""
        for node in self.nodes:
            if node.process is None:
                continue
            client = node.client()
            try:
                slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(master[1])
                        return next(n for n in self.nodes if n.port == port)
            finally:
                client.close()
        raise AssertionError(f"no master serves {key!r}")

    def fail_over(self, master: Server, key: str) -> Server:
        """Kill ``master`` (serving ``key``); return the replica that took its slots, once
        the cluster is ok again."""
        master.kill()
        wait(lambda: self._served_by_other(key, master), 30, "a replica to take the slots")
        wait(self.healthy, 30, "the cluster to be ok again")
        return self.master_of(key)

    def rejoin(self, node: Server) -> None:
        """Restart a killed node: its nodes.conf makes it a replica of whoever took over."""
        node.start()
        wait(self._replicas_synced, 60, f"{node.name} to sync as a replica")

    def _served_by_other(self, key: str, old: Server) -> bool:
        try:
            return self.master_of(key) is not old
        except (AssertionError, redis.RedisError):
            return False

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


RedisServer = Server

"""A loopback TCP proxy a test puts between clients and a broker, to cut connections and
restore them without touching the broker.

`cut()` resets every open connection and refuses new ones (the port is closed) until
`restore()`; `blackhole()` keeps connections open but forwards nothing (a partition that
only a heartbeat or a timeout notices) until `restore()`. One thread, one selector.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading

from tests.harness.ports import free_port


class TcpProxy:
    """Listens on ``127.0.0.1:<port>`` and forwards each connection to ``target``."""

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.connections = 0  # accepted so far: a test can see clients reconnect
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._listener: socket.socket | None = None
        self._holding = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"proxy:{self.port}", daemon=True)

    def start(self) -> TcpProxy:
        self._listen()
        self._thread.start()
        return self

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.setblocking(False)
        with self._lock:
            self._listener = listener
            self._selector.register(listener, selectors.EVENT_READ)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def cut(self) -> int:
        """Reset every open connection and refuse new ones; how many were cut."""
        with self._lock:
            if self._listener is not None:
                self._selector.unregister(self._listener)
                self._listener.close()
                self._listener = None
            cut = self._drop_all()
        self._wake()
        return cut

    def blackhole(self) -> None:
        """Stop forwarding in both directions; connections stay open, new ones wait."""
        with self._lock:
            self._holding = True
            for sock in list(self._pairs):
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(sock)
        self._wake()

    def restore(self) -> None:
        """Forward again: reopen the port after `cut()`, resume after `blackhole()`."""
        with self._lock:
            if self._holding:
                self._holding = False
                for sock in list(self._pairs):
                    with contextlib.suppress(KeyError, ValueError):
                        self._selector.register(sock, selectors.EVENT_READ)
        if self._listener is None:
            self._listen()
        self._wake()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._listener is not None:
                self._selector.unregister(self._listener)
                self._listener.close()
                self._listener = None
            self._drop_all()
        self._wake()
        self._thread.join(timeout=5)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _drop_all(self) -> int:
        socks = list(self._pairs)
        for sock in socks:
            _reset(sock)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
        self._pairs.clear()
        return len(socks) // 2

    def _loop(self) -> None:
        while True:
            events = self._selector.select(timeout=0.5)
            with self._lock:
                if self._closed:
                    return
                for key, _ in events:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._wake_r:
                        with contextlib.suppress(OSError):
                            sock.recv(4096)
                    elif sock is self._listener:
                        self._accept(sock)
                    elif sock in self._pairs:
                        self._forward(sock)

    def _accept(self, listener: socket.socket) -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:
            _reset(client)
            return
        self.connections += 1
        for sock in (client, upstream):
            sock.setblocking(True)
            sock.settimeout(5)
        self._pairs[client] = upstream
        self._pairs[upstream] = client
        if not self._holding:
            self._selector.register(client, selectors.EVENT_READ)
            self._selector.register(upstream, selectors.EVENT_READ)

    def _forward(self, sock: socket.socket) -> None:
        peer = self._pairs[sock]
        try:
            data = sock.recv(65536)
            if data:
                peer.sendall(data)
                return
        except OSError:
            pass
        # one side closed or failed: close both, as a real connection would end
        for one in (sock, peer):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(one)
            self._pairs.pop(one, None)
            with contextlib.suppress(OSError):
                one.close()


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a dropped connection looks to its peer."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()

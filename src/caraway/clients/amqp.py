"""The AMQP 0-9-1 client (py-amqp) of every AMQP plug-in: URLs, :func:`connect` (the one
way any of them opens a connection), and :class:`Link`, the transport's connection.

A Link owns a consume channel (qos, consume, ack), a publish channel in confirm mode and an
I/O thread that drains the socket so heartbeats are answered and deliveries arrive while
the caller runs a long task. py-amqp is not thread-safe: every use of a Link's connection
or channels holds :attr:`Link.lock`. A broken link is never repaired in place; its owner
opens a new one (a new ``generation``).
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import amqp

from caraway.clients.amqp_codec import encode_properties, frame_handler, split_frames
from caraway.exceptions import BrokerError, ImproperlyConfigured

logger = logging.getLogger("caraway.clients.amqp")

#: what says "this connection is gone": reconnect, never retry on the same link
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    amqp.exceptions.ConnectionError,
    OSError,
    EOFError,
)
CHANNEL_ERRORS: tuple[type[BaseException], ...] = (amqp.exceptions.ChannelError,)

_DEFAULT_PORTS = {"amqp": 5672, "pyamqp": 5672, "amqps": 5671}
_READ_SIZE = 262144
_ACK_FRAME = struct.Struct(">BHIHHQ?B")


@dataclass(frozen=True, slots=True)
class AMQPParams:
    """Where and how to connect, read from the URL and ``broker_transport_options``."""

    host: str
    port: int
    userid: str
    password: str
    virtual_host: str
    ssl: Any
    heartbeat: float
    connect_timeout: float

    def redacted(self) -> str:
        vhost = "/" if self.virtual_host == "/" else f"/{self.virtual_host}"
        return f"amqp://{self.userid}:**@{self.host}:{self.port}{vhost}"


def parse_amqp_url(url: str, options: dict[str, Any]) -> AMQPParams:
    """Read ``amqp://user:password@host:port/vhost?heartbeat=10`` as Celery does.

    A missing user or password is ``guest``; an empty path or ``//`` is the vhost ``/``;
    ``amqps://`` turns TLS on (``options['ssl']`` may give an SSL context or dict).
    Options win over the URL query; ``heartbeat`` 0 turns heartbeats off.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ImproperlyConfigured(f"{url!r} is not an amqp://, pyamqp:// or amqps:// URL")
    query = dict(parse_qsl(parts.query))
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    ssl: Any = options.get("ssl", query.get("ssl"))
    if scheme == "amqps" and not ssl:
        ssl = True
    if isinstance(ssl, str):
        ssl = ssl.lower() in {"1", "true", "yes", "on"}
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise ImproperlyConfigured(f"bad port in AMQP URL: {exc}") from exc
    return AMQPParams(
        host=parts.hostname or "localhost",
        port=port,
        userid=unquote(parts.username) if parts.username else "guest",
        password=unquote(parts.password) if parts.password else "guest",
        virtual_host=unquote(path) or "/",
        ssl=ssl or False,
        heartbeat=float(options.get("heartbeat", query.get("heartbeat", 120.0)) or 0),
        connect_timeout=float(
            options.get("connect_timeout", query.get("connect_timeout", 4.0)) or 4.0
        ),
    )


def connect(params: AMQPParams, *, heartbeat: float = 0.0, fast_frames: bool = False) -> Any:
    """A connected py-amqp ``Connection`` to ``params``.

    ``heartbeat`` stays 0 (off) unless the caller has a thread that answers heartbeats
    (:class:`Link` does); ``fast_frames`` decodes deliveries with ``amqp_codec`` instead of
    py-amqp. A connection that fails half-way is collected (its socket closed) before the
    error is raised.
    """
    extra: dict[str, Any] = {"frame_handler": frame_handler} if fast_frames else {}
    conn = amqp.Connection(
        host=f"{params.host}:{params.port}",
        userid=params.userid,
        password=params.password,
        virtual_host=params.virtual_host,
        ssl=params.ssl,
        heartbeat=heartbeat,
        connect_timeout=params.connect_timeout,
        **extra,
    )
    try:
        conn.connect()
    except (amqp.exceptions.NotAllowed, amqp.exceptions.AccessRefused) as exc:
        collect(conn)
        if _permanent_refusal(exc):
            # retrying cannot help, and the caller (a transport, the rpc:// backend) would
            # otherwise report it as its own server being unreachable
            raise ImproperlyConfigured(_refusal(params, exc)) from None
        raise  # "vhost '/' is down" while a node starts: the caller's retries ride it out
    except BaseException:
        collect(conn)
        raise
    return conn


def _permanent_refusal(exc: BaseException) -> bool:
    reply = str(getattr(exc, "reply_text", None) or exc)
    return isinstance(exc, amqp.exceptions.AccessRefused) or "not found" in reply


def _refusal(params: AMQPParams, exc: BaseException) -> str:
    where = params.redacted()
    reply = getattr(exc, "reply_text", None) or str(exc)
    if "not found" in reply:
        return (
            f"RabbitMQ at {where} refused the connection: virtual host "
            f"{params.virtual_host!r} does not exist ({reply}); create it "
            f"(rabbitmqctl add_vhost {params.virtual_host}) or correct the URL's path "
            "('amqp://host//' is the default vhost '/')"
        )
    if "Login was refused" in reply:
        return (
            f"RabbitMQ at {where} refused the login of user {params.userid!r} ({reply}); "
            "check the user name and password in the URL"
        )
    return (
        f"RabbitMQ at {where} refused the connection ({reply}); check that user "
        f"{params.userid!r} may use virtual host {params.virtual_host!r}"
    )


def collect(conn: Any) -> None:
    """Release a broken connection's socket without a close handshake (it could hang)."""
    try:
        conn.collect()
    except Exception as exc:  # last resort: nothing more can be done with it
        logger.debug("collecting AMQP connection: %r", exc)


#: seconds the I/O thread leaves arrived frames to a caller that reads them itself
_GRACE = 0.1
#: bytes of frames gathered before a write while publishing a batch
_WRITE_CHUNK = 256 * 1024
_FRAME_END = b"\xce"
#: basic.publish: class 60, method 40
_BASIC_PUBLISH = struct.pack(">HHH", 60, 40, 0)


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise BrokerError(f"AMQP name longer than 255 bytes: {value[:40]!r}...")
    return bytes((len(raw),)) + raw


def publish_frames(
    channel_id: int,
    message: Any,
    *,
    exchange: str,
    routing_key: str,
    mandatory: bool,
    frame_max: int,
) -> bytes:
    """The frames of one basic.publish (AMQP 0-9-1 s4.2.3, s4.2.6): method, content
    header, then the body split to fit ``frame_max``. Properties are encoded as py-amqp
    encodes them (``amqp_codec``), by py-amqp itself for a value that module does not know."""
    method = b"".join(
        (
            _BASIC_PUBLISH,
            _shortstr(exchange),
            _shortstr(routing_key),
            b"\x01" if mandatory else b"\x00",
        )
    )
    body = message.body
    if isinstance(body, str):
        body = body.encode(message.properties.setdefault("content_encoding", "utf-8"))
    try:
        properties = encode_properties(message.properties)
    except (ValueError, TypeError, OverflowError, struct.error):
        properties = message._serialize_properties()  # py-amqp's encoding, or its error
    header = struct.pack(">HHQ", 60, 0, len(body)) + properties
    parts = [
        struct.pack(">BHI", 1, channel_id, len(method)),
        method,
        _FRAME_END,
        struct.pack(">BHI", 2, channel_id, len(header)),
        header,
        _FRAME_END,
    ]
    room = frame_max - 8
    for start in range(0, len(body), room):
        piece = body[start : start + room]
        parts += (struct.pack(">BHI", 3, channel_id, len(piece)), piece, _FRAME_END)
    return b"".join(parts)


def ack_frame(channel_id: int, tag: int, *, multiple: bool) -> bytes:
    """basic.ack (AMQP 0-9-1 s1.8.3.13): class 60, method 80, delivery tag, multiple bit;
    a struct.pack instead of py-amqp's generic method writer."""
    return _ACK_FRAME.pack(1, channel_id, 13, 60, 80, tag, multiple, 0xCE)


class Link:
    """A live connection: consume channel, confirming publish channel, I/O thread."""

    def __init__(self, params: AMQPParams, *, generation: int, confirms: bool) -> None:
        self.params = params
        self.generation = generation
        self.confirms = confirms
        self.confirm_timeout = 30.0
        self.lock = threading.RLock()
        self.broken: BaseException | None = None
        self._stop = threading.Event()
        self._unconfirmed: set[int] = set()
        self._nacked: list[int] = []
        self._returned: deque[tuple[str, str, str]] = deque()
        self._seq = 0
        #: callers reading the socket themselves right now, and when one last did
        self._readers = 0
        self._readers_lock = threading.Lock()
        self._read_at = 0.0
        #: delivery tags received on the consume channel and not acked or rejected yet
        self.unsettled: set[int] = set()
        # py-amqp's framing, our faster property decoder
        self.conn = connect(params, heartbeat=params.heartbeat, fast_frames=True)
        try:
            self.consume_channel = self._open_channel()
            self.publish_channel = self._open_publish_channel()
        except BaseException:
            self._force_close()  # a half-opened connection still holds a socket
            raise
        self._thread = threading.Thread(
            target=self._service, name=f"caraway-amqp-io-{generation}", daemon=True
        )
        self._thread.start()

    # -- channels ---------------------------------------------------------------------
    def _open_channel(self) -> Any:
        channel = self.conn.channel()
        # Bodies stay bytes: decoding them is the protocol layer's business.
        channel.auto_decode = False
        return channel

    def _open_publish_channel(self) -> Any:
        channel = self._open_channel()
        channel.events["basic_return"].add(self._on_return)
        if self.confirms:
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            channel.confirm_select()
        self._seq = 0
        self._unconfirmed.clear()
        return channel

    def reopen_publish_channel(self) -> None:
        """After a channel error (e.g. PRECONDITION_FAILED) closed the publish channel."""
        with self.lock:
            self.publish_channel = self._open_publish_channel()

    # -- acks (lock held) ------------------------------------------------------------------
    def ack_tags(self, tags: Sequence[int]) -> None:
        """Ack ``tags`` of the consume channel in as few frames as RabbitMQ allows.

        One ``multiple`` ack covers every tag below the lowest unsettled tag not in
        ``tags`` (usually all of them: a worker acks in delivery order); the rest go one
        by one.
        """
        unsettled = self.unsettled
        wanted = set(tags)
        blocker = min((t for t in unsettled if t not in wanted), default=None)
        below = [t for t in tags if blocker is None or t < blocker]
        singles = [t for t in tags if blocker is not None and t > blocker]
        self._require_open()  # before building frames: a closed channel has no id
        frames: list[bytes] = []
        if below:
            top = max(below)
            frames.append(self._ack_frame(top, multiple=len(below) > 1))
            unsettled.difference_update([t for t in unsettled if t <= top])
        for tag in singles:
            frames.append(self._ack_frame(tag, multiple=False))
            unsettled.discard(tag)
        if frames:
            self.write_frames(frames)

    def ack_tag(self, tag: int) -> None:
        """Ack one tag (an early ack as its task starts) with one write of one frame."""
        self._require_open()
        self.write_frames([self._ack_frame(tag, multiple=False)])
        self.unsettled.discard(tag)

    def _ack_frame(self, tag: int, *, multiple: bool) -> bytes:
        return ack_frame(self.consume_channel.channel_id, tag, multiple=multiple)

    def _require_open(self) -> None:
        if not self.consume_channel.is_open or self.conn.transport is None:
            raise amqp.exceptions.RecoverableConnectionError("consume channel is closed")

    def write_frames(self, frames: Sequence[bytes]) -> None:
        self._require_open()
        self.conn.transport.write(b"".join(frames))
        self.conn.bytes_sent += 1  # what py-amqp's heartbeat check counts

    # -- confirms and returns (called from drain_events, lock held) ----------------------
    def _on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed.difference_update([t for t in self._unconfirmed if t <= tag])
        else:
            self._unconfirmed.discard(tag)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._nacked.append(tag)
        self._on_ack(tag, multiple)

    def _on_return(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        self._returned.append((exchange, routing_key, str(exc)))

    def publish(self, items: Sequence[tuple[Any, str, str]], *, mandatory: bool) -> None:
        """Publish ``(amqp.Message, exchange, routing_key)`` items; confirm them once.

        With confirms on, returns only when the broker acked every item: one wait for the
        whole batch, not one round trip per message. Raises BrokerError for a nack or an
        unroutable (returned) message.
        """
        with self.lock:
            channel = self.publish_channel
            self._returned.clear()
            self._nacked.clear()
            self._publish_many(channel, items, mandatory=mandatory)
            if self.confirms:
                self._wait_confirms()
            returned = list(self._returned)
            nacked = list(self._nacked)
        if returned:
            exchange, routing_key, reason = returned[0]
            raise BrokerError(
                f"{len(returned)} message(s) unroutable: exchange {exchange!r} routing key "
                f"{routing_key!r} reached no queue ({reason}); declare the queue first"
            )
        if nacked:
            raise BrokerError(f"the broker refused (nacked) {len(nacked)} published message(s)")

    def _sent(self, count: int) -> None:
        for _ in range(count):
            self._seq += 1
            if self.confirms:
                self._unconfirmed.add(self._seq)

    def _publish_many(
        self, channel: Any, items: Sequence[tuple[Any, str, str]], *, mandatory: bool
    ) -> None:
        """Write the frames of many basic.publish in a few large writes, not one each.

        py-amqp writes every message on its own (a sendall that gives up the GIL, often to
        the I/O thread woken by the confirms coming back).
        """
        if not channel.is_open:
            raise amqp.exceptions.RecoverableConnectionError("publish channel is closed")
        write = self.conn.transport.write
        frame_max = self.conn.frame_max or 131072
        chunks: list[bytes] = []
        size = 0
        for message, exchange, routing_key in items:
            frames = publish_frames(
                channel.channel_id,
                message,
                exchange=exchange,
                routing_key=routing_key,
                mandatory=mandatory,
                frame_max=frame_max,
            )
            chunks.append(frames)
            size += len(frames)
            if size >= _WRITE_CHUNK:
                write(b"".join(chunks))
                self._sent(len(chunks))
                chunks, size = [], 0
        if chunks:
            write(b"".join(chunks))
            self._sent(len(chunks))

    def _wait_confirms(self) -> None:
        deadline = time.monotonic() + self.confirm_timeout
        self._reading(+1)
        try:
            while self._unconfirmed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"no publisher confirm within {self.confirm_timeout}s "
                        f"for {len(self._unconfirmed)} message(s)"
                    )
                self.conn.drain_events(timeout=min(remaining, 1.0))
        finally:
            self._reading(-1)

    # -- reading in the caller's thread (lock held) ----------------------------------------
    def read_arrived(self) -> None:
        """Dispatch what has arrived, in the caller's thread; marks the link broken on error.

        The consumer reads its own deliveries when it fetches: parsed by the I/O thread
        instead, each one took the GIL from the consumer at its every syscall (an ack's
        send, a result write), which py-spy showed as a fifth of a child's wall time.
        """
        try:
            self._drain_ready()
        except Exception as exc:  # as in the I/O thread: the link is unusable
            self._lost(exc)
        self._read_at = time.monotonic()

    def wait_readable(self, timeout: float) -> None:
        """Wait (without the lock) until the socket has something to read, or ``timeout``."""
        self._reading(+1)
        try:
            select.select([self.conn.sock], [], [], timeout)
        except (OSError, ValueError, AttributeError) as exc:  # closed under us
            self._lost(exc)
        finally:
            self._reading(-1)

    def _lost(self, exc: BaseException) -> None:
        if self.broken is None and not self._stop.is_set():
            logger.warning("AMQP connection to %s lost: %r", self.params.redacted(), exc)
            self.broken = exc

    # -- the I/O thread ------------------------------------------------------------------
    def _service(self) -> None:
        """Answer heartbeats, and read what no caller has come to read for ``_GRACE``.

        While a caller reads the socket itself (a fetch, a publisher waiting for its
        confirms) the thread stays away from it: both reading would only fight over the
        GIL and the lock. A long task leaves deliveries to it after ``_GRACE``.
        """
        tick = 1.0 if not self.params.heartbeat else min(1.0, self.params.heartbeat / 4)
        try:
            while not self._stop.is_set():
                sock = self.conn.transport.sock if self.conn.transport else None
                if sock is None:
                    raise OSError("AMQP socket closed")
                idle = time.monotonic() - self._read_at
                if self._readers or idle < _GRACE:
                    self._stop.wait(_GRACE if self._readers else _GRACE - idle)
                    readable: list[Any] = []
                else:
                    # Wait without the lock, so publishers and ackers are never held up by it.
                    readable, _, _ = select.select([sock], [], [], tick)
                with self.lock:
                    if self._stop.is_set():
                        return
                    # checked under the lock: a caller reads, or is about to wait to read
                    idle = time.monotonic() - self._read_at
                    if readable and not self._readers and idle >= _GRACE:
                        self._drain_ready()
                    self.conn.heartbeat_tick()
        except Exception as exc:  # any failure here means the link is unusable
            self._lost(exc)

    def _drain_ready(self) -> None:
        # Ask the socket, not a read that times out, whether more is there: a timed-out
        # read costs two settimeout calls and an exception on every wake-up.
        sock = self.conn.sock
        pending = getattr(sock, "pending", None)  # TLS: decrypted bytes the socket holds
        if pending is None and hasattr(self.conn.transport, "_read_buffer"):
            self._drain_frames(sock)
            return
        while (pending is not None and pending()) or select.select([sock], [], [], 0)[0]:
            try:
                self.conn.drain_events(timeout=0)
            except TimeoutError:
                return

    def _drain_frames(self, sock: Any) -> None:
        """Read what the socket holds in one recv per wake-up and hand py-amqp whole frames.

        py-amqp reads a frame as three recv calls of exact sizes, each under two settimeout
        calls: nine reads and six settimeouts per delivered message, a third of a child's
        CPU in a drain. The bytes of an incomplete frame wait in py-amqp's own read buffer,
        where its reads (a confirm wait, a channel call) take them first, so the stream
        stays in order whoever reads next.
        """
        transport = self.conn.transport
        while select.select([sock], [], [], 0)[0]:
            try:
                chunk = sock.recv(_READ_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return  # select's readiness was a false alarm: never wait here, lock held
            if not chunk:
                raise ConnectionResetError("the broker closed the connection")
            frames, transport._read_buffer = split_frames(transport._read_buffer + chunk)
            for frame in frames:
                self.conn.on_inbound_frame(frame)

    def _reading(self, delta: int) -> None:
        with self._readers_lock:
            self._readers += delta
        if delta < 0:
            self._read_at = time.monotonic()

    def check(self) -> None:
        """Raise the error that broke this link, if any."""
        if self.broken is not None:
            raise ConnectionResetError(f"AMQP link broken: {self.broken!r}")

    def close(self) -> None:
        self._stop.set()
        with self.lock:
            if self.broken is not None:
                self._force_close()  # no close handshake on a dead socket: it could hang
            else:
                try:
                    self.conn.close()
                except Exception as exc:  # the broker may have gone in the meantime
                    logger.debug("closing AMQP connection: %r", exc)
                    self._force_close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _force_close(self) -> None:
        collect(self.conn)

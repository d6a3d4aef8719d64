"""The Redis client of every Redis plug-in: Celery's URLs -> a redis-py client, and
:class:`HeldConnection`, the hot paths' connection (one round trip per batch, no pool).

URLs: ``redis://[user:password@]host[:port][/db]``, ``rediss://`` (TLS from the query or
``options['ssl']``), ``redis+socket:///path`` or ``unix:///path`` (db via ``?virtual_host=``
or ``?db=``), ``sentinel://h1:p;sentinel://h2:p`` with ``options['master_name']``. The one
thing to know: clients have redis-py's retries off unless ``retries`` is given, because the
broker decides itself which commands are safe to repeat.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from caraway.exceptions import BrokerConnectionError, BrokerError, ImproperlyConfigured
from caraway.utils.pid import current_pid

T = TypeVar("T")

#: what a retry on a new connection may cure
RETRYABLE = (redis.ConnectionError, redis.TimeoutError)
_TCP_SCHEMES = {"redis": False, "rediss": True}
_SOCKET_SCHEMES = {"redis+socket", "unix", "socket"}
#: client keyword arguments taken over verbatim from the transport/backend options
_CLIENT_OPTIONS = (
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "socket_keepalive_options",
    "health_check_interval",
    "max_connections",
    "client_name",
)
_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where a Redis URL points: one server (tcp or unix socket) or a sentinel group."""

    kind: str  # "tcp" | "unix" | "sentinel"
    host: str = "localhost"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    path: str = ""
    tls: bool = False
    sentinels: tuple[tuple[str, int], ...] = ()
    query: dict[str, str] = field(default_factory=dict)

    def redacted(self) -> str:
        """The target for log and error messages, without its password."""
        if self.kind == "unix":
            return f"unix://{self.path}?db={self.db}"
        if self.kind == "sentinel":
            hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"sentinel://{hosts}/{self.db}"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


def parse_redis_url(url: str) -> RedisTarget:
    """Parse a Celery-style Redis URL; raises ImproperlyConfigured for anything else."""
    if url.startswith("sentinel://"):
        return _parse_sentinel(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query))
    if scheme in _SOCKET_SCHEMES:
        if not parts.path:
            raise ImproperlyConfigured(f"redis socket URL {url!r} has no socket path")
        db = _db(query.pop("virtual_host", query.pop("db", "0")), url)
        return RedisTarget(
            kind="unix",
            path=unquote(parts.path),
            db=db,
            password=_password(parts.password),
            username=_user(parts.username),
            query=query,
        )
    if scheme not in _TCP_SCHEMES:
        raise ImproperlyConfigured(
            f"not a Redis URL: {url!r}; use redis://, rediss://, redis+socket:// or sentinel://"
        )
    return RedisTarget(
        kind="tcp",
        host=parts.hostname or "localhost",
        port=parts.port or 6379,
        db=_db(parts.path.strip("/") or query.pop("db", "0"), url),
        username=_user(parts.username),
        password=_password(parts.password),
        tls=_TCP_SCHEMES[scheme],
        query=query,
    )


def connect(url: str, options: dict[str, Any] | None = None, *, retries: int = 0) -> redis.Redis:
    """A redis-py client for ``url`` with Celery's transport ``options`` applied.

    ``retries`` > 0 turns on redis-py's retry with exponential backoff for connection
    errors; leave it at 0 for commands that must not silently run twice.
    """
    options = dict(options or {})
    target = parse_redis_url(url)
    kwargs = _client_kwargs(target, options, retries)
    if target.kind == "sentinel":
        master = options.get("master_name")
        if not master:
            raise ImproperlyConfigured(
                "a sentinel:// URL needs the master's name: set "
                "broker_transport_options={'master_name': '<name>'}"
            )
        sentinel = Sentinel(
            list(target.sentinels),
            sentinel_kwargs=options.get("sentinel_kwargs"),
            **kwargs,
        )
        client: redis.Redis = sentinel.master_for(str(master), db=target.db)
        return client
    if target.kind == "unix":
        return redis.Redis(unix_socket_path=target.path, db=target.db, **kwargs)
    return redis.Redis(host=target.host, port=target.port, db=target.db, **kwargs)


def connect_async(url: str, options: dict[str, Any] | None = None) -> redis.asyncio.Redis | None:
    """An asyncio client for ``url`` with the same options (no retry policy), for waiters
    on an event loop; None for ``sentinel://``, whose waiters keep to a thread.

    Its commands share one connection (a burst of a thousand waiters must not open a
    thousand); a pub/sub it makes takes one more.
    """
    target = parse_redis_url(url)
    if target.kind == "sentinel":
        return None
    kwargs = _client_kwargs(target, dict(options or {}), 0)
    kwargs.pop("retry", None)  # redis-py's sync Retry; a wait re-reads on its own
    kwargs["single_connection_client"] = True
    if target.kind == "unix":
        return redis.asyncio.Redis(unix_socket_path=target.path, db=target.db, **kwargs)
    return redis.asyncio.Redis(host=target.host, port=target.port, db=target.db, **kwargs)


def _client_kwargs(target: RedisTarget, options: dict[str, Any], retries: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        key: options[key] for key in _CLIENT_OPTIONS if options.get(key) is not None
    }
    for key in ("socket_timeout", "socket_connect_timeout"):
        if key in target.query:
            kwargs[key] = float(target.query[key])
    if target.password is not None:
        kwargs["password"] = target.password
    if target.username is not None:
        kwargs["username"] = target.username
    if retries > 0:
        kwargs["retry"] = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries)
    else:
        kwargs["retry"] = Retry(NoBackoff(), 0)
    if target.tls or options.get("ssl"):
        kwargs.update(_tls_kwargs(target, options.get("ssl")))
    kwargs.update(_quiet_client_kwargs())
    return kwargs


def _quiet_client_kwargs() -> dict[str, Any]:
    """redis-py 8 looks its own version up in the package metadata for every client (1.2 MiB
    per prefork child, 0.5 ms a client) and negotiates maintenance notifications, which only
    Redis Enterprise sends: name the version ourselves and leave them off."""
    try:
        from redis.driver_info import DriverInfo  # noqa: PLC0415 - optional: redis-py 8 only
        from redis.maint_notifications import MaintNotificationsConfig  # noqa: PLC0415 - ditto
    except ImportError:  # redis-py < 8 has neither
        return {}
    return {
        "driver_info": DriverInfo(lib_version=redis.__version__),
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
    }


def _tls_kwargs(target: RedisTarget, ssl_options: Any) -> dict[str, Any]:
    """TLS settings from the URL query and ``broker_use_ssl`` (the dict wins)."""
    merged: dict[str, Any] = {k: v for k, v in target.query.items() if k.startswith("ssl_")}
    if isinstance(ssl_options, dict):
        merged.update(ssl_options)
    kwargs: dict[str, Any] = {"ssl": True}
    for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"):
        if merged.get(key) is not None:
            kwargs[key] = merged[key]
    if "ssl_cert_reqs" in merged:
        kwargs["ssl_cert_reqs"] = _cert_reqs(merged["ssl_cert_reqs"])
    return kwargs


def _cert_reqs(value: Any) -> ssl.VerifyMode:
    if isinstance(value, ssl.VerifyMode):
        return value
    name = str(value).lower().removeprefix("cert_")
    if name not in _CERT_REQS:
        raise ImproperlyConfigured(
            f"unknown ssl_cert_reqs {value!r}; use CERT_REQUIRED, CERT_OPTIONAL or CERT_NONE"
        )
    return _CERT_REQS[name]


def _parse_sentinel(url: str) -> RedisTarget:
    hosts: list[tuple[str, int]] = []
    password: str | None = None
    username: str | None = None
    db = 0
    for index, part in enumerate(url.split(";")):
        parts = urlsplit(part.strip())
        if parts.scheme != "sentinel":
            raise ImproperlyConfigured(f"every part of {url!r} must be a sentinel:// URL")
        hosts.append((parts.hostname or "localhost", parts.port or 26379))
        if index == 0:
            password = _password(parts.password)
            username = _user(parts.username)
            db = _db(parts.path.strip("/") or "0", url)
    return RedisTarget(
        kind="sentinel", db=db, password=password, username=username, sentinels=tuple(hosts)
    )


def _db(text: str, url: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ImproperlyConfigured(f"Redis db in {url!r} must be a number, not {text!r}") from None


def _password(raw: str | None) -> str | None:
    return unquote(raw) if raw else None


def _user(raw: str | None) -> str | None:
    return unquote(raw) if raw else None


def retrying(
    what: str,
    fn: Callable[[], T],
    *,
    where: str,
    retries: int,
    retryable: tuple[type[Exception], ...] = RETRYABLE,
    server: str = "Redis",
) -> T:
    """Run ``fn``, retrying ``retryable`` errors ``retries`` times with backoff (0.1 s
    doubling to 2 s); raise BrokerConnectionError after the last, BrokerError for any other
    redis error. Only for commands that are safe to run twice. A cluster passes the errors
    a failover in progress raises, and its name for the messages."""
    delay = 0.1
    for attempt in range(retries + 1):
        try:
            return fn()
        except retryable as exc:
            if attempt == retries:
                raise BrokerConnectionError(
                    f"{server} at {where} unreachable during {what} after "
                    f"{attempt + 1} attempts: {exc}; check the server and broker_url"
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        except redis.RedisError as exc:
            raise BrokerError(f"{server} {what} failed at {where}: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


# -- replies: redis-py hands back bytes or str (decode_responses), lists or None -----------


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def to_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def to_list(value: Any) -> list[Any]:
    return list(value or [])


def to_int(value: Any) -> int:
    """``int(value)``, 0 for what is not a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


Command = tuple[Any, ...]

_hiredis_pack: Callable[[Command], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # the "redis" extra brings hiredis; without it, the Python packer
    _hiredis_pack = None


def pack_commands(commands: Sequence[Command]) -> bytes:
    """Commands in RESP, as one buffer: hiredis's C packer when it is installed (half the
    cost of the Python one below), which matters on the worker's hot path (a claim is one
    command of twenty-odd args)."""
    # hiredis writes a subclass (numpy's float64) with its own repr: those go below. The
    # check runs in C (map over a chain): a claim from 50 queues has 400 arguments
    if _hiredis_pack is not None and _PLAIN.issuperset(map(type, chain.from_iterable(commands))):
        return b"".join([_hiredis_pack(command) for command in commands])
    return _pack_commands_py(commands)


_PLAIN = frozenset({bytes, str, int, float})


def _pack_commands_py(commands: Sequence[Command]) -> bytes:
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            kind = type(arg)
            if kind is bytes:
                data = arg
            elif kind is str:
                data = arg.encode()
            elif kind is int or kind is float:
                data = repr(arg).encode()
            elif isinstance(arg, (bytes, str)):  # subclasses
                data = bytes(arg) if isinstance(arg, bytes) else str(arg).encode()
            elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
                data = repr(float(arg) if isinstance(arg, float) else int(arg)).encode()
            else:
                raise redis.exceptions.DataError(
                    f"cannot send {type(arg).__name__} {arg!r} to Redis: "
                    "pass bytes, str, int or float"
                )
            out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


#: how long a reply is polled for before the reader sleeps on it (``reply_spin``, seconds)
REPLY_SPIN = 0.0002
#: polls that missed in a row before the spin rests, and for how many replies it rests
SPIN_MISSES = 4
SPIN_REST = 64


def reply_spin_option(options: dict[str, Any]) -> float:
    """``reply_spin`` from a transport's or result store's options, in seconds."""
    value = options.get("reply_spin", REPLY_SPIN)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if isinstance(value, bool) or not seconds >= 0:  # not a number, negative, or NaN
        raise ImproperlyConfigured(
            f"reply_spin must be a number of seconds (0 turns polling off), not {value!r}"
        )
    return seconds


class ReplySpin:
    """Polls a connection for its reply a short while before sleeping in ``recv``.

    On a virtual machine a process that sleeps in ``recv`` gives its vCPU back, and waking
    it when the reply lands costs more than the reply itself: a one-command round trip to
    Redis on 127.0.0.1 measured 110-194 us sleeping and 40-62 us polling on this project's
    2-core VM (``docs/benchmarks.md``, seventh pass). So a reader polls (``can_read``, about
    2 us a poll) for up to ``budget`` seconds, then sleeps as before. Between polls it yields
    its CPU (``sched_yield``): where pollers outnumber CPUs (two prefork children claiming
    while a client waits for its publish) the server itself would otherwise wait for a CPU,
    and round trips measured slower with polling than without. A server farther away
    than the budget would cost a budget of CPU per round trip for nothing: after
    ``SPIN_MISSES`` polls in a row that ended asleep, the spin rests for ``SPIN_REST``
    replies, so such a server costs a few microseconds per round trip. With one usable CPU
    it never spins (the server could not run while the reader polls), nor where the
    platform cannot say how many CPUs the process may use (no ``sched_getaffinity``).
    """

    __slots__ = ("_misses", "_resting", "budget_ns")

    def __init__(self, budget: float = REPLY_SPIN) -> None:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        self.budget_ns = int(budget * 1e9) if usable > 1 else 0
        self._misses = 0
        self._resting = 0

    def wait(self, conn: Any) -> None:
        """Return once ``conn`` has a reply to read, or the budget is spent (or resting)."""
        if not self.budget_ns:
            return
        if self._resting:
            self._resting -= 1
            return
        if conn._sock is None:
            return  # closed: can_read would connect it afresh, and the read must fail
        deadline = time.perf_counter_ns() + self.budget_ns
        try:
            while not conn.can_read(0):
                if time.perf_counter_ns() > deadline:
                    self._missed()
                    return
                os.sched_yield()
        except (redis.ConnectionError, OSError, ValueError):
            return  # the read that follows raises what is wrong with the connection
        self._misses = 0

    def _missed(self) -> None:
        self._misses += 1
        if self._misses >= SPIN_MISSES:
            self._misses = 0
            self._resting = SPIN_REST


def _exchange(conn: Any, commands: Sequence[Command], spin: ReplySpin | None = None) -> list[Any]:
    """Send ``commands`` on ``conn`` in one write and read every reply (error replies as
    values), polling for them first with ``spin``. A connection error leaves replies half
    read: the caller drops ``conn``."""
    conn.send_packed_command([pack_commands(commands)])
    if spin is not None:
        spin.wait(conn)
    return [_read_reply(conn) for _ in commands]


def _transaction(commands: Sequence[Command]) -> list[Command]:
    return [("MULTI",), *commands, ("EXEC",)]


def _exec_replies(replies: list[Any]) -> list[Any]:
    """EXEC's replies, from every reply of a :func:`_transaction`; raises the first command
    refused while queueing (EXEC aborted the lot) or EXEC's own error."""
    queued = [r for r in replies[1:-1] if isinstance(r, Exception)]
    if queued:
        raise queued[0]
    if isinstance(replies[-1], Exception):
        raise replies[-1]
    return list(replies[-1] or [])


def _read_reply(conn: Any) -> Any:
    """One reply, an error reply as a value: the replies after it must still be read."""
    try:
        return conn.read_response()
    except redis.exceptions.ResponseError as exc:
        return exc


@dataclass
class _Pending:
    """The replies still owed for one :meth:`HeldConnection.send`."""

    count: int
    replies: list[Any] | None = None
    error: BaseException | None = None

    def result(self) -> list[Any]:
        if self.error is not None:
            raise self.error
        assert self.replies is not None
        return self.replies


class HeldConnection:
    """A connection kept out of ``client``'s pool for publish, claim, ack and result writes.

    Taking a pooled connection and giving it back (with redis-py's liveness poll) costs more
    than a short command, and a pipeline of Lua scripts asks SCRIPT EXISTS first: another
    round trip. Here a batch is packed and sent at once and scripts go as EVALSHA, loaded
    only when the server answers NOSCRIPT. A second thread borrows from the pool instead of
    waiting; after a fork the parent's connection is left alone.
    """

    def __init__(self, client: redis.Redis, *, reply_spin: float = REPLY_SPIN) -> None:
        self.client = client
        self._conn: Any = None  # a redis-py Connection (its methods are untyped)
        self._spin = ReplySpin(reply_spin)
        self._lock = threading.Lock()
        self._scripts: dict[str, str] = {}
        #: sends whose replies are still unread, oldest first
        self._pending: deque[_Pending] = deque()

    def script(self, source: str) -> str:
        """Register a Lua ``source``; returns the sha to pass to :meth:`evalsha`."""
        sha = hashlib.sha1(source.encode()).hexdigest()
        self._scripts[sha] = source
        return sha

    @staticmethod
    def evalsha(sha: str, keys: Sequence[Any], args: Sequence[Any]) -> Command:
        return ("EVALSHA", sha, len(keys), *keys, *args)

    def run(
        self, commands: list[Command], *, transaction: bool = False, raise_errors: bool = True
    ) -> list[Any]:
        """Run ``commands`` in one round trip (inside MULTI/EXEC when ``transaction``).

        Returns the raw replies (no redis-py response callbacks); raises the first error,
        or with ``raise_errors=False`` leaves error replies in the list (connection errors
        are raised all the same).
        """
        replies = self._with_scripts(lambda: self._run(commands, transaction))
        errors = [reply for reply in replies if isinstance(reply, Exception)]
        if errors and raise_errors:
            raise errors[0]
        return replies

    def send(
        self, commands: list[Command], *, raise_errors: bool = True
    ) -> Callable[[], list[Any]]:
        """Send ``commands`` now; the returned function reads their replies.

        For round trips that can overlap other work (results written while the broker
        claims the next batch, a claim while a task runs). Several sends may be
        outstanding (a batch's results, then its chord counts): their replies are read in
        the order they were sent, by whichever reader or next use of this connection comes
        first, so nothing interleaves. The reader raises the first error, as :meth:`run`
        does (or with ``raise_errors=False`` leaves error replies in the list).
        """
        if not self._lock.acquire(blocking=False):
            replies = self.run(commands, raise_errors=raise_errors)
            return lambda: replies
        try:
            conn = self._connection()
            try:
                conn.send_packed_command([pack_commands(commands)])
            except BaseException:
                self._drop()
                raise
            pending = _Pending(len(commands))
            self._pending.append(pending)
        finally:
            self._lock.release()

        def read() -> list[Any]:
            with self._lock:
                while pending.replies is None and pending.error is None:
                    self._read_oldest()
            replies = pending.result()
            if any(isinstance(reply, redis.exceptions.NoScriptError) for reply in replies):
                return self.run(commands, raise_errors=raise_errors)
            errors = [reply for reply in replies if isinstance(reply, Exception)]
            if errors and raise_errors:
                raise errors[0]
            return replies

        return read

    def _with_scripts(self, call: Callable[[], list[Any]]) -> list[Any]:
        replies = call()
        for reply in replies:  # a loop, not any(genexpr): this runs for every publish
            if isinstance(reply, redis.exceptions.NoScriptError):
                # the server lost its script cache (restart, SCRIPT FLUSH): load and go again
                for source in self._scripts.values():
                    self.client.script_load(source)
                return call()
        return replies

    def _run(self, commands: list[Command], transaction: bool) -> list[Any]:
        if not self._lock.acquire(blocking=False):
            return self._via_pool(commands, transaction)
        try:
            self._read_pending()
            return self._via_held(commands, transaction)
        finally:
            self._lock.release()

    def _connection(self) -> Any:
        conn = self._conn
        if conn is None or conn.pid != current_pid():
            while self._pending:  # forked: the replies owed are the parent's, on its socket
                self._read_oldest()
            conn = self._conn = self.client.connection_pool.get_connection()
        return conn

    def _read_pending(self) -> None:
        """Read the replies of every outstanding :meth:`send` (lock held)."""
        while self._pending:
            self._read_oldest()

    def _read_oldest(self) -> None:
        """Read the replies of the oldest outstanding :meth:`send` (lock held)."""
        pending = self._pending.popleft()
        conn = self._conn
        if conn is None or conn.pid != current_pid():  # forked: the parent's replies
            pending.error = redis.exceptions.ConnectionError(
                "these replies belong to the process this one was forked from"
            )
            return
        try:
            self._spin.wait(conn)
            pending.replies = [_read_reply(conn) for _ in range(pending.count)]
        except BaseException as exc:
            pending.error = exc
            self._drop()

    def _via_pool(self, commands: list[Command], transaction: bool) -> list[Any]:
        pipe: Any = self.client.pipeline(transaction=transaction)
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute(raise_on_error=False))

    def _via_held(self, commands: list[Command], transaction: bool) -> list[Any]:
        conn = self._connection()
        try:
            replies = _exchange(
                conn, _transaction(commands) if transaction else commands, self._spin
            )
        except BaseException:
            # a half-read reply would be taken for the next command's: start afresh
            self._drop()
            raise
        return _exec_replies(replies) if transaction else replies

    def _drop(self) -> None:
        while self._pending:
            self._pending.popleft().error = redis.exceptions.ConnectionError(
                "connection dropped before the replies were read"
            )
        conn, self._conn = self._conn, None
        if conn is not None and conn.pid == os.getpid():
            conn.disconnect()
            self.client.connection_pool.release(conn)

    def close(self) -> None:
        with self._lock:
            self._drop()


class KeyWatch:
    """Wait for a write to any of some keys, sending nothing while none comes.

    Redis's client-side caching (``CLIENT TRACKING``, Redis >= 6 over RESP3, redis-py 8's
    default) tells a connection that read a key once a command changes it: an
    ``invalidate`` push. :meth:`arm` reads the keys (``EXISTS`` and one ``ZRANGE``, in one
    ``MULTI``/``EXEC``: pushes read before its reply are for keys read at an earlier arming,
    and a change after it comes as a push behind its reply), :meth:`changed` waits for the
    connection to have something to read. Redis forgets a key once it has said it changed,
    so each arming costs at most one push per key, however busy the key gets.

    Unsupported (RESP2, an ACL without ``CLIENT``, Redis < 6): :meth:`arm` raises
    :class:`WatchUnsupported`, and the caller polls instead. Connection errors propagate;
    the connection is dropped and taken anew from the pool at the next arming (a sentinel
    pool's asks the sentinels for the master again). Not thread-safe: one consumer's own.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._conn: Any = None
        #: what the caller armed for, and when (monotonic); None: not armed
        self.armed_for: Any = None
        self.armed_at = 0.0
        #: redis-py reconnected the connection on its own: its tracking is gone
        self._reconnected = False

    def _connection(self) -> Any:
        conn: Any = self._conn
        if conn is not None and conn.pid == current_pid():
            if not self._reconnected:
                return conn
            self.drop()
        self._conn = None  # a parent's, after a fork: left to it
        conn = self.client.connection_pool.get_connection()
        if str(getattr(conn, "protocol", 2)) != "3":
            self.client.connection_pool.release(conn)
            raise WatchUnsupported("the connection speaks RESP2: no invalidation pushes")
        try:
            conn.send_command("CLIENT", "TRACKING", "ON")
            conn.read_response()
        except redis.exceptions.ResponseError as exc:
            self.client.connection_pool.release(conn)
            raise WatchUnsupported(f"CLIENT TRACKING refused: {exc}") from exc
        except BaseException:
            conn.disconnect()
            self.client.connection_pool.release(conn)
            raise
        self._reconnected = False
        conn.register_connect_callback(self._on_connect)
        self._conn = conn
        return conn

    def _on_connect(self, conn: Any) -> None:
        self._reconnected = True

    def arm(self, keys: Sequence[str], zset: str, *, armed_for: Any) -> tuple[int, Any]:
        """Watch ``keys`` and ``zset`` from now on; returns how many of ``keys`` exist and
        ``zset``'s first entry with its score (``ZRANGE 0 0 WITHSCORES``) as they are now."""
        self.armed_for = None
        conn = self._connection()
        reads: list[Command] = [("EXISTS", *keys), ("ZRANGE", zset, 0, 0, "WITHSCORES")]
        try:
            replies = _exchange(conn, _transaction(reads))
        except BaseException:
            self.drop()
            raise
        count, first = _exec_replies(replies)
        for reply in (count, first):
            if isinstance(reply, Exception):  # a key of the wrong type, say
                raise reply
        self.armed_for, self.armed_at = armed_for, time.monotonic()
        return int(count), first

    def watching(self, armed_for: Any, max_age: float) -> bool:
        """Whether it is armed for ``armed_for``, read at most ``max_age`` s ago."""
        return self.armed_for == armed_for and time.monotonic() - self.armed_at < max_age

    def changed(self, timeout: float) -> bool:
        """Whether a watched key changed since :meth:`arm`, waiting up to ``timeout``
        (seconds) for one to; True also when the connection broke (the caller looks
        again, and the next arming reconnects). A change disarms."""
        conn = self._conn
        if conn is None or self.armed_for is None:
            return True
        try:
            readable = bool(conn.can_read(timeout=timeout))
        except (redis.ConnectionError, redis.TimeoutError, OSError, ValueError):
            self.drop()
            return True
        if readable:
            # the pushes stay unread: the next arming reads past them
            self.armed_for = None
        return readable

    def disarm(self) -> None:
        self.armed_for = None

    def drop(self) -> None:
        self.armed_for = None
        conn, self._conn = self._conn, None
        if conn is not None and conn.pid == current_pid():
            conn.deregister_connect_callback(self._on_connect)
            conn.disconnect()
            self.client.connection_pool.release(conn)


class WatchUnsupported(Exception):
    """The server or connection cannot send invalidation pushes (see :class:`KeyWatch`)."""

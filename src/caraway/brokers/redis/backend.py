"""Redis result backend with Celery's layout (docs/design/protocol.md §4): documents are bytes.

``celery-task-meta-<id>`` holds each task's JSON document (written with an expiry and
PUBLISHed on a channel named like the key, no ``/<db>.`` prefix); groups live in
``celery-taskset-meta-<gid>`` and chord joins use Celery 5.7's ``.j .s .t .d .c`` keys.
The one thing to know: a write is skipped when the stored status is already final, checked
and written in one Lua call, so a redelivered duplicate can never replace an outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from redis.client import PubSub

from caraway.brokers.contracts import Backend, ChordPart, ChordStore, GroupStore
from caraway.clients.redis import (
    HeldConnection,
    connect,
    connect_async,
    parse_redis_url,
    reply_spin_option,
)
from caraway.exceptions import BackendError
from caraway.protocol.results import chord_member

T = TypeVar("T")

TASK_PREFIX = "celery-task-meta-"
GROUP_PREFIX = "celery-taskset-meta-"
#: Celery's chord claim: held 6 s while deciding, 21 s while publishing the callback,
#: then replaced by "done" for 300 s so late duplicates stop at once.
_CLAIM_TTL, _CLAIM_EXTEND, _DONE_TTL = 6, 21, 300
#: how long a waiter goes without re-reading the key (covers a pub/sub reconnect)
_REREAD_EVERY = 1.0

_STORE = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, doc = pcall(cjson.decode, current)
  if ok and type(doc) == 'table' then
    local status = doc['status']
    if status == 'SUCCESS' or status == 'FAILURE' or status == 'REVOKED' then return 0 end
  end
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""

# KEYS: .j .t .s .d <group key> .c   ARGV: marker, member, score, expires, token, claim ttl
_CHORD_JOIN = """
if redis.call('GET', KEYS[6]) == 'done' then return 0 end
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 0 then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  redis.call('SADD', KEYS[4], ARGV[1])
end
local count = redis.call('ZCOUNT', KEYS[1], '-inf', '+inf')
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  for i = 1, 5 do redis.call('EXPIRE', KEYS[i], ttl) end
end
local size = redis.call('GET', KEYS[3])
if not size then return 0 end
local extra = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if count < tonumber(size) + extra then return 0 end
if redis.call('SET', KEYS[6], ARGV[5], 'NX', 'EX', ARGV[6]) then return 1 end
return 0
"""

# KEYS: .c   ARGV: token, seconds
_CHORD_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: .c .j .t .s .d   ARGV: token, done ttl
_CHORD_DONE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SET', KEYS[1], 'done', 'EX', ARGV[2])
return 1
"""


@dataclass(eq=False)
class _Box:
    """One waiter's mailbox: payloads published on its channel since it subscribed."""

    channel: bytes
    items: list[bytes] = field(default_factory=list)
    event: threading.Event = field(default_factory=threading.Event)


class _Notifier:
    """One pub/sub connection shared by every thread waiting on this backend.

    Whichever waiter finds the connection free reads from it (for a short slice) and
    hands each message to the mailboxes of its channel; the others sleep on their own
    event. Subscriptions are reference-counted per channel.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pubsub: PubSub = client.pubsub()
        self._io = threading.Lock()
        self._state = threading.Lock()
        self._boxes: dict[bytes, list[_Box]] = {}
        self._subscribed: set[bytes] = set()

    def open(self, channel: str, *, timeout: float = 10.0) -> _Box:
        """Subscribe (confirmed by the server before returning) and return a mailbox."""
        box = _Box(channel.encode())
        with self._state:
            self._boxes.setdefault(box.channel, []).append(box)
        try:
            with self._io:
                if box.channel not in self._subscribed:
                    self._pubsub.subscribe(box.channel)
                    self._await_confirmation(box.channel, time.monotonic() + timeout)
                    self._subscribed.add(box.channel)
        except BaseException:
            self.close(box)
            raise
        return box

    def _await_confirmation(self, channel: bytes, deadline: float) -> None:
        # Until the server confirms, a PUBLISH could slip past: the caller GETs after this.
        while time.monotonic() < deadline:
            message = self._pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is None:
                continue
            if message["type"] == "subscribe" and _bytes(message["channel"]) == channel:
                return
            self._dispatch(message)
        raise BackendError(f"Redis did not confirm SUBSCRIBE {channel.decode()!r} in time")

    def next(self, box: _Box, timeout: float) -> bytes | None:
        """The next payload published on ``box``'s channel, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._state:
                if box.items:
                    return box.items.pop(0)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if self._io.acquire(blocking=False):
                try:
                    message = self._pubsub.get_message(timeout=min(remaining, 0.2))
                    if message is not None:
                        self._dispatch(message)
                except (redis.ConnectionError, redis.TimeoutError):
                    # redis-py resubscribes on reconnect; the caller re-reads the key
                    # meanwhile (and reports the error if Redis stays away)
                    return None
                finally:
                    self._io.release()
            else:
                box.event.wait(min(remaining, 0.05))
                box.event.clear()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message["type"] != "message":
            return
        with self._state:
            for box in self._boxes.get(_bytes(message["channel"]), ()):
                box.items.append(_bytes(message["data"]))
                box.event.set()

    def close(self, box: _Box) -> None:
        with self._state:
            boxes = self._boxes.get(box.channel, [])
            if box in boxes:
                boxes.remove(box)
            if boxes:
                return
            self._boxes.pop(box.channel, None)
        with self._io:
            with self._state:
                if box.channel in self._boxes:  # someone subscribed again meanwhile
                    return
            if box.channel in self._subscribed:
                self._subscribed.discard(box.channel)
                self._pubsub.unsubscribe(box.channel)  # type: ignore[no-untyped-call]

    def shutdown(self) -> None:
        with self._io:
            self._pubsub.close()


class _AsyncBox:
    """One awaiting coroutine's mailbox for its channel's publishes."""

    def __init__(self) -> None:
        self.items: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def next(self, timeout: float) -> bytes | None:
        """The next payload, or None after ``timeout`` (or when the connection failed)."""
        try:
            return await asyncio.wait_for(self.items.get(), timeout)
        except asyncio.TimeoutError:
            return None


class _LoopNotifier:
    """One asyncio pub/sub connection per event loop (and one for GETs), shared by every
    coroutine awaiting a result there; it closes when its last waiter leaves.

    A reader task hands each published payload to the boxes of its channel and marks
    subscriptions confirmed; waiters GET only after their confirmation.
    """

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self.pubsub = client.pubsub()
        self.boxes: dict[bytes, list[_AsyncBox]] = {}
        self.confirmed: dict[bytes, asyncio.Event] = {}
        self.reader: asyncio.Task[None] | None = None
        self.closed = False
        #: the subscription connection failed: new waiters take a new notifier
        self.failed = False
        #: one SUBSCRIBE/UNSUBSCRIBE at a time: concurrent first calls would each connect
        self._commands = asyncio.Lock()

    async def open(self, channel: bytes, *, timeout: float = 10.0) -> _AsyncBox:
        box = _AsyncBox()
        self.boxes.setdefault(channel, []).append(box)
        confirmed = self.confirmed.get(channel)
        if confirmed is None:
            confirmed = self.confirmed[channel] = asyncio.Event()
            async with self._commands:
                await self.pubsub.subscribe(channel)
        if self.reader is None or self.reader.done():
            self.reader = asyncio.get_running_loop().create_task(self._read())
        try:
            await asyncio.wait_for(confirmed.wait(), timeout)
        except asyncio.TimeoutError:
            await self.close(channel, box)
            raise BackendError(f"Redis did not confirm SUBSCRIBE {channel.decode()!r}") from None
        return box

    async def get(self, key: str) -> bytes | None:
        return _opt_bytes(await self.client.get(key))

    async def _read(self) -> None:
        try:
            while self.boxes:
                message = await self.pubsub.get_message(timeout=0.5)
                if message is not None:
                    self._dispatch(message)
        except (redis.RedisError, OSError):
            # the waiters re-read their keys on a None; the next open starts anew
            for boxes in self.boxes.values():
                for box in boxes:
                    box.items.put_nowait(None)
            self.failed = True

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = _bytes(message["channel"])
        if message["type"] == "subscribe":
            event = self.confirmed.get(channel)
            if event is not None:
                event.set()
        elif message["type"] == "message":
            for box in self.boxes.get(channel, ()):
                box.items.put_nowait(_bytes(message["data"]))

    async def close(self, channel: bytes, box: _AsyncBox) -> None:
        boxes = self.boxes.get(channel, [])
        if box in boxes:
            boxes.remove(box)
        if boxes:
            return
        self.boxes.pop(channel, None)
        self.confirmed.pop(channel, None)
        async with self._commands:  # never a command on a connection being closed
            if self.closed:
                return
            if self.boxes:
                if not self.failed:
                    await self.pubsub.unsubscribe(channel)
                return
            # the last waiter: the connections go, so none outlives its loop
            self.closed = True
            reader, self.reader = self.reader, None
            if reader is not None and reader is not asyncio.current_task():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, redis.RedisError, OSError):
                    await reader
            with contextlib.suppress(redis.RedisError, OSError):
                await self.pubsub.aclose()
            with contextlib.suppress(redis.RedisError, OSError):
                await self.client.aclose()


class RedisBackend(Backend, GroupStore, ChordStore):
    """Celery-compatible Redis result store (``redis://``, ``rediss://``, sentinel ...).

    ``options`` are Celery's ``result_backend_transport_options`` (``global_keyprefix``,
    socket timeouts, ``ssl``, ``master_name``, ``max_retries`` (3), ``reply_spin``
    (0.0002 s, as the transport's)).

    Chords are counted with Celery 5.7's scheme (section 4.6), so caraway and Celery
    workers can join the same chord.
    """

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.prefix = str(self.options.get("global_keyprefix", "") or "")
        self._where = parse_redis_url(url).redacted()
        self.client = connect(url, self.options, retries=int(self.options.get("max_retries", 3)))
        # result writes go as EVALSHA over one held connection (no SCRIPT EXISTS per batch)
        self._held = HeldConnection(self.client, reply_spin=reply_spin_option(self.options))
        self._store = self._held.script(_STORE)
        self._join = self._held.script(_CHORD_JOIN)
        self._extend = self.client.register_script(_CHORD_EXTEND)
        self._done = self.client.register_script(_CHORD_DONE)
        self._notifier: _Notifier | None = None
        self._notifier_lock = threading.Lock()
        #: await result: one notifier per event loop (see _LoopNotifier)
        self._loop_notifiers: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, _LoopNotifier
        ] = weakref.WeakKeyDictionary()
        self._chord_tokens: dict[str, str] = {}

    def task_key(self, task_id: str) -> str:
        return f"{self.prefix}{TASK_PREFIX}{task_id}"

    def group_key(self, group_id: str) -> str:
        return f"{self.prefix}{GROUP_PREFIX}{group_id}"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except redis.RedisError as exc:
            raise BackendError(f"Redis {what} failed at {self._where}: {exc}") from exc

    # -- task results ------------------------------------------------------------------

    def store(
        self,
        task_id: str,
        document: bytes,
        *,
        state: str,
        expires: float | None,
        reply_to: str | None = None,
    ) -> bool:
        ttl_ms = _ttl_ms(expires)
        key = self.task_key(task_id)
        command = self._held.evalsha(self._store, [key], [document, ttl_ms])
        return bool(self._call("store", lambda: self._held.run([command])[0]))

    def store_many(
        self, items: Sequence[tuple[str, bytes, str, str | None]], *, expires: float | None
    ) -> None:
        """The guarded store script for every item, sent in one round trip."""
        if not items:
            return
        commands = self._store_commands(items, expires)
        self._call("store", lambda: self._held.run(commands))

    def store_many_begin(
        self, items: Sequence[tuple[str, bytes, str, str | None]], *, expires: float | None
    ) -> Callable[[], None]:
        """Send the store scripts now and read their replies when waited for."""
        if not items:
            return lambda: None
        read = self._call("store", lambda: self._held.send(self._store_commands(items, expires)))

        def wait() -> None:
            self._call("store", read)

        return wait

    def _store_commands(
        self, items: Sequence[tuple[str, bytes, str, str | None]], expires: float | None
    ) -> list[tuple[Any, ...]]:
        ttl_ms = _ttl_ms(expires)
        return [
            self._held.evalsha(self._store, [self.task_key(task_id)], [document, ttl_ms])
            for task_id, document, _state, _reply_to in items
        ]

    def load(self, task_id: str) -> bytes | None:
        return _opt_bytes(self._call("load", lambda: self.client.get(self.task_key(task_id))))

    def load_many(self, task_ids: Sequence[str]) -> list[bytes | None]:
        if not task_ids:
            return []
        keys = [self.task_key(task_id) for task_id in task_ids]
        return [_opt_bytes(v) for v in self._call("load_many", lambda: self.client.mget(keys))]

    def wait(
        self,
        task_id: str,
        *,
        until: Callable[[bytes], bool],
        timeout: float | None,
    ) -> bytes | None:
        """Subscribe to the task's channel, then read the key, then wait for publishes.

        Subscribing first (confirmed) means a result written between the two steps is
        either seen by the GET or delivered on the channel; never missed.
        """
        key = self.task_key(task_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        notifier = self._get_notifier()
        box = self._call("subscribe", lambda: notifier.open(key))
        try:
            doc = self.load(task_id)
            while doc is None or not until(doc):
                remaining = _REREAD_EVERY if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    return None
                pushed = self._next(notifier, box, min(remaining, _REREAD_EVERY))
                doc = pushed if pushed is not None else self.load(task_id)
            return doc
        finally:
            self._call("unsubscribe", lambda: notifier.close(box))

    async def await_ready(
        self,
        task_id: str,
        *,
        until: Callable[[bytes], bool],
        timeout: float | None,
    ) -> bytes | None:
        """:meth:`wait` on the event loop, no thread: the loop's one subscription connection
        (:class:`_LoopNotifier`) hands this task's publishes over; subscribe confirmed, then
        GET, then publishes, so a result stored in between is never missed."""
        notifier = self._loop_notifier()
        if notifier is None:
            return await super().await_ready(task_id, until=until, timeout=timeout)
        key = self.task_key(task_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            box = await notifier.open(key.encode())
            try:
                doc = await notifier.get(key)
                while doc is None or not until(doc):
                    left = _REREAD_EVERY if deadline is None else deadline - time.monotonic()
                    if left <= 0:
                        return None
                    pushed = await box.next(min(left, _REREAD_EVERY))
                    doc = pushed if pushed is not None else await notifier.get(key)
                return doc
            finally:
                await notifier.close(key.encode(), box)
        except redis.RedisError as exc:
            raise BackendError(f"Redis at {self._where}: waiting for {task_id}: {exc}") from exc

    def _loop_notifier(self) -> _LoopNotifier | None:
        loop = asyncio.get_running_loop()
        with self._notifier_lock:
            found = self._loop_notifiers.get(loop)
            if found is None or found.closed or found.failed:
                client = connect_async(self.url, self.options)
                if client is None:
                    return None
                found = self._loop_notifiers[loop] = _LoopNotifier(client)
            return found

    def _next(self, notifier: _Notifier, box: _Box, timeout: float) -> bytes | None:
        return self._call("wait", lambda: notifier.next(box, timeout))

    def _get_notifier(self) -> _Notifier:
        with self._notifier_lock:
            if self._notifier is None:
                self._notifier = _Notifier(self.client)
            return self._notifier

    def forget(self, task_id: str) -> None:
        self._call("forget", lambda: self.client.delete(self.task_key(task_id)))

    # -- groups ------------------------------------------------------------------------

    def save_group(self, group_id: str, document: bytes, *, expires: float | None) -> None:
        ttl_ms = _ttl_ms(expires)
        key = self.group_key(group_id)
        px = ttl_ms if ttl_ms > 0 else None
        self._call("save_group", lambda: self.client.set(key, document, px=px))

    def load_group(self, group_id: str) -> bytes | None:
        return _opt_bytes(
            self._call("load_group", lambda: self.client.get(self.group_key(group_id)))
        )

    def forget_group(self, group_id: str) -> None:
        self._call("forget_group", lambda: self.client.delete(self.group_key(group_id)))

    # -- chords (Celery 5.7 scheme) ----------------------------------------------------

    def _chord_keys(self, group_id: str) -> dict[str, str]:
        base = self.group_key(group_id)
        return {part: f"{base}.{part}" for part in "jtsdc"} | {"group": base}

    def chord_set_size(self, group_id: str, size: int, *, expires: float) -> None:
        keys = self._chord_keys(group_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(keys["c"])
        pipe.set(keys["s"], int(size), ex=max(1, int(expires)))
        self._call("chord_set_size", pipe.execute)

    def chord_extend(self, group_id: str, count: int) -> None:
        self._call(
            "chord_extend", lambda: self.client.incrby(self._chord_keys(group_id)["t"], count)
        )

    def chord_join_many(
        self, parts: Sequence[ChordPart], *, expires: float
    ) -> list[list[Any] | None]:
        """Every part counted in one round trip; the completers' extra steps (extend the
        claim, read the members) follow for the winners only."""
        commands, tokens = self._join_commands(parts, expires)
        won = self._call("chord_join", lambda: self._held.run(commands))
        return self._winners(parts, tokens, won)

    def chord_join_many_begin(
        self, parts: Sequence[ChordPart], *, expires: float
    ) -> Callable[[], list[list[Any] | None]]:
        """The join scripts sent now, behind the batch's result writes on the same
        connection (so they run after them); their replies read when waited for."""
        commands, tokens = self._join_commands(parts, expires)
        read = self._call("chord_join", lambda: self._held.send(commands))

        def wait() -> list[list[Any] | None]:
            return self._winners(parts, tokens, self._call("chord_join", read))

        return wait

    def _join_commands(
        self, parts: Sequence[ChordPart], expires: float
    ) -> tuple[list[tuple[Any, ...]], list[str]]:
        commands, tokens = [], []
        for part in parts:
            keys = self._chord_keys(part.group_id)
            member = chord_member(part.task_id, part.state, part.result_json)
            score = "+inf" if part.index is None else str(part.index)
            token = uuid.uuid4().hex
            tokens.append(token)
            commands.append(
                self._held.evalsha(
                    self._join,
                    [keys["j"], keys["t"], keys["s"], keys["d"], keys["group"], keys["c"]],
                    [
                        f"{part.task_id}:{part.index}",
                        member,
                        score,
                        int(expires),
                        token,
                        _CLAIM_TTL,
                    ],
                )
            )
        return commands, tokens

    def _winners(
        self, parts: Sequence[ChordPart], tokens: list[str], won: list[Any]
    ) -> list[list[Any] | None]:
        return [
            self._completer(part.group_id, token) if count else None
            for part, token, count in zip(parts, tokens, won, strict=True)
        ]

    def _completer(self, group_id: str, token: str) -> list[Any]:
        """The ordered members, for the one caller whose join completed the count."""
        keys = self._chord_keys(group_id)
        self._chord_tokens[group_id] = token
        # Keep the claim while the callback is being published (Celery extends it too).
        self._call(
            "chord_join", lambda: self._extend(keys=[keys["c"]], args=[token, _CLAIM_EXTEND])
        )
        raw: list[Any] = self._call(
            "chord_join", lambda: list(self.client.zrange(keys["j"], 0, -1))
        )
        return [json.loads(item) for item in raw]

    def chord_done(self, group_id: str) -> bool:
        token = self._chord_tokens.pop(group_id, None)
        if token is None:
            return False
        keys = self._chord_keys(group_id)
        done = self._call(
            "chord_done",
            lambda: self._done(
                keys=[keys["c"], keys["j"], keys["t"], keys["s"], keys["d"]],
                args=[token, _DONE_TTL],
            ),
        )
        return bool(done)

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.shutdown()
            self._notifier = None
        self._held.close()
        self.client.close()


def _ttl_ms(expires: float | None) -> int:
    """Milliseconds to keep a document; 0 keeps it forever (Celery: result_expires=None)."""
    if expires is None or expires <= 0:
        return 0
    return max(1, int(expires * 1000))


def _opt_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    return _bytes(value)


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()

"""Periodic-task state on RabbitMQ: one single-active-consumer queue is both the leader's
lease and the state.

``<namespace>.beat`` (durable, ``x-single-active-consumer``) holds the state document.
Every beat instance consumes it; RabbitMQ delivers to one consumer only, the active one,
which is the leader, and activates the next in line the moment that one's connection
dies. The leader keeps the document unacked while it leads and replaces it on each change
by publishing the new one (confirmed) before acking the old, so the queue always holds
the latest state; a new leader receives every document the old one held and merges them
(per entry the latest mark wins). Runtime edits are published to the same queue for the
leader to fold in. ``<namespace>.beat.status`` (max-length 1) holds the leader's latest
snapshot for readers. The fence: claims are written (and confirmed) on the connection that
holds the lease, before the run is sent; a leader whose connection died cannot claim.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

import amqp

from caraway.brokers.contracts import (
    BeatAdvance,
    BeatEntryState,
    BeatLeader,
    BeatRun,
    BeatState,
    BeatStore,
)
from caraway.clients.amqp import CHANNEL_ERRORS, CONNECTION_ERRORS, collect, connect, parse_amqp_url
from caraway.exceptions import BrokerError

#: seconds a new leader waits for every document the old one held to arrive
SETTLE = 0.3
#: scheduled instants remembered per entry (the per-run keys); the mark fences the rest
RUNS_KEPT = 32
#: seconds lead() waits for deliveries on each call (just what has arrived)
_POLL = 0.001
#: seconds a deleted runtime entry is remembered, so a late copy cannot bring it back (and
#: how long the run keys of an entry that stopped running are kept)
TOMBSTONE_SECONDS = 86_400.0

_OPEN: weakref.WeakSet[AMQPBeatStore] = weakref.WeakSet()
_OPEN_LOCK = threading.Lock()


def _forked() -> None:
    # A child must not keep the parent's lease connection open: RabbitMQ only moves the
    # lease on when every process holding the socket has let go of it.
    for store in list(_OPEN):
        store._abandon()


os.register_at_fork(after_in_child=_forked)


def _empty() -> dict[str, Any]:
    return {"kind": "state", "seq": 0, "leader": None, "entries": {}, "runs": {}, "runtime": {}}


def merge(mine: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Two state documents as one: per entry the later mark, per run key the union, per
    runtime entry the later edit. Merging is order-free, so any set of documents a dead
    leader left behind yields the same state."""
    merged: dict[str, Any] = json.loads(json.dumps(mine))
    for name, value in other.get("entries", {}).items():
        current = merged["entries"].get(name)
        if current is None or (value[0], value[1]) > (current[0], current[1]):
            merged["entries"][name] = value
    for name, runs in other.get("runs", {}).items():
        merged["runs"][name] = sorted({*merged["runs"].get(name, []), *runs})[-RUNS_KEPT:]
    for name, edit in other.get("runtime", {}).items():
        _fold_edit(merged, name, edit)
    merged["seq"] = max(int(merged.get("seq", 0)), int(other.get("seq", 0)))
    return merged


def _fold_edit(document: dict[str, Any], name: str, edit: dict[str, Any]) -> bool:
    current = document["runtime"].get(name)
    if current is not None and (current["at"], current.get("id", "")) >= (
        edit["at"],
        edit.get("id", ""),
    ):
        return False
    document["runtime"][name] = {"spec": edit["spec"], "at": edit["at"], "id": edit.get("id", "")}
    return True


def _content(document: dict[str, Any]) -> str:
    parts = {key: document.get(key) for key in ("entries", "runs", "runtime")}
    return json.dumps(parts, sort_keys=True)


def _state_of(document: dict[str, Any]) -> BeatState:
    leader = document.get("leader")
    entries = {
        name: BeatEntryState(int(value[0]), int(value[1]), _run_of(value[2]))
        for name, value in document.get("entries", {}).items()
    }
    runtime = {
        name: str(edit["spec"]).encode()
        for name, edit in document.get("runtime", {}).items()
        if edit.get("spec") is not None
    }
    found = BeatLeader(**leader) if leader else None
    return BeatState(found, entries, runtime)


def _run_of(value: Any) -> BeatRun | None:
    if not value:
        return None
    scheduled_ms, task_id, holder, sent_at = value
    return BeatRun(int(scheduled_ms), str(task_id), str(holder), float(sent_at))


def _body(message: Any) -> dict[str, Any]:
    raw = message.body
    document = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return document


class AMQPBeatStore(BeatStore):
    """The beat store of ``amqp://`` brokers; ``options`` as the transport's (``ssl``,
    ``heartbeat``, ``connect_timeout``)."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.params = parse_amqp_url(url, self.options)
        self.queue = f"{self.namespace}.beat"
        self.status_queue = f"{self.namespace}.beat.status"
        self._conn: Any = None
        self._channel: Any = None
        self._reset()
        with _OPEN_LOCK:
            _OPEN.add(self)

    def _reset(self) -> None:
        self._leading = False
        self._consuming = False
        self._cancelled = False
        self._doc: dict[str, Any] | None = None
        #: delivery tag -> state document received and not acked
        self._held: dict[int, dict[str, Any]] = {}
        #: tags of held documents already merged into ``_doc``
        self._merged: set[int] = set()
        #: runtime edits received and not folded in yet, with their tags
        self._edits: list[tuple[int, dict[str, Any]]] = []
        self._written_at = 0.0
        self._since = 0.0

    # -- connection ----------------------------------------------------------------------
    def _ensure(self, *, consume: bool = False) -> Any:
        """The channel, connected and declared; ``consume`` joins the line for the lease
        (readers never do: an active consumer that never leads would stall the schedule)."""
        if self._conn is not None and self._cancelled:
            self._drop()
        if self._conn is None:
            self._connect()
        if consume and not self._consuming:
            self._guarded("consume", lambda: self._consume(self._channel))
        return self._channel

    def _connect(self) -> None:
        # heartbeats find a half-open connection: the lease moves on after two of them
        heartbeat = min(max(self.lease_seconds * 2, 4.0), 60.0)
        try:
            conn = connect(self.params, heartbeat=heartbeat)
        except (*CONNECTION_ERRORS, *CHANNEL_ERRORS) as exc:
            raise BrokerError(f"beat: cannot reach {self.params.redacted()}: {exc!r}") from exc
        self._conn = conn
        try:
            channel = conn.channel()
            channel.basic_qos(0, 0, False)
            channel.confirm_select()
            # auto_delete off (py-amqp's default is on): the state outlives every consumer
            _, ready, consumers = channel.queue_declare(
                self.queue,
                durable=True,
                auto_delete=False,
                arguments={"x-single-active-consumer": True},
            )
            channel.queue_declare(
                self.status_queue,
                durable=True,
                auto_delete=False,
                arguments={"x-max-length": 1, "x-overflow": "drop-head"},
            )
            if ready == 0 and consumers == 0:
                # a new schedule (or one whose document was purged): start its state; two
                # instances doing this at once leave two documents, which the leader merges
                self._publish(channel, self.queue, _empty())
        except (*CONNECTION_ERRORS, *CHANNEL_ERRORS) as exc:
            self._drop()
            raise BrokerError(f"beat: cannot set up {self.queue!r}: {exc!r}") from exc
        self._channel = channel

    def _consume(self, channel: Any) -> None:
        channel.basic_consume(
            self.queue, callback=self._on_message, no_ack=False, on_cancel=self._on_cancel
        )
        self._consuming = True

    def _drop(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            collect(conn)
        self._reset()

    def _abandon(self) -> None:
        """After fork, in the child: close this process's copy of the socket, and nothing
        more (a close handshake would end the parent's connection)."""
        conn, self._conn, self._channel = self._conn, None, None
        sock = getattr(getattr(conn, "transport", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self._reset()

    def _guarded(self, what: str, action: Any) -> Any:
        try:
            return action()
        except (*CONNECTION_ERRORS, *CHANNEL_ERRORS, amqp.exceptions.MessageNacked) as exc:
            self._drop()
            raise BrokerError(f"beat {what} on {self.params.redacted()} failed: {exc!r}") from exc

    def _publish(self, channel: Any, queue: str, document: dict[str, Any]) -> None:
        message = amqp.Message(
            json.dumps(document).encode(), content_type="application/json", delivery_mode=2
        )
        channel.basic_publish_confirm(message, exchange="", routing_key=queue, confirm_timeout=30)

    def _pump(self, seconds: float) -> None:
        """Dispatch what arrived, waiting up to ``seconds`` for more."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self._conn.drain_events(timeout=max(_POLL, deadline - time.monotonic()))
            except TimeoutError:
                break
            if time.monotonic() >= deadline:
                break
        self._conn.heartbeat_tick()

    # -- deliveries (inside drain_events) ------------------------------------------------
    def _on_message(self, message: Any) -> None:
        tag = message.delivery_tag
        try:
            document = _body(message)
        except ValueError:
            self._channel.basic_ack(tag)  # not ours to keep: nothing can read it
            return
        if document.get("kind") == "edit":
            self._edits.append((tag, document))
        else:
            self._held[tag] = document

    def _on_cancel(self, consumer_tag: str) -> None:
        # the queue was deleted under us: whatever we held is gone with it; start over
        self._leading = False
        self._cancelled = True

    # -- the lease -----------------------------------------------------------------------
    def lead(self) -> bool:
        return bool(self._guarded("lead", self._lead))

    def _lead(self) -> bool:
        self._ensure(consume=True)
        self._pump(_POLL)
        if not self._leading:
            if not self._held:
                return False
            self._pump(SETTLE)  # the rest of what the old leader held is on its way
            self._leading, self._since = True, time.time()
            self._doc = _empty()
        assert self._doc is not None
        document, changed = self._doc, False
        for tag in [tag for tag in self._held if tag not in self._merged]:
            self._merged.add(tag)  # order-free: a late copy can only add
            merged = merge(document, self._held[tag])
            if _content(merged) != _content(document):
                document, changed = merged, True
        for _, edit in self._edits:
            changed = _fold_edit(document, str(edit["name"]), edit) or changed
        stale = time.time() - self._written_at > self.lease_seconds
        if changed or self._edits or len(self._held) > 1 or stale:
            self._write(document)
        return True

    def _write(self, document: dict[str, Any]) -> None:
        """Publish ``document`` as the new state (and snapshot), then ack what it replaces."""
        now = time.time()
        document = dict(document, seq=int(document["seq"]) + 1)
        document["leader"] = {
            "holder": self.holder,
            "node": self.node,
            "since": self._since,
            "renewed": now,
        }
        self._prune(document, now)
        replaced = list(self._held) + [tag for tag, _ in self._edits]
        channel = self._channel
        self._publish(channel, self.queue, document)
        self._publish(channel, self.status_queue, document)
        for tag in replaced:
            channel.basic_ack(tag)
            self._held.pop(tag, None)
            self._merged.discard(tag)
        self._edits = [(tag, edit) for tag, edit in self._edits if tag not in replaced]
        self._doc, self._written_at = document, now

    @staticmethod
    def _prune(document: dict[str, Any], now: float) -> None:
        oldest_ms = (now - TOMBSTONE_SECONDS) * 1000
        runs = document["runs"]
        for name in [n for n, kept in runs.items() if not kept or kept[-1] < oldest_ms]:
            del runs[name]
        runtime = document["runtime"]
        for name in [n for n, e in runtime.items() if e["spec"] is None]:
            if now - runtime[name]["at"] > TOMBSTONE_SECONDS:
                del runtime[name]

    def resign(self) -> None:
        if self._conn is not None:
            # closing gives back what we hold and hands the lease to the next in line
            self._guarded("resign", self._conn.close)
            self._drop()

    # -- state ---------------------------------------------------------------------------
    def state(self) -> BeatState:
        if self._leading and self._doc is not None:
            return _state_of(self._doc)
        return _state_of(self._guarded("state", self._snapshot))

    def _snapshot(self) -> dict[str, Any]:
        channel = self._ensure()
        if self._consuming:
            self._pump(_POLL)
        message = channel.basic_get(self.status_queue, no_ack=False)
        if message is None:
            return _empty()
        channel.basic_reject(message.delivery_tag, requeue=True)
        try:
            return _body(message)
        except ValueError:
            return _empty()

    def advance(self, changes: Sequence[BeatAdvance]) -> list[bool]:
        if not (self._leading and self._doc is not None):
            return [False] * len(changes)
        document = json.loads(json.dumps(self._doc))
        applied = [self._apply(document, change) for change in changes]
        if any(applied):
            self._guarded("advance", lambda: self._write(document))
        return applied

    def _apply(self, document: dict[str, Any], change: BeatAdvance) -> bool:
        current = document["entries"].get(change.name)
        if (int(current[0]) if current else None) != change.expected_ms:
            return False
        taken = set(document["runs"].get(change.name, []))
        if any(run.scheduled_ms in taken for run in change.runs):
            return False
        count = (int(current[1]) if current else 0) + len(change.runs)
        last_run = current[2] if current else None
        if change.runs:
            run = change.runs[-1]
            last_run = [run.scheduled_ms, run.task_id, run.holder, run.sent_at]
            scheduled = [run.scheduled_ms for run in change.runs]
            document["runs"][change.name] = sorted({*taken, *scheduled})[-RUNS_KEPT:]
        document["entries"][change.name] = [change.to_ms, count, last_run]
        return True

    def forget(self, names: Sequence[str]) -> None:
        if not (self._leading and self._doc is not None) or not names:
            return
        document = json.loads(json.dumps(self._doc))
        for name in names:  # its run keys stay: a run is never claimed twice
            document["entries"].pop(name, None)
        self._guarded("forget", lambda: self._write(document))

    # -- runtime entries -----------------------------------------------------------------
    def _edit(self, name: str, spec: bytes | None) -> None:
        edit = {
            "kind": "edit",
            "name": name,
            "spec": None if spec is None else bytes(spec).decode(),
            "at": time.time(),
            "id": self.holder,
        }
        self._guarded("edit", lambda: self._publish(self._ensure(), self.queue, edit))

    def put_entry(self, name: str, spec: bytes) -> None:
        self._edit(name, spec)

    def remove_entry(self, name: str) -> bool:
        known = name in self.state().runtime
        self._edit(name, None)
        return known

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a connection that already broke
                collect(self._conn)
        self._conn, self._channel = None, None
        self._reset()
        with _OPEN_LOCK:
            _OPEN.discard(self)

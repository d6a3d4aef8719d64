"""The result-store seam: documents in, documents out, with event-driven waiting.

A backend stores each task's result document as bytes (built and read by
``caraway.protocol.results``), keyed by task id, with an expiry. It never interprets a
result; the one thing it knows is the document's ``state`` (passed alongside), because
a final state must never be overwritten by a late or duplicate write.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

READY = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


class Backend(abc.ABC):
    """One process's handle on the result store. Forked children open their own."""

    #: chord joins can be counted atomically here (see ``chord_*`` in the canvas issue)
    supports_chords: bool = False
    #: any process can read a result (False for rpc://, where only the caller can)
    shared: bool = True

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.options = dict(options or {})

    @abc.abstractmethod
    def store(
        self,
        task_id: str,
        document: bytes,
        *,
        state: str,
        expires: float | None,
        reply_to: str | None = None,
    ) -> bool:
        """Write ``document`` for ``task_id``; wake its waiters.

        Skipped (returns False) when the stored state is already final (SUCCESS,
        FAILURE, REVOKED), so a redelivered duplicate cannot clobber an outcome.
        ``expires`` is seconds from now, or None to keep it forever. ``reply_to`` is the
        calling client's reply queue (the message's ``reply_to``), which only stores that
        send results back to the caller (rpc://) need.
        """

    def store_many(
        self, items: Sequence[tuple[str, bytes, str, str | None]], *, expires: float | None
    ) -> None:
        """Store ``(task_id, document, state, reply_to)``; backends do it in one round trip."""
        for task_id, document, state, reply_to in items:
            self.store(task_id, document, state=state, expires=expires, reply_to=reply_to)

    def chord_join_many(
        self, joins: Sequence[tuple[str, str, int | None, str, str]], *, expires: float = 86400
    ) -> list[list[Any] | None]:
        """``chord_join`` for each ``(group_id, task_id, index, state, result_json)``, in
        order (only for ``supports_chords`` backends); one round trip where the store can."""
        join = getattr(self, "chord_join")  # noqa: B009 - defined by supports_chords backends
        return [
            join(group_id, task_id, index, state, result_json, expires=expires)
            for group_id, task_id, index, state, result_json in joins
        ]

    def store_many_begin(
        self, items: Sequence[tuple[str, bytes, str, str | None]], *, expires: float | None
    ) -> Callable[[], None]:
        """Start :meth:`store_many`; the returned function waits for it to be done.

        Lets the worker write results while its broker connection claims the next batch;
        stores that cannot overlap a round trip simply finish here.
        """
        self.store_many(items, expires=expires)
        return _done

    def on_task_call(self, task_id: str) -> None:  # noqa: B027 - most stores need nothing
        """Called by the producer before it publishes a task whose result it will read."""

    @abc.abstractmethod
    def load(self, task_id: str) -> bytes | None:
        """The stored document, or None (PENDING: never written, or expired)."""

    def load_many(self, task_ids: Sequence[str]) -> list[bytes | None]:
        return [self.load(task_id) for task_id in task_ids]

    @abc.abstractmethod
    def wait(
        self,
        task_id: str,
        *,
        until: Callable[[bytes], bool],
        timeout: float | None,
    ) -> bytes | None:
        """Block until the document satisfies ``until``; None when ``timeout`` runs out.

        Wakes on the store's notification where it has one (pub/sub, reply queue),
        never by a tight poll.
        """

    @abc.abstractmethod
    def forget(self, task_id: str) -> None:
        """Delete the stored document."""

    def save_group(self, group_id: str, document: bytes, *, expires: float | None) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot save groups")

    def load_group(self, group_id: str) -> bytes | None:
        raise NotImplementedError(f"{type(self).__name__} cannot save groups")

    def forget_group(self, group_id: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot save groups")

    def cleanup(self) -> int:
        """Delete expired documents where the store does not expire them itself."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""


def _done() -> None:
    """A store that finished before it was waited for."""

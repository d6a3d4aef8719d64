"""Completing a chord when its header tasks finish: the one join algorithm.

Each result backend counts a chord's header atomically with its own primitive (a Redis
script, a SQLite transaction, a lock in memory) and tells exactly one caller that the
count is complete. That caller, here, applies the body with the header results in
``group_index`` order, or, when a header task failed, stores FAILURE ``ChordError`` for
the body (naming the culprit) and fires its errbacks; either way it then marks the chord
done so late duplicates stop. What completing sends is returned, not sent: the worker
publishes it with the rest of its effects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from caraway import states
from caraway.brokers.contracts import Backend, ChordPart, ChordStore
from caraway.canvas import Signature, chain
from caraway.exceptions import ChordError
from caraway.execution import fire_errbacks
from caraway.lifecycle import ChordJoin, Errbacks
from caraway.protocol import results as docs
from caraway.protocol.message import TaskMessage
from caraway.protocol.serializers import dumps_json, untag
from caraway.publish import Outgoing, follow_up, holding
from caraway.schedules.base import zone_of
from caraway.taskbase import AppLike

logger = logging.getLogger("caraway.worker")


def join_chords(
    app: AppLike, backend: Backend | None, joins: Sequence[ChordJoin]
) -> list[Outgoing]:
    """Count finished header tasks (one round trip where the backend can) and complete
    each chord whose count they finish; returns the messages completing them sends."""
    return join_chords_begin(app, backend, joins)()


def join_chords_begin(
    app: AppLike, backend: Backend | None, joins: Sequence[ChordJoin]
) -> Callable[[], list[Outgoing]]:
    """:func:`join_chords` started: the counts are sent now (behind the batch's result
    writes, where the store can), and the returned function reads them, completes the
    chords they finish and returns what completing them sends."""
    if not joins:
        return list
    if not isinstance(backend, ChordStore):
        for join in joins:
            logger.error(
                "chord %s: the result backend %s cannot count chord headers; the body %s "
                "will not run (use a redis:// or sqlite:// result backend)",
                join.group_id,
                getattr(backend, "url", None),
                _body_name(join.body),
            )
        return list
    counted = [
        ChordPart(join.group_id, join.header_id, join.index, join.state, _result_json(join.value))
        for join in joins
    ]
    expires = app.conf.result_expires_seconds() or 86400
    read = backend.chord_join_many_begin(counted, expires=expires)

    def complete() -> list[Outgoing]:
        sent: list[Outgoing] = []
        for join, members in zip(joins, read(), strict=True):
            if members is None:
                continue
            try:
                sent.extend(complete_chord(app, backend, join, members))
            finally:
                backend.chord_done(join.group_id)
        return sent

    return complete


def complete_chord(
    app: AppLike, backend: Backend, join: ChordJoin, members: Sequence[Sequence[Any]]
) -> list[Outgoing]:
    """The messages that apply the body with the ordered results, or that fail it naming
    the failed header task.

    The header task whose completion ran the join becomes the body's ``parent_id``:
    Celery publishes the body from inside that task, so chord trees hang on it.
    """
    try:
        callback = Signature.from_dict(join.body, app=app)
    except (ValueError, TypeError) as exc:
        logger.error("chord %s: malformed body signature (%s); not run", join.group_id, exc)
        return []
    culprit = next((m for m in members if m[2] in states.PROPAGATE_STATES), None)
    if culprit is not None:
        cause = _exception(culprit[3])
        error = ChordError(f"Dependency {culprit[1]} raised {cause!r}")
        return fail_body(app, backend, callback, error)
    values = [untag(member[3]) for member in members]
    lineage: dict[str, Any] = {"parent_id": join.header_id}
    if join.root_id:
        lineage["root_id"] = join.root_id
    with holding() as held:
        try:
            callback.apply_async((values,), **lineage)
        except Exception as exc:  # any failure to send becomes the body's outcome
            logger.error(
                "chord %s: the body %s could not be sent: %r", join.group_id, callback.name, exc
            )
            return fail_body(app, backend, callback, ChordError(f"Callback error: {exc!r}"))
    return held or []


def fail_body(
    app: AppLike, backend: Backend, callback: Signature, error: ChordError
) -> list[Outgoing]:
    """Store FAILURE for the body (every step of a chain body); returns its errbacks."""
    steps = callback.tasks if isinstance(callback, chain) else [callback]
    expires = app.conf.result_expires_seconds()
    for step in steps:
        if step.id is None:
            continue
        document = docs.result_document(
            step.id,
            states.FAILURE,
            docs.exception_to_dict(error),
            group_id=step.options.get("group_id"),
            zone=zone_of(app.conf),
        )
        encoded = docs.encode_document(document)
        backend.store(step.id, encoded, state=states.FAILURE, expires=expires)
    logger.error("chord body %s[%s] failed: %s", callback.name, callback.id, error)
    errbacks = [dict(errback) for errback in callback.options.get("link_error") or ()]
    if not errbacks:
        return []
    failed = TaskMessage(id=steps[-1].id or "", task=callback.name)
    sent: list[Outgoing] = []
    fire_errbacks(
        app,
        Errbacks(errbacks, failed, error, None),
        send=lambda signature, value: sent.append(follow_up(signature, value, failed, app.conf)),
    )
    return sent


def _result_json(value: Any) -> str:
    if isinstance(value, BaseException):
        value = docs.exception_to_dict(value)
    try:
        return dumps_json(value).decode()
    except Exception:  # the join must still count this member
        return dumps_json(repr(value)).decode()


def _exception(value: Any) -> BaseException | Any:
    if isinstance(value, Mapping) and "exc_type" in value:
        return docs.exception_from_dict(value)
    return value


def _body_name(body: Any) -> str:
    return str(body.get("task")) if isinstance(body, Mapping) else repr(body)

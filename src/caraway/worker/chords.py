"""Completing a chord when one of its header tasks finishes.

The join is counted by the result backend atomically (``ChordStore.chord_join_many``: Redis
Lua script, SQLite transaction, memory lock); exactly one caller completes the count. That caller
applies the body with the header results in ``group_index`` order, or, when a header task
failed, stores FAILURE ``ChordError`` for the body (naming the culprit) and fires its
errbacks. Either way it then calls ``chord_done`` so late duplicates stop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from caraway import states
from caraway.brokers.contracts import Backend, ChordPart, ChordStore, Transport
from caraway.exceptions import ChordError
from caraway.protocol import results as docs
from caraway.protocol.serializers import dumps_json, untag

if TYPE_CHECKING:
    from caraway.app import Caraway

logger = logging.getLogger("caraway.worker")

#: (group id, group index, state, value or exception, body signature[, header task id])
Join = tuple[Any, ...]


def join_chord(app: Caraway, transport: Transport, backend: Backend | None, join: Join) -> None:
    """Count one finished header task and complete the chord if it was the last."""
    join_chords(app, transport, backend, [join])


def join_chords(
    app: Caraway, transport: Transport, backend: Backend | None, joins: Sequence[Join]
) -> None:
    """Count finished header tasks (one round trip where the backend can) and complete
    each chord whose count they finish."""
    if not joins:
        return
    if not isinstance(backend, ChordStore):
        for join in joins:
            logger.error(
                "chord %s: the result backend %s cannot count chord headers; the body %s "
                "will not run (use a redis:// or sqlite:// result backend)",
                join[0],
                getattr(backend, "url", None),
                _body_name(join[4]),
            )
        return
    counted = []
    for join in joins:
        group_id, index, state, value = join[:4]
        # The header task's id arrives as a sixth element; without it the index stands in
        # (unique within the chord, which is all the backend's de-duplication needs).
        header_id = str(join[5]) if len(join) > 5 and join[5] else None
        task_id = header_id or f"{group_id}#{index}"
        counted.append(ChordPart(group_id, task_id, index, state, _result_json(state, value)))
    expires = app.result_expires_seconds() or 86400
    won = backend.chord_join_many(counted, expires=expires)
    for join, members in zip(joins, won, strict=True):
        if members is None:
            continue
        group_id, body = join[0], join[4]
        header_id = str(join[5]) if len(join) > 5 and join[5] else None
        root_id = str(join[6]) if len(join) > 6 and join[6] else None
        try:
            complete_chord(app, group_id, members, body, parent_id=header_id, root_id=root_id)
        finally:
            backend.chord_done(group_id)


def complete_chord(
    app: Caraway,
    group_id: str,
    members: Sequence[Sequence[Any]],
    body: Mapping[str, Any],
    *,
    parent_id: str | None = None,
    root_id: str | None = None,
) -> None:
    """Apply the body with the ordered results, or fail it naming the failed header task.

    ``parent_id`` is the header task whose completion ran the join: Celery publishes the
    body from inside that task, so the body's ``parent_id`` names it (chord trees hang on it).
    """
    from caraway.canvas import Signature

    try:
        callback = Signature.from_dict(body, app=app)
    except (ValueError, TypeError) as exc:
        logger.error("chord %s: malformed body signature (%s); not run", group_id, exc)
        return
    culprit = next((m for m in members if m[2] in states.PROPAGATE_STATES), None)
    if culprit is not None:
        cause = _exception(culprit[3])
        error = ChordError(f"Dependency {culprit[1]} raised {cause!r}")
        fail_body(app, callback, error)
        return
    values = [untag(member[3]) for member in members]
    lineage: dict[str, Any] = {"parent_id": parent_id} if parent_id else {}
    if root_id:
        lineage["root_id"] = root_id
    try:
        callback.apply_async((values,), **lineage)
    except Exception as exc:  # any failure to send becomes the body's outcome
        logger.error("chord %s: the body %s could not be sent: %r", group_id, callback.name, exc)
        fail_body(app, callback, ChordError(f"Callback error: {exc!r}"))


def fail_body(app: Caraway, callback: Any, error: ChordError) -> None:
    """Store FAILURE for the body (every step of a chain body) and fire its errbacks."""
    steps = callback.tasks if callback.subtask_type == "chain" else [callback]
    backend = app.backend
    for step in steps:
        if step.id is None or backend is None:
            continue
        document = docs.result_document(
            step.id,
            states.FAILURE,
            docs.exception_to_dict(error),
            group_id=step.options.get("group_id"),
        )
        backend.store(
            step.id,
            docs.encode_document(document),
            state=states.FAILURE,
            expires=app.result_expires_seconds(),
        )
    logger.error("chord body %s[%s] failed: %s", callback.name, callback.id, error)
    for errback in callback.options.get("link_error") or ():
        _fire_errback(app, errback, steps[-1].id, error)


def _fire_errback(app: Caraway, errback: Any, task_id: str | None, error: BaseException) -> None:
    """Celery's rule: an errback taking (request, exc, traceback) runs here; others are sent
    with the failed task's id."""
    from caraway.canvas import Signature

    try:
        sig = Signature.from_dict(errback, app=app)
        task = app.tasks.get(sig.name)
        if task is not None and _takes_request(task):
            from caraway.task import Request

            sig(Request(id=task_id, task=sig.name), error, None)
        else:
            sig.apply_async((task_id,))
    except Exception as exc:  # an errback's failure must not stop the worker
        logger.error("errback %r for %s failed: %r", errback, task_id, exc)


def _takes_request(task: Any) -> bool:
    signature = task._signature()
    if signature is None:
        return False
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) > 1 or any(p.kind == p.VAR_POSITIONAL for p in positional)


def _result_json(state: str, value: Any) -> str:
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

"""Pure decisions: what a received message or a finished run means for the world.

``on_receipt`` says whether a delivery runs now, waits, parks, or is settled without
running (expired, revoked, already final, over the delivery cap, unknown task).
``on_outcome`` turns a run's :class:`Outcome` into :class:`Effects`: result documents to
store, follow-up messages to publish (callbacks, the next chain step), and what to do
with the delivery. No I/O here, so every rule is unit-tested without a broker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from caraway import exceptions, states
from caraway.protocol import results as docs
from caraway.protocol.message import TaskMessage
from caraway.routing import Route, route
from caraway.worker.execute import Outcome

Verdict = Literal["run", "hold", "park", "settle"]


@dataclass(slots=True)
class Policy:
    """The task options and settings that decide a message's fate."""

    acks_late: bool = False
    acks_on_failure_or_timeout: bool = True
    reject_on_worker_lost: bool = True
    ignore_result: bool = False
    store_errors_even_if_ignored: bool = False
    track_started: bool = False
    result_extended: bool = False
    result_expires: float | None = 86400.0


@dataclass(slots=True)
class FollowUp:
    """A message the worker publishes because of this one (callback, chain step)."""

    message: TaskMessage
    route: Route


@dataclass(slots=True)
class Effects:
    """Everything that should happen after a decision, in order: store, publish, settle."""

    results: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    publish: list[FollowUp] = field(default_factory=list)
    settle: Literal["ack", "requeue", "dead_letter", "none"] = "ack"
    reason: str | None = None
    #: a chord header finished: (group id, index, state, value, body signature)
    chord_join: tuple[str, int | None, str, Any, dict[str, Any], str, str | None] | None = None
    #: a failed task's ``link_error`` signatures, with the error and its traceback
    errbacks: tuple[list[dict[str, Any]], TaskMessage, BaseException, str | None] | None = None


@dataclass(slots=True)
class Receipt:
    verdict: Verdict
    effects: Effects | None = None
    eta: float | None = None


def on_receipt(
    message: TaskMessage,
    *,
    now: float,
    park_horizon: float,
    can_park: bool,
    delivery_count: int,
    delivery_cap: int,
    stored_state: str | None,
    registered: bool,
    revoked: bool,
    registered_names: str = "",
    policy: Policy,
) -> Receipt:
    """Decide what a freshly received message needs, before any user code runs."""
    if stored_state in states.READY_STATES:
        return Receipt("settle", Effects(reason=f"already {stored_state}; not run again"))
    if delivery_cap and delivery_count > delivery_cap:
        error = exceptions.WorkerLostError(
            f"task {message.id} was delivered {delivery_count} times and killed its worker "
            f"each time; set aside in the dead-letter store (worker_delivery_cap={delivery_cap})"
        )
        effects = failure_effects(message, error, None, policy)
        effects.settle, effects.reason = "dead_letter", str(error)
        return Receipt("settle", effects)
    if not registered:
        unknown = exceptions.NotRegistered(
            f"task {message.task!r} is not registered in this worker; registered: "
            f"{registered_names or '(none)'}"
        )
        return Receipt("settle", failure_effects(message, unknown, None, policy, force=True))
    malformed = _malformed_embed(message)
    if malformed is not None:
        bare = dataclasses.replace(message, chain=None, chord=None, callbacks=None, errbacks=None)
        effects = failure_effects(bare, malformed, None, policy, force=True)
        effects.reason = str(malformed)
        return Receipt("settle", effects)
    if revoked or (message.expires is not None and message.expires.timestamp() <= now):
        why = "revoked" if revoked else "expired"
        return Receipt("settle", revoked_effects(message, why, policy))
    if message.eta is not None:
        eta = message.eta.timestamp()
        if eta > now + park_horizon and can_park:
            return Receipt("park", eta=eta)
        if eta > now:
            return Receipt("hold", eta=eta)
    return Receipt("run")


def _malformed_embed(message: TaskMessage) -> ValueError | None:
    """A chain/chord/callback part that is not a signature: fail the task, run nothing."""
    if not (message.chain or message.chord or message.callbacks or message.errbacks):
        return None
    from caraway.canvas import check_embed

    try:
        check_embed(message.chain, message.chord, message.callbacks, message.errbacks)
    except ValueError as exc:
        return exc
    return None


def on_outcome(
    message: TaskMessage,
    outcome: Outcome,
    *,
    policy: Policy,
    conf: Any,
    hostname: str,
    queue: str,
) -> Effects:
    """Turn a finished run into what must be stored, published and acked."""
    if outcome.kind == "success":
        return success_effects(message, outcome, policy, conf, hostname=hostname, queue=queue)
    if outcome.kind == "retry":
        return retry_effects(message, outcome, policy)
    if outcome.kind == "ignore":
        return Effects()
    if outcome.kind == "reject":
        reason = f"rejected by the task: {getattr(outcome.exc, 'reason', None)!r}"
        return Effects(settle="requeue" if outcome.requeue else "dead_letter", reason=reason)
    assert outcome.exc is not None
    effects = failure_effects(message, outcome.exc, outcome.traceback, policy)
    if policy.acks_late and not policy.acks_on_failure_or_timeout:
        effects.settle, effects.reason = "dead_letter", f"failed: {outcome.exc!r}"
    return effects


def success_effects(
    message: TaskMessage,
    outcome: Outcome,
    policy: Policy,
    conf: Any,
    *,
    hostname: str,
    queue: str,
) -> Effects:
    effects = Effects()
    if not (policy.ignore_result or message.ignore_result):
        extended = _extended(message, hostname, queue) if policy.result_extended else None
        children = [docs.result_tuple(child) for child in outcome.children or ()]
        document = docs.result_document(
            message.id,
            states.SUCCESS,
            outcome.value,
            children=children,
            group_id=message.group,
            parent_id=message.parent_id,
            extended=extended,
        )
        effects.results.append((message.id, states.SUCCESS, document))
    for callback in message.callbacks or ():
        effects.publish.append(_follow_up(callback, outcome.value, message, conf))
    if message.chain:
        *rest, step = message.chain
        follow = _follow_up(step, outcome.value, message, conf)
        follow.message.chain = list(rest)
        effects.publish.append(follow)
    if message.chord is not None and message.group:
        effects.chord_join = (
            message.group,
            message.group_index,
            states.SUCCESS,
            outcome.value,
            message.chord,
            message.id,
            message.root_id,
        )
    return effects


def failure_effects(
    message: TaskMessage,
    exc: BaseException,
    traceback: str | None,
    policy: Policy,
    *,
    force: bool = False,
) -> Effects:
    effects = Effects()
    keep = force or policy.store_errors_even_if_ignored
    if keep or not (policy.ignore_result or message.ignore_result):
        document = docs.result_document(
            message.id,
            states.FAILURE,
            docs.exception_to_dict(exc),
            traceback=traceback,
            group_id=message.group,
            parent_id=message.parent_id,
        )
        effects.results.append((message.id, states.FAILURE, document))
        effects.results.extend(_fail_rest_of_chain(message, exc, traceback))
    if message.chord is not None and message.group:
        effects.chord_join = (
            message.group,
            message.group_index,
            states.FAILURE,
            exc,
            message.chord,
            message.id,
            message.root_id,
        )
    if message.errbacks:
        effects.errbacks = (list(message.errbacks), message, exc, traceback)
    return effects


def _fail_rest_of_chain(
    message: TaskMessage, exc: BaseException, traceback: str | None
) -> list[tuple[str, str, dict[str, Any]]]:
    """The steps a failed chain will never run end as FAILURE too (as Celery 5 marks them)."""
    failed = []
    for step in message.chain or ():
        options = step.get("options") if isinstance(step, Mapping) else None
        task_id = options.get("task_id") if isinstance(options, Mapping) else None
        if task_id:
            document = docs.result_document(
                str(task_id),
                states.FAILURE,
                docs.exception_to_dict(exc),
                traceback=traceback,
                parent_id=message.id,
            )
            failed.append((str(task_id), states.FAILURE, document))
    return failed


def retry_effects(message: TaskMessage, outcome: Outcome, policy: Policy) -> Effects:
    retry = outcome.exc
    cause = getattr(retry, "exc", None) or retry
    assert cause is not None
    document = docs.result_document(
        message.id,
        states.RETRY,
        docs.exception_to_dict(cause),
        traceback=outcome.traceback,
        children=[docs.result_tuple(message.id)],
        group_id=message.group,
        parent_id=message.parent_id,
    )
    return Effects(results=[(message.id, states.RETRY, document)])


def revoked_effects(message: TaskMessage, why: str, policy: Policy) -> Effects:
    error = exceptions.TaskRevokedError(why)
    document = docs.result_document(
        message.id,
        states.REVOKED,
        docs.exception_to_dict(error),
        children=None,
        group_id=message.group,
        parent_id=message.parent_id,
    )
    document["children"] = None
    effects = Effects(results=[(message.id, states.REVOKED, document)], reason=why)
    if message.chord is not None and message.group:
        effects.chord_join = (
            message.group,
            message.group_index,
            states.REVOKED,
            error,
            message.chord,
            message.id,
            message.root_id,
        )
    return effects


def started_effects(message: TaskMessage, meta: Mapping[str, Any]) -> Effects:
    document = docs.result_document(
        message.id,
        states.STARTED,
        dict(meta),
        group_id=message.group,
        parent_id=message.parent_id,
    )
    return Effects(results=[(message.id, states.STARTED, document)], settle="none")


def _extended(message: TaskMessage, hostname: str, queue: str) -> dict[str, Any]:
    return {
        "name": message.task,
        "args": list(message.args),
        "kwargs": dict(message.kwargs),
        "worker": hostname,
        "retries": message.retries,
        "queue": queue,
    }


def errback_follow_up(signature: Mapping[str, Any], failed: TaskMessage, conf: Any) -> FollowUp:
    """An errback published as a task, given the failed task's id (old-style errbacks)."""
    return _follow_up(signature, failed.id, failed, conf)


def _follow_up(
    signature: Mapping[str, Any], value: Any, parent: TaskMessage, conf: Any
) -> FollowUp:
    """A signature dict from the wire, applied to the parent's result."""
    import uuid

    options = dict(signature.get("options") or {})
    args = list(signature.get("args") or ())
    if not signature.get("immutable"):
        args = [value, *args]
    name = str(signature["task"])
    message = TaskMessage(
        id=options.get("task_id") or str(uuid.uuid4()),
        task=name,
        args=args,
        kwargs=dict(signature.get("kwargs") or {}),
        callbacks=options.get("link") and list(options["link"]),
        errbacks=options.get("link_error") and list(options["link_error"]),
        chord=options.get("chord"),
        group=options.get("group_id"),
        group_index=options.get("group_index"),
        root_id=parent.root_id or parent.id,
        parent_id=parent.id,
        reply_to=options.get("reply_to") or parent.reply_to,
        priority=options.get("priority"),
    )
    route_options = {
        k: v for k, v in options.items() if k in ("queue", "exchange", "routing_key", "priority")
    }
    return FollowUp(message, route(name, route_options, conf))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)

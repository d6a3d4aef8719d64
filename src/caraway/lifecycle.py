"""Pure decisions: what a received message or a finished run means for the world.

``on_receipt`` says whether a delivery runs now, waits, parks, or is settled without
running (expired, revoked, already final, over the delivery cap, unknown task).
``on_outcome`` turns a run's :class:`Outcome` into :class:`Effects`: result documents to
store, follow-up messages to publish (callbacks, the next chain step), and what to do
with the delivery. No I/O here, so every rule is unit-tested without a broker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timezone, tzinfo
from typing import Any, Literal

from caraway import exceptions, states
from caraway.config import Settings
from caraway.protocol import results as docs
from caraway.protocol.message import TaskMessage
from caraway.protocol.signatures import check_embed
from caraway.publish import Outgoing, follow_up
from caraway.schedules.base import zone_of
from caraway.taskbase import TaskBase

Verdict = Literal["run", "hold", "park", "settle"]
OutcomeKind = Literal["success", "failure", "retry", "reject", "ignore"]
_STATE_OF = {
    "success": states.SUCCESS,
    "failure": states.FAILURE,
    "retry": states.RETRY,
    "reject": states.REJECTED,
    "ignore": states.IGNORED,
}


@dataclass(slots=True)
class Outcome:
    """How a run ended; :func:`on_outcome` turns it into effects."""

    kind: OutcomeKind
    value: Any = None
    exc: BaseException | None = None
    traceback: str | None = None
    runtime: float = 0.0
    requeue: bool = False
    children: list[str] | None = None
    #: messages the run asked to publish once it ends (a retry's)
    resends: list[Outgoing] = field(default_factory=list)

    @property
    def state(self) -> str:
        return _STATE_OF[self.kind]


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
    #: the app's zone: ``date_done`` is written in it, as Celery's ``app.now()``
    zone: tzinfo = timezone.utc


def build_policy(conf: Settings, task: TaskBase | None) -> Policy:
    """A task's policy: its own options where it sets them, the app's settings elsewhere."""

    def pick(attribute: str, setting: str) -> Any:
        value = getattr(task, attribute, None) if task is not None else None
        return conf[setting] if value is None else value

    return Policy(
        acks_late=bool(pick("acks_late", "task_acks_late")),
        acks_on_failure_or_timeout=bool(
            pick("acks_on_failure_or_timeout", "task_acks_on_failure_or_timeout")
        ),
        reject_on_worker_lost=bool(pick("reject_on_worker_lost", "task_reject_on_worker_lost")),
        ignore_result=bool(pick("ignore_result", "task_ignore_result")),
        store_errors_even_if_ignored=bool(
            pick("store_errors_even_if_ignored", "task_store_errors_even_if_ignored")
        ),
        track_started=bool(pick("track_started", "task_track_started")),
        result_extended=bool(conf.result_extended),
        result_expires=conf.result_expires_seconds(),
        zone=conf.derived("publish.zone", zone_of),
    )


@dataclass(frozen=True, slots=True)
class ChordJoin:
    """A chord header task finished: count it, and complete the chord if it was the last."""

    group_id: str
    index: int | None
    state: str
    #: the header task's return value, or its exception
    value: Any
    #: the body signature (Celery's dict form)
    body: dict[str, Any]
    header_id: str
    root_id: str | None


@dataclass(frozen=True, slots=True)
class Errbacks:
    """A failed task's ``link_error`` signatures, with the error and its traceback."""

    signatures: list[dict[str, Any]]
    failed: TaskMessage
    exc: BaseException
    traceback: str | None


@dataclass(slots=True)
class Effects:
    """Everything that should happen after a decision, in order: store, publish, settle."""

    results: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    publish: list[Outgoing] = field(default_factory=list)
    settle: Literal["ack", "requeue", "dead_letter", "none"] = "ack"
    reason: str | None = None
    chord_join: ChordJoin | None = None
    errbacks: Errbacks | None = None


@dataclass(slots=True)
class Receipt:
    verdict: Verdict
    effects: Effects | None = None
    eta: float | None = None


#: the STARTED document's key counting the processes a task's message killed: a broker that
#: counts no deliveries (a RabbitMQ classic queue) leaves the delivery cap to this count
WORKER_LOST_KEY = "caraway_worker_lost"


def processes_lost(stored: Mapping[str, Any] | None) -> int:
    """How many processes a task's message killed, as its STARTED document counts them."""
    if not stored or stored.get("status") != states.STARTED:
        return 0
    result = stored.get("result")
    lost = result.get(WORKER_LOST_KEY, 0) if isinstance(result, Mapping) else 0
    return lost if isinstance(lost, int) and lost > 0 else 0


def deliveries_seen(delivery_count: int, stored: Mapping[str, Any] | None) -> int:
    """The deliveries of a message so far: the broker's count, or one more than the processes
    it killed, whichever is more."""
    lost = processes_lost(stored)
    return max(delivery_count, lost + 1) if lost else delivery_count


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
        effects = failure_effects(message, unknown, None, policy, force=True)
        # kept, not dropped: a worker that knows the task can take it from the store
        effects.settle, effects.reason = "dead_letter", f"NotRegistered: {unknown}"
        return Receipt("settle", effects)
    malformed = _malformed_embed(message)
    if malformed is not None:
        bare = dataclasses.replace(message, chain=None, chord=None, callbacks=None, errbacks=None)
        effects = failure_effects(bare, malformed, None, policy, force=True)
        effects.reason = str(malformed)
        return Receipt("settle", effects)
    if revoked or _expired(message, now):
        why = "revoked" if revoked else "expired"
        return Receipt("settle", revoked_effects(message, why, policy))
    if message.eta is not None:
        eta = message.eta.timestamp()
        if eta > now + park_horizon and can_park:
            return Receipt("park", eta=eta)
        if eta > now:
            return Receipt("hold", eta=eta)
    return Receipt("run")


def revoked_by_stamps(
    message: TaskMessage, revoked: Mapping[str, Sequence[Any]]
) -> dict[str, Any] | None:
    """The stamp that revokes ``message`` (``{name: value}``), or None: Celery's rule for
    ``revoke_by_stamped_headers``, a stamped header whose value (or one of whose values,
    for a list) is among the values revoked for that header."""
    if not revoked or not message.stamps:
        return None
    for name in message.stamped_headers or list(message.stamps):
        values = revoked.get(name)
        stamped = message.stamps.get(name)
        if values is None or stamped is None:
            continue
        for value in stamped if isinstance(stamped, (list, tuple)) else [stamped]:
            if value in values:
                return {name: value}
    return None


def _expired(message: TaskMessage, now: float) -> bool:
    """Expired now, or bound to be by its eta: Celery revokes it when due, without
    running it, so it need not wait here (held or parked) for that."""
    if message.expires is None:
        return False
    expires = message.expires.timestamp()
    eta = message.eta.timestamp() if message.eta is not None else now
    return expires <= max(now, eta)


def _malformed_embed(message: TaskMessage) -> ValueError | None:
    """A chain/chord/callback part that is not a signature: fail the task, run nothing."""
    if not (message.chain or message.chord or message.callbacks or message.errbacks):
        return None
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
    conf: Settings,
    hostname: str,
    queue: str,
) -> Effects:
    """Turn a finished run into what must be stored, published and acked."""
    effects = _effects_of(message, outcome, policy, conf, hostname, queue)
    # what the run asked to send (a retry) goes out with the rest, before the ack
    effects.publish.extend(outcome.resends)
    return effects


def _effects_of(
    message: TaskMessage,
    outcome: Outcome,
    policy: Policy,
    conf: Settings,
    hostname: str,
    queue: str,
) -> Effects:
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
    conf: Settings,
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
            zone=policy.zone,
        )
        effects.results.append((message.id, states.SUCCESS, document))
    for callback in message.callbacks or ():
        effects.publish.append(follow_up(callback, outcome.value, message, conf))
    if message.chain:
        *rest, step = message.chain
        follow = follow_up(step, outcome.value, message, conf)
        follow.message.chain = list(rest)
        effects.publish.append(follow)
    effects.chord_join = _chord_join(message, states.SUCCESS, outcome.value)
    return effects


def _chord_join(message: TaskMessage, state: str, value: Any) -> ChordJoin | None:
    """What a chord header task's end counts, or None when it is no chord's header."""
    if message.chord is None or not message.group:
        return None
    return ChordJoin(
        message.group,
        message.group_index,
        state,
        value,
        message.chord,
        message.id,
        message.root_id,
    )


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
            zone=policy.zone,
        )
        effects.results.append((message.id, states.FAILURE, document))
        effects.results.extend(_fail_rest_of_chain(message, exc, traceback, policy.zone))
    effects.chord_join = _chord_join(message, states.FAILURE, exc)
    if message.errbacks:
        effects.errbacks = Errbacks(list(message.errbacks), message, exc, traceback)
    return effects


def _fail_rest_of_chain(
    message: TaskMessage, exc: BaseException, traceback: str | None, zone: tzinfo
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
                zone=zone,
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
        zone=policy.zone,
    )
    document["children"] = None
    effects = Effects(results=[(message.id, states.REVOKED, document)], reason=why)
    effects.chord_join = _chord_join(message, states.REVOKED, error)
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

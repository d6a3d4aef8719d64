"""The worker's pure decisions, without a broker."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from caraway import lifecycle, states
from caraway.config import Settings
from caraway.exceptions import Retry
from caraway.lifecycle import Outcome
from caraway.protocol.message import TaskMessage

NOW = 1_800_000_000.0


def _message(**fields: object) -> TaskMessage:
    return TaskMessage(id="t1", task="proj.tasks.add", args=[2, 2], **fields)  # type: ignore[arg-type]


def _receipt(message: TaskMessage, **overrides: object) -> lifecycle.Receipt:
    options: dict[str, object] = dict(
        now=NOW,
        park_horizon=60.0,
        can_park=True,
        delivery_count=1,
        delivery_cap=5,
        stored_state=None,
        registered=True,
        revoked=False,
        policy=lifecycle.Policy(),
    )
    options.update(overrides)
    return lifecycle.on_receipt(message, **options)  # type: ignore[arg-type]


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(NOW + seconds, tz=timezone.utc)


def test_plain_message_runs() -> None:
    assert _receipt(_message()).verdict == "run"


def test_message_whose_task_is_already_final_is_settled_without_running() -> None:
    receipt = _receipt(_message(), stored_state=states.SUCCESS)
    assert receipt.verdict == "settle"
    assert receipt.effects is not None and receipt.effects.settle == "ack"
    assert receipt.effects.results == []


def test_message_over_the_delivery_cap_is_dead_lettered_with_worker_lost() -> None:
    receipt = _receipt(_message(), delivery_count=6)
    assert receipt.verdict == "settle" and receipt.effects is not None
    assert receipt.effects.settle == "dead_letter"
    _task_id, state, document = receipt.effects.results[0]
    assert state == states.FAILURE
    assert document["result"]["exc_type"] == "WorkerLostError"


def test_unregistered_task_is_stored_as_not_registered_naming_the_known_tasks() -> None:
    receipt = _receipt(_message(), registered=False, registered_names="proj.tasks.mul")
    assert receipt.effects is not None
    document = receipt.effects.results[0][2]
    assert document["result"]["exc_type"] == "NotRegistered"
    assert "proj.tasks.mul" in document["result"]["exc_message"][0]


def test_expired_message_is_revoked_not_run() -> None:
    receipt = _receipt(_message(expires=_at(-1)))
    assert receipt.verdict == "settle" and receipt.effects is not None
    assert receipt.effects.results[0][1] == states.REVOKED


def test_message_expiring_before_its_eta_is_revoked_at_once_not_held() -> None:
    # Celery marks it REVOKED without running it; held, it ran and ended SUCCESS
    for eta in (_at(5), _at(3600)):
        receipt = _receipt(_message(eta=eta, expires=_at(2)))
        assert receipt.verdict == "settle" and receipt.effects is not None
        assert receipt.effects.results[0][1] == states.REVOKED


def test_far_eta_is_parked_and_near_eta_is_held() -> None:
    assert _receipt(_message(eta=_at(3600))).verdict == "park"
    assert _receipt(_message(eta=_at(5))).verdict == "hold"
    assert _receipt(_message(eta=_at(3600)), can_park=False).verdict == "hold"
    assert _receipt(_message(eta=_at(-5))).verdict == "run"


def test_success_stores_result_and_publishes_the_next_chain_step() -> None:
    step = {
        "task": "proj.tasks.mul",
        "args": [8],
        "kwargs": {},
        "options": {"task_id": "t2"},
        "subtask_type": None,
        "immutable": False,
    }
    message = _message(chain=[step])
    effects = lifecycle.on_outcome(
        message,
        Outcome("success", value=4),
        policy=lifecycle.Policy(),
        conf=Settings(),
        hostname="w@h",
        queue="celery",
    )
    assert effects.results[0][1] == states.SUCCESS
    assert effects.results[0][2]["result"] == 4
    follow = effects.publish[0]
    assert follow.message.id == "t2"
    assert follow.message.args == [4, 8]
    assert follow.message.chain == []
    assert follow.message.parent_id == "t1"
    assert follow.route.queue == "celery"


def test_immutable_callback_does_not_get_the_result() -> None:
    link = {
        "task": "proj.tasks.add",
        "args": [1, 1],
        "kwargs": {},
        "options": {},
        "immutable": True,
    }
    effects = lifecycle.on_outcome(
        _message(callbacks=[link]),
        Outcome("success", value=4),
        policy=lifecycle.Policy(),
        conf=Settings(),
        hostname="w",
        queue="celery",
    )
    assert effects.publish[0].message.args == [1, 1]


def test_ignored_result_is_not_stored() -> None:
    effects = lifecycle.on_outcome(
        _message(),
        Outcome("success", value=4),
        policy=lifecycle.Policy(ignore_result=True),
        conf=Settings(),
        hostname="w",
        queue="celery",
    )
    assert effects.results == [] and effects.settle == "ack"


def test_retry_stores_retry_state_with_the_cause() -> None:
    outcome = Outcome("retry", exc=Retry(exc=KeyError("again"), when=1.0), traceback="tb")
    effects = lifecycle.on_outcome(
        _message(),
        outcome,
        policy=lifecycle.Policy(),
        conf=Settings(),
        hostname="w",
        queue="celery",
    )
    _task_id, state, document = effects.results[0]
    assert state == states.RETRY
    assert document["result"]["exc_type"] == "KeyError"
    assert document["date_done"] is None


def test_failure_with_acks_late_and_no_ack_on_failure_is_dead_lettered() -> None:
    policy = lifecycle.Policy(acks_late=True, acks_on_failure_or_timeout=False)
    effects = lifecycle.on_outcome(
        _message(),
        Outcome("failure", exc=ValueError("x")),
        policy=policy,
        conf=Settings(),
        hostname="w",
        queue="celery",
    )
    assert effects.settle == "dead_letter"
    assert effects.results[0][1] == states.FAILURE


def test_reject_with_requeue_requeues() -> None:
    effects = lifecycle.on_outcome(
        _message(),
        Outcome("reject", requeue=True),
        policy=lifecycle.Policy(),
        conf=Settings(),
        hostname="w",
        queue="celery",
    )
    assert effects.settle == "requeue"


def test_countdown_in_the_past_is_not_parked() -> None:
    message = _message(eta=datetime.now(timezone.utc) - timedelta(seconds=1))
    assert _receipt(message, now=datetime.now(timezone.utc).timestamp()).verdict == "run"


def test_a_failed_chain_step_marks_the_steps_it_will_never_run_as_failed() -> None:
    rest = [
        {"task": "proj.tasks.add", "args": [1], "kwargs": {}, "options": {"task_id": "t3"}},
        {"task": "proj.tasks.mul", "args": [8], "kwargs": {}, "options": {"task_id": "t2"}},
    ]
    effects = lifecycle.on_outcome(
        _message(chain=rest),
        Outcome("failure", exc=ValueError("x")),
        policy=lifecycle.Policy(),
        conf=Settings(),
        hostname="w",
        queue="celery",
    )
    stored = {
        task_id: (state, doc["result"]["exc_type"]) for task_id, state, doc in effects.results
    }
    assert stored == {
        "t1": ("FAILURE", "ValueError"),
        "t2": ("FAILURE", "ValueError"),
        "t3": ("FAILURE", "ValueError"),
    }
    assert effects.publish == []


def test_a_chain_step_keeps_its_custom_headers_and_its_stamps() -> None:
    step = {
        "task": "proj.tasks.mul",
        "args": [2],
        "options": {"headers": {"tenant": "t-1"}, "stamped_headers": ["run"], "run": "r-7"},
    }
    message = _message(chain=[step])
    effects = lifecycle.on_outcome(
        message, Outcome("success", value=4), policy=lifecycle.Policy(), conf=Settings(),
        hostname="w", queue="celery",
    )  # fmt: skip
    follow = effects.publish[0].message
    assert follow.extra_headers == {"tenant": "t-1"}
    assert (follow.stamped_headers, follow.stamps) == (["run"], {"run": "r-7"})

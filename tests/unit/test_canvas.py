"""The canvas without a broker: Celery's dict form, reprs, partials and the messages sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caraway import Caraway
from caraway.brokers.contracts import ChordPart, ChordStore
from caraway.brokers.memory import backend as memory_backend
from caraway.canvas import Signature, chain, chord, group, signature, to_wire, xmap
from caraway.exceptions import ImproperlyConfigured
from tests.helpers import queue_size

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def chord_join(
    backend: ChordStore, group_id: str, task_id: str, index: int | None, state: str, result: str
) -> list[Any] | None:
    """One header task counted on its own."""
    (members,) = backend.chord_join_many(
        [ChordPart(group_id, task_id, index, state, result)], expires=86400
    )
    return members


def _embed(name: str, index: int = 0) -> dict[str, Any]:
    vector = json.loads((VECTORS / name).read_text())
    embed: dict[str, Any] = vector["messages"][index]["body_decoded"][2]
    return embed


@pytest.fixture
def app() -> Iterator[Caraway]:
    url = "memory://canvas-unit"
    app = Caraway("wtasks", broker="memory://canvas-unit", backend=url, set_as_current=False)

    @app.task(name="wtasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="wtasks.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="wtasks.xsum")
    def xsum(numbers: list[int]) -> int:
        return sum(numbers)

    yield app
    memory_backend.reset(url)


@pytest.fixture
def sent(app: Caraway, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any, Any, Any]]:
    """Every send_task call, instead of publishing."""
    calls: list[tuple[str, Any, Any, Any]] = []

    def send_task(name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        options.pop("_task", None)
        calls.append((name, list(args or ()), dict(kwargs or {}), json.loads(json.dumps(options))))
        return app.AsyncResult(options.get("task_id") or "unset")

    monkeypatch.setattr(app, "send_task", send_task)
    return calls


def test_signature_serialises_to_celerys_dict_form_as_in_the_link_vector(app: Caraway) -> None:
    expected = _embed("amqp-link.json")["callbacks"][0]
    assert to_wire(app.tasks["wtasks.mul"].s(10)) == expected
    assert json.loads(json.dumps(app.tasks["wtasks.mul"].s(10))) == expected


def test_signature_from_the_wire_round_trips_and_keeps_its_type(app: Caraway) -> None:
    add, xsum = app.tasks["wtasks.add"], app.tasks["wtasks.xsum"]
    workflow = chord([add.s(1, 1), chain(add.s(2, 2), add.s(3))], xsum.s())
    back = Signature.from_dict(json.loads(json.dumps(to_wire(workflow))), app=app)
    assert isinstance(back, chord)
    assert isinstance(back.header.tasks[1], chain)
    assert to_wire(back) == to_wire(workflow)


def test_malformed_signature_dicts_are_rejected() -> None:
    with pytest.raises(ValueError, match="malformed signature"):
        Signature.from_dict({"args": [1]})
    with pytest.raises(ValueError, match="'args'"):
        Signature.from_dict({"task": "x", "args": 5})


def test_reprs_read_as_celery_prints_them(app: Caraway) -> None:
    add, mul, xsum = (app.tasks[f"wtasks.{n}"] for n in ("add", "mul", "xsum"))
    assert repr(add.s(2, 2)) == "wtasks.add(2, 2)"
    assert repr(add.s(2, y=3)) == "wtasks.add(2, y=3)"
    assert repr(add.s(4, 4) | mul.s(8)) == "wtasks.add(4, 4) | mul(8)"
    assert repr(group(add.s(i, i) for i in range(2))) == "group([wtasks.add(0, 0), add(1, 1)])"
    header = [add.s(i, i) for i in range(2)]
    assert repr(chord(header, xsum.s())) == "%wtasks.xsum([add(0, 0), add(1, 1)])"
    assert repr(group(header) | xsum.s()) == "%wtasks.xsum([add(0, 0), add(1, 1)])"
    assert repr(add.map([1, 2])) == "[wtasks.add(x) for x in [1, 2]]"


def test_partial_arguments_are_prepended_unless_immutable(app: Caraway) -> None:
    add = app.tasks["wtasks.add"]
    assert add.s(2).clone((8,)).args == (8, 2)
    assert add.si(2, 2).clone((8,)).args == (2, 2)
    assert add.s(y=1).clone(kwargs={"x": 2}).kwargs == {"y": 1, "x": 2}
    assert add.s(2)(3) == 5
    assert signature("wtasks.add", args=(1, 2), app=app).set(queue="lopri").options == {
        "queue": "lopri"
    }


def test_chain_sends_one_message_with_the_rest_reversed_as_the_vector_shows(
    app: Caraway, sent: list[tuple[str, Any, Any, Any]]
) -> None:
    add, mul = app.tasks["wtasks.add"], app.tasks["wtasks.mul"]
    result = (add.s(4, 4) | mul.s(8) | add.s(1)).apply_async()
    assert len(sent) == 1
    name, args, _, options = sent[0]
    expected = _embed("amqp-chain.json")["chain"]
    assert (name, args) == ("wtasks.add", [4, 4])
    assert [(s["task"], s["args"]) for s in options["chain"]] == [
        (s["task"], s["args"]) for s in expected
    ]
    assert [sorted(s["options"]) for s in options["chain"]] == [["reply_to", "task_id"]] * 2
    assert result.id == options["chain"][0]["options"]["task_id"]
    assert (
        result.parent is not None and result.parent.id == options["chain"][1]["options"]["task_id"]
    )


def test_group_sends_members_with_group_id_and_index_and_partial_args(
    app: Caraway, sent: list[tuple[str, Any, Any, Any]]
) -> None:
    add = app.tasks["wtasks.add"]
    result = group(add.s(i) for i in range(3))(10)
    assert [call[1] for call in sent] == [[10, 0], [10, 1], [10, 2]]
    assert {call[3]["group_id"] for call in sent} == {result.id}
    assert [call[3]["group_index"] for call in sent] == [0, 1, 2]


def test_chord_sets_its_size_then_sends_the_body_in_every_header_message(
    app: Caraway, sent: list[tuple[str, Any, Any, Any]]
) -> None:
    add, xsum = app.tasks["wtasks.add"], app.tasks["wtasks.xsum"]
    result = chord((add.s(i, i) for i in range(3)), xsum.s()).apply_async()
    expected = _embed("amqp-chord.json")["chord"]
    group_ids = {call[3]["group_id"] for call in sent}
    assert len(sent) == 3 and len(group_ids) == 1
    for call in sent:
        body = call[3]["chord"]
        assert (body["task"], body["args"], sorted(body["options"])) == (
            "wtasks.xsum",
            expected["args"],
            sorted(expected["options"]),
        )
        assert body["options"]["task_id"] == result.id
        assert body["options"]["group_id"] in group_ids
    backend: Any = app.backend
    gid = group_ids.pop()
    for index in range(2):
        assert chord_join(backend, gid, f"t{index}", index, "SUCCESS", "0") is None
    assert chord_join(backend, gid, "t2", 2, "SUCCESS", "0") is not None


@pytest.mark.parametrize(
    "make",
    [
        lambda add, mul: group(add.s(i, i) for i in range(4)),
        lambda add, mul: group([add.s(1, 2), mul.si(3, 4).set(queue="q", priority=3)], foo="x"),
        lambda add, mul: group(add.s(1, 2), chain(add.s(1), mul.s(2))),  # not plain: wire copy
        lambda add, mul: group(add.s([1, 2], 3), mul.s(1, 2)),  # a list argument: wire copy
        lambda add, mul: group(add.s(1, 2)).clone((5,)),  # group arguments: wire copy
    ],
    ids=["plain", "options", "chain-member", "list-argument", "group-args"],
)
def test_a_group_clone_equals_its_wire_round_trip_and_shares_nothing(
    app: Caraway, make: Any
) -> None:
    original = make(app.tasks["wtasks.add"], app.tasks["wtasks.mul"])
    copy = original.clone()
    assert type(copy) is group
    assert copy == Signature.from_dict(to_wire(original), app=app)
    copy.tasks[0].options["queue"] = "changed"
    copy.options["changed"] = True
    assert original.tasks[0].options.get("queue") != "changed"
    assert "changed" not in original.options


def test_a_workflow_cloned_with_partial_arguments_keeps_its_members(app: Caraway) -> None:
    """``group(...).clone((5,))`` lost its tasks: the partial went over its kwargs."""
    add = app.tasks["wtasks.add"]
    for workflow in (group(add.s(1), add.s(2)), chain(add.s(1), add.s(2))):
        copy = workflow.clone((5,))
        assert copy.args == (5,) and len(copy.tasks) == 2
        assert copy.tasks == workflow.tasks
        with pytest.raises(TypeError, match="positional arguments only"):
            workflow.clone(kwargs={"y": 1})


def test_a_chord_sends_each_header_task_with_the_bodys_wire_form_as_given(
    app: Caraway, sent: list[tuple[str, Any, Any, Any]]
) -> None:
    """The body is converted once; every header message still carries all of it, and a
    header member of a canvas type still goes its own way."""
    add, xsum = app.tasks["wtasks.add"], app.tasks["wtasks.xsum"]
    header = [add.s(1, 1), add.s(2, 2).set(queue="other"), chain(add.s(3, 3), add.s(4))]
    chord(header, xsum.s().set(priority=5)).apply_async(countdown=3)
    assert len(sent) == 3
    last_step = sent[2][3]["chain"][0]  # the chain's last step completes the header task
    bodies = [sent[0][3]["chord"], sent[1][3]["chord"], last_step["options"]["chord"]]
    assert all(body == bodies[0] for body in bodies)
    assert bodies[0]["options"]["priority"] == 5
    assert [call[3].get("queue") for call in sent[:2]] == [None, "other"]
    assert all(call[3]["countdown"] == 3 for call in sent)


def test_a_chain_step_after_a_chord_moves_into_its_body(
    app: Caraway, sent: list[tuple[str, Any, Any, Any]]
) -> None:
    add, mul, xsum = (app.tasks[f"wtasks.{n}"] for n in ("add", "mul", "xsum"))
    result = (group(add.s(1, 1), add.s(2, 2)) | xsum.s() | mul.s(3)).apply_async()
    body = sent[0][3]["chord"]
    assert body["subtask_type"] == "chain"
    assert body["kwargs"]["tasks"][-1]["options"]["task_id"] == result.id


def test_chord_is_refused_when_the_backend_cannot_count() -> None:
    app = Caraway("nochords", broker="memory://nochords", set_as_current=False)
    header = [Signature("x.add", (1, 1), app=app)]
    with pytest.raises(ImproperlyConfigured, match="result_backend"):
        chord(header, Signature("x.xsum", app=app)).apply_async()


def test_eager_canvases_give_the_seed_results(app: Caraway) -> None:
    add, mul, xsum = (app.tasks[f"wtasks.{n}"] for n in ("add", "mul", "xsum"))
    assert chain(add.s(4) | mul.s(8)).apply((4,)).get() == 64
    assert group(add.s(i) for i in range(3)).apply((10,)).get() == [10, 11, 12]
    assert chord((add.s(i, i) for i in range(10)), xsum.s()).apply().get() == 90
    assert isinstance(xmap(add.s(), [(1, 2)], app=app), Signature)


def test_the_worker_sends_a_chord_body_as_a_child_of_the_header_task_that_completed_it(
    app: Caraway, sent: list[tuple[str, Any, Any, Any]]
) -> None:
    from caraway.chords import join_chords
    from caraway.lifecycle import ChordJoin

    add, mul, xsum = (app.tasks[f"wtasks.{n}"] for n in ("add", "mul", "xsum"))
    chord([add.s(1, 1), add.s(2, 2)], xsum.s() | mul.s(10)).apply_async()
    headers = [call[3] for call in sent]
    # from here on the real publish path, which join_chords holds
    app.send_task = Caraway.send_task.__get__(app)  # type: ignore[method-assign]
    outgoing = []
    for index, (options, value) in enumerate(zip(headers, [2, 4], strict=True)):
        join = ChordJoin(
            options["group_id"], index, "SUCCESS", value, options["chord"], f"head-{index}", None
        )
        outgoing.extend(join_chords(app, app.backend, [join]))
    assert len(sent) == 2, "completing a chord hands its messages back; it sends nothing itself"
    assert len(outgoing) == 1, "the body is sent once, by the last header task"
    message = outgoing[0].message
    assert (message.task, message.args) == ("wtasks.xsum", [[2, 4]])
    assert message.parent_id == "head-1"


@pytest.mark.parametrize(
    ("embed", "complaint"),
    [
        ({"chain": [{"task": 5}]}, "'task' must be a task name"),
        ({"chain": "garbage"}, "'chain' must be a list"),
        ({"callbacks": [{"args": [1]}]}, "'callbacks'"),
        ({"errbacks": [["not", "a", "dict"]]}, "not a signature"),
        ({"chord": "zzz"}, "'chord': 'zzz' is not a signature"),
        ({"chain": [{"task": "celery.chain", "subtask_type": "chain",
                     "kwargs": {"tasks": [{"args": []}]}}]}, "'chain'"),
    ],
)  # fmt: skip
def test_malformed_embeds_from_the_wire_are_named_before_anything_runs(
    embed: dict[str, Any], complaint: str
) -> None:
    from caraway.protocol.signatures import check_embed

    with pytest.raises(ValueError, match=complaint):
        check_embed(**embed)


def test_well_formed_embeds_pass_the_check(app: Caraway) -> None:
    from caraway.protocol.signatures import check_embed

    add, xsum = app.tasks["wtasks.add"], app.tasks["wtasks.xsum"]
    nested = to_wire(chord([add.s(1, 1), group(add.s(1), add.s(2))], xsum.s()))
    check_embed(chain=[to_wire(add.s(1))], chord=nested, callbacks=[], errbacks=None)


def test_a_chord_nested_in_a_chain_or_group_is_refused_before_anything_is_sent() -> None:
    app = Caraway("nochords2", broker="memory://nochords2", set_as_current=False)
    add, xsum = Signature("x.add", (1, 1), app=app), Signature("x.xsum", app=app)
    inner = chord([add.clone()], xsum.clone(), app=app)
    for canvas in (add | group(add.clone(), add.clone()) | xsum, group([add.clone(), inner])):
        with pytest.raises(ImproperlyConfigured, match="result_backend"):
            canvas.apply_async()
    assert queue_size(app, "celery") == 0

"""Edge cases of result documents, exception (de)serialisation and result tuples."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any

import pytest

from caraway import states
from caraway.exceptions import BackendError, RemoteTaskError, TaskRevokedError
from caraway.protocol.results import (
    chord_member,
    decode_document,
    encode_document,
    exception_from_dict,
    exception_to_dict,
    group_tuple,
    parse_group_tuple,
    parse_result_tuple,
    result_document,
    result_tuple,
)
from tests.wire._vectors import load

CALLED: list[Any] = []


class LocalError(Exception):
    """An exception type defined in an imported module (this one)."""

    class Nested(Exception):
        pass


class NeedsTwo(Exception):
    def __init__(self, first: Any, second: Any) -> None:
        super().__init__(first)


def not_an_exception(*args: Any) -> None:
    CALLED.append(args)


def test_builtin_exception_round_trips_to_its_own_type() -> None:
    data = exception_to_dict(KeyError("again"))
    assert data == {"exc_type": "KeyError", "exc_message": ["again"], "exc_module": "builtins"}
    exc = exception_from_dict(data)
    assert type(exc) is KeyError and exc.args == ("again",)


def test_exception_from_an_imported_module_round_trips_to_its_own_type() -> None:
    data = exception_to_dict(LocalError("x", 1))
    assert data["exc_module"] == __name__
    exc = exception_from_dict(data)
    assert type(exc) is LocalError and exc.args == ("x", 1)


def test_nested_exception_class_is_found_by_its_dotted_qualname() -> None:
    data = exception_to_dict(LocalError.Nested("n"))
    assert data["exc_type"] == "LocalError.Nested"
    assert type(exception_from_dict(data)) is LocalError.Nested


def test_unknown_module_gives_a_cached_remote_error_subclass_without_importing() -> None:
    data = {"exc_type": "Boom", "exc_message": ["bad", 2], "exc_module": "caraway_never_there"}
    first, second = exception_from_dict(data), exception_from_dict(data)
    assert "caraway_never_there" not in sys.modules
    assert isinstance(first, RemoteTaskError)
    assert type(first) is type(second)
    assert type(first).__name__ == "Boom"
    assert (first.exc_type, first.exc_module, first.exc_args) == (
        "Boom",
        "caraway_never_there",
        ["bad", 2],
    )
    assert str(first) == str(("bad", 2))  # Celery's bare message, no module prefix
    assert exception_to_dict(first) == data


def test_non_exception_type_is_never_called() -> None:
    data = {"exc_type": "not_an_exception", "exc_message": ["x"], "exc_module": __name__}
    exc = exception_from_dict(data)
    assert CALLED == []
    assert isinstance(exc, RemoteTaskError)
    assert exc.exc_type == "not_an_exception"
    builtin_function = exception_from_dict(
        {"exc_type": "print", "exc_message": ["x"], "exc_module": "builtins"}
    )
    assert isinstance(builtin_function, RemoteTaskError)


def test_constructor_that_rejects_the_stored_args_falls_back_to_remote_error() -> None:
    data = exception_to_dict(NeedsTwo("a", "b"))
    exc = exception_from_dict(data)
    assert isinstance(exc, RemoteTaskError)
    assert type(exc).__name__ == "NeedsTwo" and exc.exc_args == ["a"]


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"exc_type": "", "exc_module": "", "exc_message": None},
        {"exc_type": "a..b", "exc_module": "builtins", "exc_message": []},
        {"exc_type": 5, "exc_module": ["x"], "exc_message": {"k": 1}},
    ],
)
def test_odd_exception_dicts_never_raise(data: dict[str, Any]) -> None:
    assert isinstance(exception_from_dict(data), BaseException)


def test_old_string_exc_message_becomes_the_single_argument() -> None:
    exc = exception_from_dict(
        {"exc_type": "ValueError", "exc_message": "boom", "exc_module": "builtins"}
    )
    assert type(exc) is ValueError and exc.args == ("boom",)


def test_unserializable_exception_args_are_stored_as_their_repr() -> None:
    data = exception_to_dict(ValueError({1, 2}, "ok", datetime(2030, 1, 1)))
    assert data["exc_message"] == ["{1, 2}", "ok", datetime(2030, 1, 1)]
    assert encode_document(data)


def test_caraways_task_errors_are_reported_under_celerys_module() -> None:
    data = exception_to_dict(TaskRevokedError("revoked"))
    assert data == {
        "exc_type": "TaskRevokedError",
        "exc_message": ["revoked"],
        "exc_module": "celery.exceptions",
    }
    assert type(exception_from_dict(data)) is TaskRevokedError


def test_ready_state_documents_get_date_done_with_an_offset() -> None:
    document = result_document("id", states.SUCCESS, 4)
    done = datetime.fromisoformat(document["date_done"])
    assert done.tzinfo is not None
    assert abs((datetime.now(timezone.utc) - done).total_seconds()) < 60
    assert document["children"] == []


def test_unready_state_documents_have_no_date_done() -> None:
    document = result_document("id", states.STARTED, {"pid": 1, "hostname": "h"})
    assert document["date_done"] is None


def test_naive_date_done_is_written_as_utc() -> None:
    document = result_document("id", states.SUCCESS, 1, date_done=datetime(2030, 1, 2))
    assert document["date_done"] == "2030-01-02T00:00:00+00:00"


def test_revoked_document_has_null_children_by_default() -> None:
    document = result_document("id", states.REVOKED, TaskRevokedError("revoked"))
    assert document["children"] is None
    assert document["result"]["exc_module"] == "celery.exceptions"


def test_document_round_trips_tagged_values() -> None:
    when = datetime(2030, 1, 2, tzinfo=timezone.utc)
    document = result_document("id", states.SUCCESS, {"when": when, "raw": b"\xff"})
    assert decode_document(encode_document(document)) == document


@pytest.mark.parametrize("raw", [b"{", b"[1, 2]", "null"])
def test_unreadable_document_is_a_backend_error(raw: bytes | str) -> None:
    with pytest.raises(BackendError):
        decode_document(raw)


def test_result_tuples_nest_parents_and_parse_back() -> None:
    parent = result_tuple("p")
    value = result_tuple("c", parent)
    assert value == [["c", [["p", None], None]], None]
    ref = parse_result_tuple(value)
    assert ref.id == "c" and ref.parent is not None and ref.parent.id == "p"
    assert not ref.is_group


def test_group_tuple_accepts_ids_or_tuples_and_parses_back() -> None:
    value = group_tuple("g", ["a", result_tuple("b")])
    assert value == [["g", None], [[["a", None], None], [["b", None], None]]]
    ref = parse_group_tuple(value)
    assert ref.is_group and [child.id for child in ref.children or ()] == ["a", "b"]


@pytest.mark.parametrize("value", [5, [], [["a", None]], [[1, None], None], [["g", None], 5]])
def test_malformed_result_tuple_is_a_backend_error(value: Any) -> None:
    with pytest.raises(BackendError):
        parse_result_tuple(value)


def test_task_tuple_is_not_a_group() -> None:
    with pytest.raises(BackendError, match="not a group"):
        parse_group_tuple(result_tuple("a"))


def test_chord_members_are_written_as_celery_writes_them() -> None:
    vector = load("result-chord-redis.json")
    joined = [
        command["cmd"][3]
        for command in vector["commands"]
        if command["cmd"][0] == "ZADD" and command["cmd"][1].endswith(".j")
    ]
    assert len(joined) == 3

    for member in joined:
        _one, task_id, state, result = json.loads(member)
        assert chord_member(task_id, state, json.dumps(result)) == member


def test_a_chord_member_keeps_its_result_json_as_given() -> None:
    member = chord_member("t1", "FAILURE", '{"exc_type": "ValueError", "exc_message": ["x"]}')

    assert member == '[1, "t1", "FAILURE", {"exc_type": "ValueError", "exc_message": ["x"]}]'


def test_an_unimportable_exception_keeps_celerys_bare_message() -> None:
    # Celery's reader shows the message alone; the type is the class's name
    rebuilt = exception_from_dict(
        {"exc_type": "PaymentDeclined", "exc_module": "shop.errors", "exc_message": ["card 42"]}
    )
    assert str(rebuilt) == "card 42"
    assert type(rebuilt).__name__ == "PaymentDeclined"
    assert repr(rebuilt) == "PaymentDeclined('card 42')"
    two = exception_from_dict({"exc_type": "E", "exc_module": "m", "exc_message": ["a", 1]})
    assert str(two) == str(("a", 1))

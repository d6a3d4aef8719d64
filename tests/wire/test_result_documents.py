"""Golden tests: Celery's stored result documents read back, and ours are built the same.

For every captured document (docs/design/protocol.md §4) we decode it, rebuild it with
result_document() from what the worker knew (state, value, traceback, relations), and
compare fields and field order; date_done is the capture's since it is a timestamp.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from caraway import states
from caraway.exceptions import RemoteTaskError, TaskRevokedError
from caraway.protocol import (
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


def _rebuild(doc: dict[str, Any], result: Any, **fields: Any) -> dict[str, Any]:
    return result_document(
        doc["task_id"],
        doc["status"],
        result,
        traceback=doc["traceback"],
        date_done=doc["date_done"],
        **fields,
    )


def _extended(doc: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "args", "kwargs", "worker", "retries", "queue")
    return {key: doc[key] for key in keys}


def _docs() -> list[Any]:
    chain = load("result-chain.json")
    retry = load("result-retry.json")
    chord = load("result-chord-redis.json")
    group = load("result-group-saved.json")
    cases: list[tuple[str, str, Any]] = [
        ("success", load("result-success.json")["value_raw"], lambda d: _rebuild(d, 4)),
        (
            "started",
            load("result-started.json")["value_raw"],
            lambda d: result_document(d["task_id"], states.STARTED, d["result"]),
        ),
        (
            "failure",
            load("result-failure.json")["value_raw"],
            lambda d: _rebuild(d, ValueError("kaboom")),
        ),
        (
            "failure-custom-exc",
            load("result-failure-custom-exc.json")["value_raw"],
            lambda d: _rebuild(d, exception_from_dict(d["result"])),
        ),
        (
            "retry",
            retry["retry_value_raw"],
            lambda d: _rebuild(d, KeyError("again"), children=[result_tuple(d["task_id"])]),
        ),
        (
            "retry-final",
            retry["final_value_raw"],
            lambda d: _rebuild(d, KeyError("again"), parent_id=d["task_id"]),
        ),
        (
            "revoked",
            load("result-revoked.json")["value_raw"],
            lambda d: _rebuild(d, TaskRevokedError("revoked")),
        ),
        (
            "chain-parent",
            chain["parent_value_raw"],
            lambda d: _rebuild(
                d, 8, children=[result_tuple(chain["child_key"].removeprefix("celery-task-meta-"))]
            ),
        ),
        (
            "chain-child",
            chain["child_value_raw"],
            lambda d: _rebuild(
                d, 64, parent_id=chain["parent_key"].removeprefix("celery-task-meta-")
            ),
        ),
        (
            "chord-callback",
            chord["callback_result_raw"],
            lambda d: _rebuild(d, 6, group_id=chord["group_id"], parent_id=d["parent_id"]),
        ),
    ]
    for name in ("success", "failure", "kwargs"):
        raw = load(f"result-extended-{name}.json")["value_raw"]
        cases.append(
            (
                f"extended-{name}",
                raw,
                lambda d: _rebuild(
                    d,
                    exception_from_dict(d["result"])
                    if d["status"] == states.FAILURE
                    else d["result"],
                    extended=_extended(d),
                ),
            )
        )
    for task_id, raw in group["child_values_raw"].items():
        cases.append(
            (
                f"group-child-{task_id[:8]}",
                raw,
                lambda d: _rebuild(d, d["result"], group_id=group["group_id"]),
            )
        )
    return [pytest.param(raw, build, id=name) for name, raw, build in cases]


DOCS = _docs()


@pytest.mark.parametrize(("raw", "build"), DOCS)
def test_captured_document_decodes_to_its_json(raw: str, build: Any) -> None:
    assert decode_document(raw) == json.loads(raw)
    assert decode_document(raw.encode()) == json.loads(raw)


@pytest.mark.parametrize(("raw", "build"), DOCS)
def test_rebuilt_document_has_celerys_fields_in_celerys_order(raw: str, build: Any) -> None:
    captured = json.loads(raw)
    ours = build(captured)
    assert ours == captured
    assert list(ours) == list(captured)


@pytest.mark.parametrize(("raw", "build"), DOCS)
def test_encoded_document_reads_back_identically(raw: str, build: Any) -> None:
    captured = json.loads(raw)
    encoded = encode_document(build(captured))
    assert json.loads(encoded) == captured
    assert list(json.loads(encoded)) == list(captured)


def test_builtin_failure_comes_back_as_the_builtin_exception() -> None:
    result = decode_document(load("result-failure.json")["value_raw"])["result"]
    exc = exception_from_dict(result)
    assert type(exc) is ValueError
    assert exc.args == ("kaboom",)
    assert exception_to_dict(exc) == result


def test_failure_from_an_unimported_module_comes_back_as_a_named_remote_error() -> None:
    result = decode_document(load("result-failure-custom-exc.json")["value_raw"])["result"]
    exc = exception_from_dict(result)
    assert isinstance(exc, RemoteTaskError)
    assert type(exc).__name__ == "CustomError"
    assert (exc.exc_type, exc.exc_module, exc.exc_args) == ("CustomError", "wtasks", ["custom", 42])
    assert exception_to_dict(exc) == result


def test_celerys_revoked_error_comes_back_as_caraways_task_revoked_error() -> None:
    result = decode_document(load("result-revoked.json")["value_raw"])["result"]
    exc = exception_from_dict(result)
    assert type(exc) is TaskRevokedError
    assert exc.args == ("revoked",)


def test_saved_group_document_is_the_group_tuple_of_its_children() -> None:
    vector = load("result-group-saved.json")
    document = decode_document(vector["value_raw"])
    assert document == {"result": group_tuple(vector["group_id"], vector["children"])}
    ref = parse_group_tuple(document["result"])
    assert ref.id == vector["group_id"]
    assert [child.id for child in ref.children or ()] == vector["children"]


def test_chain_parent_children_name_the_next_step() -> None:
    vector = load("result-chain.json")
    (child,) = decode_document(vector["parent_value_raw"])["children"]
    ref = parse_result_tuple(child)
    assert ref.id == vector["child_key"].removeprefix("celery-task-meta-")
    assert ref.parent is None and not ref.is_group

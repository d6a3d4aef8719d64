"""The inspect/control/status/purge/call/result/report commands, in-process on memory://."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner, Result

from caraway.app import Caraway
from caraway.cli.context import CliState
from caraway.cli.control import commands
from caraway.protocol import results as docs
from caraway.worker.control import ControlServer
from tests.unit.test_control_fakes import FakeNode, served

BY_NAME: dict[str, click.Command] = {command.name or "": command for command in commands}


@pytest.fixture
def app() -> Caraway:
    app = Caraway("proj", broker=f"memory://cli-{uuid.uuid4().hex[:8]}", backend="memory://")

    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    return app


@pytest.fixture
def node(app: Caraway) -> Iterator[FakeNode]:
    fake = FakeNode("w1@cli")
    with served(ControlServer(app, fake)):
        yield fake


def run(app: Caraway, *argv: str, stdin: str | None = None) -> Result:
    command = BY_NAME[argv[0]]
    return CliRunner().invoke(command, list(argv[1:]), obj=CliState(preset=app), input=stdin)


def test_commands_are_exposed_for_the_main_group() -> None:
    assert sorted(BY_NAME) == ["call", "control", "inspect", "purge", "report", "result", "status"]


def test_inspect_ping_prints_one_block_per_node(app: Caraway, node: FakeNode) -> None:
    result = run(app, "inspect", "ping", "-t", "2", "-d", "w1@cli")
    assert result.exit_code == 0, result.output
    assert result.output == "->  w1@cli: OK\n        pong\n\n1 node online.\n"


def test_inspect_json_prints_the_merged_replies(app: Caraway, node: FakeNode) -> None:
    result = run(app, "inspect", "registered", "-j", "-d", "w1@cli", "-t", "2")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"w1@cli": ["tasks.add", "tasks.mul"]}


def test_inspect_query_task_passes_the_ids(app: Caraway, node: FakeNode) -> None:
    result = run(app, "inspect", "query_task", "a", "b", "-j", "-d", "w1@cli", "-t", "2")
    assert json.loads(result.output) == {
        "w1@cli": {"a": ["active", {"id": "a"}], "b": ["active", {"id": "b"}]}
    }


def test_unknown_inspect_command_is_one_line_and_exit_2(app: Caraway) -> None:
    result = run(app, "inspect", "frobnicate")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: unknown inspect command 'frobnicate'; choose from: ping, active, reserved, "
        "scheduled, registered, stats, active_queues, revoked, query_task, conf, report, clock, "
        "memsample, memdump, objgraph"
    ]


def test_destination_that_does_not_answer_fails(app: Caraway, node: FakeNode) -> None:
    result = run(app, "inspect", "ping", "-d", "ghost@nowhere", "-t", "0.3")
    assert result.exit_code == 69
    assert result.output == "Error: No nodes replied within time constraint.\n"


def test_one_silent_destination_among_answering_ones_fails(app: Caraway, node: FakeNode) -> None:
    result = run(app, "inspect", "ping", "-d", "w1@cli,ghost@nowhere", "-t", "0.5")
    assert result.exit_code == 69
    assert result.output.splitlines()[-1] == "Error: no reply from ghost@nowhere"


def test_control_rate_limit_reaches_the_node(app: Caraway, node: FakeNode) -> None:
    result = run(app, "control", "rate_limit", "tasks.add", "10/m", "-d", "w1@cli", "-t", "2")
    assert result.exit_code == 0, result.output
    assert "->  w1@cli: OK\n        new rate limit set successfully" in result.output
    assert node.rate_limits == {"tasks.add": "10/m"}


def test_control_error_reply_exits_non_zero(app: Caraway, node: FakeNode) -> None:
    result = run(app, "control", "rate_limit", "nope", "1/s", "-d", "w1@cli", "-t", "2")
    assert result.exit_code == 1
    assert "->  w1@cli: ERROR\n        unknown task 'nope'" in result.output


def test_control_with_missing_arguments_is_refused(app: Caraway) -> None:
    result = run(app, "control", "rate_limit", "tasks.add")
    assert result.exit_code == 2
    assert result.output == "Error: rate_limit needs TASK_NAME RATE_LIMIT\n"


def test_control_add_consumer_and_pool_grow(app: Caraway, node: FakeNode) -> None:
    assert run(app, "control", "add_consumer", "images", "-d", "w1@cli", "-t", "2").exit_code == 0
    assert node.queues == ["celery", "images"]
    result = run(app, "control", "pool_grow", "2", "-d", "w1@cli", "-t", "2")
    assert "pool will grow to 3" in result.output


def test_status_lists_each_node_once(app: Caraway, node: FakeNode) -> None:
    result = run(app, "status", "-t", "0.5")
    assert result.exit_code == 0
    assert result.output == "->  w1@cli: OK\n\n1 node online.\n"  # Celery's status lines


def test_status_without_nodes_fails(app: Caraway) -> None:
    result = run(app, "status", "-t", "0.2")
    assert result.exit_code == 69


def test_call_sends_the_task_and_prints_its_id(app: Caraway) -> None:
    result = run(app, "call", "tasks.add", "--args", "[2, 2]", "--queue", "q1")
    assert result.exit_code == 0, result.output
    task_id = result.output.strip()
    uuid.UUID(task_id)
    transport = app.connection()
    try:
        (delivery,) = transport.fetch(["q1"], limit=1, timeout=1, owner="t/1")
    finally:
        transport.close()
    assert delivery.message.headers["id"] == task_id
    assert delivery.message.headers["task"] == "tasks.add"


def test_call_with_bad_json_is_refused(app: Caraway) -> None:
    result = run(app, "call", "tasks.add", "--args", "[2,")
    assert result.exit_code == 2
    assert result.output.startswith("Error: --args is not valid JSON")
    result = run(app, "call", "tasks.add", "--kwargs", "[]")
    assert result.output == "Error: --kwargs must be a JSON dict, got '[]'\n"


def test_purge_asks_first_and_force_skips_the_question(app: Caraway) -> None:
    app.send_task("tasks.add", [1, 1])
    app.send_task("tasks.add", [2, 2])
    declined = run(app, "purge", stdin="n\n")
    assert declined.exit_code == 1
    assert "WARNING: This will remove all tasks from queue: celery." in declined.output
    result = run(app, "purge", "-f")
    assert result.exit_code == 0, result.output
    assert result.output == "Purged 2 messages from 1 known task queue.\n"


def test_result_prints_the_stored_value(app: Caraway) -> None:
    document = docs.result_document("tid-1", "SUCCESS", {"sum": 4})
    app.require_backend().store(
        "tid-1", docs.encode_document(document), state="SUCCESS", expires=None
    )
    result = run(app, "result", "tid-1")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"sum": 4}


def test_result_times_out_with_one_line(app: Caraway) -> None:
    result = run(app, "result", str(uuid.uuid4()), "-t", "0.2")
    assert result.exit_code != 0


def test_report_shows_versions_and_masks_passwords(app: Caraway) -> None:
    app.conf.result_backend = "redis://:secret@localhost:6379/1"
    result = run(app, "report")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("software -> caraway:")
    assert "secret" not in result.output
    assert "results:redis://:**@localhost:6379/1" in result.output

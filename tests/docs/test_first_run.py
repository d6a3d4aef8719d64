"""The first-run traps of the quick start (issue 24), each shown by a newcomer's steps."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from caraway.app import Caraway, default_sqlite_file
from caraway.cli.context import CliState
from caraway.cli.control import call
from tests.helpers import Worker, wait_until, write_project


def test_default_file_is_beside_the_module_that_made_the_app(tmp_path: Path) -> None:
    module = {"__name__": "proj.caraway", "__file__": str(tmp_path / "proj" / "caraway.py")}
    assert default_sqlite_file(module) == str(tmp_path / "proj" / "caraway.sqlite3")


def test_default_file_of_an_interactive_or_caraway_made_app_is_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    here = str(tmp_path / "caraway.sqlite3")
    assert default_sqlite_file({"__name__": "__main__"}) == here  # the REPL, python -c
    made_by_cli = {"__name__": "caraway.cli.loader", "__file__": "/venv/caraway/cli/loader.py"}
    assert default_sqlite_file(made_by_cli) == here


CLIENT = "from proj.tasks import add; print(add.delay(2, 2).get(timeout=10))"


def test_a_client_in_another_directory_gets_the_result(tmp_path: Path) -> None:
    """The trap: the worker started in the project, the client somewhere else; with the
    file in the current directory the client used another file and waited for ever."""
    write_project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEST_")}
    env.pop("CARAWAY_BROKER_URL", None)
    worker = Worker(tmp_path, "-P", "threads", "-c", "1", env=env)
    try:
        worker.wait_ready()
        client = subprocess.run(
            [sys.executable, "-c", CLIENT],
            cwd=elsewhere,
            env={**env, "PYTHONPATH": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert client.stdout.strip() == "4", client.stderr
        log = worker.log()
        assert f"sqlite:///{tmp_path / 'proj' / 'caraway.sqlite3'}" in log  # in the banner
        assert not list(elsewhere.glob("caraway.sqlite3*"))
        # Celery's INFO line for each task a worker takes
        assert wait_until(lambda: "Task proj.tasks.add[" in worker.log(), timeout=5)
        assert "] received" in worker.log()
    finally:
        worker.stop()


def test_a_worker_with_no_tasks_warns_before_it_is_ready(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "caraway", "worker", "-P", "threads", "-c", "1", "-l", "info"],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(lambda: "ready." in log.read_text(), timeout=30, message="ready")
        finally:
            process.terminate()
            process.wait(timeout=20)
    text = log.read_text()
    assert "no tasks are registered in app 'default'" in text
    assert "-A" in text and text.index("no tasks are registered") < text.index("ready.")


def _typo_app() -> Caraway:
    app = Caraway("proj", broker=f"memory://typo-{uuid.uuid4().hex[:8]}", set_as_current=False)

    @app.task(name="proj.tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    return app


def test_calling_a_misspelt_task_name_fails_and_suggests_the_right_one() -> None:
    app = _typo_app()
    result = CliRunner().invoke(call, ["proj.tasks.ad"], obj=CliState(preset=app))
    assert result.exit_code == 2
    assert "'proj.tasks.ad' is not registered in app 'proj'" in result.output
    assert "did you mean 'proj.tasks.add'?" in result.output
    assert app.connection().fetch(["celery"], limit=1, timeout=0.1, owner="t/1") == []


def test_force_sends_a_name_only_the_workers_know() -> None:
    app = _typo_app()
    result = CliRunner().invoke(call, ["other.task", "--force"], obj=CliState(preset=app))
    assert result.exit_code == 0, result.output
    uuid.UUID(result.output.strip())


@pytest.mark.amqp
def test_a_missing_rabbitmq_vhost_is_named_as_such_and_not_retried() -> None:
    from caraway.clients.amqp import connect, parse_amqp_url
    from caraway.exceptions import ImproperlyConfigured

    params = parse_amqp_url("amqp://guest:guest@localhost:5672/no-such-vhost-docs", {})
    started = time.monotonic()
    with pytest.raises(ImproperlyConfigured, match="virtual host 'no-such-vhost-docs' does not"):
        connect(params)
    assert time.monotonic() - started < 2  # refused once, not retried as an outage


@pytest.mark.amqp
def test_the_rpc_backend_reports_a_missing_vhost_as_the_broker_s_refusal(tmp_path: Path) -> None:
    app = Caraway(
        "proj",
        broker="amqp://guest:guest@localhost:5672/no-such-vhost-docs",
        backend="rpc://",
        set_as_current=False,
    )
    app.task(name="proj.tasks.add")(lambda x, y: x + y)
    result = CliRunner().invoke(call, ["proj.tasks.add", "-a", "[1, 2]"], obj=CliState(preset=app))
    assert result.exit_code != 0
    said = str(result.exception) + result.output
    assert "rpc:// backend" not in said
    assert "virtual host 'no-such-vhost-docs' does not exist" in said


def test_events_dump_prints_readable_lines_naming_the_task_as_celery_s_does() -> None:
    from caraway.cli.events import dump_line

    names: dict[str, str] = {}
    received = {
        "type": "task-received", "hostname": "w1@h", "timestamp": 1796637600.5,
        "uuid": "id-1", "name": "proj.tasks.add", "args": "[2, 2]", "kwargs": "{}",
        "retries": 0,
    }  # fmt: skip
    succeeded = {
        "type": "task-succeeded", "hostname": "w1@h", "timestamp": 1796637601.0,
        "uuid": "id-1", "result": "4", "runtime": 0.001,
    }  # fmt: skip
    assert dump_line(received, names) == (
        "w1@h [2026-12-07 10:00:00.500000] task received: "
        "proj.tasks.add(id-1) args=[2, 2] kwargs={} retries=0"
    )
    assert dump_line(succeeded, names) == (
        "w1@h [2026-12-07 10:00:01] task succeeded: proj.tasks.add(id-1) args=[2, 2] "
        "kwargs={} result=4, runtime=0.001"
    )
    heartbeat = {"type": "worker-heartbeat", "hostname": "w1@h", "timestamp": 1796637600.0}
    assert dump_line({**heartbeat, "active": 0}, names) == (
        "w1@h [2026-12-07 10:00:00] worker heartbeat: active=0"
    )


def test_q_quits_the_events_view_on_a_terminal(tmp_path: Path) -> None:
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "caraway", "-b", f"sqlite:///{tmp_path}/q.sqlite3", "events"],
        cwd=tmp_path, stdin=follower, stdout=follower, stderr=follower,
        start_new_session=True,
    )  # fmt: skip
    os.close(follower)
    seen = b""
    try:

        def drawn() -> bool:
            nonlocal seen
            if select.select([leader], [], [], 0.1)[0]:
                seen += os.read(leader, 65536)
            return b"Workers" in seen or b"workers" in seen

        wait_until(drawn, timeout=20, message="the events view to draw")
        os.write(leader, b"q")
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        os.close(leader)


def test_a_router_function_gets_the_call_s_arguments_and_task() -> None:
    """Found by the routing guide: routers were asked with empty args and kwargs."""
    seen: list[tuple[object, ...]] = []

    def by_size(name, args, kwargs, options, task=None, **kw):  # type: ignore[no-untyped-def]
        seen.append((name, args, kwargs, task))
        return {"queue": "large"} if kwargs.get("width", 0) > 1000 else None

    app = Caraway("proj", broker=f"memory://routes-{uuid.uuid4().hex[:8]}", set_as_current=False)
    app.conf.task_routes = [by_size]

    @app.task(name="proj.tasks.resize")
    def resize(width: int = 100) -> int:
        return width

    resize.apply_async(kwargs={"width": 4000})
    resize.apply_async((7,))
    transport = app.connection()
    assert transport.fetch(["large"], limit=5, timeout=1, owner="t/1")
    assert len(transport.fetch(["celery"], limit=5, timeout=1, owner="t/1")) == 1
    assert seen[0][1:3] == ((), {"width": 4000}) and seen[1][1] == (7,)
    assert seen[0][3] is resize


def test_a_vhost_that_is_down_while_rabbitmq_starts_is_still_retried() -> None:
    import amqp

    from caraway.clients.amqp import _permanent_refusal

    down = amqp.exceptions.NotAllowed(reply_text="NOT_ALLOWED - vhost / is down")
    missing = amqp.exceptions.NotAllowed(reply_text="NOT_ALLOWED - vhost x not found")
    assert not _permanent_refusal(down)
    assert _permanent_refusal(missing)

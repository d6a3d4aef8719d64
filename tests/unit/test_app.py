"""App and task behaviour on the in-process memory broker and eager mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from caraway import Caraway, shared_task, states
from caraway.exceptions import NotRegistered, UnknownSetting
from tests.helpers import purge_queue, queue_size


def _app(**settings: object) -> Caraway:
    return Caraway(
        "proj",
        broker="memory://test-app",
        backend="memory://test-app",
        set_as_current=False,
        **settings,
    )


def test_task_name_defaults_to_module_and_function() -> None:
    app = _app()

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert add.name == f"{__name__}.add"
    assert app.tasks[add.name] is add


def test_calling_a_task_runs_the_function_directly() -> None:
    app = _app()

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert add(2, 2) == 4


def test_delay_with_arguments_that_do_not_fit_raises_type_error_before_sending() -> None:
    app = _app()

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(TypeError, match="missing a required argument"):
        add.delay(2)
    add.delay(1, 2)  # the quick check for exactly as many positional arguments
    with pytest.raises(TypeError, match="too many positional arguments"):
        add.delay(1, 2, 3)
    with pytest.raises(TypeError, match="multiple values for argument 'x'"):
        add.apply_async((1, 2), {"x": 3})

    @app.task
    def scale(x: int, *, by: int) -> int:
        return x * by

    with pytest.raises(TypeError, match="missing a required argument: 'by'"):
        scale.delay(2)  # one positional argument for one positional parameter is not enough
    assert queue_size(app, "celery") == 1


def test_delay_publishes_a_protocol_v2_message_to_the_default_queue() -> None:
    app = _app()

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    purge_queue(app, "celery")
    result = add.delay(2, 2)
    deliveries = app.producer.fetch(["celery"], limit=1, timeout=0, owner="t")
    assert deliveries[0].message.headers["task"] == add.name
    assert deliveries[0].message.headers["id"] == result.id
    assert result.state == states.PENDING


def test_apply_runs_eagerly_and_keeps_the_failure() -> None:
    app = _app()

    @app.task
    def boom() -> None:
        raise ValueError("kaboom")

    result = boom.apply()
    assert result.failed() and result.state == states.FAILURE
    with pytest.raises(ValueError, match="kaboom"):
        result.get()
    assert isinstance(result.get(propagate=False), ValueError)


def test_always_eager_runs_delay_in_process() -> None:
    app = _app(task_always_eager=True)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert add.delay(2, 3).get() == 5


def test_bound_task_sees_its_request() -> None:
    app = _app()

    @app.task(bind=True)
    def whoami(self: object) -> str | None:
        return self.request.id  # type: ignore[attr-defined,no-any-return]

    assert whoami.apply(task_id="abc").get() == "abc"


def test_unknown_setting_in_constructor_says_did_you_mean() -> None:
    with pytest.raises(UnknownSetting, match="result_expires"):
        _app(result_expire=10)


def test_unknown_task_name_lists_registered_tasks() -> None:
    app = _app()

    @app.task(name="proj.tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(NotRegistered, match=r"proj\.tasks\.add"):
        app.get_task("proj.tasks.ad")


def test_shared_task_registers_on_apps_created_later() -> None:
    @shared_task(name="lib.tasks.double")
    def double(x: int) -> int:
        return x * 2

    app = Caraway("later", broker="memory://shared", set_as_current=True)
    assert "lib.tasks.double" in app.tasks
    assert double(4) == 8


def test_shared_task_takes_each_apps_generated_name() -> None:
    class Prefixed(Caraway):
        def gen_task_name(self, name: str, module: str) -> str:
            return f"prefixed.{name}"

    @shared_task
    def triple(x: int) -> int:
        return x * 3

    app = Prefixed("gen", broker="memory://shared-gen", set_as_current=True)
    assert "prefixed.triple" in app.tasks
    assert f"{__name__}.triple" not in app.tasks
    assert triple.name == "prefixed.triple"
    assert triple(2) == 6


def test_config_from_object_reads_lowercase_settings() -> None:
    app = _app()

    class Config:
        result_expires = 60
        task_track_started = True

    app.config_from_object(Config)
    assert app.conf.result_expires == 60
    assert app.conf.task_track_started is True


def test_no_broker_means_one_sqlite_file_for_broker_and_results(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CARAWAY_BROKER_URL", raising=False)
    app = Caraway("proj", set_as_current=False)
    # beside the module that made the app, whatever the current directory
    assert app.broker_url == f"sqlite:///{Path(__file__).parent / 'caraway.sqlite3'}"
    assert app.result_backend_url == app.broker_url


def test_broker_without_backend_disables_results() -> None:
    app = Caraway("proj", broker="redis://localhost", set_as_current=False)
    assert app.result_backend_url is None


def test_task_hooks_run_around_the_body() -> None:
    from caraway import Task

    calls: list[str] = []

    class Tracked(Task):
        def on_success(self, retval, task_id, args, kwargs):  # type: ignore[no-untyped-def]
            calls.append(f"success:{retval}")

        def on_failure(self, exc, task_id, args, kwargs, einfo):  # type: ignore[no-untyped-def]
            calls.append(f"failure:{exc}")

        def after_return(self, status, retval, task_id, args, kwargs, einfo):  # type: ignore[no-untyped-def]
            calls.append(f"after:{status}")

    app = _app()

    @app.task(base=Tracked)
    def div(x: int, y: int) -> float:
        return x / y

    div.apply((4, 2))
    div.apply((1, 0))
    assert calls == ["success:2.0", "after:SUCCESS", "failure:division by zero", "after:FAILURE"]


def test_get_task_logger_logs_under_the_module_name() -> None:
    from caraway import get_task_logger

    assert get_task_logger("proj.tasks").name == "proj.tasks"

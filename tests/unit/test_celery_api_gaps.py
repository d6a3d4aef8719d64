"""Celery API details: ``revoke``'s ``wait``/``timeout`` (on results, result sets and by
stamps) ask for the workers' replies; ``AsyncResult.exists()``; ``app.steps`` refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from caraway import Caraway
from caraway.result import AsyncResult, ResultSet


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []

    def revoke(self, task_id: Any, **kwargs: Any) -> None:
        self.calls.append(("revoke", task_id, kwargs))

    def revoke_by_stamped_headers(self, headers: Any, **kwargs: Any) -> None:
        self.calls.append(("stamps", headers, kwargs))


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Caraway, Recorder]]:
    application = Caraway("rv", broker="memory://")
    recorder = Recorder()
    monkeypatch.setattr(Caraway, "control", property(lambda self: recorder))
    try:
        yield application, recorder
    finally:
        application.close()


def test_revoke_wait_asks_for_replies(app: tuple[Caraway, Recorder]) -> None:
    application, recorder = app
    AsyncResult("t1", app=application).revoke(wait=True, timeout=3, terminate=True)
    ResultSet([AsyncResult("t2", app=application)]).revoke(wait=True, timeout=4)
    AsyncResult("t3", app=application).revoke_by_stamped_headers({"a": "1"}, wait=True)
    (_, first, one), (_, many, two), (_, headers, three) = recorder.calls
    assert (first, one["reply"], one["timeout"], one["terminate"]) == ("t1", True, 3, True)
    assert (many, two["reply"], two["timeout"]) == (["t2"], True, 4)
    assert (headers, three["reply"]) == ({"a": "1"}, True)


def test_revoke_without_wait_asks_for_nothing(app: tuple[Caraway, Recorder]) -> None:
    application, recorder = app
    AsyncResult("t1", app=application).revoke()
    assert recorder.calls[0][2]["reply"] is False


def test_exists_tells_a_stored_result_from_an_unknown_id() -> None:
    from caraway.protocol import results as docs

    application = Caraway("ex", broker="memory://ex", backend="memory://ex")
    try:
        document = docs.result_document("stored", "SUCCESS", 3)
        application.require_backend().store(
            "stored", docs.encode_document(document), state="SUCCESS", expires=60
        )
        assert AsyncResult("stored", app=application).exists()
        assert not AsyncResult("never-sent", app=application).exists()
    finally:
        application.close()


def test_bootsteps_are_refused_saying_what_to_use() -> None:
    from caraway.exceptions import ImproperlyConfigured

    application = Caraway("steps", broker="memory://")
    try:
        with pytest.raises(ImproperlyConfigured, match="worker_init"):
            application.steps["worker"].add(object)
    finally:
        application.close()


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("store_eager_result", True, "EagerResult"),
        ("acks_on_failure", False, "acks_on_failure_or_timeout"),
        ("acks_on_timeout", True, "acks_on_failure_or_timeout"),
        ("retry_on_worker_lost", True, "reject_on_worker_lost"),
        ("trail", False, "children"),
        ("resultrepr_maxsize", 10, "1024"),
        ("Request", "proj:MyRequest", "internals"),
    ],
)
def test_celery_task_options_caraway_lacks_are_refused(option: str, value: Any, says: str) -> None:
    from caraway.exceptions import ImproperlyConfigured

    application = Caraway("opts", broker="memory://")
    try:
        with pytest.raises(ImproperlyConfigured, match=says):

            @application.task(**{option: value})
            def job() -> None: ...

        @application.task(name="opts.fine", store_eager_result=False, trail=True)
        def fine() -> None: ...  # what caraway does anyway: accepted
    finally:
        application.close()


def test_task_error_classes_are_task_attributes() -> None:
    from caraway import Task
    from caraway.exceptions import BrokerError, MaxRetriesExceededError

    assert Task.MaxRetriesExceededError is MaxRetriesExceededError
    assert Task.OperationalError is BrokerError


def test_result_timeout_error_is_an_attribute() -> None:
    from caraway.exceptions import TimeoutError as CarawayTimeout

    assert AsyncResult.TimeoutError is CarawayTimeout


def test_app_signature_current_task_and_set_current() -> None:
    from caraway import current

    application = Caraway("sigapp", broker="memory://", set_as_current=False)
    before = current.get_current_app()
    try:
        application.conf.task_always_eager = True
        seen: dict[str, Any] = {}

        @application.task(name="sigapp.look", bind=True)
        def look(self: Any) -> str:
            seen["current"] = application.current_task
            seen["worker"] = application.current_worker_task
            return "ok"

        sig = application.signature("sigapp.look", countdown=1)
        assert sig.name == "sigapp.look" and sig.options["countdown"] == 1
        assert sig.delay().get() == "ok"
        assert seen["current"] is look and seen["worker"] is None  # eager: not a worker's
        assert application.current_task is None
        application.set_current()
        assert current.get_current_app() is application
    finally:
        current.set_current_app(before)
        application.close()


def test_signature_helpers_celery_documents() -> None:
    from caraway import Signature

    sig = Signature("proj.add", (1, 2), {"z": 3}, {"queue": "q"})
    other = sig.replace(args=(5,), options={"priority": 1})
    assert (other.args, other.kwargs, other.options) == ((5,), {"z": 3}, {"priority": 1})
    assert sig.args == (1, 2) and sig.partial((9,)).args == (9, 1, 2)
    assert sig.append_to_list_option("link", "x") == "x"
    sig.append_to_list_option("link", "x")
    sig.extend_list_option("link_error", ["e1", "e2"])
    assert sig.options["link"] == ["x"] and sig.options["link_error"] == ["e1", "e2"]
    linked = Signature("proj.a")
    linked.link(Signature("proj.b"))
    assert [s.name for s in linked.flatten_links()] == ["proj.a", "proj.b"]
    assert Signature("proj.c", options={"parent_id": "p", "root_id": "r"}).parent_id == "p"


def test_app_worker_class_is_refused_saying_how_to_start_one() -> None:
    from caraway.exceptions import ImproperlyConfigured

    application = Caraway("wk", broker="memory://")
    try:
        with pytest.raises(ImproperlyConfigured, match="worker_main"):
            application.Worker(hostname="w1@h").start()
        with pytest.raises(ImproperlyConfigured, match="start_worker"):
            application.WorkController()
    finally:
        application.close()


def test_gen_task_name_names_tasks_and_a_subclass_may_override_it() -> None:
    class Renaming(Caraway):
        def gen_task_name(self, name: str, module: str) -> str:
            if module.endswith(".tasks"):
                module = module[: -len(".tasks")]
            return super().gen_task_name(name, module)

    plain, renaming = Caraway("p", broker="memory://"), Renaming("r", broker="memory://")
    try:

        def job() -> None: ...

        job.__module__ = "proj.tasks"
        assert plain.task(job).name == "proj.tasks.job"
        assert renaming.task(job).name == "proj.job"
        assert plain.gen_task_name("add", "__main__") == "p.add"
    finally:
        plain.close()
        renaming.close()


def test_celery_exception_names_import_from_caraway() -> None:
    from caraway import exceptions as exc
    from caraway.config import Settings
    from caraway.routing import route

    assert issubclass(exc.Retry, exc.TaskPredicate) and issubclass(exc.Ignore, exc.TaskPredicate)
    assert exc.CeleryError is exc.CarawayError and exc.OperationalError is exc.BrokerError
    assert exc.InvalidTaskError is exc.ProtocolError
    assert exc.BackendGetMetaError is exc.BackendStoreError is exc.BackendError
    conf = Settings(task_create_missing_queues=False, task_queues=[{"name": "known"}])
    with pytest.raises(exc.QueueNotFound) as raised:
        route("proj.add", {"queue": "unknown"}, conf)
    assert isinstance(raised.value, KeyError)
    assert isinstance(raised.value, exc.ImproperlyConfigured)  # what caraway raised before


def test_celery_warning_classes_version_and_bugreport() -> None:
    import warnings

    import caraway
    from caraway import exceptions as exc

    for name in (
        "AlwaysEagerIgnored", "DuplicateNodenameWarning", "DuplicateTaskNameWarning",
        "FixupWarning", "NotConfigured", "SecurityWarning",
    ):  # fmt: skip
        assert issubclass(getattr(exc, name), exc.CeleryWarning)
    assert exc.CeleryWarning is exc.CarawayWarning
    assert issubclass(exc.CDeprecationWarning, DeprecationWarning)
    assert issubclass(exc.Terminated, exc.TaskError)
    assert caraway.version_info is caraway.VERSION
    assert ".".join(map(str, caraway.VERSION[:3])) == caraway.__version__
    app = Caraway("bug", broker="redis://:hunter2@127.0.0.1/0", set_as_current=False)
    report = caraway.bugreport(app)
    assert report == app.bugreport()
    assert report.startswith("software -> caraway:") and "hunter2" not in report
    eager = Caraway("eager", broker="memory://eager-warning", set_as_current=False)
    eager.conf.task_always_eager = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        eager.send_task("eager.add", (1, 1))
    assert [w.category for w in caught] == [exc.AlwaysEagerIgnored]
    eager.close()


def test_argsrepr_and_kwargsrepr_hide_arguments_as_celery_documents() -> None:
    from caraway.config import Settings
    from caraway.protocol.message import encode
    from caraway.publish import build

    options = {"argsrepr": "(<card>,)", "kwargsrepr": "{'pin': '****'}"}
    sent = build("proj.pay", ("4111",), {"pin": "1234"}, options, conf=Settings())
    headers = encode(sent.message).headers
    assert (headers["argsrepr"], headers["kwargsrepr"]) == ("(<card>,)", "{'pin': '****'}")
    assert sent.message.args == ["4111"]  # the task still gets them


def test_register_type_rebuilds_a_users_signature_type_from_its_dict() -> None:
    from caraway import Signature

    @Signature.register_type(name="retrying")
    class Retrying(Signature):
        @classmethod
        def from_dict(cls, data: Any, app: Any = None) -> Signature:
            rebuilt = cls(data, app=app)
            rebuilt.options.setdefault("max_retries", 5)
            return rebuilt

    @Signature.register_type()
    class Plain(Signature):
        pass

    try:
        wire = dict(Signature("proj.add", (1, 2), subtask_type="retrying"))
        rebuilt = Signature.from_dict(wire)
        assert type(rebuilt) is Retrying and rebuilt.options["max_retries"] == 5
        assert rebuilt.args == (1, 2)
        # no reader of its own: a plain Signature, as Celery's from_dict returns
        plain = Signature.from_dict(dict(Signature("proj.add", subtask_type="Plain")))
        assert type(plain) is Signature
    finally:
        import importlib

        registry = importlib.import_module("caraway.canvas.signature")._TYPES
        registry.pop("retrying", None)
        registry.pop("Plain", None)

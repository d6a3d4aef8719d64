"""caraway.config: Celery names and defaults, strictness, loading from objects and env."""

from __future__ import annotations

import copy
import pickle
import sys
import types
from collections.abc import Iterator
from datetime import timedelta

import pytest

from caraway.config import OPTIONS, Settings
from caraway.exceptions import ImproperlyConfigured, UnknownSetting


@pytest.fixture
def config_module() -> Iterator[types.ModuleType]:
    """A throwaway importable module, removed from sys.modules afterwards."""
    module = types.ModuleType("caraway_test_celeryconfig")
    sys.modules[module.__name__] = module
    try:
        yield module
    finally:
        del sys.modules[module.__name__]


# -- defaults ------------------------------------------------------------------------------


def test_defaults_match_celery_5() -> None:
    conf = Settings()
    assert conf.task_default_queue == "celery"
    assert conf.accept_content == ["json"]
    assert conf.result_expires == 86400.0
    assert conf.task_serializer == "json"
    assert conf.result_serializer == "json"
    assert conf.task_protocol == 2
    assert conf.worker_prefetch_multiplier == 4
    assert conf.worker_concurrency is None
    assert conf.broker_connection_max_retries == 100
    assert conf.broker_connection_timeout == 4.0
    assert conf.broker_pool_limit == 10
    assert conf.task_acks_late is False
    assert conf.task_acks_on_failure_or_timeout is True
    assert conf.task_create_missing_queues is True
    assert conf.enable_utc is True
    assert conf.event_queue_ttl == 5.0
    assert conf.event_queue_expires == 60.0
    assert conf.result_cache_max == -1
    assert conf.task_publish_retry_policy == {
        "max_retries": 3,
        "interval_start": 0,
        "interval_max": 1,
        "interval_step": 0.2,
    }


def test_caraway_defaults_are_documented_choices() -> None:
    conf = Settings()
    assert conf.task_reject_on_worker_lost is True
    assert "Celery" in OPTIONS["task_reject_on_worker_lost"].doc
    assert conf.worker_delivery_cap == 5
    assert conf.worker_async_concurrency == 100
    assert conf.broker_park_horizon == 60.0
    assert conf.producer_parks_eta is False
    assert "3600" in OPTIONS["broker_transport_options"].doc


def test_mutable_defaults_are_not_shared_between_instances() -> None:
    first, second = Settings(), Settings()
    first.task_publish_retry_policy["max_retries"] = 99
    first.accept_content.append("pickle")
    assert second.task_publish_retry_policy["max_retries"] == 3
    assert second.accept_content == ["json"]
    assert OPTIONS["accept_content"].default == ["json"]


def test_every_alias_names_exactly_one_setting() -> None:
    aliases = [old for option in OPTIONS.values() for old in option.old]
    assert len(aliases) == len(set(aliases))
    assert not set(aliases) & set(OPTIONS)
    assert all(alias.isupper() for alias in aliases)


def test_a_copy_is_independent_and_survives_pickling() -> None:
    conf = Settings(worker_concurrency=2, task_routes={"a": "b"})
    clone = copy.copy(conf)
    clone.worker_concurrency = 5
    assert conf.worker_concurrency == 2
    deep = copy.deepcopy(conf)
    deep.task_routes["a"] = "c"
    assert conf.task_routes == {"a": "b"}
    restored = pickle.loads(pickle.dumps(conf))
    assert restored == conf
    assert restored.setdefault("worker_concurrency", 9) == 2


def test_effective_concurrency_falls_back_to_the_cpu_count() -> None:
    assert Settings().effective_concurrency() >= 1
    assert Settings(worker_concurrency=3).effective_concurrency() == 3


# -- strict names --------------------------------------------------------------------------


def test_assigning_a_misspelled_setting_suggests_the_right_name() -> None:
    conf = Settings()
    with pytest.raises(UnknownSetting) as info:
        conf.result_expire = 10  # type: ignore[attr-defined]
    assert str(info.value) == "unknown setting 'result_expire'; did you mean 'result_expires'?"


def test_update_with_a_misspelled_setting_suggests_and_changes_nothing() -> None:
    conf = Settings()
    with pytest.raises(UnknownSetting, match="did you mean 'task_always_eager'"):
        conf.update(task_acks_late=True, task_always_eagr=True)
    assert conf.task_acks_late is False


def test_item_access_with_an_unknown_name_raises_a_key_error() -> None:
    conf = Settings()
    with pytest.raises(KeyError, match="did you mean 'broker_url'"):
        conf["broker_ulr"]
    with pytest.raises(UnknownSetting):
        conf["broker_ulr"] = "x"


def test_reading_an_unknown_attribute_raises_attribute_error_with_a_suggestion() -> None:
    conf = Settings()
    with pytest.raises(AttributeError, match="did you mean 'worker_concurrency'"):
        conf.worker_concurency  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(conf, "nonsense")


def test_a_name_nothing_like_a_setting_says_so() -> None:
    with pytest.raises(UnknownSetting, match="not a caraway or Celery setting"):
        Settings(zzzqqq=1)


def test_setdefault_with_an_unknown_name_raises() -> None:
    with pytest.raises(UnknownSetting, match="did you mean 'timezone'"):
        Settings().setdefault("timezon", "UTC")


# -- types ---------------------------------------------------------------------------------


def test_a_wrong_type_names_the_setting_the_value_and_the_type() -> None:
    conf = Settings()
    with pytest.raises(ImproperlyConfigured) as info:
        conf.worker_concurrency = "four"  # type: ignore[assignment]
    message = str(info.value)
    assert "'worker_concurrency'" in message
    assert "'four'" in message
    assert "an int or None" in message


def test_bool_is_not_accepted_as_a_number() -> None:
    with pytest.raises(ImproperlyConfigured, match="worker_prefetch_multiplier"):
        Settings(worker_prefetch_multiplier=True)


def test_int_is_coerced_to_float_for_float_settings() -> None:
    conf = Settings(broker_connection_timeout=10)
    assert conf.broker_connection_timeout == 10.0
    assert isinstance(conf.broker_connection_timeout, float)


def test_result_expires_accepts_a_timedelta_as_seconds() -> None:
    conf = Settings()
    conf.result_expires = timedelta(hours=1)
    assert conf.result_expires == 3600.0
    conf.result_expires = None
    assert conf.result_expires is None


def test_list_settings_accept_tuples_and_sets_but_not_a_bare_string() -> None:
    conf = Settings(imports=("a.tasks", "b.tasks"), accept_content={"pickle", "json"})
    assert conf.imports == ["a.tasks", "b.tasks"]
    assert conf.accept_content == ["json", "pickle"]
    with pytest.raises(ImproperlyConfigured, match="a list of strings"):
        conf.imports = "a.tasks"  # type: ignore[assignment]


def test_a_failed_assignment_keeps_the_old_value() -> None:
    conf = Settings(task_default_queue="lopri")
    with pytest.raises(ImproperlyConfigured):
        conf.task_default_queue = 5  # type: ignore[assignment]
    assert conf.task_default_queue == "lopri"


# -- mapping access and aliases ------------------------------------------------------------


def test_mapping_access_reads_the_same_values_as_attributes() -> None:
    conf = Settings(result_expires=10)
    assert conf["result_expires"] == conf.result_expires == 10.0
    assert conf.get("result_expires") == 10.0
    assert conf.get("not_a_setting", "fallback") == "fallback"
    assert "result_expires" in conf
    assert "result_expire" not in conf
    assert list(conf.keys()) == list(OPTIONS)
    assert dict(conf.items())["task_default_queue"] == "celery"
    assert conf.as_dict() == dict(conf)
    assert len(conf) == len(OPTIONS)


def test_old_uppercase_names_are_aliases_of_the_new_ones() -> None:
    conf = Settings(
        BROKER_URL="redis://localhost:6379/0",
        CELERY_RESULT_BACKEND="redis://localhost:6379/1",
        CELERYD_CONCURRENCY=8,
        CELERY_TASK_RESULT_EXPIRES=60,
        CELERY_ALWAYS_EAGER=True,
    )
    assert conf.broker_url == "redis://localhost:6379/0"
    assert conf.result_backend == "redis://localhost:6379/1"
    assert conf.worker_concurrency == 8
    assert conf.result_expires == 60.0
    assert conf.task_always_eager is True
    assert conf["BROKER_URL"] == conf.broker_url
    assert "BROKER_URL" not in conf.as_dict()


def test_an_alias_and_its_new_name_with_different_values_conflict() -> None:
    with pytest.raises(ImproperlyConfigured, match="'BROKER_URL' and 'broker_url' both set"):
        Settings({"BROKER_URL": "redis://a", "broker_url": "redis://b"})


def test_setdefault_leaves_explicit_settings_and_fills_the_rest() -> None:
    conf = Settings(task_default_queue="mine")
    assert conf.setdefault("task_default_queue", "theirs") == "mine"
    assert conf.setdefault("timezone", "Europe/Paris") == "Europe/Paris"
    assert conf.timezone == "Europe/Paris"


def test_changes_lists_only_settings_that_differ_from_the_defaults() -> None:
    conf = Settings(task_default_queue="celery", worker_concurrency=2, task_acks_late=True)
    assert conf.changes() == {"task_acks_late": True, "worker_concurrency": 2}


def test_humanize_masks_passwords_in_urls_and_secret_options() -> None:
    conf = Settings(
        broker_url="amqp://guest:hunter2@localhost:5672//",
        result_backend="redis://:s3cret@localhost:6379/0",
        broker_transport_options={"sentinel_kwargs": {"password": "pw"}, "visibility_timeout": 10},
    )
    text = conf.humanize()
    assert "hunter2" not in text
    assert "s3cret" not in text
    assert "'pw'" not in text
    assert "amqp://guest:********@localhost:5672//" in text
    assert "'visibility_timeout': 10" in text
    assert "task_default_queue" not in text
    assert "task_default_queue: 'celery'" in conf.humanize(with_defaults=True)


# -- from_object ---------------------------------------------------------------------------


def test_from_object_imports_a_module_by_name(config_module: types.ModuleType) -> None:
    config_module.broker_url = "redis://localhost:6379/3"  # type: ignore[attr-defined]
    config_module.task_routes = {"a.*": {"queue": "a"}}  # type: ignore[attr-defined]
    conf = Settings()
    assert conf.from_object(config_module.__name__) == ["broker_url", "task_routes"]
    assert conf.broker_url == "redis://localhost:6379/3"
    assert conf.task_routes == {"a.*": {"queue": "a"}}


def test_from_object_ignores_imports_callables_classes_and_private_names(
    config_module: types.ModuleType,
) -> None:
    module = config_module
    module.os = types  # type: ignore[attr-defined]
    module.helper = lambda: None  # type: ignore[attr-defined]
    module.timedelta = timedelta  # type: ignore[attr-defined]
    module._private = 1  # type: ignore[attr-defined]
    module.SOME_CONSTANT = 5  # type: ignore[attr-defined]
    module.task_acks_late = True  # type: ignore[attr-defined]
    conf = Settings()
    assert conf.from_object(module) == ["task_acks_late"]


def test_from_object_takes_a_router_function_given_as_task_routes() -> None:
    def router(name: str, *args: object, **kwargs: object) -> str:
        return "q"

    conf = Settings()
    conf.from_object({"task_routes": router})
    assert conf.task_routes is router


def test_from_object_rejects_an_unknown_lowercase_name_with_a_suggestion() -> None:
    class Config:
        broker_url = "redis://localhost"
        result_expire = 10

    conf = Settings()
    with pytest.raises(UnknownSetting, match="did you mean 'result_expires'"):
        conf.from_object(Config)
    assert conf.broker_url is None


def test_from_object_reads_old_uppercase_names() -> None:
    class Config:
        BROKER_URL = "redis://localhost"
        CELERYD_PREFETCH_MULTIPLIER = 1

    conf = Settings()
    conf.from_object(Config)
    assert conf.broker_url == "redis://localhost"
    assert conf.worker_prefetch_multiplier == 1


def test_from_object_flags_a_misspelled_old_uppercase_name() -> None:
    with pytest.raises(UnknownSetting, match="did you mean 'CELERY_RESULT_BACKEND'"):
        Settings().from_object({"CELERY_RESULT_BAKEND": "redis://"})


def test_namespace_reads_only_prefixed_uppercase_names() -> None:
    django_settings = {
        "DEBUG": True,
        "CELERY_BROKER_URL": "redis://localhost/0",
        "CELERY_TASK_ALWAYS_EAGER": True,
        "CELERY_RESULT_EXPIRES": 30,
        "broker_pool_limit": 99,
    }
    conf = Settings()
    conf.from_object(django_settings, namespace="CELERY")
    assert conf.broker_url == "redis://localhost/0"
    assert conf.task_always_eager is True
    assert conf.result_expires == 30.0
    assert conf.broker_pool_limit == 10


def test_caraway_namespace_works_like_celerys() -> None:
    conf = Settings()
    conf.from_object({"CARAWAY_WORKER_CONCURRENCY": 2}, namespace="CARAWAY")
    assert conf.worker_concurrency == 2


def test_namespace_accepts_old_names_under_the_prefix() -> None:
    conf = Settings()
    conf.from_object({"CELERY_ACKS_LATE": True, "CELERY_ROUTES": {"a": "b"}}, namespace="CELERY")
    assert conf.task_acks_late is True
    assert conf.task_routes == {"a": "b"}


def test_namespace_rejects_an_unknown_prefixed_name_in_its_own_spelling() -> None:
    with pytest.raises(UnknownSetting) as info:
        Settings().from_object({"CELERY_BROKER_URLS": "x"}, namespace="CELERY")
    assert str(info.value) == (
        "unknown setting 'CELERY_BROKER_URLS'; did you mean 'CELERY_BROKER_URL'?"
    )


def test_from_object_with_an_unimportable_module_is_improperly_configured() -> None:
    with pytest.raises(ImproperlyConfigured, match="no_such_module_for_caraway"):
        Settings().from_object("no_such_module_for_caraway.celeryconfig")


def test_from_object_wrong_type_names_the_setting() -> None:
    with pytest.raises(ImproperlyConfigured, match="'task_acks_late' must be a bool"):
        Settings().from_object({"task_acks_late": "yes"})


# -- from_env ------------------------------------------------------------------------------


def test_from_env_reads_broker_and_backend_urls() -> None:
    conf = Settings()
    names = conf.from_env(
        {
            "CARAWAY_BROKER_URL": "redis://localhost:6379/5",
            "CARAWAY_RESULT_BACKEND": "redis://localhost:6379/6",
            "PATH": "/usr/bin",
        }
    )
    assert names == ["broker_url", "result_backend"]
    assert conf.broker_url == "redis://localhost:6379/5"
    assert conf.result_backend == "redis://localhost:6379/6"


def test_from_env_coerces_strings_to_each_settings_type() -> None:
    conf = Settings()
    conf.from_env(
        {
            "CARAWAY_WORKER_CONCURRENCY": "4",
            "CARAWAY_TASK_ALWAYS_EAGER": "true",
            "CARAWAY_TASK_ACKS_LATE": "0",
            "CARAWAY_RESULT_EXPIRES": "3600",
            "CARAWAY_ACCEPT_CONTENT": "json, msgpack",
            "CARAWAY_BROKER_TRANSPORT_OPTIONS": '{"visibility_timeout": 120}',
            "CARAWAY_TASK_TIME_LIMIT": "none",
            "CARAWAY_TASK_DEFAULT_RATE_LIMIT": "10/m",
        }
    )
    assert conf.worker_concurrency == 4
    assert conf.task_always_eager is True
    assert conf.task_acks_late is False
    assert conf.result_expires == 3600.0
    assert conf.accept_content == ["json", "msgpack"]
    assert conf.broker_transport_options == {"visibility_timeout": 120}
    assert conf.task_time_limit is None
    assert conf.task_default_rate_limit == "10/m"


def test_from_env_with_an_uncoercible_string_names_the_variable() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        Settings().from_env({"CARAWAY_TASK_ALWAYS_EAGER": "perhaps"})
    assert "CARAWAY_TASK_ALWAYS_EAGER='perhaps'" in str(info.value)
    assert "a bool" in str(info.value)


def test_from_env_ignores_other_caraway_variables_but_flags_typos() -> None:
    conf = Settings()
    assert conf.from_env({"CARAWAY_APP": "proj", "CARAWAY_LOGLEVEL": "info"}) == []
    with pytest.raises(UnknownSetting, match="did you mean 'CARAWAY_BROKER_URL'"):
        conf.from_env({"CARAWAY_BROKER_ULR": "redis://"})


def test_from_env_with_a_celery_prefix_reads_celery_variables() -> None:
    conf = Settings()
    conf.from_env({"CELERY_BROKER_URL": "amqp://localhost//"}, prefix="CELERY_")
    assert conf.broker_url == "amqp://localhost//"

"""Every Celery 5 setting (read from the installed celery package) is known to caraway:
acted on by caraway's code, or refused when set, with the reason and what to use instead.
None is accepted and ignored."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from celery.app.defaults import NAMESPACES, flatten

from caraway import Caraway
from caraway._config_table import OPTIONS, REFUSED
from caraway.config import Settings
from caraway.exceptions import ImproperlyConfigured

SRC = Path(__file__).resolve().parents[2] / "src" / "caraway"
CELERY = {name: option for name, option in flatten(NAMESPACES)}

#: read by code on other branches, which this list names; the merge empties it
ELSEWHERE = {
    "worker_task_log_datefmt": "the task log prefix (issue 18)",
}
#: options whose every value caraway already meets; their doc says how
INHERENT = {"broker_pool_limit", "result_chord_ordered", "worker_deduplicate_successful_tasks"}


def _source_words() -> set[str]:
    words: set[str] = set()
    for path in SRC.rglob("*.py"):
        if path.name != "_config_table.py":
            words.update(re.findall(r"[a-z_]+", path.read_text()))
    return words


WORDS = _source_words()


def test_the_exceptions_name_real_celery_settings() -> None:
    assert set(ELSEWHERE) <= set(CELERY)
    assert set(OPTIONS) >= INHERENT


@pytest.mark.parametrize("name", sorted(set(CELERY) - set(ELSEWHERE)))
def test_every_celery_setting_is_implemented_or_refused(name: str) -> None:
    if name in REFUSED:
        assert name not in OPTIONS
        sentinel = object()
        with pytest.raises(ImproperlyConfigured, match=f"{name}.*not supported by caraway: "):
            Settings({name: sentinel})
        for value in REFUSED[name].allowed:
            Settings({name: value})  # what caraway does anyway: accepted
        return
    assert name in OPTIONS, f"{name} is neither an option nor refused"
    assert name in WORDS or name in INHERENT, f"{name} is accepted but nothing reads it"


def test_no_option_is_accepted_and_ignored() -> None:
    ignored = [
        name
        for name in OPTIONS
        if name not in WORDS and name not in INHERENT and name not in ELSEWHERE
    ]
    assert ignored == []


def test_a_refused_old_name_is_refused_too() -> None:
    with pytest.raises(ImproperlyConfigured, match="CELERY_RESULT_DBURI"):
        Settings({"CELERY_RESULT_DBURI": "postgresql://x"})


def test_refused_settings_are_refused_from_a_config_module_and_the_environment() -> None:
    class Config:
        database_url = "sqlite:///results.db"

    app = Caraway("refused", broker="memory://", set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match="result_backend="):
        app.config_from_object(Config)
    with pytest.raises(ImproperlyConfigured, match="CARAWAY_WORKER_DIRECT"):
        Settings().from_env({"CARAWAY_WORKER_DIRECT": "true"})


def test_reading_a_refused_setting_gives_what_caraway_does() -> None:
    conf = Settings()
    assert conf.enable_utc is True
    assert conf["result_serializer"] == "json"


def test_task_annotations_set_attributes_by_name_and_star() -> None:
    app = Caraway("annotated", broker="memory://", set_as_current=False)
    app.conf.task_annotations = {"*": {"rate_limit": "5/s"}, "proj.add": {"rate_limit": "1/s"}}

    @app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="proj.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    assert add.rate_limit == "1/s" and mul.rate_limit == "5/s"


def test_the_compatibility_table_lists_every_celery_setting() -> None:
    table = (SRC.parents[1] / "docs" / "celery-compat.md").read_text()
    missing = [name for name in CELERY if f"| `{name}` |" not in table]
    assert missing == []

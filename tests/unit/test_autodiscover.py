"""autodiscover_tasks(): lazy until the app's tasks are needed, as in Celery; with no
packages only where a framework (Django) lists its apps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from caraway import Caraway
from caraway.exceptions import ImproperlyConfigured


@pytest.fixture
def packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    prefix = f"adpkg_{tmp_path.name.replace('-', '_')}"
    for name in ("one", "two"):
        package = tmp_path / f"{prefix}_{name}"
        package.mkdir()
        (package / "__init__.py").write_text("")
    (tmp_path / f"{prefix}_one" / "tasks.py").write_text(
        "from caraway import shared_task\n\n@shared_task\ndef found():\n    return 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return prefix


def test_named_packages_are_searched_when_the_tasks_are_first_needed(packages: str) -> None:
    app = Caraway("adapp", broker="memory://ad", set_as_current=False)
    app.autodiscover_tasks([f"{packages}_one", f"{packages}_two"])
    assert f"{packages}_one.tasks" not in sys.modules
    assert f"{packages}_one.tasks.found" in app.tasks  # a package with no tasks is skipped


def test_force_searches_now(packages: str) -> None:
    app = Caraway("adapp", broker="memory://ad", set_as_current=False)
    app.autodiscover_tasks(lambda: [f"{packages}_one"], force=True)
    assert f"{packages}_one.tasks" in sys.modules


def test_a_call_after_the_tasks_were_imported_searches_at_once(packages: str) -> None:
    app = Caraway("adapp", broker="memory://ad", set_as_current=False)
    assert app.tasks is not None
    app.autodiscover_tasks([f"{packages}_one"])
    assert f"{packages}_one.tasks" in sys.modules


def test_no_packages_outside_a_django_project_says_what_to_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    app = Caraway("adapp", broker="memory://ad", set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match=r"autodiscover_tasks\(\['proj.orders'\]\)"):
        app.autodiscover_tasks()

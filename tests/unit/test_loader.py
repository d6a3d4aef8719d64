"""``-A`` finds the app the way Celery users expect."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from caraway.cli.loader import load_app
from caraway.exceptions import ImproperlyConfigured


def _package(tmp_path: Path, name: str, files: dict[str, str]) -> None:
    package = tmp_path / name
    package.mkdir()
    for filename, source in {"__init__.py": "", **files}.items():
        (package / filename).write_text(source)


@pytest.fixture(autouse=True)
def _clean_modules():
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


APP = (
    "from caraway import Caraway\napp = Caraway('{0}', broker='memory://', set_as_current=False)\n"
)


def test_package_with_a_caraway_submodule(tmp_path: Path) -> None:
    _package(tmp_path, "lpa", {"caraway.py": APP.format("lpa")})
    assert load_app("lpa", workdir=str(tmp_path)).main == "lpa"


def test_package_with_a_celery_submodule(tmp_path: Path) -> None:
    _package(tmp_path, "lpb", {"celery.py": APP.format("lpb")})
    assert load_app("lpb", workdir=str(tmp_path)).main == "lpb"


def test_module_and_attribute(tmp_path: Path) -> None:
    _package(tmp_path, "lpc", {"factory.py": APP.replace("app =", "service =").format("lpc")})
    assert load_app("lpc.factory:service", workdir=str(tmp_path)).main == "lpc"


def test_missing_module_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match="cannot import module 'nope'"):
        load_app("nope", workdir=str(tmp_path))


def test_module_without_an_app_names_what_it_tried(tmp_path: Path) -> None:
    _package(tmp_path, "lpd", {})
    with pytest.raises(ImproperlyConfigured, match="found no Caraway app"):
        load_app("lpd", workdir=str(tmp_path))

"""Find the app a ``-A`` argument names: ``proj``, ``proj.module`` or ``proj.module:app``.

For a module without ``:``, the app is an attribute named ``app``, ``caraway`` or
``celery``, else the only Caraway instance in it, else the same search in its
submodules ``caraway`` and ``celery`` (the seed's ``proj/celery.py`` layout).
:func:`app_of` is how a subcommand gets its app.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

import click

from caraway.app import Caraway
from caraway.cli.context import state_of
from caraway.exceptions import ImproperlyConfigured


def app_of(ctx: click.Context) -> Caraway:
    """The app the global options name (loaded once), their broker and backend applied."""
    state = state_of(ctx)
    if state.loaded is None:
        if state.preset is not None:
            app = state.preset
        elif state.app_spec:
            app = load_app(state.app_spec, workdir=state.workdir)
        else:
            app = Caraway("default")
        if state.broker:
            app.conf.broker_url = state.broker
        if state.result_backend:
            app.conf.result_backend = state.result_backend
        state.loaded = app
    if not isinstance(state.loaded, Caraway):
        raise ImproperlyConfigured(f"{state.loaded!r} is not a Caraway app")
    return state.loaded


_ATTRIBUTES = ("app", "caraway", "celery")
_SUBMODULES = ("caraway", "celery")


def load_app(spec: str, *, workdir: str | None = None) -> Caraway:
    """Import and return the app; raises ImproperlyConfigured saying what was tried."""
    path = os.path.abspath(workdir or os.getcwd())
    if path not in sys.path:
        sys.path.insert(0, path)
    module_name, _, attribute = spec.partition(":")
    module = _import(module_name, spec)
    if attribute:
        app = getattr(module, attribute, None)
        if not isinstance(app, Caraway):
            raise ImproperlyConfigured(
                f"-A {spec}: module {module_name!r} has no Caraway app named {attribute!r}"
            )
        return app
    app = _find_in(module)
    if app is not None:
        return app
    for sub in _SUBMODULES:
        name = f"{module_name}.{sub}"
        try:
            submodule = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        app = _find_in(submodule)
        if app is not None:
            return app
    raise ImproperlyConfigured(
        f"-A {spec}: found no Caraway app in {module_name!r} (looked for attributes "
        f"{', '.join(_ATTRIBUTES)} and submodules {', '.join(_SUBMODULES)}); "
        f"name it explicitly, e.g. -A {module_name}.module:app"
    )


def _import(name: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise ImproperlyConfigured(
                f"-A {spec}: cannot import module {name!r} from {os.getcwd()} "
                "(run the command from the directory that contains it, or use --workdir)"
            ) from exc
        raise


def _find_in(module: ModuleType) -> Caraway | None:
    for attribute in _ATTRIBUTES:
        value = getattr(module, attribute, None)
        if isinstance(value, Caraway):
            return value
    apps = [value for value in vars(module).values() if isinstance(value, Caraway)]
    return apps[0] if len(apps) == 1 else None

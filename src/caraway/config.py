"""Typed, strict settings: Celery 5's names, defaults and pre-4.0 aliases, plus caraway's own.

Owns validation on write, the "did you mean" for unknown names, and loading from objects,
modules and the environment; the option table itself (names, types, defaults, aliases) is
:mod:`caraway._config_table`, and nothing here acts on any setting. The one thing to know:
a name missing from the table is an error (``UnknownSetting`` with a "did you mean"), and a
Celery setting caraway refuses (``REFUSED``) is an error that says why and what to use
instead, unless its value is what caraway does anyway; neither is ever a silent no-op.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import os
import re
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from caraway._config_table import ALIASES as _ALIASES
from caraway._config_table import OPTIONS, REFUSED, REFUSED_ALIASES, Option, OptionTable
from caraway.clients.urls import mask_url
from caraway.exceptions import ImproperlyConfigured, UnknownSetting

__all__ = ["OPTIONS", "Option", "Settings"]

T = TypeVar("T")


class Settings(OptionTable, Mapping[str, Any]):
    """An app's settings: typed attributes plus mapping access, validated on every write.

    ``conf.result_expires = 10``, ``conf.update(...)`` and ``conf['x'] = ...`` check the name
    (UnknownSetting with a suggestion) and the type (ImproperlyConfigured). Old uppercase names
    (``BROKER_URL``, ``CELERY_RESULT_BACKEND``, ``CELERYD_CONCURRENCY``) work as aliases.
    """

    __slots__ = ("_derived", "_explicit", "_values")
    _values: dict[str, Any]
    _explicit: set[str]  # set by the user, so setdefault() leaves them alone
    _derived: dict[str, Any]  # what derived() built, dropped on every write

    # -- behaviour -------------------------------------------------------------------------
    def __init__(self, mapping: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        values = {name: copy.deepcopy(option.default) for name, option in OPTIONS.items()}
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_explicit", set())
        object.__setattr__(self, "_derived", {})
        self.update(mapping, **kwargs)

    def __getitem__(self, name: str) -> Any:
        refused = _refused_name(name)
        if refused is not None:
            return _refused_value(refused)
        return self._values[_resolve(name)]

    def __setitem__(self, name: str, value: Any) -> None:
        if _check_refused(name, value):
            return
        canonical = _resolve(name)
        self._values[canonical] = OPTIONS[canonical].coerce(value)
        self._explicit.add(canonical)
        self._derived.clear()

    def __iter__(self) -> Iterator[str]:
        return iter(OPTIONS)

    def __len__(self) -> int:
        return len(OPTIONS)

    if not TYPE_CHECKING:  # hidden from mypy so it still flags conf.misspelled statically

        def __setattr__(self, name: str, value: Any) -> None:
            self[name] = value  # an unknown name raises UnknownSetting with a suggestion

        def __getattr__(self, name: str) -> Any:
            if _refused_name(name) is not None:
                return self[name]
            raise AttributeError(_unknown_message(name)) from None

    def __repr__(self) -> str:
        return f"<Settings: {len(self.changes())} changed from the defaults>"

    def __reduce__(self) -> tuple[Any, ...]:
        # copy, deepcopy and pickle rebuild through __init__: the slots are only ever set
        # there, and a copy must own its dicts so changing it leaves the original alone.
        return (_rebuild, (dict(self._values), set(self._explicit)))

    def update(self, mapping: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Set several settings at once; nothing changes unless every name and value is valid.

        Raises UnknownSetting for a name that is not a setting (or an old alias), and
        ImproperlyConfigured for a value of the wrong type or an alias and its new name both
        given with different values.
        """
        self._apply(_stage([*(mapping or {}).items(), *kwargs.items()]))

    def setdefault(self, name: str, default: Any) -> Any:
        """Set ``name`` to ``default`` unless it was set explicitly; return the value in effect."""
        canonical = _resolve(name)
        if canonical not in self._explicit:
            self[canonical] = default
        return self._values[canonical]

    def as_dict(self) -> dict[str, Any]:
        """Every setting and its value, in table order (a shallow copy)."""
        return dict(self._values)

    def changes(self) -> dict[str, Any]:
        """The settings whose value differs from the default, in table order."""
        return {
            name: value for name, value in self._values.items() if value != OPTIONS[name].default
        }

    def humanize(self, *, with_defaults: bool = False) -> str:
        """``name: value`` lines for ``caraway report``, with passwords and secrets masked."""
        shown = self.as_dict() if with_defaults else self.changes()
        return "\n".join(f"{name}: {_masked(name, value)!r}" for name, value in shown.items())

    def effective_concurrency(self) -> int:
        """worker_concurrency, or the CPU count when it is None or 0."""
        return self.worker_concurrency or os.cpu_count() or 1

    def result_expires_seconds(self) -> float | None:
        """``result_expires`` in seconds (a timedelta or a number); None or 0: never."""
        value = self.result_expires
        if value is None:
            return None
        seconds = value.total_seconds() if hasattr(value, "total_seconds") else float(value)
        return seconds or None

    def from_object(self, obj: object | str, *, namespace: str | None = None) -> list[str]:
        """Read settings from a module (or its dotted name, ``pkg.mod:attr`` too), object or dict.

        Without a namespace, lowercase names and old uppercase aliases are read; with
        ``namespace='CELERY'`` (or 'CARAWAY') only ``CELERY_*`` names, e.g. CELERY_BROKER_URL.
        Modules, classes, callables and ``_private`` names are skipped unless they are a
        setting's name. Returns the settings set; raises UnknownSetting for an unknown
        setting-like name, ImproperlyConfigured for a bad value or an unimportable module.
        """
        source = _import(obj) if isinstance(obj, str) else obj
        items = _public_items(source)
        pairs = _namespaced(items, namespace) if namespace else _plain(items)
        return self._apply(_stage(pairs))

    def from_env(self, environ: Mapping[str, str], *, prefix: str = "CARAWAY_") -> list[str]:
        """Read ``CARAWAY_<SETTING>`` variables, coercing the strings; returns the settings set.

        Other variables sharing the prefix (the command line's) are ignored, unless the name
        is so close to a setting that it is surely a typo: that raises UnknownSetting.
        """
        staged: dict[str, Any] = {}
        for variable, text in environ.items():
            if not variable.startswith(prefix):
                continue
            name = variable[len(prefix) :].lower()
            option = OPTIONS.get(name)
            if option is None and name in REFUSED:
                raise ImproperlyConfigured(_refusal_message(variable, name))
            if option is None:
                if _closest(name, cutoff=0.85):
                    raise UnknownSetting(_unknown_message(variable, prefix=prefix))
                continue
            staged[name] = option.parse(text, variable=variable)
        return self._apply(staged)

    def _apply(self, staged: Mapping[str, Any]) -> list[str]:
        self._values.update(staged)
        self._explicit.update(staged)
        self._derived.clear()
        return list(staged)

    def derived(self, key: str, build: Callable[[Settings], T]) -> T:
        """``build(self)``, built once and kept until a setting is assigned (routing keeps
        the declared queues here rather than rebuilding them on every publish). A value
        changed in place (``conf.task_queues.append(...)``) is not seen: assign it."""
        try:
            return self._derived[key]  # type: ignore[no-any-return]
        except KeyError:
            value = self._derived[key] = build(self)
            return value


def _refused_name(name: str) -> str | None:
    """The refused setting ``name`` stands for (itself or an old alias), or None."""
    if name in REFUSED:
        return name
    return REFUSED_ALIASES.get(name)


def _refused_value(name: str) -> Any:
    """What reading a refused setting gives: the value caraway behaves as, if it has one."""
    allowed = REFUSED[name].allowed
    if not allowed:
        raise AttributeError(_refusal_message(name, name))
    return allowed[0]


def _refusal_message(given: str, name: str) -> str:
    spelled = given if given == name else f"{given!r} ({name})"
    return f"setting {spelled!r} is not supported by caraway: {REFUSED[name].reason}"


def _check_refused(name: str, value: Any) -> bool:
    """True to skip a refused setting set to a value caraway already behaves as; raises
    ImproperlyConfigured for any other value; False for a setting that is not refused."""
    refused = _refused_name(name)
    if refused is None:
        return False
    allowed = REFUSED[refused].allowed
    if any(type(value) is type(ok) and value == ok for ok in allowed):
        return True
    shown = f" (caraway behaves as {allowed[0]!r})" if allowed else ""
    raise ImproperlyConfigured(f"{_refusal_message(name, refused)}; got {value!r}{shown}")


def _rebuild(values: dict[str, Any], explicit: set[str]) -> Settings:
    conf = Settings()
    conf._values.update(values)
    conf._explicit.update(explicit)
    return conf


def _resolve(name: str) -> str:
    if name in OPTIONS:
        return name
    canonical = _ALIASES.get(name)
    if canonical is None:
        raise UnknownSetting(_unknown_message(name))
    return canonical


def _closest(name: str, *, cutoff: float = 0.6) -> str | None:
    """The setting name or lowercased old alias nearest to ``name``, if any is near."""
    candidates = [*OPTIONS, *(alias.lower() for alias in _ALIASES)]
    found = difflib.get_close_matches(name.lower(), candidates, n=1, cutoff=cutoff)
    return found[0] if found else None


def _unknown_message(name: str, *, prefix: str = "") -> str:
    """'unknown setting ...; did you mean ...?', spelling the suggestion the way name is."""
    bare = name[len(prefix) :] if prefix and name.startswith(prefix) else name
    guess = _closest(bare)
    if guess is None:
        return f"unknown setting {name!r}; it is not a caraway or Celery setting"
    if prefix:
        guess = prefix + _ALIASES.get(guess.upper(), guess).upper()
    elif bare.isupper() and guess.upper() in _ALIASES:
        guess = guess.upper()  # an old name was meant: suggest the old name
    return f"unknown setting {name!r}; did you mean {guess!r}?"


def _stage(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Validate name/value pairs into {setting: value}; raises before anything is applied."""
    staged: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for name, value in pairs:
        if _check_refused(name, value):
            continue
        canonical = _resolve(name)
        coerced = OPTIONS[canonical].coerce(value)
        if canonical in staged and staged[canonical] != coerced:
            raise ImproperlyConfigured(
                f"{given_as[canonical]!r} and {name!r} both set {canonical!r}, differently; "
                f"keep only {canonical!r}"
            )
        staged[canonical] = coerced
        given_as[canonical] = name
    return staged


def _import(path: str) -> object:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attribute) if attribute else module
    except (ImportError, AttributeError) as exc:
        raise ImproperlyConfigured(f"cannot load configuration {path!r}: {exc}") from exc


def _public_items(source: object) -> list[tuple[str, Any]]:
    if isinstance(source, Mapping):
        items = [(str(key), value) for key, value in source.items()]
    elif isinstance(source, types.ModuleType):
        items = list(vars(source).items())
    else:
        items = [(name, getattr(source, name)) for name in dir(source)]
    return [(name, value) for name, value in items if not name.startswith("_")]


def _is_code(value: object) -> bool:
    """Modules, classes and functions in a config module are its tools, not settings."""
    return isinstance(value, (types.ModuleType, type)) or callable(value)


def _plain(items: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    picked = []
    for name, value in items:
        if name in OPTIONS or name in _ALIASES or _refused_name(name):
            picked.append((name, value))
        elif _is_code(value):
            continue
        elif name.islower() or _closest(name, cutoff=0.85):
            # A lowercase name can only be meant as a setting; an uppercase one is the
            # module's own constant unless it is one typo away from an old setting name.
            raise UnknownSetting(_unknown_message(name))
    return picked


def _namespaced(items: Iterable[tuple[str, Any]], namespace: str) -> list[tuple[str, Any]]:
    prefix = namespace.upper().rstrip("_") + "_"
    picked = []
    for name, value in items:
        if not name.startswith(prefix):
            continue  # e.g. Django's own settings beside the CELERY_* ones
        setting = name[len(prefix) :].lower()
        if setting in OPTIONS or setting in REFUSED:
            picked.append((setting, value))
        elif name in _ALIASES or name in REFUSED_ALIASES:
            picked.append((name, value))
        elif not _is_code(value):
            raise UnknownSetting(_unknown_message(name, prefix=prefix))
    return picked


_SECRET_KEY = re.compile(r"pass|secret|token|api_?key|private|credential", re.IGNORECASE)
#: Celery's conf.humanize() masks with eight stars (its banners with two)
_MASK = "********"


def mask_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (settings by name) with every URL's password and every value under a
    secret's name (password, token, key...) masked, at any depth: what ``inspect conf``,
    ``inspect report``/``caraway report`` and the dashboard may show."""
    return {name: _masked(name, value) for name, value in values.items()}


def _masked(key: str, value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _masked(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(key, item) for item in value]
    if isinstance(value, str):
        if "://" in value:
            return mask_url(value, mask=_MASK)
        if _SECRET_KEY.search(key):
            return _MASK
    return value

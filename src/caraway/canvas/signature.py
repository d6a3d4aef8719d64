"""Signature: one task call's arguments and options, as a dict in Celery's wire form.

A :class:`Signature` *is* a dict ``{task, args, kwargs, options, subtask_type, immutable}``
(docs/design/protocol.md section 1.3), so it travels inside messages unchanged. The composite
canvases (:mod:`caraway.canvas.workflows`) subclass it and register themselves by
``subtask_type`` or built-in task name, so :meth:`Signature.from_dict` rebuilds the right
type without this module naming them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic

from caraway import current
from caraway.brokers.contracts import ChordStore
from caraway.exceptions import ImproperlyConfigured, NotRegistered
from caraway.protocol.serializers import dumps_json
from caraway.protocol.signatures import check_fields
from caraway.result import AsyncResult, EagerResult
from caraway.result import AsyncResult as _Sent  # the class body defines its own AsyncResult
from caraway.taskbase import AppLike, TaskBase
from caraway.utils import ids

if TYPE_CHECKING:
    from typing_extensions import Self, TypeVar

    #: what the task returns (Any for a signature built by name or from a dict)
    R = TypeVar("R", default=Any)
else:  # PEP 696 defaults are for the type checker; at run time a plain TypeVar does
    from typing import TypeVar

    R = TypeVar("R")

#: options that tie a task to a group or chord; composite canvases hand them to the task
#: whose completion stands for the whole (a chain's last step, a chord's body)
_JOIN_OPTIONS = ("group_id", "group_index", "chord")
#: options that make sense only on one published message, never copied to members
_PER_MESSAGE = ("task_id", *_JOIN_OPTIONS, "link", "link_error", "chain")


def _current_app() -> AppLike:
    app: AppLike = current.get_current_app()
    return app


def new_id() -> str:
    return ids.new_id()


#: composite canvases by ``subtask_type``, and batch signatures by built-in task name
_TYPES: dict[str, type[Signature]] = {}
SignatureT = TypeVar("SignatureT", bound="Signature[Any]")
_BY_TASK: dict[str, type[Signature]] = {}


class Signature(dict[str, Any], Generic[R]):
    """A task call's arguments and options, to be applied later or passed to a workflow.

    ``Signature('proj.tasks.add', (2, 2), countdown=10)``, ``add.s(2, 2)``, ``add.si(2)``.
    Calling it runs the task here; ``delay``/``apply_async`` send it, with partial
    arguments prepended (unless immutable) and partial kwargs merged. ``add.s(...)`` is a
    ``Signature[R]`` of the task's return type: results and calls are typed, partial
    arguments are not checked (a chain may complete them).
    """

    _app: AppLike | None = None
    #: a workflow's ``kwargs`` holds its members: ``clone(kwargs=...)`` must not replace them
    _kwargs_hold_members: ClassVar[bool] = False
    #: what the wire form's ``subtask_type`` (or a built-in task name) makes of a dict
    kind: ClassVar[str | None] = None

    def __init_subclass__(
        cls, *, kind: str | None = None, builtin: str | None = None, **rest: Any
    ) -> None:
        super().__init_subclass__(**rest)
        if kind is not None:
            cls.kind = kind
            _TYPES[kind] = cls
        if builtin is not None:
            _BY_TASK[builtin] = cls

    def __init__(
        self,
        task: str | TaskBase | Mapping[str, Any] | None = None,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        subtask_type: str | None = None,
        immutable: bool = False,
        app: AppLike | None = None,
        **extra_options: Any,
    ) -> None:
        if isinstance(task, Mapping):
            check_fields(task)
            super().__init__(_copy_fields(task))
            self._app = app
            return
        name = task if isinstance(task, str) or task is None else task.name
        if task is not None and not isinstance(task, str):
            app = app or task.app
        super().__init__(
            task=name,
            args=tuple(args or ()),
            kwargs=dict(kwargs or {}),
            options={**(options or {}), **extra_options},
            subtask_type=subtask_type,
            immutable=bool(immutable),
        )
        self._app = app

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_task(
        cls,
        task: TaskBase,
        args: Iterable[Any] | None,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any],
    ) -> Signature:
        """What ``task.signature(args, kwargs, **options)`` returns."""
        options = dict(options)
        immutable = bool(options.pop("immutable", False))
        return cls(task, args, kwargs, options, immutable=immutable, app=task.app)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: AppLike | None = None) -> Signature:
        """Rebuild the right canvas type from Celery's dict form; ValueError when malformed."""
        check_fields(data)
        kind = data.get("subtask_type")
        target = _TYPES.get(str(kind)) if kind else _BY_TASK.get(str(data.get("task")))
        if target is not None:
            if target is not cls and "from_dict" in vars(target):
                # a type registered with register_type() reads its own dicts (Celery's rule)
                rebuilt: Signature = target.from_dict(data, app=app)
                return rebuilt
            return target._from_fields(data, app)
        return Signature(data, app=app)

    @classmethod
    def register_type(
        cls, name: str | None = None
    ) -> Callable[[type[SignatureT]], type[SignatureT]]:
        """Class decorator: dicts whose ``subtask_type`` is ``name`` (default: the class's
        name) are rebuilt by the class's own ``from_dict``, as Celery's ``register_type``."""

        def register(subclass: type[SignatureT]) -> type[SignatureT]:
            _TYPES[name or subclass.__name__] = subclass
            return subclass

        return register

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any], app: AppLike | None) -> Signature:
        return Signature(data, app=app)

    # -- fields ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self["task"])

    task = name

    @property
    def args(self) -> tuple[Any, ...]:
        return tuple(self["args"])

    @property
    def kwargs(self) -> dict[str, Any]:
        value: dict[str, Any] = self["kwargs"]
        return value

    @property
    def options(self) -> dict[str, Any]:
        value: dict[str, Any] = self["options"]
        return value

    @property
    def subtask_type(self) -> str | None:
        value = self.get("subtask_type")
        return None if value is None else str(value)

    @property
    def immutable(self) -> bool:
        return bool(self.get("immutable"))

    @property
    def id(self) -> str | None:
        value = self.options.get("task_id")
        return None if value is None else str(value)

    @property
    def app(self) -> AppLike:
        return self._app if self._app is not None else _current_app()

    @property
    def type(self) -> TaskBase | None:
        """The registered Task of this name in this process, or None."""
        return self.app.tasks.get(self.name)

    # -- partial application ---------------------------------------------------------------
    def _merge(
        self,
        args: Iterable[Any] | None,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any] | None,
    ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
        merged_options = {**self.options, **(options or {})}
        if self.immutable:
            return self.args, dict(self.kwargs), merged_options
        return (*(args or ()), *self.args), {**self.kwargs, **(kwargs or {})}, merged_options

    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature[R]:
        """A deep copy, with partial arguments and options applied."""
        copy = self._plain_copy()
        if copy is None:
            copy = Signature.from_dict(to_wire(self), app=self._app)
        if args or kwargs:
            merged_args, merged_kwargs, _ = copy._merge(args, kwargs, None)
            copy["args"] = merged_args
            if not self._kwargs_hold_members:
                copy["kwargs"] = merged_kwargs
            elif kwargs:  # they were written over the members
                raise TypeError(
                    f"{type(self).__name__}.clone() takes partial positional arguments only; "
                    "give keyword arguments when applying it, or to its members"
                )
        copy.options.update(options)
        return copy

    def _plain_copy(self) -> Signature | None:
        """The copy a group member needs, without the wire round trip: only for a plain
        task signature whose options and arguments are flat scalars (nothing to share)."""
        if type(self) is not Signature or self.subtask_type is not None or self.name in _BY_TASK:
            return None
        options, args, kwargs = self["options"], self["args"], self["kwargs"]
        if not (
            type(options) is dict
            and type(kwargs) is dict
            and all(type(v) in _SCALARS for v in options.values())
            and all(type(v) in _SCALARS for v in args)
            and all(type(v) in _SCALARS for v in kwargs.values())
        ):
            return None
        copy = Signature.__new__(Signature)
        dict.__init__(
            copy,
            task=self["task"],
            args=tuple(args),
            kwargs=dict(kwargs),
            options=dict(options),
            subtask_type=None,
            immutable=bool(self.get("immutable", False)),
        )
        copy._app = self._app
        return copy

    #: Celery's alias of :meth:`clone`
    partial = clone

    def replace(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Signature[R]:
        """A copy whose args, kwargs or options are replaced by those given (not None)."""
        copy = self.clone()
        if args is not None:
            copy["args"] = tuple(args)
        if kwargs is not None:
            copy["kwargs"] = dict(kwargs)
        if options is not None:
            copy["options"] = dict(options)
        return copy

    @property
    def parent_id(self) -> str | None:
        value = self.options.get("parent_id")
        return None if value is None else str(value)

    @property
    def root_id(self) -> str | None:
        value = self.options.get("root_id")
        return None if value is None else str(value)

    def append_to_list_option(self, key: str, value: Any) -> Any:
        """Add ``value`` to the list option ``key`` unless it is there (Celery's helper)."""
        items = self.options.setdefault(key, [])
        if not isinstance(items, list):
            items = self.options[key] = [items]
        if value not in items:
            items.append(value)
        return value

    def extend_list_option(self, key: str, value: Iterable[Any]) -> None:
        """Add each of ``value`` to the list option ``key`` (Celery's helper)."""
        items = self.options.setdefault(key, [])
        if not isinstance(items, list):
            items = self.options[key] = [items]
        items.extend(value)

    def flatten_links(self) -> list[Signature]:
        """This signature and every callback linked under it, depth first."""
        found: list[Signature] = [self]
        for link in self.options.get("link") or ():
            linked = link if isinstance(link, Signature) else Signature.from_dict(link)
            found.extend(linked.flatten_links())
        return found

    def set(self, immutable: bool | None = None, **options: Any) -> Self:
        """Set options in place (``queue``, ``countdown``, ``priority``...); returns self."""
        if immutable is not None:
            self["immutable"] = bool(immutable)
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = bool(immutable)

    def link(self, callback: Mapping[str, Any]) -> Mapping[str, Any]:
        """Run ``callback`` with this task's result when it succeeds."""
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Mapping[str, Any]) -> Mapping[str, Any]:
        """Run ``errback`` when this task fails."""
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def on_error(self, errback: Mapping[str, Any]) -> Self:
        """``link_error`` that returns this signature, for chaining calls (Celery's)."""
        self.link_error(errback)
        return self

    # -- stamping (Celery 5.3+) ------------------------------------------------------------
    def stamp(
        self, visitor: StampingVisitor | None = None, append_stamps: bool = False, **headers: Any
    ) -> Self:
        """Add stamps: headers that travel with this task's message and its follow-ups.

        ``headers`` and what ``visitor.on_signature(self, **headers)`` returns become
        ``stamped_headers`` and ``stamps`` on the wire (``self.request.stamps`` in the
        task). With ``append_stamps`` a stamp already set keeps its values and gains the
        new ones, as a list.
        """
        if visitor is not None:
            headers = {**headers, **(visitor.on_signature(self, **headers) or {})}
        self._add_stamps(headers, append_stamps)
        return self

    def stamp_links(
        self, visitor: StampingVisitor | None = None, append_stamps: bool = False, **headers: Any
    ) -> None:
        """Stamp this task's callbacks and errbacks (``on_callback``/``on_errback``)."""
        for key, hook in (("link", "on_callback"), ("link_error", "on_errback")):
            links = self.options.get(key) or []
            for index, link in enumerate(links):
                found = link if isinstance(link, Signature) else Signature.from_dict(link)
                extra = getattr(visitor, hook)(found, **headers) if visitor else {}
                found.stamp(None, append_stamps, **{**headers, **(extra or {})})
                links[index] = found

    def _add_stamps(self, headers: Mapping[str, Any], append: bool) -> None:
        names = list(self.options.get("stamped_headers") or [])
        for name, given in headers.items():
            value = given
            if append and name in names:
                old = self.options.get(name)
                old_list = list(old) if isinstance(old, (list, tuple)) else [old]
                new = list(given) if isinstance(given, (list, tuple)) else [given]
                value = old_list + [item for item in new if item not in old_list]
            self.options[name] = value
            if name not in names:
                names.append(name)
        self.options["stamped_headers"] = names

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Assign the task id now (kept when sent) and return its result handle."""
        options = self.options
        if _id is not None:
            options["task_id"] = _id
        options.setdefault("task_id", new_id())
        for key, value in (
            ("group_id", group_id),
            ("chord", chord),
            ("root_id", root_id),
            ("parent_id", parent_id),
            ("group_index", group_index),
        ):
            if value is not None:
                options[key] = value
        return self.AsyncResult(str(options["task_id"]))

    def AsyncResult(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, app=self.app, task_name=self.name)

    # -- applying --------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> R:
        """Run the task in this process, as calling the function would (Celery's rule)."""
        task = self.type
        if task is None:
            raise NotRegistered(f"task {self.name!r} is not registered in this process")
        merged_args, merged_kwargs, _ = self._merge(args, kwargs, None)
        value: R = task(*merged_args, **merged_kwargs)
        return value

    def delay(self, *args: Any, **kwargs: Any) -> _Sent[R]:
        return self.apply_async(args, kwargs)

    def __invert__(self) -> R:
        """``~sig``: send it and wait for its result (Celery's shortcut)."""
        return self.apply_async().get()

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> _Sent[R]:
        """Send the task; partial ``args`` are prepended to the signature's own."""
        return self._send_with(args, kwargs, options, None)

    def _send_with(
        self,
        args: Iterable[Any] | None,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any],
        wire: Mapping[str, Any] | None,
    ) -> _Sent[R]:
        """apply_async, with ``wire``: options already in their wire form, set last.

        A chord sends its body's wire form with each of its header's tasks; converting it
        again per task was a fifth of sending a chord of 1,000.
        """
        merged_args, merged_kwargs, merged_options = self._merge(args, kwargs, options)
        merged_options = stamps_as_headers(merged_options)
        wire_options = {key: to_wire(value) for key, value in merged_options.items()}
        if wire:
            wire_options.update(wire)
        task = self.type
        if task is not None:
            return task.apply_async(merged_args, merged_kwargs, **wire_options)
        return self.app.send_task(self.name, merged_args, merged_kwargs, **wire_options)

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult[R]:
        """Run the task here, as a worker would, returning an EagerResult."""
        task = self.type
        if task is None:
            raise NotRegistered(f"task {self.name!r} is not registered in this process")
        merged_args, merged_kwargs, merged_options = self._merge(args, kwargs, options)
        task_id = merged_options.get("task_id")
        return task.apply(merged_args, merged_kwargs, task_id=task_id)

    # -- composing -------------------------------------------------------------------------
    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        """``a | b``: a chain, or a chord when a group is followed by one task (Celery's rule)."""
        if not isinstance(other, Signature):
            return NotImplemented
        if self.kind == "group" and other.kind not in ("group", "chain"):
            return _TYPES["chord"](self, other, app=self._app)
        left = list(self.kwargs["tasks"]) if self.kind == "chain" else [self]
        right = list(other.kwargs["tasks"]) if other.kind == "chain" else [other]
        return _TYPES["chain"](*left, *right, app=self._app or other._app)

    def reprcall(self, *args: Any, **kwargs: Any) -> str:
        merged_args, merged_kwargs, _ = self._merge(args, kwargs, None)
        parts = [repr(arg) for arg in merged_args]
        parts += [f"{key}={value!r}" for key, value in merged_kwargs.items()]
        return f"{self.name}({', '.join(parts)})"

    def __repr__(self) -> str:
        return self.reprcall()

    def __deepcopy__(self, memo: dict[int, Any]) -> Signature:
        return self.clone()

    def __reduce__(self) -> Any:
        return (Signature.from_dict, (to_wire(self),))


class StampingVisitor(abc.ABC):
    """Decides the stamps of each part of a canvas (Celery 5.3's visitor).

    ``sig.stamp(visitor=MyVisitor())`` calls the hook that fits each part; each returns the
    headers to stamp on it (a dict, possibly empty). Only ``on_signature`` is required.
    """

    @abc.abstractmethod
    def on_signature(self, sig: Signature, **headers: Any) -> dict[str, Any]:
        """The stamps of one task signature."""

    def on_group_start(self, group: Signature, **headers: Any) -> dict[str, Any]:
        return {}

    def on_group_end(  # noqa: B027 - a hook: nothing unless a visitor says
        self, group: Signature, **headers: Any
    ) -> None:
        """Called after a group's members were stamped."""

    def on_chain_start(self, chain: Signature, **headers: Any) -> dict[str, Any]:
        return {}

    def on_chain_end(  # noqa: B027 - a hook: nothing unless a visitor says
        self, chain: Signature, **headers: Any
    ) -> None:
        """Called after a chain's steps were stamped."""

    def on_chord_header_start(self, chord: Signature, **header: Any) -> dict[str, Any]:
        return {}

    def on_chord_header_end(  # noqa: B027 - a hook: nothing unless a visitor says
        self, chord: Signature, **header: Any
    ) -> None:
        """Called after a chord's header was stamped."""

    def on_chord_body(self, chord: Signature, **header: Any) -> dict[str, Any]:
        return {}

    def on_callback(self, callback: Signature, **header: Any) -> dict[str, Any]:
        return {}

    def on_errback(self, errback: Signature, **header: Any) -> dict[str, Any]:
        return {}


def stamps_as_headers(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options with the stamps (``stamped_headers`` and the values they name) moved into
    ``headers`` as Celery's ``stamped_headers``/``stamps`` message headers."""
    names = options.get("stamped_headers")
    if not names:
        return dict(options)
    found = {key: value for key, value in options.items() if key not in names}
    found.pop("stamped_headers", None)
    found.pop("stamps", None)
    stamps = {name: options.get(name) for name in names}
    headers = dict(found.get("headers") or {})
    headers.update(stamped_headers=list(names), stamps=stamps)
    found["headers"] = headers
    return found


def _copy_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "task": data["task"],
        "args": tuple(data.get("args") or ()),
        "kwargs": dict(data.get("kwargs") or {}),
        "options": dict(data.get("options") or {}),
        "subtask_type": data.get("subtask_type"),
        "immutable": bool(data.get("immutable", False)),
    }


_SCALARS = frozenset({str, int, float, bool, type(None)})


def to_wire(value: Any) -> Any:
    """Plain JSON-ready data: signatures become dicts, tuples lists, recursively."""
    if type(value) in _SCALARS:  # most values: skip the two ABC checks
        return value
    if isinstance(value, Mapping):
        return {str(key): to_wire(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_wire(item) for item in value]
    return value


def maybe_signature(value: Any, app: AppLike | None = None) -> Signature | None:
    """``None`` stays None, a Signature stays itself, a dict becomes the right Signature."""
    if value is None or isinstance(value, Signature):
        return value
    if isinstance(value, Mapping):
        return Signature.from_dict(value, app=app)
    raise TypeError(f"expected a signature or its dict form, got {value!r:.100}")


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """``signature('proj.tasks.add', args=(2, 2))``, or a dict from the wire back to a Signature."""
    app = kwargs.pop("app", None)
    if isinstance(varies, Mapping):
        if isinstance(varies, Signature):
            return varies.clone()
        return Signature.from_dict(varies, app=app)
    return Signature(varies, *args, app=app, **kwargs)


def strip_repeated_module(task_name: str, text: str) -> str:
    """Celery's reprs name the first task in full and drop its module from the rest."""
    module = task_name.rpartition(".")[0]
    if not module:
        return text
    module += "."
    start = text.find(module)
    if start < 0:
        return text
    cut = start + len(module)
    return text[:cut] + text[cut:].replace(module, "")


def require_chord_backend(app: AppLike) -> None:
    """Refuse a chord up front when nothing could count its header (Celery refuses too)."""
    hint = (
        "chords need a result backend that counts the header atomically: set "
        "result_backend to 'redis://...' or a SQLite file ('sqlite:///results.db')"
    )
    if app.conf.task_ignore_result:
        raise ImproperlyConfigured(f"task_ignore_result is on, so a chord cannot join; {hint}")
    backend = app.backend
    if backend is None:
        raise ImproperlyConfigured(f"no result backend is configured; {hint}")
    if not isinstance(backend, ChordStore):
        scheme = backend.url.partition("://")[0]
        raise ImproperlyConfigured(f"the {scheme!r} result backend does not support chords; {hint}")


def check_serialisable(sig: Signature) -> None:
    """Raise before anything is sent when the workflow's arguments cannot travel."""
    if sig.app.conf.task_serializer == "json":
        dumps_json(to_wire(sig))


def split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(join options for the completing task, options every member shares)."""
    join = {key: options[key] for key in _JOIN_OPTIONS if options.get(key) is not None}
    shared = {key: value for key, value in options.items() if key not in _PER_MESSAGE}
    return join, shared


subtask = signature

"""The composite canvases: chain, group, chord, and the batch signatures map/starmap/chunks.

Each is a :class:`~caraway.canvas.signature.Signature` in Celery's dict form, its parts in
``kwargs`` (``tasks``; ``header``/``body``; ``task``/``it``/``n``). The one thing to know:
only the first messages are published from here; a chain's later steps ride in the first
message's ``embed.chain`` and a chord's body in every header message's ``embed.chord``,
and the worker follows them (chord joins counted by the result backend, ``caraway.chords``).
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from caraway.canvas.signature import (
    _SCALARS,
    Signature,
    StampingVisitor,
    check_serialisable,
    maybe_signature,
    new_id,
    require_chord_backend,
    split_options,
    strip_repeated_module,
    to_wire,
)
from caraway.result import AsyncResult, GroupResult
from caraway.taskbase import AppLike

if TYPE_CHECKING:
    from typing_extensions import Self


def _sig(value: Any, app: AppLike | None) -> Signature:
    found = maybe_signature(value, app)
    if found is None:
        raise ValueError("a canvas member cannot be None")
    return found


def _app_of(sigs: Iterable[Signature]) -> AppLike | None:
    """A canvas built without ``app=`` uses its members' app (their tasks know it)."""
    return next((sig._app for sig in sigs if sig._app is not None), None)


def _options(data: Mapping[str, Any]) -> dict[str, Any]:
    return dict(data.get("options") or {})


def _listify(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


#: what applying a composite returns: a GroupResult for a group, the last result otherwise
ResultT = TypeVar("ResultT")


class _Composite(Signature, Generic[ResultT], abc.ABC):
    """What chain, group and chord share: how a call is opened before their own sending.

    Partial kwargs go to the members, not into ``kwargs``.
    """

    #: ``kwargs`` holds the members (and a chord's partial kwargs), not the call's
    _kwargs_hold_members: ClassVar[bool] = True

    def _merge(
        self,
        args: Iterable[Any] | None,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any] | None,
    ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
        return (*(args or ()), *self.args), dict(kwargs or {}), {**self.options, **(options or {})}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def reprcall(self, *args: Any, **kwargs: Any) -> str:
        return repr(self)

    def apply_async(  # type: ignore[override]  # a workflow returns its own result type
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ResultT:
        """Run it here under ``task_always_eager``; otherwise check everything that can be
        checked before anything is sent (a backend that can count a chord it contains, the
        arguments' encoding), then send its first messages.

        Raises ImproperlyConfigured when a chord in it has nothing to count its header.
        """
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        merged_args, merged_kwargs, merged = self._merge(args, kwargs, options)
        if self._joins_chord():
            require_chord_backend(self.app)
        check_serialisable(self)
        return self._send(merged_args, merged_kwargs, merged)

    def _joins_chord(self) -> bool:
        """True when applying this joins a chord somewhere (``group | task`` counts too)."""
        return False

    @abc.abstractmethod
    def apply(  # type: ignore[override]  # a workflow returns its own result type
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ResultT:
        """Run it here, as eager mode does."""

    @abc.abstractmethod
    def _send(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> ResultT:
        """Send its first messages; what the caller gets back."""


class _Members(_Composite[ResultT]):
    """Chain and group: their parts are a list of signatures in ``kwargs.tasks``."""

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any], app: AppLike | None) -> Signature:
        tasks = (data.get("kwargs") or {}).get("tasks") or []
        build: Any = cls  # chain(*tasks) / group(*tasks), not Signature's constructor
        found: Signature = build(
            [Signature.from_dict(task, app) for task in tasks], app=app, **_options(data)
        )
        found["args"] = tuple(data.get("args") or ())
        return found

    @property
    def tasks(self) -> list[Signature]:
        value: list[Signature] = self.kwargs["tasks"]
        return value

    def stamp(
        self, visitor: StampingVisitor | None = None, append_stamps: bool = False, **headers: Any
    ) -> Self:
        """Stamp this and every member, between the visitor's ``on_chain_start``/``_end``
        (or ``on_group_...``) hooks."""
        kind = "chain" if self.kind == "chain" else "group"
        if visitor is not None:
            start = getattr(visitor, f"on_{kind}_start")
            headers = {**headers, **(start(self, **headers) or {})}
        self._add_stamps(headers, append_stamps)
        for member in self.tasks:
            member.stamp(visitor, append_stamps, **headers)
        if visitor is not None:
            getattr(visitor, f"on_{kind}_end")(self, **headers)
        return self


def _joins_chord(sig: Signature) -> bool:
    return isinstance(sig, _Composite) and bool(sig._joins_chord())


class _chain(_Members[Any], kind="chain"):
    """Steps run one after another, each result prepended to the next step's args."""

    _results: list[Any]

    def __init__(self, *tasks: Any, app: AppLike | None = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping):
            tasks = tuple(tasks[0])
        steps: list[Signature] = []
        for task in tasks:
            step = _sig(task, app)
            steps.extend(step.tasks if isinstance(step, _chain) else [step])
        app = app or _app_of(steps)
        Signature.__init__(
            self, "celery.chain", (), {"tasks": steps}, options, subtask_type="chain", app=app
        )

    def _prepared(self, join: Mapping[str, Any]) -> list[Signature]:
        steps = _prepare_steps(self.tasks, self._app)
        if not steps:
            raise ValueError("cannot apply an empty chain")
        if join:
            steps[-1] = attach(steps[-1], join)
        reply_to = self.app.thread_oid
        results: list[Any] = []
        for step in steps:
            if step is not steps[0] and not step.subtask_type:
                step.options.setdefault("reply_to", reply_to)
            result = step.freeze()
            if results and getattr(result, "parent", True) is None:
                result.parent = results[-1]
            results.append(result)
        self.kwargs["tasks"] = steps
        self._results = results
        return steps

    def freeze(self, _id: str | None = None, *args: Any, **kwargs: Any) -> Any:
        self._prepared({})
        return self._results[-1]

    def _joins_chord(self) -> bool:
        return any(_joins_chord(step) for step in _prepare_steps(self.tasks, self._app))

    def _send(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]) -> Any:
        """Publish the first step with the rest in ``embed.chain``; the last step's result."""
        join, shared = split_options(options)
        steps = self._prepared(join)
        first, rest = steps[0], steps[1:]
        last = steps[-1]
        for key in ("link", "link_error"):
            for callback in _listify(options.get(key) or []):
                getattr(last, key)(callback)
        if rest:
            shared["chain"] = [to_wire(step) for step in reversed(rest)]
        first.apply_async(args, kwargs, **shared)
        return self._results[-1]

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run every step here in order (eager mode); the last step's EagerResult."""
        merged_args, merged_kwargs, _ = self._merge(args, kwargs, options)
        result: Any = None
        for index, step in enumerate(_prepare_steps(self.tasks, self._app)):
            if index == 0:
                result = step.apply(merged_args, merged_kwargs)
            else:
                result = step.apply((result.get(),))
        return result

    def __repr__(self) -> str:
        if not self.tasks:
            return f"<chain@{id(self):#x}: empty>"
        text = " | ".join(repr(task) for task in self.tasks)
        return strip_repeated_module(self.tasks[0].name, text)


chain = _chain


def _prepare_steps(tasks: list[Signature], app: AppLike | None) -> list[Signature]:
    """Clone the steps; ``group | next`` becomes ``chord(group, next)`` (as Celery does), and
    whatever follows a chord moves into its body, so the worker's ``embed.chain`` only ever
    holds plain tasks up to one final composite step (it publishes steps as plain messages).
    """
    steps = [task.clone() for task in tasks]
    upgraded: list[Signature] = []
    index = 0
    while index < len(steps):
        step = steps[index]
        if isinstance(step, group) and index + 1 < len(steps):
            step = chord(step, steps[index + 1], app=app)
            index += 1
        upgraded.append(step)
        index += 1
    for position, step in enumerate(upgraded):
        if isinstance(step, chord) and position < len(upgraded) - 1 and step.body is not None:
            body = _chain(step.body, *upgraded[position + 1 :], app=app)
            upgraded[position] = chord(step.header, body, app=app, **step.options)
            return upgraded[: position + 1]
    return upgraded


class group(_Members[GroupResult], kind="group"):
    """Members run in parallel; ``g(10)`` prepends 10 to every (mutable) member's args."""

    def __init__(self, *tasks: Any, app: AppLike | None = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping):
            tasks = tuple(tasks[0])
        members = [_sig(task, app) for task in tasks]
        app = app or _app_of(members)
        Signature.__init__(
            self, "celery.group", (), {"tasks": members}, options, subtask_type="group", app=app
        )

    def _plain_copy(self) -> Signature | None:
        """A group of plain task signatures copied member by member, as a plain task is,
        instead of through its wire form (a chord of 1,000 cloned its header that way)."""
        options, args, kwargs = self["options"], self["args"], self["kwargs"]
        if (
            type(self) is not group
            or type(options) is not dict
            or args
            or list(kwargs) != ["tasks"]
            or not all(type(value) in _SCALARS for value in options.values())
        ):
            return None
        copies = []
        for task in self.tasks:
            copy = task._plain_copy()
            if copy is None:
                return None
            copies.append(copy)
        cloned = group.__new__(group)
        Signature.__init__(
            cloned,
            "celery.group",
            (),
            {"tasks": copies},
            dict(options),
            subtask_type="group",
            immutable=bool(self.get("immutable", False)),
            app=self._app,
        )
        return cloned

    def members(self) -> list[Signature]:
        """Copies of the members, nested groups unrolled into this one (as Celery does)."""
        found: list[Signature] = []
        for task in self.tasks:
            found.extend(task.members() if isinstance(task, group) else [task.clone()])
        return found

    def freeze(self, _id: str | None = None, *args: Any, **kwargs: Any) -> GroupResult:
        if _id is not None:
            self.options["task_id"] = _id
        group_id = str(self.options.setdefault("task_id", new_id()))
        members = self.members()
        results = [member.freeze() for member in members]
        self.kwargs["tasks"] = members
        return GroupResult(group_id, results, app=self.app)

    def _joins_chord(self) -> bool:
        return any(_joins_chord(member) for member in self.tasks)

    def skew(self, start: float = 1.0, stop: float | None = None, step: float = 1.0) -> group:
        """Spread the members out: ``countdown`` start, start+step, ... up to ``stop``, the
        last value repeating once it is reached (Celery's ``fxrange(repeatlast=True)``)."""
        countdown = float(start)
        for index, member in enumerate(self.tasks):
            following = start + index * step
            if stop is None or following <= stop:
                countdown = float(following)
            member.set(countdown=countdown)
        return self

    def _send(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> GroupResult:
        """Publish every member with ``group_id``/``group_index``; a GroupResult in order."""
        group_id = str(options.get("task_id") or new_id())
        _, shared = split_options(options)
        with self.app.publishing_batch():  # one round trip for the whole group
            results = [
                member.apply_async(args, kwargs, group_id=group_id, group_index=index, **shared)
                for index, member in enumerate(self.members())
            ]
        return GroupResult(group_id, results, app=self.app)

    def apply(  # type: ignore[override]  # a workflow returns its own result type
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        merged_args, merged_kwargs, merged = self._merge(args, kwargs, options)
        group_id = str(merged.get("task_id") or new_id())
        results = [member.apply(merged_args, merged_kwargs) for member in self.members()]
        return GroupResult(group_id, results, app=self.app)

    def __repr__(self) -> str:
        if not self.tasks:
            return "group(<empty>)"
        return strip_repeated_module(self.tasks[0].name, f"group({self.tasks!r})")


def _as_group(header: Any, app: AppLike | None) -> group:
    if isinstance(header, group):
        return header
    if isinstance(header, Mapping):
        found = Signature.from_dict(header, app)
        return found if isinstance(found, group) else group([found], app=app)
    return group(header, app=app)


class chord(_Composite[Any], kind="chord"):
    """A header group, then a body called with the list of the header's results, in order."""

    def __init__(
        self,
        header: Any,
        body: Any = None,
        task: str = "celery.chord",
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        app: AppLike | None = None,
        **options: Any,
    ) -> None:
        header_group = _as_group(header, app)
        body_sig = maybe_signature(body, app)
        app = app or _app_of([header_group, *([body_sig] if body_sig is not None else [])])
        parts = {"kwargs": dict(kwargs or {}), "header": header_group, "body": body_sig}
        Signature.__init__(self, task, args, parts, options, subtask_type="chord", app=app)

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any], app: AppLike | None) -> Signature:
        parts = data.get("kwargs") or {}
        return cls(
            parts.get("header") or [],
            parts.get("body"),
            args=data.get("args"),
            kwargs=parts.get("kwargs"),
            app=app,
            **_options(data),
        )

    @property
    def header(self) -> group:
        value: group = self.kwargs["header"]
        return value

    @property
    def body(self) -> Signature | None:
        value: Signature | None = self.kwargs.get("body")
        return value

    @property
    def tasks(self) -> list[Signature]:
        return self.header.tasks

    def _merge(
        self,
        args: Iterable[Any] | None,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any] | None,
    ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
        partial = {**(self.kwargs.get("kwargs") or {}), **(kwargs or {})}
        return (*(args or ()), *self.args), partial, {**self.options, **(options or {})}

    def __call__(self, body: Any = None, **options: Any) -> Any:
        """``chord(header, body)()`` or ``chord(header)(body)``: apply it."""
        return self.apply_async((), {"body": body} if body is not None else {}, **options)

    def _body_for(self, body: Any, join: Mapping[str, Any], group_id: str) -> Signature:
        found = maybe_signature(body, self._app) or self.body
        if found is None:
            raise ValueError("chord has no body: use chord(header, body) or chord(header)(body)")
        found = attach(found, join) if join else found.clone()
        if not found.subtask_type:
            # Celery's wire form: a task body names the header's group. A composite body
            # must not get it: its options' group_id would re-join its last step to this
            # (already complete) header instead of the chord it is a member of.
            found.options.setdefault("group_id", group_id)
            found.options.setdefault("reply_to", self.app.thread_oid)
        return found

    def freeze(self, _id: str | None = None, *args: Any, **kwargs: Any) -> Any:
        """Fix the header's group id and the body's task id; returns the body's result."""
        header = self.header
        group_id = str(header.options.setdefault("task_id", new_id()))
        header.freeze()
        body = self._body_for(None, {}, group_id)
        self.kwargs["body"] = body
        self.options.setdefault("task_id", _id or new_id())
        return body.freeze()

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Publish the header with the body in ``embed.chord``; the body's result.

        ``kwargs['body']`` (``chord(header)(body)``) stands for the body. Raises
        ImproperlyConfigured when the result backend cannot count the header.
        """
        kwargs = dict(kwargs or {})
        body = kwargs.pop("body", None)
        target = self if body is None else chord(self.header, body, app=self._app, **self.options)
        return _Composite.apply_async(target, args, kwargs, **options)

    def _joins_chord(self) -> bool:
        return True

    def link_error(self, errback: Mapping[str, Any]) -> Mapping[str, Any]:
        """An errback of a chord runs when its body fails (or a header failure fails it)."""
        if self.body is not None:
            self.body.link_error(errback)
            return errback
        return super().link_error(errback)

    def stamp(
        self, visitor: StampingVisitor | None = None, append_stamps: bool = False, **headers: Any
    ) -> Self:
        """Stamp the header's members and the body, with the chord visitor hooks."""
        self._add_stamps(headers, append_stamps)
        header_stamps = dict(headers)
        if visitor is not None:
            header_stamps.update(visitor.on_chord_header_start(self, **headers) or {})
        self.header.stamp(visitor, append_stamps, **header_stamps)
        if visitor is not None:
            visitor.on_chord_header_end(self, **headers)
        body = self.body
        if body is not None:
            body_stamps = dict(headers)
            if visitor is not None:
                body_stamps.update(visitor.on_chord_body(self, **headers) or {})
            body.stamp(visitor, append_stamps, **body_stamps)
        return self

    def _send(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]) -> Any:
        app = self.app
        join, shared = split_options(options)
        header = _as_group(self.header.clone(), self._app)
        group_id = str(header.options.get("task_id") or new_id())
        body = self._body_for(None, join, group_id)
        for key in ("link", "link_error"):
            for callback in _listify(options.get(key) or []):
                getattr(body, key)(callback)
        result: AsyncResult = body.freeze()
        members = header.members()
        if not members:
            body.apply_async(([],), **shared)
            return result
        body_wire = to_wire(body)
        wire = {"chord": body_wire}
        backend: Any = app.backend
        backend.chord_set_size(
            group_id, len(members), expires=app.conf.result_expires_seconds() or 86400
        )
        with app.publishing_batch():  # the size is set above, before any header is sent
            results = [
                member._send_with(
                    args, kwargs, {"group_id": group_id, "group_index": index, **shared}, wire
                )
                if type(member) is Signature  # a canvas member has its own apply_async
                else member.apply_async(
                    args, kwargs, group_id=group_id, group_index=index, chord=body_wire, **shared
                )
                for index, member in enumerate(members)
            ]
        result.header = GroupResult(group_id, results, app=app)
        if result.parent is None:
            # as Celery's: get() on the body raises a failed header task's own error
            result.parent = result.header
        return result

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        kwargs = dict(kwargs or {})
        body = maybe_signature(kwargs.pop("body", None), self._app) or self.body
        if body is None:
            raise ValueError("chord has no body: use chord(header, body)")
        merged_args, merged_kwargs, merged = self._merge(args, kwargs, options)
        body = body.clone()
        for key in ("link", "link_error"):
            for callback in _listify(merged.get(key) or []):
                getattr(body, key)(callback)
        values = self.header.apply(merged_args, merged_kwargs).get()
        return body.apply((values,))

    def __repr__(self) -> str:
        body = self.body
        if body is None:
            return f"<chord without body: {self.tasks!r}>"
        if isinstance(body, _chain) and body.tasks:
            first, rest = body.tasks[0], body.tasks[1:]
            text = f"%({first.reprcall(self.tasks)} | {_chain(rest, app=self._app)!r})"
            return strip_repeated_module(first.name, text)
        return "%" + strip_repeated_module(body.name, body.reprcall(self.tasks))


def attach(sig: Signature, join: Mapping[str, Any]) -> Signature:
    """A copy of ``sig`` whose completing task carries ``join`` (group/chord membership).

    A chain hands it to its last step, a chord to its body; a group standing where one
    task must report (a chain's end, inside a chord header) is wrapped in a chord with
    ``celery.accumulate`` so its results arrive as one list, in order.
    """
    if not join:
        return sig
    if isinstance(sig, chord):
        body = sig.body
        if body is None:
            raise ValueError("a chord without a body cannot be part of a group or chord")
        return chord(sig.header.clone(), attach(body, join), app=sig._app, **sig.options)
    if isinstance(sig, _chain):
        tasks = [task.clone() for task in sig.tasks]
        if not tasks:
            raise ValueError("an empty chain cannot be part of a group or chord")
        tasks[-1] = attach(tasks[-1], join)
        return _chain(*tasks, app=sig._app, **sig.options)
    if isinstance(sig, group):
        if "chord" not in join:
            return sig.clone()
        accumulate = Signature("celery.accumulate", kwargs={"index": 0}, app=sig._app)
        return attach(chord(sig.clone(), accumulate, app=sig._app), join)
    return sig.clone(**join)


class xmap(Signature, builtin="celery.map"):
    """One ``celery.map`` message: the worker calls ``task(item)`` for each item in turn."""

    _task_name = "celery.map"
    _item = "x"

    def __init__(
        self, task: Any, it: Iterable[Any], app: AppLike | None = None, **options: Any
    ) -> None:
        parts = {"task": _sig(task, app), "it": list(it)}
        Signature.__init__(self, self._task_name, (), parts, options, immutable=True, app=app)

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any], app: AppLike | None) -> Signature:
        parts = data.get("kwargs") or {}
        return cls(parts["task"], parts.get("it") or [], app=app, **_options(data))

    def __repr__(self) -> str:
        task = self.kwargs["task"]
        return f"[{task['task']}({self._item}) for x in {_truncate(repr(self.kwargs['it']))}]"


class xstarmap(xmap, builtin="celery.starmap"):
    """One ``celery.starmap`` message: the worker calls ``task(*item)`` for each item."""

    _task_name = "celery.starmap"
    _item = "*x"


_group = group  # ``chunks.group()`` is a method: the class, by another name, inside it


class chunks(Signature, builtin="celery.chunks"):
    """``it`` split into parts of ``n``; applied as a group of ``celery.starmap`` messages."""

    def __init__(
        self, task: Any, it: Iterable[Any], n: int, app: AppLike | None = None, **options: Any
    ) -> None:
        parts = {"task": _sig(task, app), "it": list(it), "n": int(n)}
        Signature.__init__(self, "celery.chunks", (), parts, options, immutable=True, app=app)

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any], app: AppLike | None) -> Signature:
        parts = data.get("kwargs") or {}
        return cls(
            parts["task"], parts.get("it") or [], parts.get("n") or 1, app=app, **_options(data)
        )

    def group(self) -> _group:
        task, items, size = self.kwargs["task"], iter(self.kwargs["it"]), self.kwargs["n"]
        if size < 1:
            raise ValueError(f"chunks need a size of at least 1, got {size}")
        parts = iter(lambda: list(itertools.islice(items, size)), [])
        return _group([xstarmap(task, part, app=self._app) for part in parts], app=self._app)

    def __call__(self, *args: Any, **options: Any) -> Any:
        return self.apply_async(**options)

    def apply_async(  # type: ignore[override]  # a workflow returns its own result type
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        return self.group().apply_async(None, None, **{**self.options, **options})

    def apply(  # type: ignore[override]  # a workflow returns its own result type
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        return self.group().apply()


def _truncate(text: str, limit: int = 100) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + "..."


__all__ = ["attach", "chain", "chord", "chunks", "group", "xmap", "xstarmap"]

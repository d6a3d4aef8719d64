"""Celery's signature dicts as they travel inside messages, checked before anything runs.

A signature on the wire is ``{task, args, kwargs, options, subtask_type, immutable}``
(docs/design/protocol.md section 1.3); a chain keeps its steps in ``kwargs.tasks``, a group its
members there too, a chord its ``header`` and ``body``, and ``celery.map``/``starmap``/
``chunks`` their ``task`` and ``it``. What arrives from a broker is untrusted: this module
checks the shape, recursively and to a bounded depth, without building any canvas object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: deeper canvases than this are refused (a real workflow nests a handful of levels; a
#: hostile one nests until the checker, or the worker applying it, runs out of stack)
MAX_DEPTH = 64
_BATCH_TASKS = frozenset({"celery.map", "celery.starmap", "celery.chunks"})


def check_fields(value: Any, *, where: str = "signature") -> str:
    """Raise ValueError unless ``value``'s own fields are a signature's; returns its task name.

    Only this level is checked (a canvas object checks its parts as it builds them).
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"malformed {where}: {value!r:.100} is not a signature")
    task = value.get("task")
    if not isinstance(task, str) or not task:
        raise ValueError(f"malformed {where}: 'task' must be a task name, got {task!r:.100}")
    for key, kind in (("args", (list, tuple)), ("kwargs", Mapping), ("options", Mapping)):
        part = value.get(key)
        if part is not None and not isinstance(part, kind):
            raise ValueError(f"malformed {where} for {task!r}: {key!r} is {part!r:.100}")
    return task


def check_signature(value: Any, *, where: str = "signature", depth: int = 0) -> None:
    """Raise ValueError naming the first thing in ``value``, at any depth, that is not a
    signature dict."""
    if depth > MAX_DEPTH:
        raise ValueError(f"malformed {where}: canvas nested deeper than {MAX_DEPTH} levels")
    task = check_fields(value, where=where)
    _check_parts(value, task, where, depth + 1)


def _check_parts(value: Mapping[str, Any], task: str, where: str, depth: int) -> None:
    """The nested signatures of a composite: chain/group members, chord parts, batch task."""
    kind = value.get("subtask_type")
    kwargs = value.get("kwargs") or {}
    if kind in ("chain", "group"):
        members = kwargs.get("tasks") or []
        if not isinstance(members, (list, tuple)):
            raise ValueError(f"malformed {where}: a {kind}'s tasks are {members!r:.100}")
        for member in members:
            check_signature(member, where=f"{where} {kind} member", depth=depth)
    elif kind == "chord":
        header = kwargs.get("header") or []
        if isinstance(header, Mapping):
            check_signature(header, where=f"{where} chord header", depth=depth)
        elif isinstance(header, (list, tuple)):
            for member in header:
                check_signature(member, where=f"{where} chord header", depth=depth)
        else:
            raise ValueError(f"malformed {where}: a chord's header is {header!r:.100}")
        body = kwargs.get("body")
        if body is not None:
            check_signature(body, where=f"{where} chord body", depth=depth)
    elif kind is None and task in _BATCH_TASKS:
        check_signature(kwargs.get("task"), where=f"{where} {task} task", depth=depth)
        items = kwargs.get("it")
        if items is not None and not isinstance(items, (list, tuple)):
            raise ValueError(f"malformed {where}: {task}'s items are {items!r:.100}")


def check_embed(
    chain: Any = None, chord: Any = None, callbacks: Any = None, errbacks: Any = None
) -> None:
    """Raise ValueError naming the first malformed signature in a message's ``embed``.

    ``chain``/``callbacks``/``errbacks`` must be lists of signature dicts and ``chord`` one
    dict (or None). The worker calls this before running the task.
    """
    for key, value in (("chain", chain), ("callbacks", callbacks), ("errbacks", errbacks)):
        if value is None:
            continue
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"malformed embed: {key!r} must be a list, got {value!r:.100}")
        for item in value:
            check_signature(item, where=f"embed {key!r}")
    if chord is not None:
        check_signature(chord, where="embed 'chord'")

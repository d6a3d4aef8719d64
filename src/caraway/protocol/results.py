"""Result documents, exceptions and result tuples as Celery stores them (protocol.md §4).

Owns the document's field set and order, the ``{exc_type, exc_message, exc_module}``
form of an exception and the ``[[id, parent], children]`` tuple form. The one thing to
know: reading an exception never imports a module; an unknown type comes back as a
same-named subclass of :class:`~caraway.exceptions.RemoteTaskError`.
"""

from __future__ import annotations

import builtins
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Any

from caraway import exceptions, states
from caraway.exceptions import BackendError, ProtocolError, RemoteTaskError, SerializationError
from caraway.protocol.serializers import dumps_json, loads_json

# caraway's task errors are reported under the module Celery defines them in, so a
# Celery client rebuilds its own class, and such a name read back maps to ours.
_CELERY_MODULES: dict[str, str] = {
    "TaskRevokedError": "celery.exceptions",
    "ChordError": "celery.exceptions",
    "MaxRetriesExceededError": "celery.exceptions",
    "Retry": "celery.exceptions",
    "Reject": "celery.exceptions",
    "Ignore": "celery.exceptions",
    "TimeLimitExceeded": "billiard.exceptions",
    "SoftTimeLimitExceeded": "billiard.exceptions",
    "WorkerLostError": "billiard.exceptions",
}
_SYNTHETIC_LIMIT = 1024  # a hostile store could name endless types; stop caching then
_synthetic: dict[tuple[str, str], type[RemoteTaskError]] = {}


def _now_iso(zone: tzinfo | None = None) -> str:
    now = datetime.now(timezone.utc)
    return (now.astimezone(zone) if zone is not None else now).isoformat()


def _date_iso(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


def result_document(
    task_id: str,
    state: str,
    result: Any,
    *,
    traceback: str | None = None,
    children: Sequence[Any] | None = None,
    date_done: datetime | str | None = None,
    group_id: str | None = None,
    parent_id: str | None = None,
    extended: Mapping[str, Any] | None = None,
    zone: tzinfo | None = None,
) -> dict[str, Any]:
    """The document Celery's Redis backend stores for one state of one task.

    An exception ``result`` is stored as :func:`exception_to_dict`. ``children`` are
    result tuples; when omitted they are ``[]``, except for REVOKED where Celery writes
    null. ``date_done`` is filled in for ready states, in ``zone`` with its offset (the
    app's zone, as Celery's ``app.now()`` writes it; UTC when None). ``extended`` holds
    the ``result_extended`` fields (name, args, kwargs, worker, retries, queue).
    """
    if isinstance(result, BaseException):
        result = exception_to_dict(result)
    if children is None:
        children_value: list[Any] | None = None if state == states.REVOKED else []
    else:
        children_value = list(children)
    if date_done is None:
        done = _now_iso(zone) if state in states.READY_STATES else None
    else:
        done = _date_iso(date_done)
    document: dict[str, Any] = {
        "status": state,
        "result": result,
        "traceback": traceback,
        "children": children_value,
        "date_done": done,
    }
    if group_id:
        document["group_id"] = group_id
    if parent_id:
        document["parent_id"] = parent_id
    if extended:
        document.update(extended)
    document["task_id"] = task_id
    return document


def encode_document(document: Mapping[str, Any]) -> bytes:
    """JSON bytes of a result document (kombu type tags for dates, UUIDs, ...)."""
    return dumps_json(document)


def decode_document(raw: bytes | str) -> dict[str, Any]:
    """Parse a stored result document. BackendError when it is not a JSON object."""
    try:
        document = loads_json(raw)
    except ProtocolError as exc:
        raise BackendError(f"stored result is not readable: {exc}") from exc
    if not isinstance(document, dict):
        raise BackendError(f"stored result must be a JSON object, got {type(document).__name__}")
    return document


def chord_member(task_id: str, state: str, result_json: str) -> str:
    """One header task's entry in a chord join, as Celery 5.7's Redis backend writes it
    (protocol.md §4.6): ``[1, task_id, state, result]``, ``result_json`` already JSON.

    Every chord store keeps these strings and hands them, in ``group_index`` order, to the
    one completer; the text is Celery's byte for byte, since Celery workers read (and on
    Redis write) the same members.
    """
    return f"[1, {json.dumps(task_id)}, {json.dumps(state)}, {result_json}]"


def _json_safe(value: Any) -> Any:
    try:
        dumps_json(value)
    except SerializationError:
        return repr(value)
    return value


def exception_to_dict(exc: BaseException) -> dict[str, Any]:
    """``{exc_type, exc_message, exc_module}``: qualname, args made JSON-safe, module."""
    if isinstance(exc, RemoteTaskError):
        # Report what actually failed remotely, not our stand-in class.
        return {
            "exc_type": exc.exc_type,
            "exc_message": [_json_safe(arg) for arg in exc.exc_args],
            "exc_module": exc.exc_module,
        }
    cls = type(exc)
    module = cls.__module__
    if module == exceptions.__name__ and cls.__qualname__ in _CELERY_MODULES:
        module = _CELERY_MODULES[cls.__qualname__]
    return {
        "exc_type": cls.__qualname__,
        "exc_message": [_json_safe(arg) for arg in exc.args],
        "exc_module": module,
    }


def _lookup(module_name: str, qualname: str) -> Any:
    """The class at ``qualname`` in an already-imported module, or None.

    The names come from a result document, which anyone with access to the result store
    can write: each step is looked up in the module's or class's own ``__dict__``, so no
    module ``__getattr__`` (lazy imports), property or descriptor runs on the way.
    """
    if len(qualname) > _MAX_NAME or len(module_name) > _MAX_NAME:
        return None
    if module_name == "builtins":
        target: Any = builtins
    elif _CELERY_MODULES.get(qualname) == module_name:
        target = exceptions
    else:
        target = sys.modules.get(module_name)
    for index, part in enumerate(qualname.split(".")):
        # the module, then classes only (a nested class): never on into another module
        if target is None or not part or (index and not isinstance(target, type)):
            return None
        try:
            target = vars(target).get(part)
        except TypeError:  # sys.modules may hold an object without a __dict__
            return None
    return target


#: longer type or module names are not looked up (a dotted Python name is far shorter)
_MAX_NAME = 256


def _synthetic_class(module_name: str, qualname: str) -> type[RemoteTaskError]:
    key = (module_name, qualname)
    cls = _synthetic.get(key)
    if cls is None:
        name = qualname.rsplit(".", 1)[-1] or "RemoteTaskError"
        cls = type(name, (RemoteTaskError,), {"__module__": module_name, "__qualname__": qualname})
        if len(_synthetic) < _SYNTHETIC_LIMIT:
            _synthetic[key] = cls
    return cls


def _remote(module_name: str, qualname: str, args: list[Any]) -> BaseException:
    try:
        return _synthetic_class(module_name, qualname)(qualname, module_name, args)
    except Exception:  # e.g. a type name Python will not accept
        return RemoteTaskError(qualname, module_name, args)


def exception_from_dict(data: Mapping[str, Any]) -> BaseException:
    """Rebuild an exception from its stored form; never imports, never raises.

    Exception subclasses (not other BaseExceptions) that are builtins or classes of a
    module already in ``sys.modules`` come back as themselves. Anything else (module not imported, a
    name that is not an exception class, a constructor that fails on the stored
    args) comes back as a subclass of RemoteTaskError named like the original type.
    """
    qualname = str(data.get("exc_type") or "RemoteTaskError")
    module_name = str(data.get("exc_module") or "builtins")
    raw_args = data.get("exc_message")
    # Old Celery versions stored exc_message as a single string.
    args = list(raw_args) if isinstance(raw_args, (list, tuple)) else [raw_args]
    found = _lookup(module_name, qualname)
    # Exception only: a stored SystemExit or KeyboardInterrupt would end the process that
    # reads the result (get() raises what it rebuilds)
    if isinstance(found, type) and issubclass(found, Exception):
        try:
            return found(*args)
        except Exception:  # odd __init__ signatures; the fallback keeps the information
            pass
    return _remote(module_name, qualname, args)


@dataclass(frozen=True, slots=True)
class ResultRef:
    """A result named in tuple form: a task (``children is None``) or a group."""

    id: str
    parent: ResultRef | None = None
    children: tuple[ResultRef, ...] | None = None

    @property
    def is_group(self) -> bool:
        return self.children is not None


def result_tuple(task_id: str, parent: Sequence[Any] | None = None) -> list[Any]:
    """``[[task_id, parent_tuple_or_null], null]``: an AsyncResult in tuple form."""
    return [[task_id, parent], None]


def group_tuple(group_id: str, children: Sequence[str | Sequence[Any]]) -> list[Any]:
    """``[[group_id, null], [child_tuple, ...]]``; a child may be given as a bare id."""
    return [
        [group_id, None],
        [result_tuple(child) if isinstance(child, str) else child for child in children],
    ]


def parse_result_tuple(value: Any) -> ResultRef:
    """Read a task or group tuple (also a bare id). BackendError when malformed."""
    if isinstance(value, str):
        return ResultRef(value)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise BackendError(f"not a result tuple: {value!r:.200}")
    head, nodes = value
    if isinstance(head, str):
        task_id, parent_value = head, None
    elif isinstance(head, (list, tuple)) and len(head) == 2 and isinstance(head[0], str):
        task_id, parent_value = head
    else:
        raise BackendError(f"not a result tuple: {value!r:.200}")
    parent = parse_result_tuple(parent_value) if parent_value else None
    if nodes is None:
        return ResultRef(task_id, parent)
    if not isinstance(nodes, (list, tuple)):
        raise BackendError(f"group children must be an array: {value!r:.200}")
    return ResultRef(task_id, parent, tuple(parse_result_tuple(node) for node in nodes))


def parse_group_tuple(value: Any) -> ResultRef:
    """Read a group tuple; BackendError when ``value`` is not a group."""
    ref = parse_result_tuple(value)
    if ref.children is None:
        raise BackendError(f"not a group result tuple: {value!r:.200}")
    return ref

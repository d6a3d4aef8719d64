"""Result documents <-> rows of Celery's ``celery_taskmeta`` / ``celery_tasksetmeta``.

A document's fields go to the columns Celery's database backend writes (``result``,
``children``, ``args``, ``kwargs`` as JSON bytes, as Celery's json result serializer
writes them; ``date_done`` as a naive UTC timestamp); fields Celery has no column for go
to ``caraway_meta``. Reading builds the document back in the field order of
``caraway.protocol.results.result_document``. The one thing to know: only JSON results
can be read: a row Celery wrote with ``result_serializer='pickle'`` is reported, never
unpickled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from caraway.exceptions import BackendError, ProtocolError
from caraway.protocol.serializers import dumps_json, loads_json_plain

#: extended-result fields with a column of their own, JSON-encoded ones marked True
_EXTENDED = {
    "name": False,
    "args": True,
    "kwargs": True,
    "worker": False,
    "retries": False,
    "queue": False,
}
#: the columns :func:`document_from_row` reads, in order
TASK_COLUMNS = (
    "task_id",
    "status",
    "result",
    "traceback",
    "children",
    "date_done",
    "name",
    "args",
    "kwargs",
    "worker",
    "retries",
    "queue",
    "stamps",
    "caraway_meta",
)


def _parse(raw: bytes | str, what: str) -> Any:
    try:
        return loads_json_plain(raw)
    except ProtocolError as exc:
        raise BackendError(
            f"{what} is not JSON ({exc}); caraway reads results written with "
            "result_serializer='json' only"
        ) from exc


def _json(value: Any) -> bytes | None:
    return None if value is None else dumps_json(value)


def _date_column(value: Any) -> datetime | None:
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def _date_field(value: datetime | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite without type affinity, or a driver's choice
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


def task_row(task_id: str, document: bytes) -> dict[str, Any]:
    """The column values of one stored document (without expiry)."""
    doc = _parse(document, "a result document")
    if not isinstance(doc, dict):
        raise BackendError(f"a result document must be a JSON object, got {document[:80]!r}")
    row: dict[str, Any] = {
        "task_id": task_id,
        "status": doc.pop("status", None),
        "result": _json(doc.pop("result", None)),
        "traceback": doc.pop("traceback", None),
        "children": _json(doc.pop("children", None)),
        "date_done": _date_column(doc.pop("date_done", None)),
    }
    doc.pop("task_id", None)
    for name, encoded in _EXTENDED.items():
        value = doc.pop(name, None)
        row[name] = _json(value) if encoded else value
    headers = doc.get("stamped_headers")
    if isinstance(headers, list) and headers:
        doc.pop("stamped_headers")
        stamps = {header: doc.pop(header) for header in headers if header in doc}
        row["stamps"] = dumps_json({"stamped_headers": headers, "stamps": stamps})
    else:
        row["stamps"] = None
    row["caraway_meta"] = dumps_json(doc) if doc else None
    return row


def document_from_row(row: Sequence[Any]) -> bytes:
    """The document of a ``TASK_COLUMNS`` row, written by caraway or by Celery."""
    values = dict(zip(TASK_COLUMNS, row, strict=True))
    doc: dict[str, Any] = {
        "status": values["status"],
        "result": _read_json(values["result"], "the stored result"),
        "traceback": values["traceback"],
        "children": _read_json(values["children"], "the stored children"),
        "date_done": _date_field(values["date_done"]),
    }
    if values["caraway_meta"] is not None:
        doc.update(_read_json(values["caraway_meta"], "caraway_meta"))
    for name, encoded in _EXTENDED.items():
        value = values[name]
        if value is not None:
            doc[name] = _read_json(value, name) if encoded else value
    if values["stamps"] is not None:
        doc.update(_stamp_fields(_read_json(values["stamps"], "the stored stamps")))
    doc["task_id"] = values["task_id"]
    return dumps_json(doc)


def _stamp_fields(stamps: Any) -> dict[str, Any]:
    if not isinstance(stamps, Mapping):
        return {}
    fields: dict[str, Any] = {}
    if "stamped_headers" in stamps:
        fields["stamped_headers"] = stamps["stamped_headers"]
    if isinstance(stamps.get("stamps"), Mapping):
        fields.update(stamps["stamps"])
    return fields


def _read_json(value: Any, what: str) -> Any:
    if value is None:
        return None
    return _parse(bytes(value), what)


def group_row(group_id: str, document: bytes) -> dict[str, Any]:
    """Columns of a saved group: the result tuple in ``result`` as Celery stores it."""
    doc = _parse(document, "a group document")
    if not isinstance(doc, dict):
        raise BackendError(f"a group document must be a JSON object, got {document[:80]!r}")
    result = doc.pop("result", None)
    return {
        "taskset_id": group_id,
        "result": _json(result),
        "date_done": datetime.now(timezone.utc).replace(tzinfo=None),
        "caraway_meta": dumps_json(doc) if doc else None,
    }


def document_from_group_row(result: Any, meta: Any) -> bytes:
    doc: dict[str, Any] = {"result": _read_json(result, "the stored group")}
    if meta is not None:
        doc.update(_read_json(meta, "caraway_meta"))
    return dumps_json(doc)


__all__ = [
    "TASK_COLUMNS",
    "document_from_group_row",
    "document_from_row",
    "group_row",
    "task_row",
]

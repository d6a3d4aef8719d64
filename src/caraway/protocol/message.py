"""Celery task message protocol v2 <-> :class:`TaskMessage`.

This module and its siblings are the only code that knows Celery's envelope: everything
else handles :class:`Message` (bytes plus headers, what a broker carries) or
:class:`TaskMessage` (what a task call means). Facts: docs/protocol.md, section 1, and
the golden vectors in tests/vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class Message:
    """A message as any broker carries it: body bytes, headers and properties.

    ``properties`` holds the AMQP basic properties Celery sets (``correlation_id``,
    ``reply_to``, ``delivery_mode``, ``priority``, ``expiration``), whatever the broker.
    """

    body: bytes
    headers: dict[str, Any]
    content_type: str = "application/json"
    content_encoding: str = "utf-8"
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TaskMessage:
    """One task call, decoded: what to run, with what, and how it relates to others."""

    id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    callbacks: list[dict[str, Any]] | None = None
    errbacks: list[dict[str, Any]] | None = None
    chain: list[dict[str, Any]] | None = None
    chord: dict[str, Any] | None = None
    eta: datetime | None = None
    expires: datetime | None = None
    retries: int = 0
    group: str | None = None
    group_index: int | None = None
    root_id: str | None = None
    parent_id: str | None = None
    shadow: str | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    origin: str | None = None
    ignore_result: bool | None = None
    reply_to: str | None = None
    priority: int | None = None
    #: headers this module does not interpret (custom ``headers=``, stamps, ...), kept
    #: so that a re-published message (retry, chain step) carries them on.
    extra_headers: dict[str, Any] = field(default_factory=dict)

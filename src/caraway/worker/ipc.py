"""How a consumer and its supervisor talk: typed reports up, typed commands down.

Reports (consumer -> supervisor): :class:`TaskStarted`, :class:`TaskFinished` (a prefork
child sums them as :class:`Counted`), :class:`Holding`, :class:`Rejected`. Commands
(supervisor -> consumers, relaying remote control): :class:`Revoke`, :class:`AddConsumer`,
:class:`CancelConsumer`, :class:`SetTimeLimit`, :class:`SetRateLimit`,
:class:`SetTaskEvents`. A threads/solo consumer hands the records themselves to its
supervisor, in-process. A prefork child and its supervisor send them as
JSON lines (:func:`encode`, :func:`decode`; an unreadable line is logged and dropped) over
two pipes, with one exception that is the reason for the rest of this module: the task a
child starts is announced in a page of shared memory (:class:`RunningSlot`), before it runs
and without a syscall, and the child reads its command pipe only when the page says the
supervisor wrote to it. What else a child reports is queued and written whole, in one go.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import select
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from types import UnionType
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

import orjson

logger = logging.getLogger("caraway.worker")

T = TypeVar("T")

# -- the records -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskStarted:
    """A consumer starts a sync task: reported before it runs, since a child that dies takes
    it along (WorkerLostError, hard time limits, ``revoke --terminate``, ``inspect active``).
    ``async def`` tasks are not reported: they cancel themselves at their limits."""

    kind: ClassVar[str] = "started"
    task_id: str
    name: str
    delivery_tag: str
    acks_late: bool
    reject_on_worker_lost: bool
    time_limit: float | None
    soft_time_limit: float | None
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    queue: str | None = None
    #: CLOCK_MONOTONIC is one clock for every process of the machine: the supervisor
    #: measures a prefork child's task against its own clock
    started: float = field(default_factory=time.monotonic)
    wall_started: float = field(default_factory=time.time)
    #: the message's stamps (``revoke_by_stamped_headers(terminate=True)`` matches them)
    stamps: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TaskFinished:
    """A consumer's sync task ended with ``outcome`` (an Outcome's kind: "success", "failure",
    "retry", "reject"...): the supervisor counts it for ``inspect stats``."""

    kind: ClassVar[str] = "finished"
    task_id: str
    name: str
    outcome: str


@dataclass(frozen=True, slots=True)
class Counted:
    """How many sync tasks named ``name`` ended with ``outcome`` since the last report: a
    prefork child's :class:`TaskFinished` records, summed. In a drain they were a line per
    task and a wake-up of the supervisor per batch of each child (a tenth of a core)."""

    kind: ClassVar[str] = "counted"
    name: str
    outcome: str
    count: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """A consumer set a message aside in the dead-letter store without running it (bad
    input, an unregistered task...): the supervisor counts it for ``inspect stats``."""

    kind: ClassVar[str] = "rejected"
    task_id: str
    reason: str


#: (task id, task name, argsrepr, kwargsrepr, queue) of a message a consumer holds; the
#: reprs and queue are what ``inspect reserved/scheduled`` show (Flower reads them)
TaskRef = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Holding:
    """The messages a consumer holds and has not started (``inspect reserved/scheduled``):
    ``reserved`` wait for a slot, ``scheduled`` for their ETA (unix time) or rate limit."""

    kind: ClassVar[str] = "holding"
    reserved: tuple[TaskRef, ...] = ()
    scheduled: tuple[tuple[float, TaskRef], ...] = ()


@dataclass(frozen=True, slots=True)
class Revoke:
    """Do not run these tasks (remote control ``revoke``, or ids recorded on the broker)."""

    kind: ClassVar[str] = "revoke"
    task_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RevokeStamps:
    """Do not run tasks stamped with any of these values (``revoke_by_stamped_headers``):
    stamp name -> the revoked values, added to those revoked before."""

    kind: ClassVar[str] = "revoke_stamps"
    headers: dict[str, list[Any]]


@dataclass(frozen=True, slots=True)
class AddConsumer:
    """Consume from ``queue`` too."""

    kind: ClassVar[str] = "add_consumer"
    queue: str


@dataclass(frozen=True, slots=True)
class CancelConsumer:
    """Stop consuming from ``queue``."""

    kind: ClassVar[str] = "cancel_consumer"
    queue: str


@dataclass(frozen=True, slots=True)
class SetTimeLimit:
    """New soft and hard time limits (seconds, None for none) for the task ``task``."""

    kind: ClassVar[str] = "time_limit"
    task: str
    soft: float | None
    hard: float | None


@dataclass(frozen=True, slots=True)
class SetRateLimit:
    """A new rate limit (``'10/s'``, None for none) for the task ``task``."""

    kind: ClassVar[str] = "rate_limit"
    task: str
    rate: str | None


@dataclass(frozen=True, slots=True)
class SetTaskEvents:
    """Send task events, or stop (``enable_events``/``disable_events``)."""

    kind: ClassVar[str] = "task_events"
    enabled: bool


Report = TaskStarted | TaskFinished | Counted | Holding | Rejected
Command = (
    Revoke
    | RevokeStamps
    | AddConsumer
    | CancelConsumer
    | SetTimeLimit
    | SetRateLimit
    | SetTaskEvents
)
Record = Report | Command

_REPORTS = (TaskStarted, TaskFinished, Counted, Holding, Rejected)
_COMMANDS = (
    Revoke,
    RevokeStamps,
    AddConsumer,
    CancelConsumer,
    SetTimeLimit,
    SetRateLimit,
    SetTaskEvents,
)
_BY_KIND: dict[str, type[Record]] = {cls.kind: cls for cls in (*_REPORTS, *_COMMANDS)}
#: a record's kind and fields in order, in one C call: a line is built per task, and
#: orjson's own dataclass path takes 4x as long for slotted classes (measured)
_VALUES = {cls: attrgetter("kind", *(f.name for f in fields(cls))) for cls in _BY_KIND.values()}
#: the records with tuples among their fields, which JSON turns into arrays
_HOLDS_TUPLES = (Holding, Revoke)


# -- one line per record -----------------------------------------------------------------------


def encode(record: Record) -> bytes:
    """``record`` as one line of JSON, ``[kind, field, ...]`` in field order, with its newline."""
    return orjson.dumps(_VALUES[type(record)](record), option=orjson.OPT_APPEND_NEWLINE)


def decode(line: bytes) -> Record:
    """The record ``line`` holds (as :func:`encode` wrote it).

    Raises ValueError naming the problem when it holds none: not JSON, an unknown kind, the
    wrong number of fields, a field of the wrong type. A child runs task code that can
    write anything to its pipe, so a record is checked against its declared types before
    the supervisor computes with it.
    """
    try:
        kind, *values = orjson.loads(line)
        cls = _BY_KIND[kind]
        if cls in _HOLDS_TUPLES:
            values = [_tupled(value) for value in values]
        record = cls(*values)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a report or command ({type(exc).__name__}: {exc})") from None
    for name, check in _CHECKS[cls]:
        if not check(getattr(record, name)):
            raise ValueError(f"{kind} record has a bad {name!r}: {getattr(record, name)!r:.100}")
    return record


Check = Callable[[Any], bool]


def _is_finite_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _checker(hint: Any) -> Check:
    """A test of whether a value read from JSON is of the type ``hint`` names, built once per
    field: the supervisor checks every record a child sends, several per task, so the type
    hint is taken apart here and not on each record."""
    origin = get_origin(hint)
    if origin in (Union, UnionType):
        options = tuple(_checker(arg) for arg in get_args(hint))
        return lambda value: any(check(value) for check in options)
    if origin is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            each = _checker(args[0])
            return lambda value: type(value) is tuple and all(map(each, value))
        checks = tuple(_checker(arg) for arg in args)
        return lambda value: (
            type(value) is tuple
            and len(value) == len(checks)
            and all(check(item) for check, item in zip(checks, value, strict=True))
        )
    if origin is dict:  # RevokeStamps' headers, TaskStarted's stamps: JSON objects
        key_check, item_check = map(_checker, get_args(hint))
        return lambda value: (
            type(value) is dict and all(key_check(k) and item_check(v) for k, v in value.items())
        )
    if origin is list:
        (item,) = get_args(hint)
        each = _checker(item)
        return lambda value: type(value) is list and all(map(each, value))
    if hint is Any:  # a stamp's value: whatever JSON the sender's stamps held
        return lambda value: True
    if hint is type(None):
        return lambda value: value is None
    if hint is float:
        return _is_finite_number
    return lambda value: type(value) is hint


def _tupled(value: Any) -> Any:
    """JSON arrays back into the tuples the records hold."""
    return tuple(map(_tupled, value)) if type(value) is list else value


#: each record's fields and the checks of their types, for :func:`decode`
_CHECKS: dict[type[Record], tuple[tuple[str, Check], ...]] = {
    cls: tuple((f.name, _checker(get_type_hints(cls)[f.name])) for f in fields(cls))
    for cls in _BY_KIND.values()
}


def _read(line: bytes, sender: str) -> Record | None:
    try:
        return decode(line)
    except ValueError as exc:
        # never the case since lines are written whole; if it were, one lost message is
        # better than a dead node or child
        logger.error("unreadable message from %s: %s: %.200r", sender, exc, line)
        return None


# -- the shared page ---------------------------------------------------------------------------

_HEADER = struct.Struct("=QI")  # sequence number, payload length (written by the child)
_COMMANDS_SENT = struct.Struct("=Q")  # commands sent so far (written by the supervisor)
_COMMANDS_AT = 16
_PAYLOAD_AT = 24
#: room for one announcement; longer ones are the caller's to shorten
CAPACITY = 65536 - _PAYLOAD_AT


class RunningSlot:
    """What a prefork child runs, in memory the child and its supervisor share.

    The supervisor must know which task a child runs before it runs, yet telling it over the
    pipe cost a write and a wake-up of the supervisor per task. The child copies the
    announcement into an anonymous shared mapping made before the fork instead; the
    supervisor reads it only when it needs to know. A sequence number, odd while a write is
    under way, keeps a reader from taking half of one announcement for another (a seqlock).
    The supervisor, for its part, counts the commands it sends down the child's pipe in the
    same page, so the child reads the pipe only when there is something in it.
    """

    def __init__(self) -> None:
        # MAP_SHARED | MAP_ANONYMOUS: the same pages in both processes after fork()
        self._map = mmap.mmap(-1, _PAYLOAD_AT + CAPACITY)
        self._cache: tuple[int, Any] = (0, None)

    def write(self, payload: bytes) -> None:
        """Announce ``payload`` (child side); it must fit in :data:`CAPACITY` bytes."""
        size = len(payload)
        if size > CAPACITY:
            raise ValueError(f"announcement of {size} bytes exceeds {CAPACITY}")
        view = self._map
        seq = _HEADER.unpack_from(view, 0)[0]
        _HEADER.pack_into(view, 0, seq + 1, 0)  # odd: being written
        view[_PAYLOAD_AT : _PAYLOAD_AT + size] = payload
        _HEADER.pack_into(view, 0, seq + 2, size)

    def clear(self) -> None:
        """Nothing runs now (child side)."""
        seq = _HEADER.unpack_from(self._map, 0)[0]
        _HEADER.pack_into(self._map, 0, seq + 2, 0)

    def read(self, decode: Callable[[bytes], T]) -> T | None:
        """The current announcement decoded, or None when nothing runs (supervisor side).

        Decoded once per announcement. A write cut short by the child's death leaves the
        sequence odd: whatever it was announcing had not started, so nothing runs.
        """
        for _ in range(1000):
            seq, size = _HEADER.unpack_from(self._map, 0)
            if seq == self._cache[0]:
                return self._cache[1]  # type: ignore[no-any-return]
            if seq % 2:
                continue  # being written right now: look again
            payload = bytes(self._map[_PAYLOAD_AT : _PAYLOAD_AT + size])
            if _HEADER.unpack_from(self._map, 0)[0] != seq:
                continue  # overwritten while copied
            value = decode(payload) if size else None
            self._cache = (seq, value)
            return value
        return None

    def note_command(self) -> None:
        """One more command is in the child's pipe (supervisor side, after writing it)."""
        count = _COMMANDS_SENT.unpack_from(self._map, _COMMANDS_AT)[0]
        _COMMANDS_SENT.pack_into(self._map, _COMMANDS_AT, count + 1)

    def commands_sent(self) -> int:
        """How many commands the supervisor has sent (child side)."""
        return int(_COMMANDS_SENT.unpack_from(self._map, _COMMANDS_AT)[0])

    def close(self) -> None:
        self._map.close()


def _announced(payload: bytes) -> TaskStarted | None:
    record = _read(payload, "a child's shared page")
    return record if isinstance(record, TaskStarted) else None


# -- the link between a prefork child and its supervisor -----------------------------------------

_CHUNK = 65536


class Link:
    """Two pipes and a shared page, made before the fork; then each process takes its end."""

    def __init__(self) -> None:
        self._reports_r, self._reports_w = os.pipe()
        self._commands_r, self._commands_w = os.pipe()
        self.slot = RunningSlot()

    def child_end(self) -> ChildEnd:
        """In the child, after the fork: closes the supervisor's side."""
        os.close(self._reports_r)
        os.close(self._commands_w)
        return ChildEnd(self.slot, self._reports_w, self._commands_r)

    def supervisor_end(self, pid: int) -> SupervisorEnd:
        """In the supervisor, after forking the child ``pid``: closes the child's side."""
        os.close(self._reports_w)
        os.close(self._commands_r)
        return SupervisorEnd(pid, self.slot, self._reports_r, self._commands_w)


#: the longest a busy child holds its task counts back (seconds): ``inspect stats`` and the
#: heartbeat's ``processed`` lag a drain by at most this
COUNTS_EVERY = 0.25


class ChildEnd:
    """A prefork child's end: reports up, commands down."""

    def __init__(self, slot: RunningSlot, reports_fd: int, commands_fd: int) -> None:
        self.slot = slot
        self.reports_fd = reports_fd
        self.commands_fd = commands_fd
        os.set_blocking(commands_fd, False)
        self._outbox: list[bytes] = []
        self._pending = b""
        self._read_up_to = 0
        #: finished tasks by (name, outcome), not yet reported
        self._counts: dict[tuple[str, str], int] = {}
        #: until when a busy child holds its counts back (monotonic)
        self._counts_due = 0.0

    def report(self, record: Report) -> None:
        """Announce a start in the page; queue anything else for :meth:`flush_reports`."""
        if isinstance(record, TaskStarted):  # before the task runs, without waking anyone
            payload = encode(record)
            if len(payload) > CAPACITY:  # huge argument reprs: the rest matters more
                payload = encode(replace(record, argsrepr=None, kwargsrepr=None))
            self.slot.write(payload)
            return
        if isinstance(record, TaskFinished):
            self.slot.clear()  # what the supervisor must know at once: it runs nothing now
            key = (record.name, record.outcome)
            self._counts[key] = self._counts.get(key, 0) + 1
            return
        self._outbox.append(encode(record))

    def flush_reports(self, *, busy: bool = False) -> None:
        """Write what is queued. ``busy`` (the next batch follows at once) holds the task
        counts back for up to :data:`COUNTS_EVERY`; the consumer flushes without it before
        it waits, so a count is never later than the result it follows."""
        counts = self._counts
        if counts and not (busy and time.monotonic() < self._counts_due):
            self._outbox.extend(
                encode(Counted(name, outcome, count)) for (name, outcome), count in counts.items()
            )
            counts.clear()
            self._counts_due = time.monotonic() + COUNTS_EVERY
        if self._outbox:
            try:
                write_all(self.reports_fd, b"".join(self._outbox))
            except BrokenPipeError:
                # the supervisor is gone (SIGKILLed): nobody to tell; the child is stopping
                # (children.stop_with_supervisor) and must still settle what it ran
                logger.debug("supervisor gone: %d report(s) dropped", len(self._outbox))
            self._outbox.clear()

    def commands(self) -> list[Command]:
        """The commands sent since the last call: no read(2) unless the page counts new ones."""
        sent = self.slot.commands_sent()
        if sent == self._read_up_to and not self._pending:
            return []
        self._read_up_to = sent
        while True:  # all of it: the count will not say again that more is there
            try:
                chunk = os.read(self.commands_fd, _CHUNK)
            except BlockingIOError:
                break
            self._pending += chunk
            if len(chunk) < _CHUNK:
                break
        *lines, self._pending = self._pending.split(b"\n")
        commands: list[Command] = []
        for line in lines:
            record = _read(line, "the supervisor") if line else None
            if isinstance(record, _COMMANDS):
                commands.append(record)
            elif record is not None:
                logger.error("the supervisor sent a report, not a command: %r", record)
        return commands


class SupervisorEnd:
    """The supervisor's end of one prefork child's link."""

    def __init__(self, pid: int, slot: RunningSlot, reports_fd: int, commands_fd: int) -> None:
        self.slot = slot
        self.reader = reports_fd
        self.writer = commands_fd
        os.set_blocking(reports_fd, False)
        os.set_blocking(commands_fd, False)
        self._sender = f"child pid {pid}"
        self._buffer = b""
        #: commands the pipe could not take yet, in order (see :meth:`send`)
        self.outbox = b""

    def running(self) -> TaskStarted | None:
        """What the child announced it runs, or None."""
        return self.slot.read(_announced)

    def read_reports(self) -> list[Report] | None:
        """The reports the pipe holds now; None once the child has closed its end."""
        try:
            data = os.read(self.reader, _CHUNK)
        except OSError:  # BlockingIOError included: nothing there after all
            return []
        if not data:
            return None
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        reports: list[Report] = []
        for line in lines:
            record = _read(line, self._sender)
            if isinstance(record, _REPORTS):
                reports.append(record)
            elif record is not None:
                logger.error("%s sent a command, not a report: %r", self._sender, record)
        return reports

    def send(self, line: bytes) -> None:
        """Queue an encoded command for the child's pipe and write what the pipe takes now.

        The pipe is non-blocking (a child deep in a task must not stall the node): what does
        not fit waits in :attr:`outbox`, in order, and the supervisor's loop calls
        :meth:`flush` as the child reads. A line is never cut short and left so, which the
        child would read as garbage.
        """
        self.outbox += line
        self.flush()

    def flush(self) -> None:
        while self.outbox:
            try:
                written = os.write(self.writer, self.outbox)
            except BlockingIOError:
                break  # the pipe is full: the loop tries again
            except OSError as exc:
                logger.warning("could not send commands to %s: %s", self._sender, exc)
                self.outbox = b""
                return
            self.outbox = self.outbox[written:]
        self.slot.note_command()

    def close_pipes(self) -> None:
        """Close both pipes; the page stays readable (:meth:`running`) until :meth:`close`."""
        if self.reader >= 0:
            os.close(self.reader)
            os.close(self.writer)
            self.reader = self.writer = -1

    def close(self) -> None:
        self.close_pipes()
        self.slot.close()


def write_all(fd: int, data: bytes) -> None:
    """Write every byte: a pipe write returns early when a signal or a stop (a debugger, py-spy)
    interrupts it midway, or when a non-blocking pipe fills; a torn line would be read as
    garbage by the other end."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        view = view[written:]


__all__ = [
    "CAPACITY",
    "COUNTS_EVERY",
    "AddConsumer",
    "CancelConsumer",
    "ChildEnd",
    "Command",
    "Counted",
    "Holding",
    "Link",
    "Record",
    "Rejected",
    "Report",
    "Revoke",
    "RevokeStamps",
    "RunningSlot",
    "SetRateLimit",
    "SetTaskEvents",
    "SetTimeLimit",
    "SupervisorEnd",
    "TaskFinished",
    "TaskRef",
    "TaskStarted",
    "decode",
    "encode",
    "write_all",
]

"""The link between a consumer and its supervisor: typed records, one line each, sent whole."""

from __future__ import annotations

import logging
import os
import select
import time
from collections.abc import Iterator

import pytest

from caraway.worker import ipc
from caraway.worker.ipc import (
    AddConsumer,
    CancelConsumer,
    Counted,
    Holding,
    Link,
    Record,
    Rejected,
    Revoke,
    RunningSlot,
    SetRateLimit,
    SetTaskEvents,
    SetTimeLimit,
    SupervisorEnd,
    TaskFinished,
    TaskStarted,
    decode,
    encode,
)

EVERY_KIND: list[Record] = [
    TaskStarted("t-1", "tasks.add", "tag-1", True, False, 30.0, 20.0, "(2, 2)", "{}", "celery"),
    TaskStarted("t-2", "tasks.add", "tag-2", False, True, None, None),
    TaskFinished("t-1", "tasks.add", "success"),
    Counted("tasks.add", "failure", 3),
    Rejected("t-5", "not JSON"),
    Holding(),
    Holding(reserved=(("t-3", "tasks.mul"),), scheduled=((1.7e9, ("t-4", "tasks.add")),)),
    Revoke(("a", "b")),
    AddConsumer("images"),
    CancelConsumer("images"),
    SetTimeLimit("tasks.add", None, 10.5),
    SetRateLimit("tasks.add", "10/s"),
    SetRateLimit("tasks.add", None),
    SetTaskEvents(True),
]


@pytest.mark.parametrize("record", EVERY_KIND, ids=lambda record: type(record).__name__)
def test_every_record_comes_back_equal_from_its_line(record: Record) -> None:
    line = encode(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == record


def test_a_started_task_keeps_when_it_started() -> None:
    started = TaskStarted("t-1", "tasks.add", "tag", False, False, None, None)
    back = decode(encode(started))
    assert isinstance(back, TaskStarted)
    assert (back.started, back.wall_started) == (started.started, started.wall_started)


@pytest.mark.parametrize(
    "line",
    [
        b'["revoke", ["a"',  # cut short
        b"not json",
        b'["no_such_kind", 1]',
        b'["revoke"]',  # a field missing
        b'["add_consumer", "q", "extra"]',
        b"{}",
        b"[]",
        b"5",
        b'[["revoke"], 1]',
    ],
)
def test_decode_refuses_a_line_that_holds_no_record(line: bytes) -> None:
    with pytest.raises(ValueError, match="not a report or command"):
        decode(line)


@pytest.fixture
def pipes() -> Iterator[tuple[int, int, int, int]]:
    reports_r, reports_w = os.pipe()
    commands_r, commands_w = os.pipe()
    yield reports_r, reports_w, commands_r, commands_w
    for fd in (reports_r, reports_w, commands_r, commands_w):
        os.close(fd)


def _read_lines(fd: int, count: int) -> list[Record]:
    data = b""
    while data.count(b"\n") < count:
        data += os.read(fd, 65536)
    return [decode(line) for line in data.split(b"\n") if line]


def test_short_writes_are_completed(
    pipes: tuple[int, int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal or a debugger's stop makes write(2) return after part of the buffer (py-spy
    attached to a child did, and the supervisor read a torn line); the rest must follow."""
    reports_r, reports_w, commands_r, _ = pipes
    real_write = os.write
    calls = {"n": 0}

    def short_write(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise BlockingIOError  # a full non-blocking pipe: wait and retry
        return real_write(fd, bytes(data[:700]))

    monkeypatch.setattr(ipc.os, "write", short_write)
    end = ipc.ChildEnd(RunningSlot(), reports_w, commands_r)
    for index in range(50):
        end.report(Rejected(f"task-{index}", "x" * 40))
    end.flush_reports()
    monkeypatch.undo()
    assert calls["n"] > 3
    assert _read_lines(reports_r, 50) == [
        Rejected(f"task-{index}", "x" * 40) for index in range(50)
    ]


def test_an_unreadable_command_is_logged_dropped_and_the_next_one_read(
    pipes: tuple[int, int, int, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, reports_w, commands_r, commands_w = pipes
    slot = RunningSlot()
    end = ipc.ChildEnd(slot, reports_w, commands_r)
    os.write(commands_w, b'["revoke", ["a"\n["no_such_kind"]\n' + encode(AddConsumer("q")))
    slot.note_command()
    with caplog.at_level(logging.ERROR, logger="caraway.worker"):
        assert end.commands() == [AddConsumer("q")]
    assert caplog.text.count("unreadable message from the supervisor") == 2


def test_an_unreadable_report_is_logged_dropped_and_the_next_one_read(
    pipes: tuple[int, int, int, int], caplog: pytest.LogCaptureFixture
) -> None:
    reports_r, reports_w, commands_r, commands_w = pipes
    slot = RunningSlot()
    supervisor = SupervisorEnd(4242, slot, reports_r, commands_w)
    child = ipc.ChildEnd(slot, reports_w, commands_r)
    os.write(reports_w, b"garbage\n")
    child.report(TaskFinished("t-1", "tasks.add", "failure"))
    child.report(SetTaskEvents(False))  # type: ignore[arg-type]  # a command, not a report
    child.flush_reports()
    with caplog.at_level(logging.ERROR, logger="caraway.worker"):
        assert supervisor.read_reports() == [Counted("tasks.add", "failure", 1)]
    assert "unreadable message from child pid 4242" in caplog.text
    assert "sent a command, not a report" in caplog.text


def test_a_start_is_announced_in_the_page_and_a_finish_clears_it(
    pipes: tuple[int, int, int, int],
) -> None:
    reports_r, reports_w, commands_r, commands_w = pipes
    slot = RunningSlot()
    supervisor = SupervisorEnd(4242, slot, reports_r, commands_w)
    child = ipc.ChildEnd(slot, reports_w, commands_r)
    started = TaskStarted("t-1", "tasks.add", "tag", True, True, 5.0, None, "x" * 70000)
    child.report(started)  # reprs too large for the page are left out
    assert supervisor.running() == TaskStarted(
        "t-1", "tasks.add", "tag", True, True, 5.0, None, None, None, None,
        started.started, started.wall_started,
    )  # fmt: skip
    assert supervisor.read_reports() == []  # nothing went through the pipe
    child.report(TaskFinished("t-1", "tasks.add", "success"))
    assert supervisor.running() is None
    child.flush_reports()
    assert supervisor.read_reports() == [Counted("tasks.add", "success", 1)]


def test_a_busy_child_sums_its_task_counts_and_holds_them_back_a_little(
    pipes: tuple[int, int, int, int],
) -> None:
    # a line per task and a wake-up of the supervisor per batch of each child cost a tenth
    # of a core in a drain; a count is never later than a flush without busy (before a wait)
    reports_r, reports_w, commands_r, commands_w = pipes
    slot = RunningSlot()
    supervisor = SupervisorEnd(4242, slot, reports_r, commands_w)
    child = ipc.ChildEnd(slot, reports_w, commands_r)
    child.report(TaskFinished("t-1", "tasks.add", "success"))
    child.flush_reports(busy=True)  # the first goes at once
    assert supervisor.read_reports() == [Counted("tasks.add", "success", 1)]
    for index in range(3):
        child.report(TaskFinished(f"t-{index}", "tasks.add", "success"))
    child.report(TaskFinished("t-9", "tasks.boom", "failure"))
    child.flush_reports(busy=True)  # within COUNTS_EVERY of the last: held
    assert not select.select([reports_r], [], [], 0)[0]
    child.flush_reports()
    assert supervisor.read_reports() == [
        Counted("tasks.add", "success", 3),
        Counted("tasks.boom", "failure", 1),
    ]
    child.report(TaskFinished("t-10", "tasks.add", "success"))
    time.sleep(ipc.COUNTS_EVERY)  # the hold's length is what is tested
    child.flush_reports(busy=True)
    assert supervisor.read_reports() == [Counted("tasks.add", "success", 1)]


def test_each_process_keeps_its_end_of_a_link_across_a_fork() -> None:
    link = Link()
    pid = os.fork()
    if pid == 0:  # the child: one report, then wait for the command that lets it exit
        code = 1
        try:
            end = link.child_end()
            end.report(TaskFinished("t-1", "tasks.add", "success"))
            end.flush_reports()
            deadline = time.monotonic() + 10
            commands = end.commands()
            while not commands and time.monotonic() < deadline:
                time.sleep(0.01)
                commands = end.commands()
            code = 0 if commands == [SetTaskEvents(True)] else 2
        finally:
            os._exit(code)
    supervisor = link.supervisor_end(pid)
    try:
        assert select.select([supervisor.reader], [], [], 10)[0], "no report within 10 s"
        assert supervisor.read_reports() == [Counted("tasks.add", "success", 1)]
        supervisor.send(encode(SetTaskEvents(True)))
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
        assert supervisor.read_reports() is None  # the child's end closed with it
    finally:
        supervisor.close()


def test_a_command_larger_than_the_pipe_goes_whole_as_the_child_reads(
    pipes: tuple[int, int, int, int],
) -> None:
    """The supervisor's end is non-blocking: a 100 KB revoke list fills the 64 KiB pipe, and
    the rest waits in the outbox instead of being cut off."""
    reports_r, reports_w, commands_r, commands_w = pipes
    slot = RunningSlot()
    supervisor = SupervisorEnd(4242, slot, reports_r, commands_w)
    ids = tuple(f"{index:036d}" for index in range(2500))
    supervisor.send(encode(Revoke(ids)))
    supervisor.send(encode(SetTaskEvents(True)))
    assert supervisor.outbox, "the pipe took part of it; the rest waits in order"
    child = ipc.ChildEnd(slot, reports_w, commands_r)
    got: list[Record] = []
    for _ in range(10):
        got += child.commands()
        supervisor.flush()  # what the supervisor's loop does each turn
    assert got == [Revoke(ids), SetTaskEvents(True)]
    assert supervisor.outbox == b""

"""The child's report pipe: every batch arrives whole, even when a write returns early."""

from __future__ import annotations

import os
from collections.abc import Iterator

import orjson
import pytest

from caraway.worker import childlink
from caraway.worker.childlink import ChildLink
from caraway.worker.slot import RunningSlot


@pytest.fixture
def pipes() -> Iterator[tuple[int, int, int, int]]:
    reports_r, reports_w = os.pipe()
    commands_r, commands_w = os.pipe()
    yield reports_r, reports_w, commands_r, commands_w
    for fd in (reports_r, reports_w, commands_r, commands_w):
        os.close(fd)


def _read_lines(fd: int, count: int) -> list[object]:
    data = b""
    while data.count(b"\n") < count:
        data += os.read(fd, 65536)
    return [orjson.loads(line) for line in data.split(b"\n") if line]


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

    monkeypatch.setattr(childlink.os, "write", short_write)
    link = ChildLink(RunningSlot(), reports_w, commands_r)
    for index in range(50):
        link.report(("done", f"task-{index}", "x" * 40))
    link.flush_reports()
    monkeypatch.undo()
    assert calls["n"] > 3
    lines = _read_lines(reports_r, 50)
    assert lines == [["done", f"task-{index}", "x" * 40] for index in range(50)]


def test_an_unreadable_command_is_dropped_and_the_next_one_read(
    pipes: tuple[int, int, int, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, reports_w, commands_r, commands_w = pipes
    slot = RunningSlot()
    link = ChildLink(slot, reports_w, commands_r)
    os.write(commands_w, b'["revoke", ["a"\n["shutdown"]\n')
    slot.note_command()
    assert link.commands() == [["shutdown"]]
    assert "unreadable command" in caplog.text


def test_a_command_larger_than_the_pipe_goes_whole_as_the_child_reads(
    pipes: tuple[int, int, int, int],
) -> None:
    """The supervisor's end is non-blocking: a 100 KB revoke list fills the 64 KiB pipe, and
    the rest waits in the child's outbox instead of being cut off."""
    from caraway.worker.children import Child
    from caraway.worker.supervisor import Supervisor

    _, reports_w, commands_r, commands_w = pipes
    os.set_blocking(commands_w, False)
    slot = RunningSlot()
    child = Child(index=0, pid=os.getpid(), writer=commands_w, slot=slot)
    supervisor = Supervisor.__new__(Supervisor)  # only its pipe writing is under test
    ids = [f"{index:036d}" for index in range(2500)]
    supervisor._send_command(child, orjson.dumps(["revoke", ids]) + b"\n")
    supervisor._send_command(child, b'["shutdown"]\n')
    assert child.outbox, "the pipe took part of it; the rest waits in order"
    link = ChildLink(slot, reports_w, commands_r)
    got: list[list[object]] = []
    for _ in range(10):
        got += link.commands()
        supervisor._flush_commands(child)  # what the supervisor's loop does each turn
    assert got == [["revoke", ids], ["shutdown"]]
    assert child.outbox == b""

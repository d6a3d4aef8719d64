"""The shared-memory slot a prefork child announces its task in."""

from __future__ import annotations

import os

import pytest

from caraway.worker.ipc import CAPACITY, RunningSlot


def test_an_announcement_written_in_a_forked_child_is_read_by_the_parent() -> None:
    slot = RunningSlot()
    try:
        assert slot.read(bytes.decode) is None
        pid = os.fork()
        if pid == 0:  # the child writes and dies without clearing
            slot.write(b"task-1")
            slot.clear()
            slot.write(b"task-2")
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
        assert slot.read(bytes.decode) == "task-2"
    finally:
        slot.close()


def test_reads_decode_once_per_announcement_and_see_a_clear() -> None:
    slot = RunningSlot()
    decoded: list[bytes] = []

    def decode(payload: bytes) -> bytes:
        decoded.append(payload)
        return payload

    try:
        slot.write(b"a")
        assert slot.read(decode) == slot.read(decode) == b"a"
        slot.write(b"a")  # the same task id again is a new announcement
        assert slot.read(decode) == b"a"
        assert decoded == [b"a", b"a"]
        slot.clear()
        assert slot.read(decode) is None
    finally:
        slot.close()


def test_an_announcement_too_large_for_the_slot_is_refused() -> None:
    slot = RunningSlot()
    try:
        with pytest.raises(ValueError, match="exceeds"):
            slot.write(b"x" * (CAPACITY + 1))
        slot.write(b"x" * CAPACITY)
        assert slot.read(len) == CAPACITY
    finally:
        slot.close()


def test_the_command_count_written_by_the_parent_is_seen_by_the_child() -> None:
    slot = RunningSlot()
    reader, writer = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:  # the child waits until the count says a command is there
            while slot.commands_sent() < 2:
                pass
            os._exit(0 if os.read(reader, 100) == b"a\nb\n" else 1)
        os.write(writer, b"a\n")
        slot.note_command()
        os.write(writer, b"b\n")
        slot.note_command()
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
        slot.write(b"running")  # the child's announcement does not touch the count
        assert slot.commands_sent() == 2
    finally:
        os.close(reader)
        os.close(writer)
        slot.close()

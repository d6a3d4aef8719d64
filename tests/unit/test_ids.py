"""caraway.utils.ids: task ids and delivery tags from a buffer of random bytes."""

from __future__ import annotations

import os
import uuid

from caraway.utils.ids import new_id
from caraway.utils.pid import current_pid


def test_new_id_is_a_random_rfc4122_uuid4_string() -> None:
    ids = [new_id() for _ in range(1000)]  # crosses a refill of the 4 KiB buffer
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)


def test_a_forked_child_never_repeats_its_parents_ids() -> None:
    new_id()  # the parent's buffer holds unread bytes at the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and its pid, then leave at once
        os.write(write, " ".join([*(new_id() for _ in range(5)), str(current_pid())]).encode())
        os._exit(0)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            *child_ids, child_pid = pipe.read().decode().split()
    finally:
        os.waitpid(pid, 0)
    parent_ids = [new_id() for _ in range(5)]
    assert not set(child_ids) & set(parent_ids)
    assert int(child_pid) == pid != current_pid() == os.getpid()

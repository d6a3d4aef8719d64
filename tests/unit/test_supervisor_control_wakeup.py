"""The supervisor waits on the remote-control mailbox's descriptor beside its children, so a
request is answered when it arrives (it was polled every 0.2 s: ``inspect ping`` of an idle
Redis fleet took 200 ms), and stops waiting on it when it breaks or the node stops."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from caraway import Caraway
from caraway.worker.supervisor import Supervisor


class _Control:
    """A ControlServer whose mailbox is a pipe: readable = a request has arrived."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.polls = 0
        self.fails = False

    def fileno(self) -> int | None:
        return self.read_fd

    def poll(self) -> int:
        self.polls += 1
        if self.fails:
            raise RuntimeError("broken mailbox")
        while True:  # take what arrived, as a mailbox's receive() does
            try:
                os.set_blocking(self.read_fd, False)
                if not os.read(self.read_fd, 4096):
                    return 0
            except BlockingIOError:
                return 0

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    app = Caraway("t", broker="memory://control-wakeup")
    made = Supervisor(app, hostname="w@h", queues=["celery"], concurrency=1, pool="solo")
    made.selector.register(made._wake_r, 1, None)
    yield made
    os.close(made._wake_r)
    os.close(made._wake_w)
    made.selector.close()


def test_a_request_wakes_the_loop_and_a_broken_mailbox_is_polled_instead(
    supervisor: Supervisor,
) -> None:
    control: Any = _Control()
    try:
        supervisor._poll_control(control)
        assert supervisor._control_fd == control.read_fd
        assert supervisor._wait() is False  # nothing arrived: the wait ran out
        os.write(control.write_fd, b"x")
        assert supervisor._wait() is True  # woken by the request, to answer it now
        supervisor._poll_control(control)
        assert supervisor._wait() is False
        # a failing mailbox may stay readable (a closed socket): it is no longer waited on
        control.fails = True
        os.write(control.write_fd, b"x")
        supervisor._poll_control(control)
        assert supervisor._control_fd is None
        assert supervisor._wait() is False
    finally:
        control.close()

"""What the supervisor does so its prefork children share its memory (W5 in
docs/benchmarks.md): the C heap's free pages given back and the collector frozen before
forking, and no result backend opened in the supervisor until a lost task needs one."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from caraway import Caraway
from caraway.worker.supervisor import Supervisor

# In a process of its own: prepare_to_fork freezes the collector of the process it runs in.
_HEAP_SCRIPT = textwrap.dedent(
    """
    import gc, json
    from caraway import Caraway
    from caraway.worker.children import prepare_to_fork

    def rss_anon_kib():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon"):
                return int(line.split()[1])

    app = Caraway("t", broker="memory://")
    prepare_to_fork(app)  # imports what it preloads, so the second call allocates little
    base = rss_anon_kib()
    hole = [bytes(1500) for _ in range(8000)]  # 12 MB from malloc (above pymalloc's 512 B)
    pin = [bytes(1500) for _ in range(10)]  # above the hole: free() cannot shrink the heap
    del hole
    held = rss_anon_kib() - base
    prepare_to_fork(app)
    print(json.dumps({"held": held, "after": rss_anon_kib() - base,
                      "frozen": gc.get_freeze_count(), "pin": len(pin)}))
    """
)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="malloc_trim is glibc's; RssAnon is Linux's",
)
def test_prepare_to_fork_gives_back_free_heap_pages_and_freezes_the_collector() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _HEAP_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    figures = json.loads(out)
    # freed memory below a live block stays resident (and would be inherited by every
    # child) until trimmed; the bounds leave room for the allocator's own bookkeeping
    assert figures["held"] > 8_000, figures
    assert figures["after"] < figures["held"] // 4, figures
    assert figures["frozen"] > 1_000, figures


class _Backend:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    app = Caraway("t", broker="memory://")
    made = Supervisor(app, hostname="w@h", queues=["celery"], concurrency=1, pool="solo")
    yield made
    os.close(made._wake_r)
    os.close(made._wake_w)
    made.selector.close()


def test_supervisor_opens_its_result_backend_on_first_use_and_keeps_it(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Any] = []

    def new_backend() -> _Backend:
        opened.append(_Backend())
        return opened[-1]

    monkeypatch.setattr(supervisor.app, "new_backend", new_backend)
    assert opened == []  # nothing at construction
    first = supervisor.backend
    assert supervisor.backend is first
    assert opened == [first]


def test_a_backend_that_cannot_open_is_logged_and_tried_again(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[int] = []

    def new_backend() -> _Backend:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("backend down")
        return _Backend()

    monkeypatch.setattr(supervisor.app, "new_backend", new_backend)
    assert supervisor.backend is None
    assert "could not open the result backend" in caplog.text
    assert isinstance(supervisor.backend, _Backend)
    assert len(attempts) == 2


def test_an_app_without_a_result_backend_is_asked_once(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def new_backend() -> None:
        calls.append(1)

    monkeypatch.setattr(supervisor.app, "new_backend", new_backend)
    assert supervisor.backend is None
    assert supervisor.backend is None
    assert calls == [1]

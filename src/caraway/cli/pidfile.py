"""Pidfiles: refuse to start over a live node, clean a stale file, write when ready.

Read and written without following symbolic links (caraway.utils.files).
"""

from __future__ import annotations

import contextlib
import os

from caraway.exceptions import ImproperlyConfigured
from caraway.utils.files import SymlinkRefused, read_file, write_file


class Pidfile:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def read(self) -> int | None:
        try:
            return int(read_file(self.path).strip() or 0) or None
        except (FileNotFoundError, SymlinkRefused, ValueError):
            return None  # a link is not a pidfile: write() replaces the link itself

    def check(self) -> None:
        """Raise if a live process owns the pidfile; remove it if its process is gone."""
        pid = self.read()
        if pid is None:
            return
        if pid_alive(pid):
            raise ImproperlyConfigured(
                f"pidfile {self.path} names pid {pid}, which is running: a node with this "
                "name is already up (stop it first, or choose another --pidfile)"
            )
        os.unlink(self.path)

    def write(self) -> None:
        # through a randomly named temporary file and without following links (utils.files)
        write_file(self.path, f"{os.getpid()}\n".encode(), mode=0o644)

    def remove(self) -> None:
        if self.read() == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

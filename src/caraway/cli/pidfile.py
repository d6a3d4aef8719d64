"""Pidfiles: refuse to start over a live node, clean a stale file, write when ready."""

from __future__ import annotations

import contextlib
import os

from caraway.exceptions import ImproperlyConfigured


class Pidfile:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def read(self) -> int | None:
        try:
            with open(self.path) as handle:
                return int(handle.read().strip() or 0) or None
        except (FileNotFoundError, ValueError):
            return None

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
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        os.replace(temporary, self.path)

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

"""The files a node keeps (pid, state, log) opened without following symbolic links.

They often live in shared directories (/var/run, /tmp, a project's folder). Opened by name
as the worker's user, a link planted there would make the worker write (or truncate)
whatever file the link points at, or ``multi`` read a pid from it. Every open here refuses
a link (``O_NOFOLLOW``), creates with explicit permissions, and writes whole files through
a fresh temporary file that is renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
from io import TextIOWrapper


class SymlinkRefused(OSError):
    """A pid, state or log file path is a symbolic link (the message says what to do)."""


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def open_nofollow(path: str, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link at ``path``; returns the descriptor.

    Raises SymlinkRefused (an OSError) naming the link, FileNotFoundError and other
    OSErrors as ``os.open`` does.
    """
    try:
        return os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SymlinkRefused(
                errno.ELOOP,
                f"{path} is a symbolic link: caraway does not follow links for its pid, state "
                "and log files (anyone who can write that directory could point it at another "
                "file); give the real path",
            ) from exc
        raise


def read_file(path: str) -> bytes:
    """The bytes of ``path``, refusing a symbolic link. FileNotFoundError when missing."""
    fd = open_nofollow(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def write_file(path: str, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` in one step (a reader sees the old or the new file).

    The temporary file gets a random name (``O_EXCL``), so no link planted beside ``path``
    can redirect the write; the rename replaces a link at ``path`` itself, never its target.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


class SafeFileHandler(logging.FileHandler):
    """logging's FileHandler, appending to a file it opens without following a link."""

    def __init__(self, filename: str, *, mode: int = 0o640) -> None:
        self._file_mode = mode
        super().__init__(filename, mode="a", encoding="utf-8")

    def _open(self) -> TextIOWrapper:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        fd = open_nofollow(self.baseFilename, flags, self._file_mode)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)
